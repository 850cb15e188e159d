#!/usr/bin/env bash
# The demo command for a fresh Debian machine (as root): installs rtvoice into ./.venv, then talks
# to the embedded Realtime API simulator over real WebRTC on 127.0.0.1.
#   bash scripts/demo.sh [rtvoice demo options]     e.g. --loss 0.1 --jitter 20 --json
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/rtvoice demo --output demo-output.wav "$@"
