"""JitterBuffer: sequencing, late/duplicate handling, FEC, concealment, DTX and delay adaptation.

Everything runs on virtual time: packets are inserted with the arrival time the test chooses and
pulled every 20 ms of the same clock. The L16 codec (big-endian PCM16) makes decoded samples equal
the sent samples, so the order of played frames can be read back from constant-valued frames.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rtvoice

MS = 1_000_000  # ns
RATE = 16000
FRAME = RATE // 50  # 20 ms
OPUS_RATE = 48000
OPUS_FRAME = OPUS_RATE // 50


def l16(samples: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).round().astype(">i2").tobytes()


STEP = 0.005  # level spacing of dc_frame()


def dc_frame(k: int) -> bytes:
    """Frame k is the constant (k + 1) * STEP: stretching keeps constants, so levels show order."""
    return l16(np.full(FRAME, (k + 1) * STEP, dtype=np.float32))


def levels(pcm: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Frame number of each sample of dc_frame() audio; -1 for silence, -2 for values between
    levels (the cross-fade ramps of time stretching)."""
    scaled = pcm / STEP
    level = np.round(scaled).astype(np.int64)
    return np.where(np.abs(scaled - level) <= 0.1, level - 1, -2)


def frame_id(pcm: npt.NDArray[np.float32], min_run: int = 64) -> list[int]:
    """Frame numbers of dc_frame() audio in a pulled frame, in order. Values held for fewer than
    min_run samples are cross-fade ramps of time stretching, not frames."""
    values = levels(pcm)
    ids: list[int] = []
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            v = int(values[start])
            # A run cut by the frame edge is a frame continuing across pulls, unless it is only a
            # few samples long: then it is a ramp (e.g. a fade in from silence) passing a level.
            edge = (i == len(values) or start == 0) and i - start >= 8
            whole = i - start >= min_run or edge
            if v >= 0 and whole and (not ids or ids[-1] != v):
                ids.append(v)
            start = i
    return ids


def voiced(seconds: float, rate: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Speech-like test signal: a gliding 90-220 Hz harmonic voice in syllables with pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 150 + 60 * np.sin(2 * np.pi * 0.37 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.1 * t) * 1.5 + 0.6, 0, 1)
    return (0.25 * harmonics * envelope).astype(np.float32)


def opus_packets(
    signal: npt.NDArray[np.float32], *, dtx: bool = False, loss_perc: int = 20
) -> list[bytes]:
    enc = rtvoice.OpusEncoder(
        OPUS_RATE, 1, bitrate=32000, fec=True, packet_loss_perc=loss_perc, dtx=dtx
    )
    n = len(signal) // OPUS_FRAME
    return [enc.encode(signal[i * OPUS_FRAME : (i + 1) * OPUS_FRAME]) for i in range(n)]


class Player:
    """Drives a JitterBuffer: packet k is sent at k * 20 ms and arrives when the test says."""

    def __init__(self, jb: rtvoice.JitterBuffer, frame: int, *, seq0: int = 0, ts0: int = 0):
        self.jb = jb
        self.frame = frame
        self.seq0 = seq0
        self.ts0 = ts0
        self.pending: list[tuple[int, int, bytes]] = []  # (arrival_ns, k, payload)
        self.now_ns = 0
        self.actions: list[str] = []
        self.results: dict[int, str] = {}
        self.out: list[npt.NDArray[np.float32]] = []
        self.delays: list[float] = []
        self.targets: list[float] = []

    def send(self, k: int, payload: bytes, arrival_ns: int) -> None:
        self.pending.append((arrival_ns, k, payload))
        self.pending.sort(key=lambda p: p[0])

    def _deliver(self, until_ns: int) -> None:
        while self.pending and self.pending[0][0] <= until_ns:
            arrival, k, payload = self.pending.pop(0)
            seq = (self.seq0 + k) & 0xFFFF
            ts = (self.ts0 + k * self.frame) & 0xFFFFFFFF
            self.results[k] = self.jb.insert(seq, ts, payload, arrival)

    def run(self, pulls: int, phase_ns: int = 3 * MS) -> None:
        for _ in range(pulls):
            t = self.now_ns + phase_ns
            self._deliver(t)
            pcm, action = self.jb.pull(t)
            assert pcm.shape == (self.jb.frame_samples,)
            self.actions.append(action)
            self.out.append(pcm)
            stats = self.jb.stats
            self.delays.append(stats.current_delay_ms)
            self.targets.append(stats.target_delay_ms)
            self.now_ns += 20 * MS

    def concealed_before(self, last_id: int) -> int:
        """Concealing pulls before frame last_id played (the stream's end is concealed too)."""
        for i, pcm in enumerate(self.out):
            if last_id in frame_id(pcm):
                return self.actions[:i].count("conceal")
        raise AssertionError(f"frame {last_id} never played")

    def played_ids(self) -> list[int]:
        """Frame numbers in the order they first played (a stretch cross-fade may briefly
        revisit the previous frame's value, so later reappearances are not new frames)."""
        ids: list[int] = []
        for pcm in self.out:
            for i in frame_id(pcm):
                if i not in ids:
                    ids.append(i)
        return ids

    def longest_play(self) -> float:
        """Most samples any one frame value was played for, in frames."""
        values = levels(np.concatenate(self.out))
        counts = np.bincount(values[values >= 0])
        return float(counts.max()) / FRAME if len(counts) else 0.0


