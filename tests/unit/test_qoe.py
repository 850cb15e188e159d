"""Turn tracking and the QoE series on virtual time, from fake native snapshots."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rtvoice import qoe

MS = 1_000_000
S = 1_000_000_000


def up(voiced: int, last_voiced_ns: int, **extra: Any) -> dict[str, Any]:
    return {"voiced_frames": voiced, "last_voiced_ns": last_voiced_ns, **extra}


def onset(
    index: int,
    play_ns: int,
    arrival_ns: int = 0,
    jb_ns: int | None = None,
    block_play_ns: int | None = None,
) -> dict[str, Any]:
    jb = play_ns if jb_ns is None else jb_ns
    return {
        "index": index,
        "play_ns": play_ns,
        "arrival_ns": arrival_ns,
        "jb_ns": jb,
        "block_play_ns": jb if block_play_ns is None else block_play_ns,
    }


def down(*onsets: dict[str, Any]) -> dict[str, Any]:
    return {"voice_onsets": len(onsets), "onsets": list(onsets)}


def test_latency_runs_from_the_last_voiced_frame_sent_to_the_reply_onset_played() -> None:
    t = qoe.TurnTracker()
    assert t.update(up(50, 1 * S), down(), 1 * S + 100 * MS) == []
    reply = onset(0, 1800 * MS, arrival_ns=1750 * MS, jb_ns=1778 * MS, block_play_ns=1779 * MS)
    [turn] = t.update(up(50, 1 * S), down(reply), 1900 * MS, rtt_ms=10.0)
    assert turn.latency_ms == pytest.approx(800.0)
    assert turn.jitter_buffer_ms == pytest.approx(28.0)
    assert turn.playout_ms == pytest.approx(1.0)
    assert turn.network_ms == 10.0
    # The parts add up to the whole; the server has the rest.
    assert turn.server_ms == pytest.approx(800.0 - 10.0 - 28.0 - 1.0)
    assert turn.user_speech_ms == 1000.0
    assert [x.index for x in t.turns] == [0]


def test_an_onset_before_the_user_stopped_is_not_the_reply() -> None:
    t = qoe.TurnTracker()
    # The previous reply was still playing while the user spoke.
    early = onset(0, 500 * MS)
    assert t.update(up(40, 1 * S), down(early), 1500 * MS) == []
    reply = onset(1, 1600 * MS)
    [turn] = t.update(up(40, 1 * S), down(early, reply), 1700 * MS)
    assert turn.latency_ms == pytest.approx(600.0)


def test_the_turn_waits_until_the_uplink_was_quiet_for_the_hangover() -> None:
    t = qoe.TurnTracker(hangover_ns=200 * MS)
    reply = onset(0, 1100 * MS)
    # 50 ms after the last voiced frame the user may still be talking: undecided.
    assert t.update(up(30, 1 * S), down(reply), 1050 * MS) == []
    # The user went on talking past the onset: that onset answered nothing.
    assert t.update(up(45, 1300 * MS), down(reply), 1600 * MS) == []
    later = onset(1, 2 * S)
    [turn] = t.update(up(45, 1300 * MS), down(reply, later), 2100 * MS)
    assert turn.latency_ms == pytest.approx(700.0)


def test_a_click_is_not_a_turn() -> None:
    t = qoe.TurnTracker(min_speech_frames=5)
    assert t.update(up(2, 1 * S), down(onset(0, 2 * S)), 3 * S) == []
    assert t.count == 0


def test_each_reply_ends_one_turn_and_new_speech_opens_the_next() -> None:
    t = qoe.TurnTracker()
    [first] = t.update(up(30, 1 * S), down(onset(0, 1500 * MS)), 2 * S)
    # A second onset inside the same reply (a pause in the assistant's speech) is no turn.
    assert t.update(up(30, 1 * S), down(onset(0, 1500 * MS), onset(1, 2500 * MS)), 3 * S) == []
    # The user speaks again; the next reply ends the second turn.
    [second] = t.update(up(70, 4 * S), down(onset(1, 2500 * MS), onset(2, 4400 * MS)), 4500 * MS)
    assert (first.index, second.index) == (0, 1)
    assert second.latency_ms == pytest.approx(400.0)
    assert second.user_speech_ms == 40 * 20.0


def test_speech_stopped_is_recorded_with_the_turn() -> None:
    t = qoe.TurnTracker()
    t.on_event("input_audio_buffer.speech_stopped", 1520 * MS)
    [turn] = t.update(up(30, 1 * S), down(onset(0, 2100 * MS)), 2200 * MS)
    assert turn.speech_stopped_ms == pytest.approx(520.0)
    assert turn.after_speech_stopped_ms == pytest.approx(580.0)


def test_without_packet_arrival_times_the_jitter_buffer_share_is_unknown() -> None:
    t = qoe.TurnTracker()
    [turn] = t.update(up(30, 1 * S), down(onset(0, 1500 * MS)), 2 * S, rtt_ms=None)
    assert turn.jitter_buffer_ms is None
    assert turn.network_ms is None
    assert turn.server_ms == pytest.approx(500.0)


def test_turn_history_is_bounded_and_counts_what_it_dropped() -> None:
    t = qoe.TurnTracker(max_turns=3)
    voiced = 0
    onsets: list[dict[str, Any]] = []
    for k in range(5):
        voiced += 20
        end = (2 * k + 1) * S
        onsets = [*onsets[-7:], onset(k, end + 300 * MS)]
        assert len(t.update(up(voiced, end), down(*onsets), end + S)) == 1
    assert [x.index for x in t.turns] == [2, 3, 4]
    assert t.dropped_turns == 2
    assert qoe.median_latency_ms(list(t.turns)) == pytest.approx(300.0)


def test_a_new_uplink_restarts_the_count() -> None:
    t = qoe.TurnTracker()
    t.update(up(30, 1 * S), down(onset(0, 1500 * MS)), 2 * S)
    t.reset_uplink()
    t.reset_downlink()
    [turn] = t.update(up(10, 3 * S), down(onset(0, 3400 * MS)), 4 * S)
    assert turn.index == 1
    assert turn.latency_ms == pytest.approx(400.0)


# --------------------------------------------------------------------------------- series


def jb(**fields: Any) -> dict[str, Any]:
    base = {
        "packets_received": 0,
        "packets_lost": 0,
        "fec_recovered_frames": 0,
        "concealed_samples": 0,
        "tail_concealed_samples": 0,
        "accelerated_samples": 0,
        "expanded_samples": 0,
        "current_delay_ms": 0.0,
        "target_delay_ms": 60.0,
    }
    return {**base, **fields}


def test_series_points_carry_the_deltas_of_each_interval() -> None:
    s = qoe.QoeSeries(0)
    u0 = {
        "sent_energy": 0.0,
        "sent_samples": 0,
        "send_intervals": 0,
        "send_interval_sum_ms": 0.0,
        "send_interval_sumsq_ms2": 0.0,
        "send_intervals_over_30ms": 0,
        "send_interval_max_ms": 0.0,
    }
    d0 = {"samples_pulled": 0, "media_samples_played": 0, "output_energy": 0.0, "jitter": jb()}
    first = s.sample(0, u0, d0, rtt_ms=None)
    assert first.jb_delay_ms is None
    assert not first.playing
    # 500 ms later: 25 packets sent 20 ms apart but one 40 ms gap, a 0.1 amplitude square
    # wave sent (-20 dBFS), 0.01 played (-40 dBFS), 2 of 25 packets lost, 1 recovered by FEC.
    n = 24000
    u1 = {
        "sent_energy": n * 0.01,
        "sent_samples": n,
        "send_intervals": 25,
        "send_interval_sum_ms": 24 * 20.0 + 40.0,
        "send_interval_sumsq_ms2": 24 * 400.0 + 1600.0,
        "send_intervals_over_30ms": 1,
        "send_interval_max_ms": 40.0,
    }
    d1 = {
        "samples_pulled": n,
        "media_samples_played": n,
        "output_energy": n * 1e-4,
        "jitter": jb(
            packets_received=23,
            packets_lost=2,
            fec_recovered_frames=1,
            concealed_samples=960,
            current_delay_ms=24.0,
            target_delay_ms=22.0,
        ),
    }
    p = s.sample(500 * MS, u1, d1, rtt_ms=3.0)
    assert p.t_s == pytest.approx(0.5)
    assert p.playing
    assert p.jb_delay_ms == 24.0
    assert p.jb_target_ms == 22.0
    assert p.loss_percent == pytest.approx(8.0)
    assert p.fec_recovered == 1
    assert p.concealed_ms == pytest.approx(20.0)
    assert p.input_level_dbfs == pytest.approx(-20.0)
    assert p.output_level_dbfs == pytest.approx(-40.0)
    assert p.send_interval_mean_ms == pytest.approx(20.8)
    assert p.send_interval_std_ms == pytest.approx(math.sqrt(400 * 24 / 25 + 1600 / 25 - 20.8**2))
    assert p.send_interval_max_ms == 40.0
    assert p.send_intervals_over_30ms == 1
    assert p.rtt_ms == 3.0
    # Nothing happened in the next interval: zero deltas, no levels.
    q = s.sample(1000 * MS, u1, d1, rtt_ms=3.0)
    assert (q.loss_percent, q.fec_recovered, q.concealed_ms) == (0.0, 0, 0.0)
    assert q.input_level_dbfs is None
    assert q.output_level_dbfs is None
    assert not q.playing


def test_series_is_bounded_and_counts_dropped_points_and_marks() -> None:
    s = qoe.QoeSeries(0, max_points=4, max_marks=2)
    for k in range(10):
        s.sample(k * 500 * MS, {}, {"jitter": jb()})
        s.mark(k * 500 * MS, "state", state="connected")
    assert len(s.points) == 4
    assert s.dropped_points == 6
    assert [p.t_s for p in s.points] == [3.0, 3.5, 4.0, 4.5]
    assert len(s.marks) == 2
    assert s.dropped_marks == 8


def test_restarted_counters_are_not_negative_deltas() -> None:
    s = qoe.QoeSeries(0)
    s.sample(0, {}, {"jitter": jb(packets_received=500, packets_lost=10)})
    s.restart()
    p = s.sample(500 * MS, {}, {"jitter": jb(packets_received=20, packets_lost=0)})
    assert p.loss_percent == 0.0
    s2 = qoe.QoeSeries(0)
    s2.sample(0, {}, {"jitter": jb(packets_received=500, packets_lost=10)})
    # A fallback's new engine without restart(): the counter went down, the delta is the new
    # count rather than a negative one.
    p2 = s2.sample(500 * MS, {}, {"jitter": jb(packets_received=20, packets_lost=5)})
    assert p2.loss_percent == pytest.approx(20.0)


def test_websocket_pcm_has_no_jitter_buffer_figures() -> None:
    s = qoe.QoeSeries(0)
    p = s.sample(0, {}, {"samples_pulled": 960, "media_samples_played": 960, "jitter": {}})
    assert p.jb_delay_ms is None
    assert p.jb_target_ms is None
    assert p.playing


def test_report_path_must_be_html_or_png(tmp_path: Any) -> None:
    report = qoe.CallReport(points=[], marks=[], turns=[])
    with pytest.raises(ValueError, match=r"html or \.png"):
        qoe.write_report(tmp_path / "qoe.pdf", report)


def test_series_points_keep_their_values_none_and_flags_through_the_ring() -> None:
    s = qoe.QoeSeries(0, max_points=2)
    up = {"send_intervals": 0, "sent_samples": 0}
    for k in range(3):
        jb = {"current_delay_ms": 25.0, "target_delay_ms": 20.0, "packets_received": 10 * k}
        down = {"jitter": jb, "media_samples_played": 960 * (k + 1), "samples_pulled": 960}
        s.sample(k * 500_000_000, up, down, rtt_ms=None if k == 0 else 12.5)
    points = s.points
    assert [p.t_s for p in points] == [0.5, 1.0]
    assert s.dropped_points == 1
    assert points[-1].rtt_ms == 12.5
    assert points[-1].playing is True
    assert points[-1].jb_delay_ms == 25.0
    assert points[-1].jb_target_ms == 20.0
    assert points[-1].input_level_dbfs is None
    assert isinstance(points[-1].fec_recovered, int)


def test_series_allocates_its_rows_a_block_at_a_time_and_keeps_order_across_blocks() -> None:
    block = qoe.BLOCK_POINTS
    s = qoe.QoeSeries(0, max_points=2 * block + 10)
    assert s.allocated_points == 0  # a call at rest holds no empty hour of rows
    s.sample(0, {}, {"jitter": jb()})
    assert s.allocated_points == block
    for k in range(1, 2 * block + 15):  # across both block boundaries and round the ring
        s.sample(k * 500 * MS, {}, {"jitter": jb()})
    assert s.allocated_points == 2 * block + 10  # the last block is cut to max_points
    assert s.dropped_points == 5
    ts = [p.t_s for p in s.points]
    assert ts == [k * 0.5 for k in range(5, 2 * block + 15)]
