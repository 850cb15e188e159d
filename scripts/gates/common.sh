# Sourced by the gate scripts: repository root, the gate interpreter, the gates' build directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
# The interpreter of ./.venv (made by scripts/gates/setup.sh); RTVOICE_GATES_PYTHON overrides it.
PY="${RTVOICE_GATES_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ] || ! "$PY" -c "import ruff, mypy, auditwheel, build" 2>/dev/null; then
  bash scripts/gates/setup.sh
  PY="${RTVOICE_GATES_PYTHON:-$ROOT/.venv/bin/python}"
fi
GATES_BUILD="$ROOT/build/gates"
mkdir -p "$GATES_BUILD"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"

# Python source directories that exist (new top-level Python directories go here).
python_dirs() {
  local d
  for d in python tests benchmarks scripts fuzz; do
    [ -d "$d" ] && printf '%s\n' "$d"
  done
}

# Every C++ source and header under cpp/ (works without a git checkout).
cpp_files() {
  find cpp -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cc' \) | sort
}

# Installs this tree into the gate venv (incremental, in its own build directory), so that gates
# importing rtvoice never see a stale copy.
install_tree() {
  "$PY" -m pip install -q --no-build-isolation --no-deps -Cbuild-dir="$GATES_BUILD/venv-build" .
}