def l16_buffer(**kwargs: object) -> rtvoice.JitterBuffer:
    return rtvoice.JitterBuffer(RATE, codec="l16", **kwargs)  # type: ignore[arg-type]


def fixed_buffer(**kwargs: object) -> rtvoice.JitterBuffer:
    """A fixed 60 ms target: no time stretching, so every frame plays whole (for order tests)."""
    return l16_buffer(min_delay_ms=60, max_delay_ms=60, start_delay_ms=60, **kwargs)


def send_all(p: Player, frames: Iterable[int], delay_ms: float = 5.0) -> None:
    for k in frames:
        p.send(k, dc_frame(k), int((k * 20 + delay_ms) * MS))


# ---------------------------------------------------------------- construction and validation


def test_defaults_and_repr() -> None:
    jb = rtvoice.JitterBuffer()
    assert jb.sample_rate == 48000
    assert jb.channels == 1
    assert jb.codec == "opus"
    assert jb.frame_samples == 960
    assert jb.min_delay_ms <= jb.target_delay_ms <= jb.max_delay_ms
    assert "JitterBuffer(" in repr(jb)
    assert isinstance(jb.stats, rtvoice.JitterBufferStats)
    assert jb.stats.as_dict()["packets_received"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "pcmu"},
        {"sample_rate": 44100},
        {"channels": 3},
        {"min_delay_ms": 100, "max_delay_ms": 50},
        {"start_delay_ms": 5000},
        {"capacity_packets": 1},
        {"max_payload_bytes": 0},
        {"frame_ms": 15},
    ],
)
def test_bad_construction_raises_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - message varies per argument
        rtvoice.JitterBuffer(**kwargs)  # type: ignore[arg-type]


def test_insert_validates_arguments() -> None:
    jb = l16_buffer()
    with pytest.raises(ValueError, match="seq"):
        jb.insert(65536, 0, dc_frame(0), 0)
    with pytest.raises(ValueError, match="seq"):
        jb.insert(-1, 0, dc_frame(0), 0)
    with pytest.raises(ValueError, match="timestamp"):
        jb.insert(0, 2**32, dc_frame(0), 0)
    with pytest.raises(TypeError, match="payload"):
        jb.insert(0, 0, np.zeros(4, np.int16), 0)
    with pytest.raises(TypeError):
        jb.insert(0, 0, "text", 0)  # type: ignore[arg-type]
    assert jb.stats.packets_received == 0


def test_oversized_empty_and_malformed_payloads_are_counted() -> None:
    jb = rtvoice.JitterBuffer(max_payload_bytes=200)
    assert jb.insert(0, 0, bytes(201), 0) == "oversized"
    assert jb.insert(1, 960, b"", 0) == "invalid"
    # Opus code-3 packet claiming 0 frames is malformed.
    assert jb.insert(2, 1920, bytes([0x03, 0x00, 0x00]), 0) == "invalid"
    s = jb.stats
    assert s.packets_oversized == 1
    assert s.packets_invalid == 2
    assert s.packets_received == 0
    pcm, action = jb.pull(0)
    assert action == "silence"
    assert not pcm.any()


