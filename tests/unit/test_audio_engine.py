"""The audio engine's native buffers are sized for realtime: a session's defaults hold seconds of
audio, not tens of seconds, and what does not fit is dropped and counted. The sizes are checked
twice: as the engine reports them (``buffer_bytes``) and as the native rings take audio."""

from __future__ import annotations

import numpy as np
import pytest

import rtvoice
from rtvoice import errors
from rtvoice.audio.engine import (
    DOWNLINK_QUEUE_PACKETS,
    RECORD_OUTPUT_S,
    AudioEngine,
    AudioOptions,
    recording_s,
)

MIB = 1 << 20
# A default WebRTC session's native buffers in all (it was 3.0 MiB with 5 s input, a 5 s
# recording on by default and a 512-packet queue).
WEBRTC_BUDGET_BYTES = 1.25 * MIB
# WebSocket adds the PCM16 ring for a reply that arrives faster than real time (1 MiB).
WEBSOCKET_BUDGET_BYTES = 1.75 * MIB


def _accepted_by_uplink(engine: AudioEngine, seconds: float) -> int:
    rate = engine.uplink.input_rate
    return int(engine.uplink.push(np.zeros(int(seconds * rate), np.float32)))


def test_default_webrtc_engine_buffers_hold_seconds_not_tens_of_seconds() -> None:
    engine = AudioEngine("opus", AudioOptions())
    sizes = engine.buffer_bytes()
    assert sum(sizes.values()) <= WEBRTC_BUDGET_BYTES, sizes
    assert sizes["record_ring"] == 0  # recording is opt-in
    assert sizes["pcm_ring"] == 0
    assert sizes["packet_queue"] == DOWNLINK_QUEUE_PACKETS * 1500
    # The input ring as the Uplink takes audio: 60 s offered, at most 3 s queued, the rest
    # dropped and counted.
    accepted = _accepted_by_uplink(engine, 60.0)
    assert accepted * 4 == sizes["input_ring"]
    assert accepted <= 3 * 48000
    stats = engine.uplink.stats
    assert stats["frames_dropped"] == 60 * 48000 - accepted


def test_default_webrtc_downlink_queue_takes_a_burst_the_jitter_buffer_can_hold() -> None:
    engine = AudioEngine("opus", AudioOptions())
    payload = bytes(80)
    taken = sum(
        bool(engine.downlink.push_rtp(seq, seq * 960, payload, seq * 20_000_000))
        for seq in range(600)
    )
    assert taken == DOWNLINK_QUEUE_PACKETS <= 128  # 2.56 s of 20 ms packets, not 10 s
    assert engine.downlink.stats["packets_dropped_queue_full"] == 600 - taken


def test_default_websocket_engine_buffers_are_bounded_and_the_pcm_ring_counts_its_bound() -> None:
    engine = AudioEngine("pcm16", AudioOptions())
    sizes = engine.buffer_bytes()
    assert sum(sizes.values()) <= WEBSOCKET_BUDGET_BYTES, sizes
    assert sizes["packet_queue"] == 2
    assert sizes["jitter_buffer"] == 0
    accepted = _accepted_by_uplink(engine, 60.0)
    assert accepted * 4 == sizes["input_ring"]
    assert accepted <= 3 * 24000
    # The PCM16 ring holds a reply's lead over playout: about 20 s at 24 kHz, no more.
    taken = int(engine.downlink.push_pcm(np.zeros(60 * 24000, np.int16)))
    assert taken * 2 == sizes["pcm_ring"]
    assert taken <= 22 * 24000


def test_without_sink_or_recording_no_pump_runs_and_the_unread_playout_ring_is_two_frames() -> None:
    engine = AudioEngine("opus", AudioOptions())
    assert engine.buffer_bytes()["playout_ring"] == 2048 * 4
    engine.start_playout()
    try:
        assert engine.pump is None
    finally:
        engine.stop_playout()


def test_a_recording_is_bounded_by_its_seconds() -> None:
    engine = AudioEngine("opus", AudioOptions(record_output_s=RECORD_OUTPUT_S))
    sizes = engine.buffer_bytes()
    assert 5 * 48000 * 4 <= sizes["record_ring"] <= 6 * 48000 * 4
    assert sizes["playout_ring"] == 32768 * 4  # the pump's 500 ms


@pytest.mark.parametrize(
    ("record_output", "record_output_s", "expected"),
    [
        (None, None, 0.0),  # the default: off
        (True, None, RECORD_OUTPUT_S),
        (None, 30.0, 30.0),  # a bound turns it on
        (True, 12.0, 12.0),
        (None, 0.0, 0.0),
        (False, None, 0.0),
        (False, 0.0, 0.0),
    ],
)
def test_recording_is_off_unless_asked_for(
    record_output: bool | None, record_output_s: float | None, expected: float
) -> None:
    assert recording_s(record_output, record_output_s) == expected


def test_contradictory_recording_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        recording_s(False, 5.0)
    with pytest.raises(TypeError, match="record_output must be a bool"):
        recording_s(1, None)  # type: ignore[arg-type]


def test_a_default_session_queues_at_most_seconds_of_input_and_does_not_record() -> None:
    session = rtvoice.connect(base_url="http://127.0.0.1:9", api_key="sk-test-1234567890")
    accepted = int(session.uplink.push(np.zeros(60 * 48000, np.float32)))
    assert accepted <= 3 * 48000
    with pytest.raises(errors.ConfigurationError, match="record_output=True"):
        session.read_audio()
    recording = rtvoice.connect(
        base_url="http://127.0.0.1:9", api_key="sk-test-1234567890", record_output=True
    )
    assert recording.read_audio().size == 0
