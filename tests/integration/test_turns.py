"""Per-turn latency against the simulator on both transports: one utterance gives one
``rtvoice.turn`` whose times are in the order the audio went, whose parts add up, and whose
wait for the server's turn detection covers the simulator's VAD silence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import qoe
from rtvoice.audio.sources import WavSource, write_wav
from rtvoice.qoe import TURN_EVENT
from rtvoice.simulator import Simulator

# The simulator's server VAD waits this long in silence before speech_stopped (its default).
VAD_SILENCE_MS = 500


def voice_like(path: Path, seconds: float = 1.2) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    pcm = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))
    write_wav(path, pcm.astype(np.float32), 16000)


async def one_turn(
    tmp_path: Path, transport: str
) -> tuple[dict[str, Any], Any, tuple[Any, list[qoe.QoePoint]]]:
    clip = tmp_path / "in.wav"
    voice_like(clip)
    async with (
        Simulator() as sim,
        rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key, transport=transport) as session,
    ):
        session.attach_source(WavSource(clip, lead_s=0.3, tail_s=3.0))
        turn: dict[str, Any] | None = None
        async for event in session:
            if event.type == TURN_EVENT:
                turn = dict(event.data)
            if event.type == "response.done":
                break
        if turn is None:  # the reply may finish before the turn is decided
            for _ in range(50):
                if session.metrics.turns:
                    break
                await asyncio.sleep(0.1)
        if transport == "webrtc":  # until the reply's fade-out was classified
            for _ in range(100):
                if session.metrics.jitter_buffer["tail_concealed_samples"]:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.6)  # and a series point after it
        metrics = session.metrics
        call = next(iter(sim.calls.values()))
        series = list(qoe.recorder_of(session).series.points)
    return turn or metrics.turns[0], metrics, (call, series)


def check_turn(turn: dict[str, Any]) -> None:
    assert turn["index"] == 0
    # The audio's own order: speech ends, the server says so, the reply arrives, it plays.
    assert turn["user_end_ns"] < turn["speech_stopped_ns"] < turn["reply_play_ns"]
    # The server cannot decide before it received its VAD silence (less a frame of slack for
    # where in a frame the voice ended).
    assert turn["speech_stopped_ms"] >= VAD_SILENCE_MS - 20
    assert turn["latency_ms"] >= turn["speech_stopped_ms"]
    parts = [turn[k] or 0.0 for k in ("server_ms", "network_ms", "jitter_buffer_ms", "playout_ms")]
    assert sum(parts) == pytest.approx(turn["latency_ms"])
    assert turn["latency_ms"] == pytest.approx(
        turn["speech_stopped_ms"] + turn["after_speech_stopped_ms"]
    )
    assert turn["user_speech_ms"] >= 600.0  # most of the 1.2 s clip was voiced as sent


@pytest.mark.slow
def test_one_utterance_gives_one_measured_turn_over_webrtc(tmp_path: Path) -> None:
    turn, metrics, (call, series) = asyncio.run(one_turn(tmp_path, "webrtc"))
    check_turn(turn)
    assert len(metrics.turns) == 1
    assert metrics.turns[0]["reply_play_ns"] == turn["reply_play_ns"]
    # The reply's packet arrived after the simulator sent the reply's first packet, and waited
    # in the jitter buffer before it played.
    first_sent = min(p.sent_ns for p in call.pacer.sent if p.sent_ns)
    assert first_sent <= turn["reply_arrival_ns"] <= turn["reply_play_ns"]
    assert turn["jitter_buffer_ms"] is not None
    assert 0.0 < turn["jitter_buffer_ms"] <= 200.0
    # The RTT when the turn ended, if RTCP had measured one by then (else its share is in the
    # server's part).
    if turn["network_ms"] is not None:
        assert turn["network_ms"] == pytest.approx(metrics.rtt_ms, abs=5.0)
    # The end of the reply was a fade-out, not concealment, in the counters and in the series.
    assert metrics.jitter_buffer["tail_concealed_samples"] > 0
    assert metrics.jitter_buffer["concealed_samples"] == 0
    assert sum(p.tail_concealed_ms for p in series) > 0
    assert all(p.concealed_ms == 0 for p in series)


@pytest.mark.slow
def test_one_utterance_gives_one_measured_turn_over_websocket(tmp_path: Path) -> None:
    turn, metrics, _ = asyncio.run(one_turn(tmp_path, "websocket"))
    check_turn(turn)
    assert len(metrics.turns) == 1
    # PCM deltas carry no arrival time: the prebuffer's share is in the server's part.
    assert turn["jitter_buffer_ms"] is None
    assert turn["reply_arrival_ns"] is None
