"""Opus encoder/decoder of the native core."""

from __future__ import annotations

import numpy as np
import pytest

from rtvoice import OpusDecoder, OpusEncoder, OpusError


def tone(seconds: float, rate_hz: int = 48000, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (0.3 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_tone_round_trip_after_lookahead() -> None:
    enc = OpusEncoder()
    dec = OpusDecoder()
    x = tone(1.0)
    y = np.concatenate([dec.decode(enc.encode(x[i : i + 960])) for i in range(0, x.size, 960)])
    assert y.shape == x.shape
    assert y.dtype == np.float32

    # The decoded signal lags by about the encoder lookahead; SILK's resamplers shift it by a few
    # samples, so take the best lag within 1 ms of it.
    def snr_at(lag: int) -> float:
        ref, out = x[4800 : x.size - lag], y[4800 + lag :]
        return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - out) ** 2)))

    snr_db = max(snr_at(lag) for lag in range(enc.lookahead - 48, enc.lookahead + 49))
    assert snr_db > 20.0


def test_corrupt_packet_raises_opus_error() -> None:
    with pytest.raises(OpusError) as info:
        OpusDecoder().decode(b"\xff" * 10)
    assert info.value.code == -4
    assert "corrupted stream" in str(info.value)
