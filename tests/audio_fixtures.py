"""Shared test audio: the committed speech fixture, loaded with the stdlib and numpy only.

tests/data/speech_24k.wav is made by scripts/make_speech_fixture.py (espeak-ng, ~6 s of
English, 24 kHz mono int16, digital silence between sentences). Other rates are derived here
with scipy's resample_poly, which is fine for one-shot test material (never for streaming).
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

SPEECH_WAV = Path(__file__).resolve().parent / "data" / "speech_24k.wav"
SPEECH_RATE_HZ = 24000


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Returns (samples, rate_hz) of a 16-bit PCM WAV: shape (n,) mono or (n, channels)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        rate_hz = w.getframerate()
    return (data if channels == 1 else data.reshape(-1, channels)), rate_hz


@functools.cache
def _speech(rate_hz: int, dtype_name: str) -> npt.NDArray[np.generic]:
    pcm, src_rate_hz = read_wav(SPEECH_WAV)
    x = pcm.astype(np.float64) / 32768.0
    if rate_hz != src_rate_hz:
        from scipy.signal import resample_poly

        g = np.gcd(rate_hz, src_rate_hz)
        x = resample_poly(x, rate_hz // g, src_rate_hz // g)
    if dtype_name == "int16":
        out = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    else:
        out = x.astype(np.float32)
    out.flags.writeable = False
    return out


def speech(rate_hz: int = 48000, dtype: type = np.float32) -> npt.NDArray[np.generic]:
    """The speech fixture at rate_hz as a read-only mono array (float32 in [-1, 1) or int16)."""
    return _speech(rate_hz, np.dtype(dtype).name)
