"""Writes the small seed corpora in fuzz/corpus/ that need real data (run from the repo root).

    python fuzz/make_seeds.py

opus_decode: a few real packets (SILK with in-band FEC, CELT, hybrid, stereo, 10 and 60 ms) in
the input format of cpp/fuzz/fuzz_opus_decode.cpp, so fuzzing starts from valid streams.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from rtvoice import OpusEncoder

RATES_HZ = [8000, 12000, 16000, 24000, 48000]


def tone(rate_hz: int, samples: int, channels: int, start: int) -> np.ndarray:
    t = (np.arange(samples) + start) / rate_hz
    x = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1710 * t)
    x = x.astype(np.float32)
    return x if channels == 1 else np.ascontiguousarray(np.stack([x, -x], axis=1))


def opus_seed(
    rate_hz: int, channels: int, application: str, bitrate: int, frame_ms: int, int16: bool
) -> bytes:
    enc = OpusEncoder(rate_hz, channels, application, bitrate, fec=True, packet_loss_perc=20)
    config = RATES_HZ.index(rate_hz) | (0x08 if channels == 2 else 0) | (0x10 if int16 else 0)
    out = bytearray([config])
    samples = rate_hz * frame_ms // 1000
    packets = [enc.encode(tone(rate_hz, samples, channels, i * samples)) for i in range(4)]
    for i, packet in enumerate(packets):
        out += bytes([0]) + struct.pack("<H", len(packet)) + packet  # decode
        if i == 1:  # recover packet 1 from packet 2's FEC, as after a loss
            nxt = packets[2]
            out += bytes([1]) + struct.pack("<H", len(nxt)) + nxt + bytes([frame_ms * 2 // 5])
    out += bytes([2, frame_ms * 2 // 5])  # conceal one frame
    return bytes(out)


def main() -> None:
    corpus = Path("fuzz/corpus/opus_decode")
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = {
        "silk_fec_16k_20ms": opus_seed(16000, 1, "voip", 16000, 20, False),
        "hybrid_48k_20ms_int16": opus_seed(48000, 1, "voip", 32000, 20, True),
        "celt_48k_stereo_10ms": opus_seed(48000, 2, "audio", 96000, 10, False),
        "silk_8k_60ms": opus_seed(8000, 1, "voip", 8000, 60, True),
    }
    for name, data in seeds.items():
        (corpus / name).write_bytes(data)
        print(f"{corpus / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
