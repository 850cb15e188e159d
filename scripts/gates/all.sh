#!/usr/bin/env bash
# Runs every quality gate (or the ones named: bash scripts/gates/all.sh lint tsan), timing each,
# and fails if any gate failed. This is what .ci/run calls after the test command.
set -uo pipefail
cd "$(dirname "$0")/../.."
gates=("$@")
[ "${#gates[@]}" -eq 0 ] && gates=(lint typecheck asan tsan fuzz wheel pythons)
bash scripts/gates/setup.sh || exit 1

summary=()
failed=0
for g in "${gates[@]}"; do
  echo "=== gate: $g"
  start=$(date +%s)
  if bash "scripts/gates/$g.sh"; then result=pass; else result=FAIL; failed=1; fi
  secs=$(( $(date +%s) - start ))
  summary+=("$(printf '%-10s %-4s %5ss' "$g" "$result" "$secs")")
  echo "=== gate: $g: $result in ${secs}s"
done
echo "=== gates summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
