"""AudioRing throughput: a 20 ms frame written and read back, and bulk copies.

Run: python -m pytest benchmarks/test_bench_ring.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest

from rtvoice import AudioRing


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_ring_write_read_20ms(benchmark, dtype: type) -> None:  # type: ignore[no-untyped-def]
    ring = AudioRing(4096, dtype=dtype)
    frame = np.ones(960, dtype)
    out = np.empty(960, dtype)

    def step() -> int:
        ring.write(frame)
        return ring.read_into(out)

    assert benchmark(step) == 960


def test_ring_bulk_samples_per_second(benchmark) -> None:  # type: ignore[no-untyped-def]
    n = 1 << 18
    ring = AudioRing(1 << 19)
    data = np.ones(n, np.float32)
    out = np.empty(n, np.float32)

    def step() -> int:
        ring.write(data)
        return ring.read_into(out)

    assert benchmark(step) == n
    samples_per_s = 2 * n / benchmark.stats.stats.mean
    benchmark.extra_info["copied_samples_per_s"] = samples_per_s
    print(f"\nbulk ring copy: {samples_per_s / 1e9:.2f} G samples/s (write + read)")
