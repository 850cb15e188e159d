#!/usr/bin/env bash
# Python versions gate: every CPython the package claims (requires-python, the wheel matrix)
# installs with its dependencies and passes tests/unit; a machine without libopus, or without
# both echo canceller libraries, fails the build with a message naming the packages to install.
#  1. libopus missing: a configure-only CMake run of this tree finds libopus; the same run with
#     libopus made invisible (PKG_CONFIG_LIBDIR at an empty directory, no PKG_CONFIG_PATH,
#     CMAKE_DISABLE_FIND_PACKAGE_Opus=ON) must fail, and so must `pip install` of the sdist, both
#     with output naming libopus-dev. Likewise with only libopus visible to pkg-config (neither
#     webrtc-audio-processing nor speexdsp): the configure must fail naming
#     libwebrtc-audio-processing-dev and libspeexdsp-dev; and with all but libsrtp2 visible, naming
#     libsrtp2-dev. No compilation happens in this step.
#  2. For each supported interpreter (SUPPORTED below, or RTVOICE_PYTHONS="3.12 3.13"), looked up
#     as $(pyenv root)/versions/3.X.*/bin/python3.X or python3.X on PATH: a venv in
#     build/gates/pythons/3.X, `pip install .[test]` from this tree (dependencies as wheels only,
#     so a dependency without a wheel for that version is a finding, not a source build; the
#     package in its own build directory, so reruns are incremental), then tests/unit.
# Prints one line per interpreter (pass / FAILED / not found); fails if any found interpreter
# fails, or if none is found.
source "$(dirname "$0")/common.sh"
SUPPORTED=(3.11 3.12 3.13 3.14)
read -r -a versions <<<"${RTVOICE_PYTHONS:-${SUPPORTED[*]}}"
out="$GATES_BUILD/pythons"
mkdir -p "$out"
status=0

echo "--- pythons: libopus missing -> the build names libopus-dev"
empty="$out/empty-pkgconfig"
rm -rf "$empty" "$out/opus-visible" "$out/opus-hidden"
mkdir -p "$empty"
hide_opus() { env -u PKG_CONFIG_PATH PKG_CONFIG_LIBDIR="$empty" "$@"; }
if ! cmake -S . -B "$out/opus-visible" >"$out/opus-visible.log" 2>&1; then
  tail -n 30 "$out/opus-visible.log"
  echo "pythons: the configure with libopus visible failed (is libopus-dev installed?)" >&2
  exit 1
fi
echo "pythons: cmake configure, libopus visible: $(grep -o "Found opus.*" "$out/opus-visible.log")"
if hide_opus cmake -S . -B "$out/opus-hidden" -DCMAKE_DISABLE_FIND_PACKAGE_Opus=ON \
  >"$out/opus-hidden.log" 2>&1; then
  echo "pythons: the configure with libopus hidden succeeded; the hiding does not work" >&2
  status=1
elif ! grep -q 'libopus-dev' "$out/opus-hidden.log"; then
  cat "$out/opus-hidden.log"
  echo "pythons: the configure with libopus hidden failed without naming libopus-dev" >&2
  status=1
else
  echo "pythons: cmake configure, libopus hidden: failed as it must:"
  sed -n '/^-- Checking for module .opus./,/^-- Configuring incomplete/p' "$out/opus-hidden.log" |
    grep -v '^$' | sed 's/^/    /'
fi

echo "--- pythons: echo canceller libraries missing -> the build names them"
opus_only="$out/opus-only-pkgconfig"
rm -rf "$opus_only" "$out/processing-hidden"
mkdir -p "$opus_only"
cp "$(pkg-config --variable=pcfiledir opus)/opus.pc" "$opus_only/"
if env -u PKG_CONFIG_PATH PKG_CONFIG_LIBDIR="$opus_only" cmake -S . -B "$out/processing-hidden" \
  >"$out/processing-hidden.log" 2>&1; then
  echo "pythons: the configure without echo canceller libraries succeeded" >&2
  status=1
elif ! grep -q 'libwebrtc-audio-processing-dev' "$out/processing-hidden.log" ||
  ! grep -q 'libspeexdsp-dev' "$out/processing-hidden.log"; then
  cat "$out/processing-hidden.log"
  echo "pythons: the configure without echo canceller libraries did not name both packages" >&2
  status=1
else
  echo "pythons: cmake configure, echo canceller libraries hidden: failed as it must:"
  grep -E 'apt-get install|echo canceller' "$out/processing-hidden.log" | sed 's/^/    /'
fi

echo "--- pythons: libsrtp2 missing -> the build names libsrtp2-dev"
no_srtp="$out/no-srtp-pkgconfig"
rm -rf "$no_srtp" "$out/srtp-hidden"
mkdir -p "$no_srtp"
for pc in opus speexdsp webrtc-audio-processing webrtc-audio-processing-1; do
  dir="$(pkg-config --variable=pcfiledir "$pc" 2>/dev/null || true)"
  [ -n "$dir" ] && cp "$dir/$pc.pc" "$no_srtp/"
done
if env -u PKG_CONFIG_PATH PKG_CONFIG_LIBDIR="$no_srtp" cmake -S . -B "$out/srtp-hidden" \
  >"$out/srtp-hidden.log" 2>&1; then
  echo "pythons: the configure without libsrtp2 succeeded" >&2
  status=1
