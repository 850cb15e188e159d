#!/usr/bin/env bash
# Installs what the quality gates need on a fresh Debian machine (run as root): the compilers and
# tools below, then ./.venv with the `test` and `dev` extras (scripts/bootstrap.sh).
#   bash scripts/gates/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# clang + libclang-rt-14-dev: libFuzzer and the clang sanitizer runtimes (fuzz gate).
# clang-format: C++ lint. cmake: the C++ test and fuzz builds outside pip.
apt_packages=(clang libclang-rt-14-dev clang-format cmake g++ binutils python3-venv python3-dev)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -ne 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "gates: missing system packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "gates: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# ./.venv as the README's test command makes it, plus the `dev` extra (the gates' tools) and the
# `devices` extra (sounddevice, imported lazily by the CLI and device sources; for mypy). The
# extras' requirements are installed directly so that an existing .venv is not rebuilt.
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh test
mkdir -p build
.venv/bin/python - >build/gates-requirements.txt <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["test"] + extras["dev"] + extras["devices"]))
PY
.venv/bin/python -m pip install -q -r build/gates-requirements.txt