def test_pull_into_matches_pull_and_validates() -> None:
    a, b = l16_buffer(), l16_buffer()
    pa, pb = Player(a, FRAME), Player(b, FRAME)
    send_all(pa, range(20))
    send_all(pb, range(20))
    out = np.empty(FRAME, np.float32)
    for _ in range(25):
        t = pa.now_ns + 3 * MS
        pa._deliver(t)
        pb._deliver(t)
        pcm, action = a.pull(t)
        assert b.pull_into(out, t) == action
        np.testing.assert_array_equal(out, pcm)
        pa.now_ns += 20 * MS
    with pytest.raises(ValueError, match="frame_samples"):
        b.pull_into(np.empty(FRAME - 1, np.float32), 0)
    with pytest.raises(TypeError):
        b.pull_into(np.empty(FRAME, np.float64), 0)
    with pytest.raises(ValueError, match="contiguous"):
        b.pull_into(np.empty(2 * FRAME, np.float32)[::2], 0)


def test_stereo_frames_have_two_channels() -> None:
    jb = rtvoice.JitterBuffer(48000, 2)
    pcm, _ = jb.pull(0)
    assert pcm.shape == (960, 2)
    assert pcm.dtype == np.float32


# ---------------------------------------------------------------- sequencing


def test_playout_timestamp_follows_the_played_media() -> None:
    jb = fixed_buffer()
    assert jb.stats.playout_timestamp is None
    p = Player(jb, FRAME, ts0=2**32 - 10 * FRAME)
    send_all(p, range(40))
    stamps = []
    for _ in range(30):
        p.run(1)
        stamps.append(jb.stats.playout_timestamp)
    played = [s for s in stamps if s is not None]
    assert len(played) >= 25
    # One frame of media per pull, wrapping at 2**32, and the played frame matches the stamp.
    assert all((b - a) % 2**32 == FRAME for a, b in itertools.pairwise(played))
    first = frame_id(p.out[-1])[0]
    assert played[-1] == (2**32 - 10 * FRAME + first * FRAME) % 2**32


def test_in_order_stream_plays_every_frame_once_in_order() -> None:
    p = Player(fixed_buffer(), FRAME)
    send_all(p, range(100))
    p.run(110)
    assert p.played_ids() == list(range(100))
    s = p.jb.stats
    assert s.packets_received == 100
    assert s.packets_lost == 0
    assert s.packets_late == 0


@pytest.mark.parametrize(
    ("seq0", "ts0"),
    [
        (65530, 2**32 - 5 * FRAME),  # a packet has timestamp exactly 0 after 2**32 - FRAME
        (65535, 2**32 - 5 * FRAME - 1),  # a packet has timestamp exactly 2**32 - 1
        (65534, 0),
    ],
)
def test_sequence_and_timestamp_wrap_at_exact_boundaries(seq0: int, ts0: int) -> None:
    p = Player(fixed_buffer(), FRAME, seq0=seq0, ts0=ts0)
    send_all(p, range(30))
    p.run(40)
    seqs = [(seq0 + k) & 0xFFFF for k in range(30)]
    stamps = [(ts0 + k * FRAME) & 0xFFFFFFFF for k in range(30)]
    assert 0 in seqs
    assert 65535 in seqs
    assert any(b < a for a, b in itertools.pairwise(stamps)) or ts0 == 0
    assert p.played_ids() == list(range(30))
    s = p.jb.stats
    assert (s.packets_lost, s.packets_late, s.stream_resets) == (0, 0, 0)
    assert p.concealed_before(29) == 0


def test_reordered_packets_play_in_order() -> None:
    p = Player(fixed_buffer(), FRAME)
    for k in range(60):
        # Every pair swaps: odd packets arrive 12 ms before their predecessor.
        delay = 25.0 if k % 2 == 0 else 1.0
        p.send(k, dc_frame(k), int((k * 20 + delay) * MS))
    p.run(70)
    assert p.played_ids() == list(range(60))
    assert p.longest_play() < 1.8
    assert p.jb.stats.packets_late == 0
    assert p.concealed_before(59) == 0


