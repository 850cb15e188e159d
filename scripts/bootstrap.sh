#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine (run as root) and installs rtvoice into ./.venv.
#   bash scripts/bootstrap.sh [EXTRAS]      e.g. EXTRAS=test or test,bench
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

# libwebrtc-audio-processing-dev and libspeexdsp-dev: the echo cancellers of the native core;
# pulseaudio, pulseaudio-utils, libasound2-plugins and libportaudio2: sound devices for `rtvoice
# talk` and the user-mode PulseAudio server of the device tests.
apt_packages=(libopus-dev libsrtp2-dev pkg-config g++ espeak-ng libwebrtc-audio-processing-dev libspeexdsp-dev
  pulseaudio pulseaudio-utils libasound2-plugins libportaudio2)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -ne 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "rtvoice: missing system packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "rtvoice: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev >/dev/null
    python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
# webrtc-audio-processing 1.3 (the AEC3 echo canceller), which Debian 12 does not package: built
# once (about two minutes) into /usr/local, where the core's build prefers it to Debian's 0.3.
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/wheels/build-webrtc-apm.sh /usr/local .venv/bin/python
elif ! pkg-config --exists webrtc-audio-processing-1; then
  echo "rtvoice: webrtc-audio-processing 1.x not found; the core falls back to the 0.3 canceller" \
    "(as root: bash scripts/wheels/build-webrtc-apm.sh)" >&2
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install -q "$spec"
