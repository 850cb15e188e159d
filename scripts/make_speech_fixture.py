"""Writes tests/data/speech_24k.wav: a few seconds of synthetic speech for the codec tests.

espeak-ng speaks a fixed text at its native 22050 Hz; the result is resampled to 24 kHz with
scipy, peak-normalised to -3 dBFS and stored as mono int16. The fixture is committed, so this
only needs to run again to change it:  python scripts/make_speech_fixture.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Please call Stella and ask her to bring these things. "
)
OUT_RATE_HZ = 24000
MAX_SECONDS = 6.0
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech_24k.wav"


def synthesize(text: str) -> tuple[np.ndarray, int]:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "175", "-p", "45", "-w", str(path), text],
            check=True,
        )
        with wave.open(str(path)) as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                sys.exit("unexpected espeak-ng output format")
            rate_hz = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float64) / 32768.0, rate_hz


def main() -> None:
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    x, rate_hz = synthesize(TEXT)
    g = np.gcd(OUT_RATE_HZ, rate_hz)
    y = resample_poly(x, OUT_RATE_HZ // g, rate_hz // g)
    if y.size > MAX_SECONDS * OUT_RATE_HZ:
        sys.exit(f"speech is {y.size / OUT_RATE_HZ:.2f} s, over {MAX_SECONDS} s: shorten TEXT")
    y *= 10 ** (-3 / 20) / np.max(np.abs(y))
    pcm = np.round(y * 32767).astype("<i2")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(OUT_RATE_HZ)
        w.writeframes(pcm.tobytes())
    seconds = pcm.size / OUT_RATE_HZ
    print(f"{out_path}: {seconds:.2f} s at {OUT_RATE_HZ} Hz, {out_path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
