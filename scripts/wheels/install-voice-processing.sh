#!/usr/bin/env bash
# Installs the echo canceller libraries the native core builds against (WebRTC's audio
# processing module 0.3 and/or SpeexDSP; CMakeLists.txt needs at least one) in a wheel build
# environment; the repair step (auditwheel, delocate, delvewheel) bundles what is linked.
#   bash scripts/wheels/install-voice-processing.sh
set -euo pipefail
if command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libwebrtc-audio-processing-dev libspeexdsp-dev
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y speexdsp-devel
  dnf install -y webrtc-audio-processing-devel || echo "webrtc-audio-processing-devel unavailable: SpeexDSP only"
elif command -v yum >/dev/null 2>&1; then
  yum install -y speexdsp-devel
  yum install -y webrtc-audio-processing-devel || echo "webrtc-audio-processing-devel unavailable: SpeexDSP only"
elif command -v apk >/dev/null 2>&1; then
  apk add --no-cache speexdsp-dev
elif command -v brew >/dev/null 2>&1; then
  brew install speexdsp  # Homebrew's webrtc-audio-processing is the 1.x API, not 0.3
else
  echo "install-voice-processing: no known package manager; install SpeexDSP or webrtc-audio-processing 0.3" >&2
  exit 1
fi
