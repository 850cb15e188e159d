#!/usr/bin/env bash
# Regenerates the demo's bundled microphone clip (python/rtvoice/data/hello.wav) with espeak-ng.
set -euo pipefail
cd "$(dirname "$0")/.."
text="Hello! Could you tell me what the weather is like in Paris today?"
espeak-ng -v en-us -s 150 -w python/rtvoice/data/hello.wav "$text"
echo "wrote python/rtvoice/data/hello.wav"
