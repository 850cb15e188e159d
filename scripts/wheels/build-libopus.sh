#!/usr/bin/env bash
# cibuildwheel before-all (Linux containers and macOS runners): builds libopus from its release
# tarball (checked against its SHA-256) as a shared library into PREFIX, for the repair step
# (auditwheel, delocate) to bundle into the wheel. Portable flags only: libopus selects its SSE4.1
# / AVX2 / NEON kernels at run time (--enable-rtcd, the default), never -march=native.
#   bash scripts/wheels/build-libopus.sh [PREFIX]     (default /usr/local)
set -euo pipefail
version=1.5.2
sha256=65c1d2f78b9f2fb20082c38cbe47c951ad5839345876e46941612ee87f9a7ce1
prefix="${1:-/usr/local}"
work="$(mktemp -d)"
cd "$work"
curl -fsSL --retry 3 -o opus.tar.gz \
  "https://downloads.xiph.org/releases/opus/opus-$version.tar.gz" ||
  curl -fsSL --retry 3 -o opus.tar.gz \
    "https://github.com/xiph/opus/releases/download/v$version/opus-$version.tar.gz"
if command -v sha256sum >/dev/null; then
  echo "$sha256  opus.tar.gz" | sha256sum -c -
else
  echo "$sha256  opus.tar.gz" | shasum -a 256 -c -
fi
tar xzf opus.tar.gz
cd "opus-$version"
./configure --prefix="$prefix" --enable-shared --disable-static --disable-doc \
  --disable-extra-programs CFLAGS="${CFLAGS:-} -O2"
make -j"$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
make install
if command -v ldconfig >/dev/null && [ "$(uname -s)" = Linux ]; then ldconfig || true; fi
echo "libopus $version installed into $prefix"
