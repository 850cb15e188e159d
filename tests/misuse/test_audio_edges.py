"""The app-facing audio edges: bad arrays and rates raise at the call, a raising sink never stops
playout, and recording is bounded and counts what it drops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import rtvoice
from rtvoice.audio.engine import SINK_FAILURES_REPORTED, AudioEngine, AudioInput, AudioOptions


def _input() -> AudioInput:
    return AudioInput(rtvoice.Uplink(48000))


def test_a_channels_first_array_is_refused_naming_the_layout() -> None:
    with pytest.raises(ValueError, match=r"\(frames, channels\)"):
        _input().push(np.zeros((2, 4800), np.float32), 48000)


def test_a_bool_sample_rate_is_a_type_error_and_numpy_integers_are_accepted() -> None:
    inp = _input()
    with pytest.raises(TypeError):
        inp.push(np.zeros(480, np.float32), True)
    assert inp.push(np.zeros(480, np.float32), np.int64(48000)) == 480


@pytest.mark.parametrize("rate", [8, 7999, 192001])
def test_rates_outside_the_sane_range_are_refused(rate: int) -> None:
    with pytest.raises(ValueError, match="8000"):
        _input().push(np.zeros(4800, np.float32), rate)


def test_a_rate_the_native_resampler_lacks_is_refused_naming_the_supported_rates() -> None:
    with pytest.raises(ValueError, match="22050, 24000, 32000, 44100, 48000"):
        _input().push(np.zeros(1102, np.float32), 11025)


def test_other_rates_are_resampled_once_to_the_uplink_rate() -> None:
    inp = _input()
    queued = sum(inp.push(np.zeros(320, np.int16), 16000) for _ in range(10))
    assert queued == 9600  # 200 ms of 16 kHz audio is 200 ms at 48 kHz
    stereo = np.zeros((480, 2), np.float32)
    assert inp.push(stereo, 24000) == 960


@pytest.mark.parametrize("rate", [7, 44101])
def test_an_unplayable_output_rate_is_refused_at_construction(rate: int) -> None:
    with pytest.raises(ValueError, match="output_rate_hz"):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-x", output_rate_hz=rate)


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_zero_or_negative_timeouts_are_refused_at_construction(value: float) -> None:
    with pytest.raises(ValueError, match="http_timeout_s"):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-x", http_timeout_s=value)


def test_ice_servers_given_as_a_string_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="RTCIceServer"):
        rtvoice.connect(
            base_url="http://127.0.0.1:9/v1",
            api_key="sk-x",
            ice_servers="stun:stun.example.org",  # type: ignore[arg-type]
        )


def test_a_zero_stats_interval_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="stats_interval_s"):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-x", stats_interval_s=0)


def _wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_a_raising_sink_is_counted_and_reported_and_playout_goes_on() -> None:
    reports: list[int] = []
    calls = [0]

    def sink(pcm: np.ndarray) -> None:
        calls[0] += 1
        raise RuntimeError("broken sink")

    engine = AudioEngine(
        "opus",
        AudioOptions(record_output_s=5.0),
        sink=sink,
        on_sink_failing=lambda count, exc: reports.append(count),
    )
    engine.start_playout()
    try:
        _wait_for(lambda: engine.sink_errors >= SINK_FAILURES_REPORTED + 5)
        ticks = engine.driver.ticks if engine.driver else 0
        _wait_for(lambda: engine.driver is not None and engine.driver.ticks > ticks + 5)
        assert engine.sink_errors >= SINK_FAILURES_REPORTED + 5
        assert engine.driver is not None
        assert engine.driver.ticks > ticks + 5
        assert engine.pump is not None
        assert engine.pump.thread.is_alive()
        assert reports == [SINK_FAILURES_REPORTED]  # reported once per run of failures
        # The recording goes on too.
        assert engine.read_recording().size > 0
    finally:
        engine.stop_playout()
    assert not any(t.name == "rtvoice-playout-pump" for t in threading.enumerate())


def test_recording_is_bounded_and_counts_what_it_dropped() -> None:
    engine = AudioEngine("opus", AudioOptions(record_output_s=0.25))
    engine.start_playout()
    try:
        # The playout clock plays (silence) from the start: 0.25 s fill the ring (16384 frames).
        _wait_for(lambda: engine.record_dropped_samples > 0)
        assert engine.record_dropped_samples > 0
    finally:
        engine.stop_playout()
    kept = engine.read_recording()
    assert 0 < kept.size <= 16384


def test_recording_off_keeps_nothing_and_starts_no_pump() -> None:
    engine = AudioEngine("opus", AudioOptions(record_output_s=0))
    engine.start_playout()
    try:
        assert engine.pump is None
        assert engine.read_recording().size == 0
    finally:
        engine.stop_playout()


@pytest.mark.skipif(not rtvoice._core.native_audio_streams, reason="POSIX only")
def test_native_audio_stream_arguments_are_checked_before_portaudio_is_touched() -> None:
    from rtvoice import _core

    up = rtvoice.Uplink(48000)
    down = rtvoice.Downlink(48000)
    lib = "libportaudio.so.2"
    with pytest.raises(ValueError, match="kind must be"):
        _core.NativeAudioStream(lib, "duplex", 0, 48000, 960, 0.02, up)
    with pytest.raises(ValueError, match="device index"):
        _core.NativeAudioStream(lib, "input", -1, 48000, 960, 0.02, up)
    with pytest.raises(ValueError, match="rate_hz"):
        _core.NativeAudioStream(lib, "output", 0, 1000, 960, 0.02, down)
    with pytest.raises(ValueError, match="block_frames"):
        _core.NativeAudioStream(lib, "output", 0, 48000, 0, 0.02, down)
    with pytest.raises(ValueError, match="latency_s"):
        _core.NativeAudioStream(lib, "output", 0, 48000, 960, float("nan"), down)
    with pytest.raises(TypeError):  # an input stream feeds an Uplink, not a Downlink
        _core.NativeAudioStream(lib, "input", 0, 48000, 960, 0.02, down)
    with pytest.raises(RuntimeError, match="cannot load PortAudio"):
        _core.NativeAudioStream("/nonexistent/libportaudio.so", "output", 0, 48000, 960, 0.02, down)