elif ! grep -q 'libsrtp2-dev' "$out/srtp-hidden.log"; then
  cat "$out/srtp-hidden.log"
  echo "pythons: the configure without libsrtp2 did not name libsrtp2-dev" >&2
  status=1
else
  echo "pythons: cmake configure, libsrtp2 hidden: failed as it must:"
  grep -E 'apt-get install libsrtp2|libsrtp2 and its headers' "$out/srtp-hidden.log" | sed 's/^/    /'
fi

# Finds a CPython $1 (major.minor): prints its path, or nothing.
find_python() {
  local v="$1" cand root
  local -a cands=()
  if command -v pyenv >/dev/null 2>&1 && root="$(pyenv root 2>/dev/null)"; then
    mapfile -t cands < <(ls -d "$root"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V -r)
  fi
  cand="$(command -v "python$v" 2>/dev/null || true)"
  [ -n "$cand" ] && cands+=("$cand")
  for cand in "${cands[@]}"; do
    # A pyenv shim for a version that is not active exits non-zero: check what really runs.
    if [ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$v" ]; then
      printf '%s\n' "$cand"
      return
    fi
  done
}

# Build requirements from pyproject.toml ([build-system] requires), for --no-build-isolation.
mapfile -t build_requires < <("$PY" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))')

# Tests interpreter $2 (version $1) in its venv; output goes to the terminal and $out/$1/log.
test_python() {
  local v="$1" base="$2" dir="$out/$1"
  local venv="$dir/venv"
  local py="$venv/bin/python"
  if [ ! -x "$py" ] || [ "$("$py" -c 'import sys; print(sys._base_executable)' 2>/dev/null)" != "$base" ]; then
    rm -rf "$venv"
    "$base" -m venv "$venv" || return 1
  fi
  "$py" -m pip install -q --only-binary=:all: "${build_requires[@]}" || return 1
  "$py" -m pip install -q --only-binary=:all: --no-build-isolation --config-settings=build-dir="$dir/build" ".[test]" ||
    return 1
  "$py" - <<'PY' || return 1
import sys
import rtvoice
import rtvoice._core as core

assert rtvoice.__file__.startswith(sys.prefix), f"rtvoice imported from {rtvoice.__file__}"
print(f"pythons: Python {sys.version.split()[0]}, rtvoice {rtvoice.__version__} from {core.__file__}")
PY
  "$py" -m pytest tests/unit -q -p no:cacheprovider || return 1
}

sdist_python=""
summary=()
found=0
for v in "${versions[@]}"; do
  base="$(find_python "$v")"
  if [ -z "$base" ]; then
    summary+=("$(printf '%-5s %-10s %s' "$v" "not found" "(no pyenv $v.* nor python$v on PATH)")")
    continue
  fi
  found=$((found + 1))
  echo "--- pythons: $v ($base)"
  mkdir -p "$out/$v"
  start=$(date +%s)
  # (pip's warnings about this machine's configured index locations are left out of the log.)
  if test_python "$v" "$base" 2>&1 | { grep --line-buffered -v "^WARNING: Location 'file:" || true; } |
    tee "$out/$v/log"; then
    result=pass
    passed="$(grep -Eo '[0-9]+ passed' "$out/$v/log" | tail -n 1)"
  else
    result=FAILED
    # pip's error (e.g. no wheel of a dependency for this version) or pytest's counts.
    passed="$(grep -E '^ERROR: |[0-9]+ failed|Error' "$out/$v/log" | tail -n 1)"
    passed="${passed:-failed}; log: $out/$v/log"
    status=1
  fi
  summary+=("$(printf '%-5s %-10s %s, %ss, %s' "$v" "$result" "$passed" "$(( $(date +%s) - start ))" "$base")")
done

# pip install of the sdist with libopus hidden, in the first venv that has the build requirements:
# the configure fails before anything is compiled.
for v in "${versions[@]}"; do
  if "$out/$v/venv/bin/python" -c 'import scikit_build_core, pybind11' 2>/dev/null; then
    sdist_python="$out/$v/venv/bin/python"
    break
  fi
done
if [ -z "$sdist_python" ]; then
  echo "pythons: no venv with the build requirements for the sdist check" >&2
  status=1
else
  echo "--- pythons: pip install of the sdist, libopus hidden"
  rm -rf "$out/sdist"
  "$sdist_python" -c 'import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))' \
    "$out/sdist" >/dev/null
  sdist=("$out"/sdist/*.tar.gz)
  if hide_opus "$sdist_python" -m pip install --no-build-isolation --no-deps --no-cache-dir \
    --target "$out/sdist/site" --config-settings=cmake.define.CMAKE_DISABLE_FIND_PACKAGE_Opus=ON "${sdist[0]}" \
    >"$out/sdist/pip.log" 2>&1; then
    echo "pythons: pip install of the sdist with libopus hidden succeeded" >&2
    status=1
  elif ! grep -q 'libopus-dev' "$out/sdist/pip.log"; then
    cat "$out/sdist/pip.log"
    echo "pythons: pip install of the sdist with libopus hidden failed without naming libopus-dev" >&2
    status=1
  else
    echo "pythons: pip install $(basename "${sdist[0]}"), libopus hidden: failed as it must:"
    grep -E 'libopus|error: ' "$out/sdist/pip.log" | sed 's/^/    /'
  fi
fi

echo "--- pythons: summary"
printf '%s\n' "${summary[@]}"
if [ "$found" -eq 0 ]; then
  echo "pythons: none of ${versions[*]} was found" >&2
  status=1
fi
exit "$status"
