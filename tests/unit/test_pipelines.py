"""Uplink and Downlink pipelines, and the native drivers that clock them without devices."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import numpy.typing as npt
import pytest
from audio_fixtures import speech

import rtvoice
from rtvoice import CaptureDriver, Downlink, PlayoutDriver, Uplink

FRAME_NS = 20_000_000


def encode_all(up: Uplink) -> list[tuple[bytes, int, int]]:
    packets = []
    while (p := up.pop_packet()) is not None:
        packets.append(p)
    return packets


def best_lag(reference: npt.NDArray[np.float32], played: npt.NDArray[np.float32]) -> int:
    """Lag (samples) at which `played` best matches `reference`, by FFT cross-correlation."""
    n = len(reference) + len(played)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(played, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(corr[: len(played)]))


def segment_correlations(
    reference: npt.NDArray[np.float32], played: npt.NDArray[np.float32], rate: int
) -> list[float]:
    """Correlation of each quarter second of `reference` with `played`, each segment aligned on
    its own: the jitter buffer time-stretches, so one global lag does not fit the whole clip.
    Segments that are mostly pause (RMS under -30 dBFS) are left out."""
    seg = rate // 4
    out = []
    for start in range(0, len(reference) - seg + 1, seg):
        ref = reference[start : start + seg]
        if np.sqrt(np.mean(ref.astype(np.float64) ** 2)) < 10 ** (-30 / 20):
            continue
        window = played[start : start + seg + int(0.3 * rate)]
        lag = best_lag(ref, window)
        out.append(float(np.corrcoef(ref, window[lag : lag + seg])[0, 1]))
    return out


def snr_db(reference: npt.NDArray[np.float32], test: npt.NDArray[np.float32]) -> float:
    noise = test - reference
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(noise**2), 1e-20)))


# ---------------------------------------------------------------------------------- Uplink


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_uplink_timestamps_from_sample_count(rate: int) -> None:
    up = Uplink(rate)
    one_second = np.zeros(rate, np.float32)
    assert up.push(one_second) == rate
    packets = encode_all(up)
    assert len(packets) == 50
    assert [ts for _, ts, _ in packets] == [960 * k for k in range(50)]
    assert [seq for _, _, seq in packets] == list(range(50))
    assert up.stats["packets"] == 50


def test_uplink_timestamp_and_sequence_wrap() -> None:
    up = Uplink(48000, initial_timestamp=2**32 - 960, initial_seq=65535)
    up.push(np.zeros(960 * 3, np.float32))
    packets = encode_all(up)
    assert [(ts, seq) for _, ts, seq in packets] == [(2**32 - 960, 65535), (0, 0), (960, 1)]


def test_uplink_packets_do_not_depend_on_chunking() -> None:
    x = speech(16000)[:16000]
    whole = Uplink(16000)
    whole.push(x)
    expected = encode_all(whole)
    chunked = Uplink(16000)
    got = []
    rng = np.random.default_rng(1)
    pos = 0
    while pos < len(x):
        n = int(rng.integers(1, 700))
        chunked.push(np.ascontiguousarray(x[pos : pos + n]))
        pos += n
        got.extend(encode_all(chunked))
    assert got == expected


def test_uplink_int16_equals_float32_input() -> None:
    x16 = speech(24000, np.int16)[:24000]
    a = Uplink(24000)
    a.push(x16)
    b = Uplink(24000)
    b.push((x16.astype(np.float32) / 32768.0).astype(np.float32))
    assert encode_all(a) == encode_all(b)


def test_uplink_finish_pads_the_last_frame() -> None:
    up = Uplink(48000)
    up.push(np.full(960 + 100, 0.1, np.float32))
    assert len(encode_all(up)) == 1
    up.finish()
    tail = encode_all(up)
    # the partial frame plus the resampler's held-back samples (none at 48 kHz -> 48 kHz)
    assert len(tail) == 1
    assert tail[0][1] == 960


def test_uplink_pcm16_mode_yields_24k_frames() -> None:
    x = speech(48000)[:48000]
    up = Uplink(48000, mode="pcm16")
    assert up.transport_rate == 24000
    up.push(x)
    packets = encode_all(up)
    assert len(packets) == 50
    assert all(len(p) == 480 * 2 for p, _, _ in packets)
    assert [ts for _, ts, _ in packets] == [480 * k for k in range(50)]
    pcm = np.frombuffer(b"".join(p for p, _, _ in packets), "<i2").astype(np.float32) / 32768
    reference = speech(24000)[: len(pcm)]
    lag = best_lag(reference, pcm)
    assert lag < 0.003 * 24000  # the resampler's latency, within 3 ms
    assert snr_db(reference[: len(pcm) - lag], pcm[lag:]) > 30


def test_uplink_full_ring_drops_and_counts() -> None:
    up = Uplink(48000, ring_ms=40)
    accepted = up.push(np.zeros(48000, np.float32))
    assert accepted < 48000
    assert up.stats["frames_dropped"] == 48000 - accepted
    assert up.stats["frames_pushed"] == accepted


def test_uplink_notify_fd_wakes_once_per_frame() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        up = Uplink(16000, notify_fd=w)
        for _ in range(10):
            up.push(np.zeros(160, np.float32))  # 10 ms each: 5 whole frames
        wakeups = len(os.read(r, 4096)) // 8
        assert wakeups == 5
    finally:
        os.close(r)
        os.close(w)


def test_uplink_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="input_rate"):
        Uplink(11025)
    with pytest.raises(ValueError, match="channels"):
        Uplink(48000, channels=3)
    with pytest.raises(ValueError, match="mode"):
        Uplink(48000, mode="mp3")
    with pytest.raises(ValueError, match="frame_ms"):
        Uplink(48000, frame_ms=30)
    up = Uplink(48000)
    with pytest.raises(TypeError, match="float32 or int16"):
        up.push(np.zeros(960, np.float64))
    with pytest.raises(ValueError, match="channels"):
        up.push(np.zeros((960, 2), np.float32))
    assert up.stats["frames_pushed"] == 0


# ---------------------------------------------------------------------------------- Downlink


def run_link(
    rate: int, x: npt.NDArray[np.float32], pull_frames: int, lost: frozenset[int] = frozenset()
) -> tuple[npt.NDArray[np.float32], Downlink]:
    """Sends x through an Uplink and a Downlink on a virtual 20 ms clock."""
    up = Uplink(rate, ring_ms=10_000)
    up.push(x)
    up.finish()
    packets = encode_all(up)
    down = Downlink(rate)
    out = []
    pulled = 0
    tick = 0
    total = len(x) + rate // 2
    while pulled < total:
        now = tick * FRAME_NS
        while packets and packets[0][1] // 960 * FRAME_NS <= now:
            payload, ts, seq = packets.pop(0)
            if seq not in lost:
                assert down.push_rtp(seq, ts, payload, now)
        frames = pull_frames
        block = down.pull(frames, pulled * 1_000_000_000 // rate)
        assert block.shape == (frames,)
        out.append(block)
        pulled += frames
        tick = pulled * 1_000_000_000 // rate // FRAME_NS
    return np.concatenate(out), down


@pytest.mark.parametrize(("rate", "pull_frames"), [(48000, 960), (44100, 441), (16000, 137)])
def test_downlink_plays_the_speech_back(rate: int, pull_frames: int) -> None:
    x = speech(rate)[: 3 * rate]
    y, down = run_link(rate, x, pull_frames)
    lag = best_lag(x, y)
    assert lag < 0.1 * rate  # jitter-buffer delay plus codec and resampler latency
    corr = segment_correlations(x, y, rate)
    assert np.median(corr) > 0.9
    # A segment in which the buffer stretches time matches less well: allow a few.
    assert np.mean(np.array(corr) > 0.8) >= 0.8
    stats = down.stats
    assert stats["packets_queued"] >= 150  # 3 s of 20 ms frames, plus the resampler's tail
    assert stats["jitter"].packets_received == stats["packets_queued"]
    assert stats["jitter"].packets_lost == 0
    assert stats["samples_pulled"] == len(y)
    assert 0 < down.media_samples_played <= len(y)


def test_downlink_recovers_lost_packets_with_fec() -> None:
    x = speech(48000)[: 3 * 48000]
    lost = frozenset(range(10, 140, 10))
    y, down = run_link(48000, x, 960, lost)
    jb = down.stats["jitter"]
    assert jb.packets_lost == len(lost)
    assert jb.fec_recovered_frames >= 0.75 * len(lost)
    assert np.median(segment_correlations(x, y, 48000)) > 0.85


def test_downlink_flush_drops_buffered_audio() -> None:
    up = Uplink(48000)
    assert up.push(np.ascontiguousarray(speech(48000)[:48000])) == 48000
    packets = encode_all(up)
    down = Downlink(48000)
    for i, (payload, ts, seq) in enumerate(packets):
        down.push_rtp(seq, ts, payload, i * FRAME_NS)
    first = down.pull(960 * 10, 0)
    assert np.abs(first).max() > 0.01
    down.flush()
    after = down.pull(960 * 5, 10 * FRAME_NS)
    assert np.abs(after).max() == 0.0
    assert down.stats["flushes"] == 1
    assert down.stats["jitter"].buffered_packets == 0


def test_downlink_pcm16_mode() -> None:
    x = speech(24000, np.int16)[:24000]
    down = Downlink(48000, mode="pcm16", pcm_prebuffer_ms=40)
    assert down.push_pcm(x[:480]) == 480  # 20 ms: below the prebuffer
    assert np.abs(down.pull(960, 0)).max() == 0.0
    down.push_pcm(np.ascontiguousarray(x[480:]))
    y = np.concatenate([down.pull(960, 0) for _ in range(60)])
    reference = speech(48000)[:48000]
    lag = best_lag(reference, y)
    assert lag < 0.1 * 48000
    n = len(reference) - 4800
    assert float(np.corrcoef(reference[:n], y[lag : lag + n])[0, 1]) > 0.99
    assert down.media_samples_played >= 48000 - 960
    with pytest.raises(ValueError, match="opus"):
        down.push_rtp(0, 0, b"\x00", 0)


def test_downlink_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="output_rate"):
        Downlink(11025)
    down = Downlink(48000)
    with pytest.raises(ValueError, match="one second"):
        down.pull(48001, 0)
    with pytest.raises(TypeError):
        down.pull_into(np.zeros(960, np.float64), 0)
    with pytest.raises(ValueError, match="pcm16"):
        down.push_pcm(np.zeros(10, np.int16))
    assert down.push_rtp(0, 0, b"x" * 5000, 0) is False
    assert down.stats["packets_dropped_oversized"] == 1
    np.testing.assert_array_equal(down.pull(960, 0), np.zeros(960, np.float32))


def test_threads_capture_network_playout() -> None:
    """Capture, network and playout on three threads, each queue with one producer and one
    consumer: every packet arrives, and the played audio is the speech."""
    rate = 16000
    x = speech(rate)[: 2 * rate]
    up = Uplink(rate)
    down = Downlink(rate)
    done = threading.Event()
    errors: list[BaseException] = []
    sent: list[int] = []

    def capture() -> None:
        try:
            for pos in range(0, len(x), 160):
                up.push(np.ascontiguousarray(x[pos : pos + 160]))
                time.sleep(0.0005)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def network() -> None:
        try:
            while True:
                finished = done.is_set()
                while (p := up.pop_packet()) is not None:
                    down.push_rtp(p[2], p[1], p[0], p[1] // 960 * FRAME_NS)
                    sent.append(p[2])
                if finished:
                    return
                time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=capture), threading.Thread(target=network)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sent == list(range(100))
    y = np.concatenate([down.pull(320, k * FRAME_NS) for k in range(130)])
    assert np.median(segment_correlations(x, y, rate)) > 0.9


def test_playout_driver_pulls_on_a_native_clock() -> None:
    down = Downlink(48000)
    with PlayoutDriver(down, frame_ms=20) as driver:
        with pytest.raises(RuntimeError, match="PlayoutDriver"):
            down.pull(960, 0)
        deadline = time.monotonic() + 5
        while driver.ticks < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not driver.running
    ticks = driver.ticks
    assert ticks >= 10
    got = driver.read(10**6)
    assert len(got) == ticks * 960
    assert down.stats["samples_pulled"] == ticks * 960
    down.pull(960, 0)  # the playout side is free again


def test_capture_driver_feeds_the_uplink() -> None:
    up = Uplink(16000)
    driver = CaptureDriver(up, frame_ms=20, pad_silence=False)
    assert driver.write(np.ascontiguousarray(speech(16000)[:3200])) == 3200
    driver.start()
    with pytest.raises(RuntimeError, match="CaptureDriver"):
        up.push(np.zeros(160, np.float32))
    deadline = time.monotonic() + 5
    while driver.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    driver.stop()
    assert driver.pending == 0
    assert len(encode_all(up)) == 10
    assert driver.silence_frames == 0


# ------------------------------------------------------------------ the uplink's sample clock

MS_NS = 1_000_000


def test_pop_due_releases_packet_n_at_start_plus_n_frames() -> None:
    up = Uplink(48000)
    assert up.next_due_ns is None
    t0 = 5_000 * MS_NS
    up.push(speech(48000)[: 960 * 5])
    got = []
    for k in range(5):
        due = t0 + k * 20 * MS_NS
        if k:
            assert up.pop_due(due - 1) is None  # not yet due
        packet = up.pop_due(due)
        assert packet is not None
        got.append(packet)
        assert up.next_due_ns == due + 20 * MS_NS
    assert [ts for _, ts, _ in got] == [960 * k for k in range(5)]
    assert [seq for _, _, seq in got] == list(range(5))
    assert up.stats["input_frames_sent"] == 5
    assert up.stats["silent_frames"] == 0


def test_pop_due_sends_silence_when_nothing_was_pushed() -> None:
    up = Uplink(48000)
    t0 = 10**9
    packets = [up.pop_due(t0 + k * 20 * MS_NS) for k in range(10)]
    assert all(p is not None for p in packets)
    assert up.stats["silent_frames"] == 10
    assert up.stats["packets"] == 10
    dec = rtvoice.OpusDecoder(48000, 1)
    pcm = np.concatenate([dec.decode(p[0]) for p in packets if p is not None])
    assert float(np.max(np.abs(pcm))) < 1e-3


def test_pop_due_waits_for_a_partial_frame_then_pads_it() -> None:
    up = Uplink(48000, partial_wait_ms=20)
    t0 = 10**9
    up.push(np.full(480, 0.25, np.float32))  # half a frame
    assert up.pop_due(t0) is None  # waits for the rest
    assert up.pop_due(t0 + 19 * MS_NS) is None
    packet = up.pop_due(t0 + 20 * MS_NS)
    assert packet is not None
    assert up.stats["padded_frames"] == 1
    assert up.stats["silent_frames"] == 0
    # The rest of the frame arriving in time makes a whole frame instead.
    up.push(np.full(480, 0.25, np.float32))
    assert up.pop_due(t0 + 25 * MS_NS) is None
    up.push(np.full(480, 0.25, np.float32))
    assert up.pop_due(t0 + 26 * MS_NS) is not None
    assert up.stats["input_frames_sent"] == 1
    assert up.stats["padded_frames"] == 1


def test_pop_due_reanchors_instead_of_bursting_silence_after_a_stall() -> None:
    up = Uplink(48000, max_lag_ms=200)
    t0 = 10**9
    assert up.pop_due(t0) is not None
    late = t0 + 1000 * MS_NS  # the sender was starved for a second
    assert up.pop_due(late) is not None
    assert up.stats["clock_resets"] == 1
    assert up.pop_due(late) is None  # no burst of 49 silent packets
    assert up.next_due_ns == late + 20 * MS_NS
    # With input waiting, a late sender catches up instead (the input is real audio).
    up.push(speech(48000)[: 960 * 4])
    later = late + 200 * MS_NS
    burst = 0
    while up.pop_due(later) is not None:
        burst += 1
    assert burst >= 4
    assert up.stats["clock_resets"] == 1


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_replaced_counted_and_the_stream_goes_on(value: float) -> None:
    up = Uplink(24000)
    clean = speech(24000)[: 480 * 20].copy()
    bad = clean.copy()
    bad[[10, 2000, 7000]] = value
    assert up.push(bad) == bad.size
    ref = Uplink(24000)
    zeroed = clean.copy()
    zeroed[[10, 2000, 7000]] = 0.0
    ref.push(zeroed)
    t0 = 10**9
    mine = [up.pop_due(t0 + k * 20 * MS_NS) for k in range(20)]
    theirs = [ref.pop_due(t0 + k * 20 * MS_NS) for k in range(20)]
    assert mine == theirs  # exactly as if the bad samples had been zeros
    assert up.stats["nonfinite_samples"] == 3
    assert up.stats["input_frames_sent"] == 20
    # Later input still goes out.
    up.push(clean[:480])
    assert up.pop_due(t0 + 20 * 20 * MS_NS) is not None
    assert up.stats["input_frames_sent"] == 21


def test_full_ring_counts_every_refused_frame() -> None:
    up = Uplink(48000, ring_ms=40)  # 2048 frames after rounding up to a power of two
    pushed = up.push(np.zeros(48000, np.float32))
    stats = up.stats
    assert pushed < 48000
    assert stats["frames_pushed"] == pushed
    assert stats["frames_dropped"] == 48000 - pushed
    pushed16 = up.push(np.zeros(9600, np.int16))
    assert up.stats["frames_dropped"] == 48000 - pushed + 9600 - pushed16


def test_take_input_hands_waiting_input_over() -> None:
    up = Uplink(48000)
    pcm = speech(48000)[:5000]
    up.push(pcm)
    taken = up.take_input(100000)
    np.testing.assert_array_equal(taken.reshape(-1), pcm)
    assert up.stats["pending_input_frames"] == 0


def test_a_frame_arriving_just_after_its_due_time_is_waited_for_not_replaced_by_silence() -> None:
    # A microphone whose callbacks fall 1 ms after the due times: every packet must carry input
    # (a silence packet would leave the input a frame behind for the rest of the call).
    up = Uplink(48000)
    t0 = 10**9
    frame = np.full(960, 0.1, np.float32)
    up.push(frame)
    assert up.pop_due(t0) is not None
    for k in range(1, 50):
        due = t0 + k * 20 * MS_NS
        assert up.pop_due(due) is None  # due, but the producer was sending: wait briefly
        up.push(frame)
        assert up.pop_due(due + MS_NS) is not None
    stats = up.stats
    assert stats["input_frames_sent"] == 50
    assert stats["silent_frames"] == 0
    assert stats["padded_frames"] == 0
    assert stats["pending_input_frames"] == 0  # no backlog built up
