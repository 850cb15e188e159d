"""AudioRing: the lock-free SPSC ring at the boundary between audio threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtvoice import AudioRing


def test_write_read_in_order() -> None:
    ring = AudioRing(16)
    data = np.arange(10, dtype=np.float32)
    assert ring.write(data) == 10
    assert ring.available == 10
    assert ring.free == 6
    np.testing.assert_array_equal(ring.read(4), data[:4])
    np.testing.assert_array_equal(ring.read(6), data[4:])
    assert ring.available == 0
    assert ring.frames_written == 10
    assert ring.frames_read == 10


def test_wrap_around_many_times() -> None:
    ring = AudioRing(8)
    expected = 0
    written = 0
    for step in range(200):
        n = 1 + step % 7
        chunk = np.arange(written, written + n, dtype=np.float32)
        assert ring.write(chunk) == n
        written += n
        got = ring.read(n)
        np.testing.assert_array_equal(got, np.arange(expected, expected + n, dtype=np.float32))
        expected += n
    assert ring.frames_written == written
    assert ring.overruns == 0
    assert ring.underruns == 0


def test_full_ring_drops_excess_and_counts_overrun() -> None:
    ring = AudioRing(8)
    assert ring.write(np.ones(5, np.float32)) == 5
    assert ring.write(np.full(6, 2, np.float32)) == 3
    assert ring.free == 0
    assert ring.overruns == 1
    assert ring.overrun_frames == 3
    np.testing.assert_array_equal(ring.read(8), [1, 1, 1, 1, 1, 2, 2, 2])
    assert ring.write(np.ones(1, np.float32)) == 1
    assert ring.overruns == 1


def test_empty_ring_short_read_counts_underrun() -> None:
    ring = AudioRing(8)
    assert ring.read(4).shape == (0,)
    assert ring.underruns == 1
    assert ring.underrun_frames == 4
    ring.write(np.ones(3, np.float32))
    out = np.zeros(5, np.float32)
    assert ring.read_into(out) == 3
    np.testing.assert_array_equal(out, [1, 1, 1, 0, 0])
    assert ring.underruns == 2
    assert ring.underrun_frames == 6
    assert ring.read(0).shape == (0,)
    assert ring.underruns == 2


def test_int16_multichannel_layout() -> None:
    ring = AudioRing(16, channels=2, dtype=np.int16)
    assert ring.dtype == np.int16
    frames = np.arange(20, dtype=np.int16).reshape(10, 2)
    assert ring.write(frames) == 10
    got = ring.read(10)
    assert got.dtype == np.int16
    assert got.shape == (10, 2)
    np.testing.assert_array_equal(got, frames)


def test_discard() -> None:
    ring = AudioRing(8)
    ring.write(np.arange(6, dtype=np.float32))
    assert ring.discard(4) == 4
    assert ring.discard(10) == 2
    assert ring.available == 0


@pytest.mark.parametrize("capacity", [0, 1, 3, 6, 1000])
def test_capacity_must_be_power_of_two(capacity: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        AudioRing(capacity)


def test_rejects_bad_arrays() -> None:
    ring = AudioRing(16, channels=2)
    with pytest.raises(TypeError, match="dtype"):
        ring.write(np.zeros((4, 2), np.float64))
    with pytest.raises(ValueError, match="channels"):
        ring.write(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="1-D but 2 channels"):
        ring.write(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ring.write(np.zeros((2, 8), np.float32).T)
    with pytest.raises(ValueError, match="dimensions"):
        ring.write(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        AudioRing(8, dtype=np.float64)
    with pytest.raises(ValueError, match="channels"):
        AudioRing(8, channels=0)
    out = np.zeros((4, 2), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ring.read_into(out)
    assert ring.available == 0


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
    reads=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=60),
)
def test_single_thread_model(writes: list[int], reads: list[int]) -> None:
    """Interleaved writes and reads match a simple queue model, counters included."""
    ring = AudioRing(256)
    model: list[float] = []
    counter = 0
    overrun_frames = underrun_frames = 0
    for i in range(max(len(writes), len(reads))):
        if i < len(writes):
            n = writes[i]
            chunk = np.arange(counter, counter + n, dtype=np.float32)
            counter += n
            fits = min(n, 256 - len(model))
            assert ring.write(chunk) == fits
            model.extend(chunk[:fits].tolist())
            overrun_frames += n - fits
        if i < len(reads):
            n = reads[i]
            got = ring.read(n)
            take = min(n, len(model))
            assert got.tolist() == model[:take]
            del model[:take]
            underrun_frames += n - take
    assert ring.available == len(model)
    assert ring.overrun_frames == overrun_frames
    assert ring.underrun_frames == underrun_frames


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_two_thread_stress_every_sample_once_in_order(seed: int) -> None:
    """A producer and a consumer thread with random chunk sizes: nothing lost, duplicated or
    reordered (the producer retries what did not fit, so no overrun drops data)."""
    rng = np.random.default_rng(seed)
    total = 60_000
    ring = AudioRing(1024, channels=2, dtype=np.int16)
    source = (np.arange(total * 2, dtype=np.int64) % 32749).astype(np.int16).reshape(total, 2)
    write_sizes = rng.integers(1, 700, size=total).tolist()
    read_sizes = rng.integers(1, 700, size=total).tolist()
    received = np.zeros_like(source)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            pos = 0
            i = 0
            while pos < total:
                n = min(write_sizes[i % len(write_sizes)], total - pos)
                i += 1
                pos += ring.write(source[pos : pos + n])
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    def consume() -> None:
        try:
            pos = 0
            i = 0
            while pos < total:
                n = min(read_sizes[i % len(read_sizes)], total - pos)
                i += 1
                got = ring.read(n)
                received[pos : pos + len(got)] = got
                pos += len(got)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "stress threads did not finish"
    assert not errors
    np.testing.assert_array_equal(received, source)
    assert ring.frames_written == ring.frames_read == total


def test_concurrent_producers_are_refused_not_corrupting() -> None:
    """Two threads writing at once break the SPSC contract: once they collide, one of them gets
    a RuntimeError instead of corrupting the indices."""
    ring = AudioRing(1 << 18)
    big = np.zeros(1 << 16, np.float32)
    collisions: list[str] = []
    stop = threading.Event()
    deadline = time.monotonic() + 30

    def hammer() -> None:
        while time.monotonic() < deadline:
            if stop.is_set():
                return
            try:
                ring.write(big)
            except RuntimeError as exc:
                collisions.append(str(exc))
                stop.set()

    def drain() -> None:
        while not stop.is_set():
            ring.discard(1 << 18)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    consumer = threading.Thread(target=drain)
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    consumer.join(timeout=10)
    assert collisions
    assert "two threads" in collisions[0]
    assert ring.frames_read <= ring.frames_written
