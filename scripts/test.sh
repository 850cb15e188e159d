#!/usr/bin/env bash
# The test command: sets up everything on a fresh Debian machine (as root), then runs the tests.
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
exec .venv/bin/python -m pytest "$@"