def test_duplicates_are_dropped_and_counted() -> None:
    p = Player(fixed_buffer(), FRAME)
    for k in range(40):
        p.send(k, dc_frame(k), int((k * 20 + 5) * MS))
        p.send(k, dc_frame(k), int((k * 20 + 9) * MS))
    p.run(50)
    assert p.played_ids() == list(range(40))
    assert p.longest_play() < 1.8  # no frame played twice
    assert p.jb.stats.packets_duplicated == 40
    assert p.jb.stats.packets_received == 80
    assert p.jb.stats.packets_lost == 0


def test_duplicate_after_playout_counts_as_duplicate_not_late() -> None:
    jb = l16_buffer()
    p = Player(jb, FRAME)
    send_all(p, range(20))
    p.run(15)
    assert jb.insert(2, 2 * FRAME, dc_frame(2), p.now_ns) == "duplicate"


def test_late_packet_is_dropped_counted_and_concealed() -> None:
    p = Player(fixed_buffer(), FRAME)
    for k in range(80):
        # Packet 40 arrives 400 ms late: far beyond what the buffer may wait.
        extra = 400.0 if k == 40 else 0.0
        p.send(k, dc_frame(k), int((k * 20 + 5 + extra) * MS))
    p.run(90)
    s = p.jb.stats
    assert p.results[40] == "late"
    assert s.packets_late == 1
    assert s.concealment_events >= 1
    assert "conceal" in p.actions
    ids = p.played_ids()
    assert 40 not in ids
    assert ids == sorted(ids)
    assert set(range(80)) - set(ids) == {40}


def test_large_sequence_jump_restarts_the_stream() -> None:
    jb = l16_buffer()
    p = Player(jb, FRAME)
    send_all(p, range(20))
    p.run(25)
    # A new stream: sequence numbers and timestamps from elsewhere.
    t0 = p.now_ns
    for k in range(30):
        jb.insert(
            (30000 + k) & 0xFFFF,
            (123456789 + k * FRAME) & 0xFFFFFFFF,
            dc_frame(100 + k),
            t0 + k * 20 * MS,
        )
        jb.pull(t0 + k * 20 * MS + 3 * MS)
    assert jb.stats.stream_resets == 1
    assert jb.stats.packets_late == 0
    pcm, action = jb.pull(t0 + 30 * 20 * MS + 3 * MS)
    assert action in {"normal", "accelerate", "expand"}
    assert frame_id(pcm)[0] >= 100


def test_flush_drops_buffered_audio_and_keeps_old_packets_late() -> None:
    jb = l16_buffer()
    p = Player(jb, FRAME)
    send_all(p, range(10))
    p.run(6)
    p._deliver(10**15)
    jb.flush()
    pcm, action = jb.pull(p.now_ns + 3 * MS)
    assert action == "silence"
    assert not pcm.any()
    assert jb.insert(9, 9 * FRAME, dc_frame(9), p.now_ns) in {"late", "duplicate"}
    assert jb.insert(8, 8 * FRAME, dc_frame(8), p.now_ns) in {"late", "duplicate"}
    assert jb.stats.buffered_packets == 0


# ---------------------------------------------------------------- FEC, concealment, DTX


@pytest.fixture(scope="module")
def speech_packets() -> list[bytes]:
    return opus_packets(voiced(6.0, OPUS_RATE))


def voiced_index_with_fec(packets: Sequence[bytes], start: int) -> int:
    for k in range(start, len(packets) - 3):
        if all(rtvoice.OpusDecoder.packet_has_fec(packets[j]) for j in range(k, k + 3)):
            return k
    raise AssertionError("no run of packets with FEC in the test signal")


def test_fec_used_exactly_when_next_packet_is_buffered(speech_packets: list[bytes]) -> None:
    n = voiced_index_with_fec(speech_packets, 60)
    p = Player(rtvoice.JitterBuffer(), OPUS_FRAME)
    for k, pkt in enumerate(speech_packets):
        if k != n:
            p.send(k, pkt, int((k * 20 + 2) * MS))
    p.run(len(speech_packets))
    s = p.jb.stats
    assert s.fec_recovered_frames == 1
    assert s.fec_recovered_samples == OPUS_FRAME
    assert s.packets_lost == 1
    assert p.actions.count("fec") == 1
    assert "conceal" not in p.actions[: n + 5]


