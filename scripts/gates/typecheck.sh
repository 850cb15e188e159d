#!/usr/bin/env bash
# Type gate: mypy --strict on python/rtvoice (config in pyproject.toml), then mypy.stubtest checks
# python/rtvoice/_core.pyi against the extension built from this tree (installed into ./.venv).
source "$(dirname "$0")/common.sh"
"$PY" -m mypy --strict python/rtvoice
# Rebuild the extension from this tree (incremental) so stubtest never sees a stale module.
install_tree
"$PY" -c "import rtvoice._core as m; print('stubtest against', m.__file__)"
"$PY" -m mypy.stubtest rtvoice._core
