#!/usr/bin/env bash
# Installs libsrtp2 (SRTP of the native media path; CMakeLists.txt requires it) in a wheel build
# environment; the repair step (auditwheel, delocate, delvewheel) bundles it into the wheel.
#   bash scripts/wheels/install-srtp.sh
set -euo pipefail
if command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsrtp2-dev
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y libsrtp-devel
elif command -v yum >/dev/null 2>&1; then
  yum install -y libsrtp-devel
elif command -v apk >/dev/null 2>&1; then
  apk add --no-cache libsrtp-dev
elif command -v brew >/dev/null 2>&1; then
  brew install srtp
else
  echo "install-srtp: no known package manager; install libsrtp2 and its headers" >&2
  exit 1
fi
