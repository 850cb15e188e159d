#!/usr/bin/env bash
# Lint gate: ruff check + ruff format --check on the Python trees, clang-format on cpp/
# (config: .clang-format). Fails on any finding. Fix with:
#   .venv/bin/ruff check --fix python tests ... && .venv/bin/ruff format python tests ...
#   clang-format -i $(git ls-files 'cpp/*.cpp' 'cpp/*.hpp')
source "$(dirname "$0")/common.sh"
mapfile -t dirs < <(python_dirs)
status=0
"$PY" -m ruff check "${dirs[@]}" || status=1
"$PY" -m ruff format --check "${dirs[@]}" || status=1
mapfile -t cpp < <(cpp_files)
if [ "${#cpp[@]}" -ne 0 ]; then
  clang-format --dry-run -Werror "${cpp[@]}" || status=1
fi
[ "$status" -eq 0 ] && echo "lint: clean (${dirs[*]}; ${#cpp[@]} C++ files)"
exit "$status"