def test_no_fec_when_next_packet_is_not_yet_there(speech_packets: list[bytes]) -> None:
    n = voiced_index_with_fec(speech_packets, 60)
    p = Player(rtvoice.JitterBuffer(), OPUS_FRAME)
    for k, pkt in enumerate(speech_packets):
        if k == n:
            continue
        # The packet after the lost one comes 150 ms late: when n is due, nothing is buffered.
        extra = 150 if k >= n + 1 else 0
        p.send(k, pkt, int((k * 20 + 2 + extra) * MS))
    p.run(len(speech_packets))
    s = p.jb.stats
    assert s.fec_recovered_frames == 0
    assert "fec" not in p.actions
    assert s.concealment_events >= 1
    assert s.packets_late == 0  # the late packets were waited for


def test_fec_disabled_conceals(speech_packets: list[bytes]) -> None:
    n = voiced_index_with_fec(speech_packets, 60)
    p = Player(rtvoice.JitterBuffer(fec=False), OPUS_FRAME)
    for k, pkt in enumerate(speech_packets):
        if k != n:
            p.send(k, pkt, int((k * 20 + 2) * MS))
    p.run(len(speech_packets))
    assert p.jb.stats.fec_recovered_frames == 0
    assert p.jb.stats.concealed_samples >= OPUS_FRAME


def test_burst_loss_conceals_then_recovers_last_frame(speech_packets: list[bytes]) -> None:
    n = voiced_index_with_fec(speech_packets, 80)
    burst = range(n, n + 5)
    # A 60 ms floor keeps the packet after the burst buffered when the last lost frame is due.
    p = Player(rtvoice.JitterBuffer(min_delay_ms=60), OPUS_FRAME)
    for k, pkt in enumerate(speech_packets):
        if k not in burst:
            p.send(k, pkt, int((k * 20 + 2) * MS))
    p.run(len(speech_packets))
    s = p.jb.stats
    assert s.packets_lost == 5
    assert s.concealment_events == 1
    has_fec = rtvoice.OpusDecoder.packet_has_fec(speech_packets[n + 5])
    assert s.fec_recovered_frames == (1 if has_fec else 0)
    assert s.concealed_samples == (5 - s.fec_recovered_frames) * OPUS_FRAME
    # Playback continues normally after the burst.
    first = p.actions.index("conceal")
    assert all(a in {"normal", "accelerate", "expand"} for a in p.actions[first + 8 : first + 40])
    # Concealment is not silence: the PLC continues the voice.
    conceal_frames = [o for o, a in zip(p.out, p.actions, strict=True) if a == "conceal"]
    assert np.abs(conceal_frames[0]).max() > 0.01


def test_dtx_payloads_are_comfort_noise_not_loss() -> None:
    signal = voiced(4.0, OPUS_RATE)
    signal[int(1.2 * OPUS_RATE) : int(3.0 * OPUS_RATE)] = 0.0
    packets = opus_packets(signal, dtx=True)
    dtx = [k for k, pkt in enumerate(packets) if len(pkt) <= 2]
    assert len(dtx) > 30
    p = Player(rtvoice.JitterBuffer(), OPUS_FRAME)
    for k, pkt in enumerate(packets):
        p.send(k, pkt, int((k * 20 + 2) * MS))
    p.run(len(packets))
    s = p.jb.stats
    assert s.comfort_noise_samples >= 30 * OPUS_FRAME
    assert s.concealed_samples == 0
    assert s.concealment_events == 0
    assert s.packets_lost == 0
    assert p.actions.count("comfort_noise") >= 30


def test_silent_sender_after_dtx_is_comfort_noise() -> None:
    # L16: the sender sends one DTX payload and then nothing for a second.
    p = Player(fixed_buffer(), FRAME)
    send_all(p, range(20))
    p.send(20, b"\x00", int((20 * 20 + 5) * MS))
    send_all(p, range(70, 100))
    p.run(105)
    s = p.jb.stats
    assert p.concealed_before(99) == 0
    assert s.comfort_noise_samples >= 45 * FRAME
    assert p.played_ids()[-30:] == list(range(70, 100))


# ---------------------------------------------------------------- delay adaptation


def steady_arrivals(
    p: Player,
    frames: range,
    payloads: Sequence[bytes],
    seed: int,
    jitter_ms: float = 2.0,
    stall: tuple[int, int] | None = None,
    ppm: float = 0.0,
) -> None:
    rng = np.random.default_rng(seed)
    for k in frames:
        sent = k * 20 * (1 + ppm * 1e-6)
        arrival = sent + 10 + abs(rng.normal(0, jitter_ms))
        if stall and stall[0] <= arrival < stall[0] + stall[1]:
            arrival = stall[0] + stall[1] + 0.01 * k
        p.send(k, payloads[k], int(arrival * MS))


