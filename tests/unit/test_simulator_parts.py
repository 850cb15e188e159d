"""The simulator's building blocks: impairments, RTP pacing, the energy VAD, session checks."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from rtvoice.simulator.audio import EnergyVad, encode_opus_frames, frame_dbfs, speechlike
from rtvoice.simulator.call import merge_session, session_errors
from rtvoice.simulator.impair import Impairer, Impairment
from rtvoice.simulator.pacer import RtpPacer


@pytest.mark.parametrize(
    "kwargs",
    [{"loss": 1.0}, {"loss": -0.1}, {"jitter_ms": -1}, {"reorder": 1.5}, {"burst_length": -2}],
)
def test_impairment_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Impairment(**kwargs)


def _bursts(lost: list[bool]) -> list[int]:
    runs, n = [], 0
    for x in lost:
        if x:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    if n:
        runs.append(n)
    return runs


@pytest.mark.parametrize(("loss", "burst"), [(0.1, 0.0), (0.1, 3.0), (0.3, 2.0)])
def test_loss_rate_and_mean_burst_length(loss: float, burst: float) -> None:
    imp = Impairer(Impairment(loss=loss, burst_length=burst, seed=11))
    lost = [imp.drop() for _ in range(40000)]
    rate = sum(lost) / len(lost)
    assert abs(rate - loss) < 0.02
    mean_burst = float(np.mean(_bursts(lost)))
    expected = burst if burst > 1 else 1 / (1 - loss)  # Bernoulli runs: geometric mean length
    assert abs(mean_burst - expected) / expected < 0.1
    assert imp.dropped == sum(lost)


def test_impairments_are_seeded() -> None:
    def decisions(seed: int) -> list[tuple[bool, int, bool]]:
        imp = Impairer(Impairment(loss=0.2, burst_length=2, jitter_ms=5, reorder=0.1, seed=seed))
        return [(imp.drop(), imp.delay_ns(), imp.hold_back()) for _ in range(500)]

    assert decisions(5) == decisions(5)
    assert decisions(5) != decisions(6)
    assert Impairer(Impairment()).delay_ns() == 0


def test_jitter_is_half_normal_with_the_given_sigma() -> None:
    imp = Impairer(Impairment(jitter_ms=10, seed=2))
    delays_ms = np.array([imp.delay_ns() for _ in range(20000)]) / 1e6
    assert delays_ms.min() >= 0
    assert abs(float(np.sqrt(np.mean(delays_ms**2))) - 10.0) < 0.3


def _pace(impairment: Impairment, frames: int = 12) -> tuple[RtpPacer, list[tuple[int, int, bool]]]:
    wire: list[tuple[int, int, bool]] = []

    async def main() -> RtpPacer:
        async def send(seq: int, ts: int, payload: bytes, marker: bool) -> None:
            wire.append((seq, ts, marker))

        pacer = RtpPacer(send, impairment)
        pacer.start()
        done = pacer.play([bytes([i]) for i in range(frames)], tag="a")
        assert await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.08)
        await pacer.stop()
        return pacer

    return asyncio.run(main()), wire


def test_pacer_numbers_and_schedules_on_an_absolute_grid() -> None:
    pacer, wire = _pace(Impairment())
    sent = pacer.sent
    assert len(sent) == len(wire) == 12
    assert [p.payload for p in sent] == [bytes([i]) for i in range(12)]
    assert [s for s, _, _ in wire] == [(sent[0].seq + i) & 0xFFFF for i in range(12)]
    assert all(b.timestamp - a.timestamp == 960 for a, b in itertools.pairwise(sent))
    assert all(b.due_ns - a.due_ns == 20_000_000 for a, b in itertools.pairwise(sent))
    assert [m for _, _, m in wire] == [True] + [False] * 11
    assert all(p.sent_ns is not None and p.sent_ns >= p.due_ns for p in sent)


def test_pacer_loss_leaves_sequence_gaps() -> None:
    pacer, wire = _pace(Impairment(loss=0.4, seed=9), frames=30)
    dropped = [p.seq for p in pacer.sent if p.dropped]
    assert dropped
    assert sorted(s for s, _, _ in wire) == sorted(p.seq for p in pacer.sent if not p.dropped)


def test_pacer_reorders_when_asked() -> None:
    pacer, wire = _pace(Impairment(reorder=0.3, seed=4), frames=30)
    seqs = [s for s, _, _ in wire]
    assert sorted(seqs) == sorted(p.seq for p in pacer.sent)
    assert seqs != sorted(seqs)


def test_pacer_clear_discards_queued_frames() -> None:
    async def main() -> tuple[bool, int, int]:
        sent: list[int] = []

        async def send(seq: int, ts: int, payload: bytes, marker: bool) -> None:
            sent.append(seq)

        pacer = RtpPacer(send)
        pacer.start()
        done = pacer.play([b"x"] * 100)
        await asyncio.sleep(0.1)
        discarded = pacer.clear()
        result = await done
        await pacer.stop()
        return result, discarded, len(sent)

    finished, discarded, n_sent = asyncio.run(main())
    assert finished is False
    assert n_sent + discarded == 100
    assert 1 <= n_sent < 100


def test_frame_level_and_vad_timing() -> None:
    silence = np.zeros(960, dtype=np.int16)
    loud = speechlike(0.02 * 25, seed=3)
    assert frame_dbfs(silence) == -120.0
    assert frame_dbfs(loud[:960] * 0 + 16384) == pytest.approx(-6.02, abs=0.01)
    vad = EnergyVad(min_speech_ms=60, silence_duration_ms=200, prefix_padding_ms=100)
    events = []
    frames = [silence] * 10 + [loud[i * 960 : (i + 1) * 960] for i in range(1, 24)] + [silence] * 15
    for i, frame in enumerate(frames):
        ev = vad.feed(frame)
        if ev is not None:
            events.append((i, ev.kind, ev.audio_ms))
    assert [k for _, k, _ in events] == ["start", "stop"]
    (i_start, _, start_ms), (i_stop, _, stop_ms) = events
    assert i_start == 12  # third speech frame (60 ms)
    assert start_ms == 200 - 100  # first speech frame at 200 ms, minus prefix padding
    assert stop_ms == (i_stop + 1) * 20
    assert stop_ms - vad.last_speech_end_ms == 200


def test_opus_framing_pads_the_last_frame() -> None:
    frames = encode_opus_frames(speechlike(0.05))
    assert len(frames) == 3
    assert all(isinstance(f, bytes) and f for f in frames)


@pytest.mark.parametrize(
    ("session", "beta", "code"),
    [
        ({"type": "realtime"}, False, None),
        ({"instructions": "x"}, False, "missing_required_parameter"),
        ({"type": "chat"}, False, "invalid_value"),
        ({"type": "realtime", "voice": "x"}, False, "unknown_parameter"),
        ({"type": "realtime", "audio": {"input": {"vad": 1}}}, False, "unknown_parameter"),
        ({"type": "realtime", "output_modalities": ["text", "audio"]}, False, "invalid_value"),
        ({"voice": "alloy", "modalities": ["text"]}, True, None),
        ({"voice": "alloy", "output_modalities": ["text"]}, True, "unknown_parameter"),
        ("nope", False, "invalid_type"),
    ],
)
def test_session_checks(session: object, beta: bool, code: str | None) -> None:
    problem = session_errors(session, beta=beta)
    assert (problem[0] if problem else None) == code


def test_merge_session_changes_only_present_fields() -> None:
    base = {
        "instructions": "a",
        "audio": {"input": {"format": 1, "turn_detection": {"x": 1}}, "output": {"voice": "marin"}},
    }
    merged = merge_session(
        base,
        {"audio": {"output": {"voice": "cedar"}, "input": {"turn_detection": None}}, "tools": []},
    )
    assert merged["instructions"] == "a"
    assert merged["audio"]["output"]["voice"] == "cedar"
    assert merged["audio"]["input"]["format"] == 1
    assert merged["audio"]["input"]["turn_detection"] is None
    assert merged["tools"] == []
    assert base["audio"]["output"]["voice"] == "marin"  # type: ignore[index]


def test_pacer_keeps_its_grid_when_the_loop_blocks() -> None:
    async def main() -> RtpPacer:
        async def send(seq: int, ts: int, payload: bytes, marker: bool) -> None:
            return None

        pacer = RtpPacer(send)
        pacer.start()
        done = pacer.play([b"x"] * 20)
        await asyncio.sleep(0.05)
        time.sleep(0.07)  # the application blocks the loop for 3.5 frames
        assert await asyncio.wait_for(done, 5)
        await asyncio.sleep(0.03)
        await pacer.stop()
        return pacer

    pacer = asyncio.run(main())
    sent = pacer.sent
    # Deadlines stay on the 20 ms grid: the stall is caught up, not carried forward.
    assert all(b.due_ns - a.due_ns == 20_000_000 for a, b in itertools.pairwise(sent))
    assert len(sent) == 20
    assert all(p.sent_ns is not None for p in sent)
    late = [(p.sent_ns or 0) - p.due_ns for p in sent]
    worst = late.index(max(late))
    assert late[worst] >= 40_000_000  # the packets due during the stall went out late...
    assert late[-1] < late[worst]  # ...then the stream caught up instead of drifting
