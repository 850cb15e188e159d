"""The native counters behind per-turn latency and the QoE series, on virtual clocks: the
uplink's voice activity and send intervals on what it sent, the downlink's voice onsets on what
it played, and a jitter-buffer delay that does not jump at the end of a talkspurt."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import rtvoice
from rtvoice import qoe

MS = 1_000_000
RATE = 48000
FRAME = 960


def tone(
    frames: int, amplitude: float, hz: float = 300.0, start: int = 0
) -> npt.NDArray[np.float32]:
    n = np.arange(start, start + frames)
    return (amplitude * np.sin(2 * np.pi * hz * n / RATE)).astype(np.float32)


def test_uplink_times_the_last_voiced_frame_it_sent() -> None:
    up = rtvoice.Uplink(RATE, 1, "opus")
    # 0.5 s of silence, 1 s of speech-level tone, 0.5 s of silence, all queued at once.
    up.push(np.zeros(RATE // 2, np.float32))
    up.push(tone(RATE, 0.2))
    up.push(np.zeros(RATE // 2, np.float32))
    t0 = 1_000 * MS
    sent_at = []
    for k in range(100):
        now = t0 + k * 20 * MS + 1 * MS
        if up.pop_due(now) is not None:
            sent_at.append(now)
    s = up.stats
    assert s["voiced_frames"] == 50
    # Frame 74 (0-based) is the last one holding the tone: it left at its due time.
    assert s["last_voiced_ns"] == sent_at[74]
    assert s["sent_samples"] == 100 * FRAME
    level = qoe._level_dbfs(s["sent_energy"], s["sent_samples"])
    assert level == pytest.approx(20 * np.log10(0.2 / np.sqrt(2)) + 10 * np.log10(0.5), abs=0.2)


def test_uplink_send_intervals_count_a_late_send() -> None:
    up = rtvoice.Uplink(RATE, 1, "opus")
    now = 0
    for k in range(30):
        now += 45 * MS if k == 20 else 20 * MS
        up.pop_due(now)
    s = up.stats
    assert s["send_intervals"] == s["packets"] - 1
    assert s["send_intervals_over_30ms"] == 1
    mean = s["send_interval_sum_ms"] / s["send_intervals"]
    assert 20.0 < mean < 22.0


def opus_packets(pcm: npt.NDArray[np.float32]) -> list[bytes]:
    enc = rtvoice.OpusEncoder(RATE, 1)
    return [enc.encode(pcm[i : i + FRAME]) for i in range(0, pcm.size - FRAME + 1, FRAME)]


def play(
    down: rtvoice.Downlink, packets: list[bytes], arrivals_ns: list[int], pulls: int, t0: int
) -> npt.NDArray[np.float32]:
    out = []
    sent = 0
    for k in range(pulls):
        now = t0 + k * 20 * MS
        while sent < len(packets) and arrivals_ns[sent] <= now:
            down.push_rtp(sent, sent * FRAME, packets[sent], arrivals_ns[sent])
            sent += 1
        out.append(down.pull(FRAME, now))
    return np.concatenate(out)


def test_downlink_onset_is_the_first_audible_sample_played_with_its_packet_times() -> None:
    # 0.4 s of silence, then 1 s of tone: one talkspurt whose audible part starts 400 ms in.
    pcm = np.concatenate([np.zeros(int(0.4 * RATE), np.float32), tone(RATE, 0.3)])
    packets = opus_packets(pcm)
    t0 = 10_000 * MS
    arrivals = [t0 + k * 20 * MS + 2 * MS for k in range(len(packets))]
    down = rtvoice.Downlink(RATE, 1, "opus")
    out = play(down, packets, arrivals, 120, t0)
    s = down.stats
    assert s["voice_onsets"] == 1
    [o] = s["onsets"]
    # The played output itself says where the tone starts.
    loud = np.flatnonzero(np.abs(out) > 0.02)[0]
    assert o["play_ns"] == pytest.approx(t0 + loud * 1e9 / RATE, abs=5.5 * MS)
    # It came in packet 20 (the tone starts 400 ms in), which waited in the buffer until its
    # scheduled play time: at most the 60 ms start delay plus a frame.
    assert arrivals.index(o["arrival_ns"]) == 20
    assert 0 < o["jb_ns"] - o["arrival_ns"] <= 80 * MS
    assert o["play_ns"] - o["jb_ns"] < 20 * MS
    assert o["block_play_ns"] == o["jb_ns"]  # 48 kHz: no resampler between buffer and output
    assert s["last_voiced_ns"] > o["play_ns"]


def test_downlink_counts_an_onset_per_talkspurt_after_a_pause() -> None:
    burst = tone(int(0.3 * RATE), 0.3)
    pause = np.zeros(int(0.5 * RATE), np.float32)
    short_pause = np.zeros(int(0.1 * RATE), np.float32)
    pcm = np.concatenate([pause, burst, short_pause, burst, pause, burst, pause])
    packets = opus_packets(pcm)
    t0 = 0
    arrivals = [t0 + k * 20 * MS + 1 * MS for k in range(len(packets))]
    down = rtvoice.Downlink(RATE, 1, "opus")
    play(down, packets, arrivals, len(packets) + 10, t0)
    s = down.stats
    # The 100 ms pause is within a talkspurt; the 500 ms one starts a new onset (1.2 s of
    # media later, less what time stretching took out while the delay came down).
    assert s["voice_onsets"] == 2
    assert [o["index"] for o in s["onsets"]] == [0, 1]
    assert s["onsets"][1]["play_ns"] - s["onsets"][0]["play_ns"] == pytest.approx(
        (0.3 + 0.1 + 0.3 + 0.5) * 1e9, abs=60 * MS
    )


def test_pcm_downlink_onsets_have_no_arrival_time() -> None:
    down = rtvoice.Downlink(RATE, 1, "pcm16")
    pcm = np.concatenate(
        [np.zeros(4800, np.int16), (tone(24000, 0.3)[::2] * 32767).astype(np.int16)]
    )
    down.push_pcm(pcm)
    for k in range(40):
        down.pull(FRAME, k * 20 * MS)
    [o] = down.stats["onsets"]
    assert o["arrival_ns"] == 0
    assert o["play_ns"] == pytest.approx(200 * MS, abs=6 * MS)


def test_end_of_a_talkspurt_is_no_delay_jump_and_no_concealment() -> None:
    pcm = tone(2 * RATE, 0.3)
    packets = opus_packets(pcm)
    t0 = 0
    arrivals = [t0 + k * 20 * MS + 1 * MS for k in range(len(packets))]
    down = rtvoice.Downlink(RATE, 1, "opus")
    delays: list[float] = []
    sent = 0
    for k in range(len(packets) + 60):  # 1.2 s after the last packet
        now = t0 + k * 20 * MS
        while sent < len(packets) and arrivals[sent] <= now:
            down.push_rtp(sent, sent * FRAME, packets[sent], arrivals[sent])
            sent += 1
        down.pull(FRAME, now)
        jb = down.stats["jitter"]
        if jb.current_delay_ms:
            delays.append(jb.current_delay_ms)
    jb = down.stats["jitter"]
    steady = delays[len(packets) // 2 : len(packets) - 5]
    tail = delays[len(packets) - 5 :]  # the last packets, then the hold until the buffer idles
    assert len(tail) > 20
    assert max(tail) - min(steady) < 5.0  # the hold at the end shows no growing delay
    assert jb.concealed_samples == 0
    assert jb.concealment_events == 0
    assert jb.tail_concealed_samples > 0  # the fade-out is there, and named as such
