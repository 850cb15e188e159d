from __future__ import annotations

import numpy as np
import pytest

import rtvoice
from rtvoice import OpusEncoder
from rtvoice.audio.engine import FRAME_SAMPLES, Downlink, FecJitterBuffer, Uplink


class Clock:
    def __init__(self) -> None:
        self.now_ns = 1_000_000_000

    def __call__(self) -> int:
        return self.now_ns


def _tone(n: int, rate: int = 48000, hz: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.float32)


def test_uplink_releases_packets_on_the_sample_clock() -> None:
    clock = Clock()
    up = Uplink(clock_ns=clock)
    up.push(_tone(FRAME_SAMPLES * 3), 48000)
    first = up.pop_packet()
    assert first is not None
    assert first[1:] == (0, 0)
    assert up.pop_packet() is None  # the next one is due 20 ms later
    clock.now_ns += 20_000_000
    second = up.pop_packet()
    assert second is not None
    assert second[1:] == (960, 1)
    # A stalled network thread catches up: all due packets come out back to back.
    clock.now_ns += 60_000_000
    assert [p[2] for p in iter(up.pop_packet, None)] == [2, 3, 4]
    assert up.stats.frames_from_input == 3
    assert up.stats.silent_frames == 2


def test_uplink_resamples_any_rate_and_rejects_bad_input() -> None:
    up = Uplink(clock_ns=Clock())
    queued = up.push(_tone(16000, 16000), 16000)
    assert 48000 - 1500 < queued <= 48000  # a streaming resampler holds back its filter delay
    with pytest.raises(ValueError, match="sample_rate"):
        up.push(_tone(10), 0)
    with pytest.raises(TypeError, match="float32 or int16"):
        up.push(np.zeros(10, dtype=np.int32), 16000)
    with pytest.raises(TypeError, match="float32 or int16"):
        up.push(np.zeros(10, dtype=np.float64), 16000)
    with pytest.raises(TypeError, match="numpy array"):
        up.push([0.0, 0.1], 16000)
    with pytest.raises(ValueError, match="shape"):
        up.push(np.zeros((2, 2, 2), dtype=np.float32), 16000)
    # int16 and (frames, channels) are accepted: stereo is averaged to mono.
    assert up.push(np.zeros((1600, 2), dtype=np.int16), 16000) >= 0


def _packets(n: int) -> list[bytes]:
    enc = OpusEncoder(48000, 1, fec=True, packet_loss_perc=20)
    tone = _tone(FRAME_SAMPLES * n)
    return [enc.encode(tone[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)]


def test_jitter_buffer_uses_fec_when_the_next_packet_is_there_else_conceals() -> None:
    packets = _packets(30)
    jb = FecJitterBuffer(target_frames=3)
    outs = []
    for seq, payload in enumerate(packets):  # one packet arrives per 20 ms pull
        now_ns = seq * 20_000_000
        if seq not in (10, 20, 21):
            jb.insert(seq, seq * 960, payload, now_ns)
        outs.append(jb.pull(now_ns))
    assert all(o.size == FRAME_SAMPLES for o in outs)
    assert jb.stats.fec_recovered == 2  # 10 from 11, 21 from 22
    assert jb.stats.concealed_frames == 1  # 20: its successor 21 is lost too
    assert jb.stats.concealment_events == 1
    st = jb.stats
    # Every pull is accounted for: prefill silence, decoded, FEC-recovered or concealed.
    assert st.silent_frames + st.frames_decoded + st.fec_recovered + st.concealed_frames == 30
    assert st.frames_decoded == 25


def _silence_packets(n: int) -> list[bytes]:
    enc = OpusEncoder(48000, 1)
    return [enc.encode(np.zeros(FRAME_SAMPLES, dtype=np.float32)) for _ in range(n)]


def test_jitter_buffer_drains_a_quiet_burst_back_to_its_target() -> None:
    jb = FecJitterBuffer(target_frames=3)
    for seq, payload in enumerate(_silence_packets(20)):
        jb.insert(seq, seq * 960, payload, 0)
    jb.pull(0)
    assert jb.buffered_frames <= jb.target_frames + jb.excess_frames
    assert jb.stats.frames_dropped > 0


def test_jitter_buffer_keeps_speech_unless_the_backlog_is_far_too_long() -> None:
    jb = FecJitterBuffer(target_frames=3)
    for seq, payload in enumerate(_packets(30)):
        jb.insert(seq, seq * 960, payload, 0)
    jb.pull(0)
    # Speech is skipped only down to target + max_excess; then every frame is played.
    assert jb.buffered_frames == jb.target_frames + jb.max_excess_frames
    dropped = jb.stats.frames_dropped
    jb.pull(0)
    assert jb.stats.frames_dropped == dropped


# The native JitterBuffer is used whenever the build has it; the simple one always exists.
KINDS = ["simple"] + (["native"] if hasattr(rtvoice._core, "JitterBuffer") else [])


@pytest.mark.parametrize("kind", KINDS)
def test_downlink_pull_returns_exactly_n_samples_at_the_output_rate(kind: str) -> None:
    dl = Downlink(16000, target_delay_ms=40, jitter_buffer=kind)
    native = "NativeDownlink" if hasattr(rtvoice._core, "Downlink") else "NativeJitterBuffer"
    expected = native if kind == "native" else "FecJitterBuffer"
    assert dl.jitter_buffer_kind == expected
    for seq, payload in enumerate(_packets(10)):
        dl.push_rtp(seq, seq * 960, payload, 0)
    sizes = {dl.pull(n, 0).size for n in (1, 160, 333, 320)}
    assert sizes == {1, 160, 333, 320}
    dl.request_flush()
    dl.pull(160, 0)
    assert dl.stats.flushes == 1


def test_end_of_a_talkspurt_is_not_counted_as_concealment() -> None:
    jb = FecJitterBuffer(target_frames=2, idle_frames=3)
    for seq, payload in enumerate(_packets(10)):
        jb.insert(seq, seq * 960, payload, seq * 20_000_000)
    for k in range(20):
        jb.pull(k * 20_000_000)
    assert jb.stats.frames_decoded == 10
    assert jb.stats.concealed_frames == 0
    assert jb.stats.concealment_events == 0


def test_a_gap_inside_a_talkspurt_is_counted_as_concealment() -> None:
    packets = _packets(12)
    jb = FecJitterBuffer(target_frames=1, idle_frames=5)
    now = 0
    for seq in range(12):
        if seq in (5, 6):  # a burst with nothing buffered behind it when it is played
            jb.pull(now)
            now += 20_000_000
            continue
        jb.insert(seq, seq * 960, packets[seq], now)
        jb.pull(now)
        now += 20_000_000
    assert jb.stats.concealed_frames >= 1
    assert jb.stats.concealment_events == 1


@pytest.mark.parametrize("kind", KINDS)
def test_downlink_reports_a_talkspurt_end_as_silence_not_concealment(kind: str) -> None:
    dl = Downlink(48000, target_delay_ms=40, jitter_buffer=kind)
    now = 0
    for seq, payload in enumerate(_packets(50)):
        dl.push_rtp(seq, seq * 960, payload, now)
        dl.pull(960, now)
        now += 20_000_000
    assert dl.stats.playing
    for _ in range(100):  # two seconds with nothing sent
        dl.pull(960, now)
        now += 20_000_000
    st = dl.stats
    assert not st.playing
    assert st.concealed_frames == 0
    assert st.concealment_events == 0
