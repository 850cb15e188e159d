"""Framer: arbitrary chunks in, exact frames out, each with its first sample's stream index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtvoice import Framer


@pytest.mark.parametrize(
    ("rate", "frame_ms", "expected"),
    [(48000, 20, 960), (44100, 20, 882), (24000, 20, 480), (16000, 10, 160), (8000, 60, 480)],
)
def test_frame_samples(rate: int, frame_ms: int, expected: int) -> None:
    assert Framer(rate, frame_ms).frame_samples == expected


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    channels=st.sampled_from([1, 2]),
    dtype=st.sampled_from([np.float32, np.int16]),
)
def test_any_chunking_gives_exact_contiguous_frames(
    sizes: list[int], channels: int, dtype: type
) -> None:
    framer = Framer(48000, 20, channels=channels, dtype=dtype)
    total = sum(sizes)
    signal = (np.arange(total * channels) % 30011).astype(dtype)
    if channels > 1:
        signal = signal.reshape(total, channels)
    frames_out = []
    starts_out = []
    pos = 0
    for n in sizes:
        frames, starts = framer.push(signal[pos : pos + n])
        pos += n
        assert frames.dtype == dtype
        assert frames.shape[1] == 960
        frames_out.append(frames)
        starts_out.append(starts)
    frames_all = np.concatenate(frames_out)
    starts_all = np.concatenate(starts_out)
    count = total // 960
    assert len(frames_all) == count
    np.testing.assert_array_equal(starts_all, np.arange(count, dtype=np.uint64) * 960)
    for k in range(count):
        np.testing.assert_array_equal(frames_all[k], signal[k * 960 : (k + 1) * 960])
    assert framer.pending == total - count * 960
    assert framer.next_index == count * 960


def test_flush_pads_with_zeros_and_reset_restarts_index() -> None:
    framer = Framer(16000, 20)
    frames, starts = framer.push(np.ones(500, np.float32))
    assert frames.shape == (1, 320)
    assert starts.tolist() == [0]
    frames, starts = framer.flush()
    assert frames.shape == (1, 320)
    assert starts.tolist() == [320]
    np.testing.assert_array_equal(frames[0, :180], 1.0)
    np.testing.assert_array_equal(frames[0, 180:], 0.0)
    assert framer.flush()[0].shape == (0, 320)
    framer.push(np.ones(100, np.float32))
    framer.reset(start_index=123456)
    assert framer.pending == 0
    _, starts = framer.push(np.ones(320, np.float32))
    assert starts.tolist() == [123456]


def test_multichannel_shape() -> None:
    framer = Framer(48000, 10, channels=2, dtype=np.int16)
    frames, _ = framer.push(np.zeros((1000, 2), np.int16))
    assert frames.shape == (2, 480, 2)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        Framer(44100, 1)
    with pytest.raises(ValueError, match="sample_rate"):
        Framer(0)
    with pytest.raises(ValueError, match="frame_ms"):
        Framer(48000, 0)
    with pytest.raises(ValueError, match="channels"):
        Framer(48000, 20, channels=0)
    with pytest.raises(TypeError, match="dtype"):
        Framer(48000, dtype=np.float64)
    framer = Framer(48000)
    with pytest.raises(TypeError, match="dtype"):
        framer.push(np.zeros(960, np.int16))
    with pytest.raises(ValueError, match="C-contiguous"):
        framer.push(np.zeros(1920, np.float32)[::2])
    with pytest.raises(ValueError, match="channels"):
        framer.push(np.zeros((960, 2), np.float32))
    assert framer.pending == 0
