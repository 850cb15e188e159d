#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer gate, two parts:
# 1. The C++ test programs (cpp/tests) built with RTVOICE_SANITIZE=address,undefined, with
#    LeakSanitizer on: leaks in the core are findings.
# 2. The extension built with -Ccmake.define.RTVOICE_SANITIZE=address,undefined into its own
#    build and install directory (build/gates/asan), and tests/unit run against it. The
#    interpreter is not instrumented, so the ASan runtime is LD_PRELOADed. Leak detection is off
#    here (detect_leaks=0): CPython keeps interned objects and arenas alive at exit, and every
#    allocation of the extension is reached from interpreter frames, so no suppression could hide
#    CPython's leaks without also hiding ours; leaks are checked in part 1 instead.
#    PYTHONMALLOC=malloc routes Python's allocations through ASan too.
# Both builds are Debug with -O1 (the usual sanitizer level; Debug also keeps pybind11 from
# LTO-linking the instrumented module, which is several times slower to build).
source "$(dirname "$0")/common.sh"
export CC=gcc CXX=g++
ubsan_options="halt_on_error=1:print_stacktrace=1"

echo "--- asan: C++ tests (ASan + UBSan + LSan)"
build="$GATES_BUILD/asan-cpp"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DRTVOICE_SANITIZE=address,undefined \
  -DRTVOICE_BUILD_TESTS=ON >/dev/null
cmake --build "$build"
ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:strict_string_checks=1" \
  UBSAN_OPTIONS="$ubsan_options" ctest --test-dir "$build" --output-on-failure --no-tests=error

echo "--- asan: Python unit tests against the ASan + UBSan extension"
site="$GATES_BUILD/asan/site"
rm -rf "$site"
"$PY" -m pip install -q --no-build-isolation --no-deps --target "$site" \
  -Cbuild-dir="$GATES_BUILD/asan/build" -Ccmake.build-type=Debug -Ccmake.define.CMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -Ccmake.define.RTVOICE_SANITIZE=address,undefined .
# libstdc++ is preloaded too: the interpreter does not link it, and ASan's __cxa_throw
# interceptor must find it at start-up or the first C++ exception aborts the process.
libasan="$(g++ -print-file-name=libasan.so)"
libstdcxx="$(g++ -print-file-name=libstdc++.so)"
for lib in "$libasan" "$libstdcxx"; do
  [ -f "$lib" ] || { echo "asan: $lib not found (g++ -print-file-name)" >&2; exit 1; }
done
run() {
  PYTHONPATH="$site" LD_PRELOAD="$libasan $libstdcxx" PYTHONMALLOC=malloc \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" UBSAN_OPTIONS="$ubsan_options" "$PY" "$@"
}
# The tests must import the sanitized build, not the one installed in the venv.
run - "$site" <<'PY'
import sys, rtvoice._core as m
assert m.__file__.startswith(sys.argv[1]), f"imported {m.__file__}, not the ASan build"
print("asan: testing", m.__file__)
PY
# --capture=sys: sanitizer reports go to file descriptor 2, which must not be captured, or an
# aborting test would take its report with it.
run -m pytest tests/unit -q -p no:cacheprovider --capture=sys