def test_clean_link_settles_near_the_minimum() -> None:
    signal = voiced(8.0, RATE)
    payloads = [l16(signal[i * FRAME : (i + 1) * FRAME]) for i in range(len(signal) // FRAME)]
    p = Player(l16_buffer(), FRAME)
    steady_arrivals(p, range(len(payloads)), payloads, seed=1, jitter_ms=0.3)
    p.run(len(payloads) - 10)  # stop before the stream ends
    steady = np.array(p.delays[150:390])
    assert steady.mean() <= 40.0
    assert p.jb.stats.concealed_samples == 0


def test_converges_back_to_target_within_2s_after_a_300ms_stall() -> None:
    signal = voiced(10.0, RATE)
    payloads = [l16(signal[i * FRAME : (i + 1) * FRAME]) for i in range(len(signal) // FRAME)]
    p = Player(l16_buffer(), FRAME)
    stall_at_ms = 4000
    steady_arrivals(p, range(len(payloads)), payloads, seed=2, stall=(stall_at_ms, 300))
    p.run(len(payloads))
    delays = np.array(p.delays)
    targets = np.array(p.targets)
    error = delays - targets
    assert np.abs(error[150:195]).max() < 12
    stall_end = (stall_at_ms + 300) // 20
    assert error[stall_end - 2 : stall_end + 3].max() > 200  # the stall was held
    back = error[stall_end + 100 : -30]  # from 2 s after the stall to the end of the stream
    assert np.abs(back).max() < 12
    assert targets[-30] < 60  # a lone stall does not set the target
    s = p.jb.stats
    assert s.packets_late == 0  # the held audio was played, not dropped
    assert s.accelerated_samples >= 0.2 * RATE  # ... and caught up by time stretching


@pytest.mark.parametrize("ppm", [100.0, -100.0])
def test_sender_clock_drift_causes_no_permanent_growth(ppm: float) -> None:
    seconds = 120
    signal = voiced(seconds, RATE, seed=3)
    payloads = [l16(signal[i * FRAME : (i + 1) * FRAME]) for i in range(len(signal) // FRAME)]
    p = Player(l16_buffer(), FRAME)
    steady_arrivals(p, range(len(payloads)), payloads, seed=3, jitter_ms=0.5, ppm=ppm)
    p.run(len(payloads) - 10)  # stop before the stream ends
    target = p.jb.stats.target_delay_ms
    late = np.array(p.delays[-500:])
    assert np.abs(late - target).max() < 12  # drifted 12 ms over the run, still on target
    assert p.jb.stats.concealed_samples == 0
    # The target follows the drifting pull grid within one frame; the delay never runs away.
    assert late.max() <= 45.0
    assert np.nanmax(np.array(p.delays[250:])) <= 45.0


def test_target_delay_grows_with_jitter_and_stays_within_bounds() -> None:
    signal = voiced(12.0, RATE)
    payloads = [l16(signal[i * FRAME : (i + 1) * FRAME]) for i in range(len(signal) // FRAME)]
    calm = Player(l16_buffer(), FRAME)
    steady_arrivals(calm, range(len(payloads)), payloads, seed=4, jitter_ms=0.5)
    calm.run(len(payloads))
    rough = Player(l16_buffer(max_delay_ms=150), FRAME)
    steady_arrivals(rough, range(len(payloads)), payloads, seed=4, jitter_ms=40.0)
    rough.run(len(payloads))
    assert calm.jb.stats.target_delay_ms < 40
    assert 60 <= rough.jb.stats.target_delay_ms <= 150
    # With the higher target only a small share of frames arrive too late.
    assert rough.jb.stats.packets_late <= 0.05 * len(payloads)


def test_time_stretching_keeps_the_signal_continuous() -> None:
    # A pure tone played through a stall and the catch-up: no sample jump much larger than the
    # tone's own slope (a dropped or inserted frame would leave a step).
    t = np.arange(12 * RATE) / RATE
    tone = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    payloads = [l16(tone[i * FRAME : (i + 1) * FRAME]) for i in range(len(tone) // FRAME)]
    p = Player(l16_buffer(), FRAME)
    steady_arrivals(p, range(len(payloads)), payloads, seed=5, jitter_ms=0.5)
    # Push the delay up by starting late, so the buffer has to accelerate back.
    p.run(len(payloads) - 10)
    played = np.concatenate(p.out[20:])
    max_slope = 0.5 * 2 * np.pi * 200 / RATE
    assert p.jb.stats.accelerated_samples + p.jb.stats.expanded_samples > 0
    assert np.abs(np.diff(played)).max() < 3 * max_slope


# ---------------------------------------------------------------- property tests

packet_strategy = st.tuples(
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.binary(min_size=0, max_size=300),
    st.integers(-50 * MS, 200 * MS),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packets=st.lists(packet_strategy, max_size=120), codec=st.sampled_from(["opus", "l16"]))
def test_garbage_streams_never_crash(
    packets: list[tuple[int, int, bytes, int]], codec: str
) -> None:
    jb = rtvoice.JitterBuffer(RATE, codec=codec, capacity_packets=16, max_payload_bytes=256)
    now = 0
    for i, (seq, ts, payload, dt) in enumerate(packets):
        result = jb.insert(seq, ts, payload, now + dt)
        assert result in {"buffered", "duplicate", "late", "invalid", "oversized"}
        if i % 2:
            pcm, _ = jb.pull(now)
            assert pcm.shape == (FRAME,)
            assert np.isfinite(pcm).all()
            now += 20 * MS
        assert jb.stats.buffered_packets <= 16
    s = jb.stats
    assert s.samples_played == FRAME * (len(packets) // 2)
    assert s.packets_received + s.packets_invalid + s.packets_oversized == len(packets)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.5),
    jitter_ms=st.floats(0, 120),
    reorder=st.floats(0, 0.3),
    dup=st.floats(0, 0.2),
)
def test_random_impaired_streams_keep_exact_frames_and_counts(
    seed: int, loss: float, jitter_ms: float, reorder: float, dup: float
) -> None:
    rng = np.random.default_rng(seed)
    p = Player(
        l16_buffer(capacity_packets=32),
        FRAME,
        seq0=int(rng.integers(0, 65536)),
        ts0=int(rng.integers(0, 2**32)),
    )
    n = 150
    sent = 0
    for k in range(n):
        if rng.random() < loss:
            continue
        arrival = k * 20 + abs(rng.normal(0, jitter_ms)) + (40 if rng.random() < reorder else 0)
        p.send(k, dc_frame(k), int(arrival * MS))
        sent += 1
        if rng.random() < dup:
            p.send(k, dc_frame(k), int((arrival + rng.uniform(0, 60)) * MS))
            sent += 1
    p.run(n + 40)
    s = p.jb.stats
    assert all(o.shape == (FRAME,) for o in p.out)
    assert s.samples_played == FRAME * (n + 40)
    assert s.packets_received == sent
    assert s.buffered_packets <= 32
    ids = p.played_ids()
    assert ids == sorted(ids)  # never played out of order
    assert p.longest_play() < 1.8  # never played twice


def test_a_talkspurts_fade_out_is_not_counted_as_concealment() -> None:
    jb = l16_buffer()
    p = Player(jb, FRAME)
    for k in range(50):
        p.send(k, dc_frame(k % 20), k * 20 * MS + 5 * MS)
    p.run(50 + 100)  # the stream stops after frame 49 and the buffer runs dry
    stats = jb.stats
    assert "conceal" in p.actions  # the fade-out was played as concealment ...
    assert stats.tail_concealed_samples > 0  # ... and reported as the talkspurt's tail
    assert stats.concealed_samples == 0
    assert stats.concealment_events == 0


def test_concealment_while_dry_counts_once_the_stream_goes_on() -> None:
    jb = l16_buffer()
    p = Player(jb, FRAME)
    for k in range(60):
        if k in (30, 31, 32):
            continue  # lost: nothing buffered while they are due
        p.send(k, dc_frame(k % 20), k * 20 * MS + 5 * MS)
    p.run(40)
    assert jb.stats.concealed_samples > 0  # confirmed when frame 33 showed up
    assert jb.stats.concealment_events == 1
    assert jb.stats.tail_concealed_samples == 0
