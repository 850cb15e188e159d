"""Resampler cost per 20 ms mono chunk, through Python.

Run: python -m pytest benchmarks/test_bench_resampler.py --benchmark-only
The native cost without Python, and the comparison with soxr and PyAV, are in
benchmarks/compare_resamplers.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtvoice import Resampler

PAIRS = [
    (24000, 48000),
    (48000, 24000),
    (16000, 48000),
    (48000, 16000),
    (44100, 48000),
    (48000, 44100),
    (8000, 48000),
    (48000, 8000),
]


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_resample_20ms(benchmark, in_rate: int, out_rate: int) -> None:  # type: ignore[no-untyped-def]
    r = Resampler(in_rate, out_rate)
    chunk = (np.random.default_rng(0).standard_normal(in_rate // 50) * 0.1).astype(np.float32)
    out = benchmark(r.process, chunk)
    assert len(out) == out_rate // 50


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 48000), (48000, 24000)])
def test_resample_into_20ms(benchmark, in_rate: int, out_rate: int) -> None:  # type: ignore[no-untyped-def]
    """process_into() skips the output allocation."""
    r = Resampler(in_rate, out_rate)
    chunk = (np.random.default_rng(0).standard_normal(in_rate // 50) * 0.1).astype(np.float32)
    out = np.empty(out_rate // 50, np.float32)
    assert benchmark(r.process_into, chunk, out) == out_rate // 50


def test_resample_int16_24k_to_48k(benchmark) -> None:  # type: ignore[no-untyped-def]
    r = Resampler(24000, 48000, dtype=np.int16)
    chunk = np.random.default_rng(0).integers(-3000, 3000, 480).astype(np.int16)
    assert len(benchmark(r.process, chunk)) == 960
