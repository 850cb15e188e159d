#!/usr/bin/env bash
# ThreadSanitizer gate. CPython is not TSan-instrumented, so the concurrency tests run as C++
# programs (cpp/tests/test_*.cpp: the SPSC ring two-thread stress, the pipelines' thread tests)
# built by CMake with RTVOICE_SANITIZE=thread and run by ctest. Any report fails the gate.
# No suppressions are needed: the core uses std::atomic only, which TSan understands; if one is
# ever needed, put it in cpp/tests/tsan.supp with the reason (it is picked up automatically).
source "$(dirname "$0")/common.sh"
build="$GATES_BUILD/tsan"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DRTVOICE_SANITIZE=thread \
  -DRTVOICE_BUILD_TESTS=ON >/dev/null
cmake --build "$build"
tsan_options="halt_on_error=1:second_deadlock_stack=1"
[ -f cpp/tests/tsan.supp ] && tsan_options+=":suppressions=$ROOT/cpp/tests/tsan.supp"
TSAN_OPTIONS="$tsan_options" ctest --test-dir "$build" --output-on-failure --no-tests=error
