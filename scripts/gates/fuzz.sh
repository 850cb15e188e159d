#!/usr/bin/env bash
# Fuzz gate: coverage-guided fuzzing of every target, FUZZ_SECONDS (default 30) each.
#   C++:    cpp/fuzz/fuzz_<name>.cpp, libFuzzer, built with clang and ASan + UBSan.
#   Python: fuzz/fuzz_<name>.py, atheris (pure-Python parsers).
# Seeds: fuzz/corpus/<name>/ (committed, small). The working corpus grows in build/gates/fuzz/.
# Crashes: every input that once crashed is kept in fuzz/regressions/<name>/ and replayed first,
# so a fixed crash stays fixed. New crash inputs land in build/gates/fuzz/artifacts/.
# Long runs: FUZZ_SECONDS=3600 bash scripts/gates/fuzz.sh [name ...]
source "$(dirname "$0")/common.sh"
seconds="${FUZZ_SECONDS:-30}"
only=("$@")
out="$GATES_BUILD/fuzz"
build="$out/build"
mkdir -p "$out/artifacts"

selected() {
  [ "${#only[@]}" -eq 0 ] && return 0
  local n
  for n in "${only[@]}"; do [ "$n" = "$1" ] && return 0; done
  return 1
}

cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRTVOICE_SANITIZE=address,undefined -DRTVOICE_BUILD_FUZZERS=ON >/dev/null
cmake --build "$build"

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
failed=()
ran=0

fuzz_one() {  # name, command...
  local name="$1"; shift
  local seeds="fuzz/corpus/$name" regressions="fuzz/regressions/$name" work="$out/corpus/$name"
  mkdir -p "$work"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "--- fuzz $name: replaying $(ls "$regressions" | wc -l) regression inputs"
    "$@" "$regressions"/* || { failed+=("$name (regression)"); return; }
  fi
  local corpora=("$work")
  [ -d "$seeds" ] && corpora+=("$seeds")
  echo "--- fuzz $name: ${seconds}s"
  if ! "$@" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/$name-" "${corpora[@]}" 2>"$out/$name.log"; then
    tail -n 60 "$out/$name.log"
    failed+=("$name")
    return
  fi
  grep -E "stat::number_of_executed_units|cov: " "$out/$name.log" | tail -n 2
}

for exe in "$build"/fuzz_*; do
  [ -x "$exe" ] || continue
  name="$(basename "$exe")"; name="${name#fuzz_}"
  selected "$name" || continue
  ran=$((ran + 1))
  fuzz_one "$name" "$exe"
done
python_targets=(fuzz/fuzz_*.py)
[ -f "${python_targets[0]}" ] && install_tree  # the atheris targets import the installed rtvoice
for script in "${python_targets[@]}"; do
  [ -f "$script" ] || continue
  name="$(basename "$script" .py)"; name="${name#fuzz_}"
  selected "$name" || continue
  ran=$((ran + 1))
  fuzz_one "$name" "$PY" "$script"
done

[ "$ran" -gt 0 ] || { echo "fuzz: no targets ran" >&2; exit 1; }
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (crash inputs: $out/artifacts/)" >&2
  exit 1
fi
echo "fuzz: $ran targets, ${seconds}s each, no findings"
