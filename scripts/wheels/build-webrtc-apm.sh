#!/usr/bin/env bash
# Builds webrtc-audio-processing 1.3 (WebRTC's audio processing module with the AEC3 echo
# canceller) as a static, position-independent library with the abseil it needs folded in, and
# installs it with its pkg-config file (webrtc-audio-processing-1.pc) into PREFIX, where
# CMakeLists.txt prefers it to the 0.3 API (AEC2) that Debian 12 ships. Being static, it is part
# of the native core itself: nothing more to bundle in the wheels.
#
# The source is the webrtc-audio-processing 1.3 tree (meson build, abseil-cpp 20230125.1 as its
# subproject) carried by the webrtc-noise-gain 1.3.0 sdist on the Python package index, pinned by
# its SHA-256. That tree renames the webrtc/ directory and comments out the architecture detection
# of rtc_base/system/arch.h; both are put back as upstream has them.
#
#   bash scripts/wheels/build-webrtc-apm.sh [PREFIX] [PYTHON]   (default /usr/local; a Python >= 3.8
#   with venv, looked for on PATH and in manylinux's /opt/python when not given)
# Needs a C++17 compiler and ar; meson and ninja come from PyPI into a throwaway venv.
set -euo pipefail
version=1.3
sdist=webrtc_noise_gain-1.3.0.tar.gz
sha256=67c96337db3b074a7a5dce0936c98a93886f22a0724e4387198ae86f31914643
prefix="${1:-/usr/local}"
case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac
pc="$prefix/lib/pkgconfig/webrtc-audio-processing-1.pc"
stamp="$prefix/lib/webrtc-audio-processing-1.rtvoice"
recipe="$sha256 r3"  # the source and this script's recipe: a change rebuilds
inc="$prefix/include/webrtc-audio-processing-1"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ] && [ -f "$pc" ] &&
  [ -f "$prefix/lib/libwebrtc-audio-processing-1.a" ] &&
  [ -f "$inc/modules/audio_processing/aec3/echo_canceller3.h" ]; then
  echo "webrtc-audio-processing $version already in $prefix"
  exit 0
fi
python="${2:-}"
if [ -z "$python" ]; then
  for cand in python3.12 python3.11 python3.13 /opt/python/cp312-cp312/bin/python python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
      "$cand" -c 'import sys, venv; assert sys.version_info >= (3, 8)' 2>/dev/null; then
      python="$(command -v "$cand")"
      break
    fi
  done
  [ -n "$python" ] || { echo "build-webrtc-apm: no Python >= 3.8 with venv found" >&2; exit 1; }
fi
case "$python" in /*) ;; */*) python="$PWD/$python" ;; esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
"$python" -m venv tools
tools/bin/python -m pip install -q "meson==1.4.1" "ninja==1.11.1.1"
# Hash-checking mode: pip refuses the file before anything in it runs unless it is this one.
echo "webrtc-noise-gain==1.3.0 --hash=sha256:$sha256" >requirements.txt
tools/bin/python -m pip download -q --no-deps --no-binary webrtc-noise-gain --require-hashes \
  -r requirements.txt -d .
if command -v sha256sum >/dev/null; then
  echo "$sha256  $sdist" | sha256sum -c -
else
  echo "$sha256  $sdist" | shasum -a 256 -c -
fi
tar xzf "$sdist"
src="$work/webrtc_noise_gain-1.3.0/webrtc-audio-processing"
mv "$src/webrtc-audio-processing-1" "$src/webrtc"
w="$src/webrtc"
# The tree comments out upstream's processor detection (x86, x86-64, ARM, RISC-V, MIPS), the x86
# kernels of the sinc resampler (which leaves it a null function on x86) and the AVX2 cases of
# AEC3's dispatch; uncommenting puts each back as upstream has it. (Its FIR filter factory stays
# on the C filter: there the old code is replaced, not only commented.)
sed -i.orig -E 's|^/\* (#.*) \*/$|\1|' "$w/rtc_base/system/arch.h"
sed -i.orig -E '/^\/\/ #elif defined\(WEBRTC_ARCH_X86_FAMILY\)/,/^\/\/ #else/ s|^// ?||' \
  "$w/common_audio/resampler/sinc_resampler.cc"
for f in adaptive_fir_filter.cc adaptive_fir_filter_erl.cc fft_data.h matched_filter.cc vector_math.h; do
  sed -i.orig -E '/^ *\/\/ case Aec3Optimization::kAvx2:/,/^ *\/\/ +break;/ s|^( *)// |\1|' \
    "$w/modules/audio_processing/aec3/$f"
done
find "$w" -name '*.orig' -exec rm -f {} +  # sed's backups (-i.orig is what BSD sed needs)
grep -q '^#define WEBRTC_ARCH_LITTLE_ENDIAN' "$w/rtc_base/system/arch.h"
grep -q '^#elif defined(WEBRTC_ARCH_X86_FAMILY)' "$w/common_audio/resampler/sinc_resampler.cc"
if grep -rq '// case Aec3Optimization::kAvx2' "$w/modules/audio_processing/aec3"; then
  echo "build-webrtc-apm: an AVX2 case is still commented out" >&2
  exit 1
fi

export PATH="$work/tools/bin:$PATH"
rm -rf "$inc"  # no header of an earlier build stays behind
meson setup "$work/build" "$src" --prefix="$prefix" --libdir=lib --buildtype=release \
  -Ddefault_library=static -Db_staticpic=true --wrap-mode=forcefallback
ninja -C "$work/build" -j"$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
meson install -C "$work/build" --quiet

# Fold abseil's static libraries (built as the subproject, not installed) into the archive, so
# the pkg-config file's one -l links everything; and move abseil's headers under the library's
# own include directory, where only the library's cflags reach them.
lib="$prefix/lib/libwebrtc-audio-processing-1.a"
absl=("$work"/build/subprojects/abseil-cpp-*/libabsl_*.a)
if [ "$(uname -s)" = Darwin ]; then
  libtool -static -o "$work/merged.a" "$lib" "${absl[@]}"
else
  {
    echo "create $work/merged.a"
    echo "addlib $lib"
    for a in "${absl[@]}"; do echo "addlib $a"; done
    echo "save"
    echo "end"
  } | ar -M
  ranlib "$work/merged.a"
fi
install -m 644 "$work/merged.a" "$lib"
rm -rf "$prefix/include/webrtc-audio-processing-1/absl"
mv "$prefix/include/absl" "$prefix/include/webrtc-audio-processing-1/absl"
# All of the tree's headers, not only the public ones meson installs: the core configures AEC3
# (EchoCanceller3Config through its own EchoControlFactory), whose headers are internal. They
# need the macro the library was built with, so the pkg-config file's cflags carry it.
(cd "$w" && find . -name '*.h' | while read -r h; do
  dest="$prefix/include/webrtc-audio-processing-1/$h"
  mkdir -p "$(dirname "$dest")"
  cp "$h" "$dest"
done)
sed -i.orig -E 's|^(Cflags: .*)$|\1 -DWEBRTC_APM_DEBUG_DUMP=0|' "$pc" && rm -f "$pc.orig"
grep -q 'WEBRTC_APM_DEBUG_DUMP=0' "$pc"
rm -f "$prefix/lib/libwebrtc-audio-coding-1.a" "$prefix/lib/pkgconfig/webrtc-audio-coding-1.pc"
rm -rf "$prefix/include/webrtc-audio-coding-1"
echo "$recipe" >"$stamp"
echo "webrtc-audio-processing $version (AEC3) installed into $prefix"
