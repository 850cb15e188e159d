"""Quality of experience of a call: per-turn latency measured from the audio, a bounded time
series of the call's audio and network state, and a report of both.

Turn latency is measured, not estimated: from the end of the user's speech to the first audible
sample of the reply that was actually played.

- The end of the user's speech is the uplink's own voice activity on what it sent
  (``Uplink.stats["last_voiced_ns"]``: when the last frame at or above its voice threshold left
  the client). The server's ``input_audio_buffer.speech_stopped``, when it comes, is recorded
  next to it (its arrival on the client's clock).
- The reply's first played sample is the downlink's voice onset on its output
  (``Downlink.stats["onsets"]``: the play time of the first audible 5 ms after a pause), with the
  arrival time of the packet that carried it and the time the jitter buffer scheduled it.

The latency splits into ``network_ms`` (the RTT: the uplink's and the downlink's one-way legs),
``jitter_buffer_ms`` (arrival of the reply's packet to its scheduled play time), ``playout_ms``
(scheduled play time of the produced block to the time it played: resampling and output
buffering) and ``server_ms``, the rest: the server's turn detection and response time, including
any quiet lead-in of the reply. On WebSocket, PCM has no packet arrival times, so
``jitter_buffer_ms`` is None and its share (the PCM prebuffer) is in ``server_ms``.

Everything here takes its time as arguments (``now_ns`` on ``time.monotonic_ns``'s clock, which is
the native clocks' clock), so :class:`TurnTracker` and :class:`QoeSeries` are tested on virtual
time; :class:`CallRecorder` is the session's glue that reads the clock and the native stats.
Every history is bounded and counts what it dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import logging
import math
import statistics
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "TURN_EVENT",
    "CallRecorder",
    "CallReport",
    "QoePoint",
    "QoeSeries",
    "Turn",
    "TurnTracker",
    "median_latency_ms",
    "recorder_of",
    "write_report",
    "write_session_report",
]

logger = logging.getLogger(__name__)

TURN_EVENT = "rtvoice.turn"
# A series point every this often (and one per turn boundary).
SAMPLE_INTERVAL_S = 0.5
# How often the recorder looks at the native counters for turn boundaries.
POLL_INTERVAL_S = 0.1
# Bounds: about one hour of points at 500 ms, and the last 256 turns.
MAX_POINTS = 7200
MAX_MARKS = 2048
MAX_TURNS = 256
# The series' rows are allocated this many at a time (about 2 minutes of points, 17 KB), so a
# call at rest holds what it has sampled, not an hour of empty rows.
BLOCK_POINTS = 256
# Voiced frames (20 ms each) the user must have sent for a turn: a click is not a turn.
MIN_SPEECH_FRAMES = 5
# A reply onset is matched to the user's speech only after the uplink was quiet this long: an
# onset while the user is still talking is not the answer to what they are saying.
HANGOVER_NS = 200_000_000
REPORT_EXTRA = "pip install 'rtvoice[report]'"

_NS_PER_MS = 1_000_000.0


def _ms(ns: int) -> float:
    return ns / _NS_PER_MS


def _level_dbfs(energy: float, samples: int) -> float | None:
    """RMS level in dBFS of ``samples`` samples whose squares sum to ``energy``."""
    if samples <= 0:
        return None
    power = energy / samples
    return 10.0 * math.log10(power) if power > 1e-12 else -120.0


# --------------------------------------------------------------------------------- turns


@dataclass(frozen=True, slots=True)
class Turn:
    """One measured turn (times in ns on the monotonic clock, parts in ms).

    ``latency_ms`` = ``server_ms`` + ``network_ms`` + ``jitter_buffer_ms`` + ``playout_ms``
    (parts that are None count 0: ``network_ms`` is None while no RTT was measured yet, RTCP's
    first report taking a few seconds, and its share is then in ``server_ms``).
    ``speech_stopped_ms`` is from the end of the user's speech to
    the arrival of the server's ``speech_stopped``; ``after_speech_stopped_ms`` from that arrival
    to the first played sample of the reply.
    """

    index: int
    user_end_ns: int
    reply_play_ns: int
    latency_ms: float
    server_ms: float
    network_ms: float | None
    jitter_buffer_ms: float | None
    playout_ms: float
    speech_stopped_ns: int | None = None
    speech_stopped_ms: float | None = None
    after_speech_stopped_ms: float | None = None
    reply_arrival_ns: int | None = None
    user_speech_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TurnTracker:
    """Matches the end of the user's speech (uplink voice activity) to the next voice onset of
    the played output. Single-threaded; all time passed in.

    Call :meth:`on_event` for server events and :meth:`update` with the native stats (at least
    every few hundred ms: the downlink holds its last 8 onsets). Completed turns are returned by
    :meth:`update` and kept in :attr:`turns` (the last ``max_turns``; older ones are counted in
    :attr:`dropped_turns`).
    """

    def __init__(
        self,
        *,
        max_turns: int = MAX_TURNS,
        min_speech_frames: int = MIN_SPEECH_FRAMES,
        hangover_ns: int = HANGOVER_NS,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be positive, not {max_turns}")
        self.turns: deque[Turn] = deque(maxlen=max_turns)
        self.dropped_turns = 0
        self.count = 0
        self._min_frames = min_speech_frames
        self._hangover_ns = hangover_ns
        self._voiced_base: int | None = None  # uplink voiced_frames when the last turn ended
        self._last_onset = -1  # index of the last downlink onset looked at
        self._last_reply_ns = 0
        self._speech_stopped: deque[int] = deque(maxlen=16)

    def on_event(self, event_type: str, now_ns: int) -> None:
        """A server event arrived at ``now_ns``."""
        if event_type == "input_audio_buffer.speech_stopped":
            self._speech_stopped.append(now_ns)

    def reset_uplink(self) -> None:
        """A new uplink (its counters start again from 0)."""
        self._voiced_base = None

    def reset_downlink(self) -> None:
        """A new downlink (its onset count starts again from 0)."""
        self._last_onset = -1

    def update(
        self,
        uplink: Mapping[str, Any],
        downlink: Mapping[str, Any],
        now_ns: int,
        rtt_ms: float | None = None,
    ) -> list[Turn]:
        voiced = int(uplink.get("voiced_frames", 0))
        user_end = int(uplink.get("last_voiced_ns", 0))
        if self._voiced_base is None or voiced < self._voiced_base:
            self._voiced_base = 0  # a new uplink: all it sent is this turn's
        speaking = voiced - self._voiced_base
        onsets: Sequence[Mapping[str, Any]] = downlink.get("onsets", ())
        done: list[Turn] = []
        quiet = user_end == 0 or now_ns - user_end >= self._hangover_ns
        for onset in onsets:
            index = int(onset["index"])
            if index <= self._last_onset:
                continue
            play = int(onset["play_ns"])
            if speaking >= self._min_frames and play > user_end > 0:
                if not quiet:
                    break  # decided once the uplink has been quiet long enough
                done.append(self._complete(onset, user_end, speaking, rtt_ms))
                self._voiced_base = voiced
                speaking = 0
            self._last_onset = index
        return done

    def _complete(
        self, onset: Mapping[str, Any], user_end: int, frames: int, rtt_ms: float | None
    ) -> Turn:
        play = int(onset["play_ns"])
        arrival = int(onset.get("arrival_ns", 0))
        jb_ns = int(onset.get("jb_ns", play))
        block_play = int(onset.get("block_play_ns", jb_ns))
        latency = _ms(play - user_end)
        jitter_buffer = _ms(jb_ns - arrival) if arrival > 0 and arrival <= jb_ns else None
        playout = max(0.0, _ms(block_play - jb_ns))
        network = rtt_ms
        server = latency - (network or 0.0) - (jitter_buffer or 0.0) - playout
        stopped = [t for t in self._speech_stopped if self._last_reply_ns < t <= play]
        ss = stopped[-1] if stopped else None
        turn = Turn(
            index=self.count,
            user_end_ns=user_end,
            reply_play_ns=play,
            latency_ms=latency,
            server_ms=server,
            network_ms=network,
            jitter_buffer_ms=jitter_buffer,
            playout_ms=playout,
            speech_stopped_ns=ss,
            speech_stopped_ms=None if ss is None else _ms(ss - user_end),
            after_speech_stopped_ms=None if ss is None else _ms(play - ss),
            reply_arrival_ns=arrival if arrival > 0 else None,
            user_speech_ms=frames * 20.0,
        )
        self.count += 1
        self._last_reply_ns = play
        if len(self.turns) == self.turns.maxlen:
            self.dropped_turns += 1
        self.turns.append(turn)
        return turn


def median_latency_ms(turns: Sequence[Turn | Mapping[str, Any]]) -> float | None:
    values = [t.latency_ms if isinstance(t, Turn) else float(t["latency_ms"]) for t in turns]
    return float(statistics.median(values)) if values else None


# --------------------------------------------------------------------------------- series


@dataclass(frozen=True, slots=True)
class QoePoint:
    """One point of the series: current values and what happened since the previous point.

    Delays in ms; ``*_ms`` counters are the audio affected in the interval; levels in dBFS
    (None when nothing was sent or played in the interval).
    """

    t_s: float
    playing: bool
    jb_delay_ms: float | None
    jb_target_ms: float | None
    loss_percent: float
    fec_recovered: int
    concealed_ms: float
    tail_concealed_ms: float
    accelerated_ms: float
    expanded_ms: float
    rtt_ms: float | None
    send_interval_mean_ms: float | None
    send_interval_std_ms: float | None
    send_interval_max_ms: float | None
    send_intervals_over_30ms: int
    input_level_dbfs: float | None
    output_level_dbfs: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_POINT_FIELDS = tuple(f.name for f in fields(QoePoint))
_POINT_KINDS = tuple(
    "bool" if f.type in ("bool", bool) else "int" if f.type in ("int", int) else "float"
    for f in fields(QoePoint)
)


@dataclass(frozen=True, slots=True)
class Mark:
    """An event on the series' time axis (turn boundaries, state changes)."""

    t_s: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class QoeSeries:
    """A bounded time series built from successive native snapshots (any clock, passed in).

    :meth:`sample` takes the uplink stats, the downlink stats (with ``"jitter"`` as a dict) and
    the RTT, and appends a :class:`QoePoint` of the deltas since the previous sample.
    """

    def __init__(
        self,
        start_ns: int,
        *,
        rate_hz: int = 48000,
        max_points: int = MAX_POINTS,
        max_marks: int = MAX_MARKS,
    ) -> None:
        self.start_ns = start_ns
        self.rate_hz = rate_hz
        # The points as rows of float32 (None as NaN) in a ring of blocks, each allocated when
        # the ring first reaches it: an hour of points is 0.5 MB, a call's first minutes a few
        # KB, and memory never grows point by point.
        if not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"max_points must be a positive int, not {max_points!r}")
        self.max_points = max_points
        self._blocks: list[npt.NDArray[np.float32]] = []
        self._count = 0
        self.marks: deque[Mark] = deque(maxlen=max_marks)
        self.dropped_points = 0
        self.dropped_marks = 0
        self._prev_up: dict[str, Any] | None = None
        self._prev_down: dict[str, Any] | None = None
        self._prev_jb: dict[str, Any] | None = None

    def t_s(self, now_ns: int) -> float:
        return (now_ns - self.start_ns) / 1e9

    def mark(self, now_ns: int, kind: str, **data: Any) -> None:
        if len(self.marks) == self.marks.maxlen:
            self.dropped_marks += 1
        self.marks.append(Mark(self.t_s(now_ns), kind, data))

    def restart(self) -> None:
        """The native counters start again (a new engine): deltas restart from the next sample."""
        self._prev_up = self._prev_down = self._prev_jb = None

    def sample(
        self,
        now_ns: int,
        uplink: Mapping[str, Any],
        downlink: Mapping[str, Any],
        rtt_ms: float | None = None,
    ) -> QoePoint:
        jb = dict(downlink.get("jitter") or {})
        up, down = dict(uplink), dict(downlink)
        pu, pd, pj = self._prev_up or {}, self._prev_down or {}, self._prev_jb or {}

        def delta(new: Mapping[str, Any], old: Mapping[str, Any], key: str) -> float:
            d = float(new.get(key, 0) or 0) - float(old.get(key, 0) or 0)
            return d if d >= 0 else float(new.get(key, 0) or 0)  # counters restarted

        per_ms = self.rate_hz / 1000.0
        received = delta(jb, pj, "packets_received")
        lost = delta(jb, pj, "packets_lost")
        intervals = delta(up, pu, "send_intervals")
        mean = std = None
        if intervals > 0:
            total = delta(up, pu, "send_interval_sum_ms")
            squares = delta(up, pu, "send_interval_sumsq_ms2")
            mean = total / intervals
            std = math.sqrt(max(0.0, squares / intervals - mean * mean))
        sent = int(delta(up, pu, "sent_samples"))
        played = int(delta(down, pd, "samples_pulled"))
        media = delta(down, pd, "media_samples_played")
        playing = media > 0 and float(jb.get("current_delay_ms", 0.0) or 0.0) > 0.0
        pcm = not jb  # no jitter buffer: WebSocket PCM
        point = QoePoint(
            t_s=self.t_s(now_ns),
            playing=media > 0,
            jb_delay_ms=float(jb["current_delay_ms"]) if playing else None,
            jb_target_ms=None if pcm else float(jb.get("target_delay_ms", 0.0)),
            loss_percent=100.0 * lost / (received + lost) if received + lost > 0 else 0.0,
            fec_recovered=int(delta(jb, pj, "fec_recovered_frames")),
            concealed_ms=delta(jb, pj, "concealed_samples") / per_ms,
            tail_concealed_ms=delta(jb, pj, "tail_concealed_samples") / per_ms,
            accelerated_ms=delta(jb, pj, "accelerated_samples") / per_ms,
            expanded_ms=delta(jb, pj, "expanded_samples") / per_ms,
            rtt_ms=rtt_ms,
            send_interval_mean_ms=mean,
            send_interval_std_ms=std,
            send_interval_max_ms=float(up["send_interval_max_ms"])
            if intervals > 0 and "send_interval_max_ms" in up
            else None,
            send_intervals_over_30ms=int(delta(up, pu, "send_intervals_over_30ms")),
            input_level_dbfs=_level_dbfs(delta(up, pu, "sent_energy"), sent),
            output_level_dbfs=_level_dbfs(delta(down, pd, "output_energy"), played),
        )
        self._prev_up, self._prev_down, self._prev_jb = up, down, jb
        if self._count >= self.max_points:
            self.dropped_points += 1
        row = self._row(self._count % self.max_points)
        for index, name in enumerate(_POINT_FIELDS):
            value = getattr(point, name)
            row[index] = np.nan if value is None else float(value)
        self._count += 1
        return point

    def _row(self, slot: int) -> npt.NDArray[np.float32]:
        block, offset = divmod(slot, BLOCK_POINTS)
        while len(self._blocks) <= block:  # only ever the next block: slots come in order
            rows = min(BLOCK_POINTS, self.max_points - len(self._blocks) * BLOCK_POINTS)
            self._blocks.append(np.full((rows, len(_POINT_FIELDS)), np.nan, dtype=np.float32))
        row: npt.NDArray[np.float32] = self._blocks[block][offset]
        return row

    @property
    def allocated_points(self) -> int:
        """Rows allocated so far (grows a block at a time up to ``max_points``)."""
        return sum(int(b.shape[0]) for b in self._blocks)

    @property
    def points(self) -> list[QoePoint]:
        """The points kept, oldest first (at most ``max_points``)."""
        n = min(self._count, self.max_points)
        first = self._count - n
        out = []
        for k in range(first, self._count):
            row = self._row(k % self.max_points)
            values: dict[str, Any] = {}
            for index, (name, kind) in enumerate(zip(_POINT_FIELDS, _POINT_KINDS, strict=True)):
                value = float(row[index])
                if kind == "bool":
                    values[name] = bool(value)
                elif kind == "int":
                    values[name] = int(value)
                else:
                    values[name] = None if math.isnan(value) else value
            out.append(QoePoint(**values))
        return out


# --------------------------------------------------------------------------------- recorder


@dataclass
class CallReport:
    """What a report shows: series, marks, turns, connect breakdown and settings."""

    points: list[QoePoint]
    marks: list[Mark]
    turns: list[Turn]
    connect_ms: dict[str, float | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    dropped_points: int = 0
    dropped_turns: int = 0


def _rate_of(engine: Any) -> int:
    options = getattr(engine, "options", None)
    return int(getattr(options, "output_rate_hz", 48000))


class CallRecorder:
    """The QoE recorder of one session: turns, series and marks.

    Created by the session; holds it weakly. The session calls :meth:`on_event` for every server
    event, :meth:`on_state` on every state change and :meth:`on_stats` with the transport's
    statistics; once connected, a task on the session's loop looks at the native counters every
    :data:`POLL_INTERVAL_S` (turns) and adds a point every :data:`SAMPLE_INTERVAL_S`. The engine
    is looked up at each use (a fallback to WebSocket replaces it). Completed turns are emitted
    as ``rtvoice.turn`` events.
    """

    def __init__(
        self,
        session: Any,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        max_turns: int = MAX_TURNS,
        max_points: int = MAX_POINTS,
    ) -> None:
        self._session = weakref.ref(session)
        self._clock = clock_ns
        self._sample_every_ns = int(sample_interval_s * 1e9)
        self._poll_s = poll_interval_s
        self.tracker = TurnTracker(max_turns=max_turns)
        self.series = QoeSeries(clock_ns(), max_points=max_points)
        self._rtt_ms: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._engine_id: int | None = None
        self._next_sample_ns = 0
        self.errors = 0

    # ---- hooks called by the session (on its loop)

    def on_event(self, event: Any) -> None:
        kind = str(getattr(event, "type", ""))
        now = self._clock()
        self.tracker.on_event(kind, now)
        if kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"):
            self.series.mark(now, kind.rsplit(".", 1)[-1])

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        rtt = stats.get("rtt_ms")
        if rtt is not None:
            self._rtt_ms = float(rtt)

    def on_state(self, state: str) -> None:
        now = self._clock()
        self.series.mark(now, "state", state=state)
        if state == "connected" and self._task is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to sample on
                self._task = asyncio.ensure_future(self._run())
        elif state in ("closed", "failed"):
            self._tick(now, force_sample=True)
            if self._task is not None:
                self._task.cancel()
                self._task = None

    # ---- sampling

    def _engine(self) -> Any:
        session = self._session()
        return None if session is None else getattr(session, "_engine", None)

    async def _run(self) -> None:
        while self._session() is not None:
            try:
                self._tick(self._clock())
            except Exception:  # a sampling bug must not end the call
                self.errors += 1
                if self.errors == 1:
                    logger.exception("QoE sampling failed (counted, sampling goes on)")
            await asyncio.sleep(self._poll_s)

    def _tick(self, now: int, *, force_sample: bool = False) -> None:
        engine = self._engine()
        if engine is None:
            return
        if id(engine) != self._engine_id:
            if self._engine_id is not None:
                self.tracker.reset_uplink()
                self.tracker.reset_downlink()
                self.series.restart()
            self._engine_id = id(engine)
            self.series.rate_hz = _rate_of(engine)
        up = engine.uplink.stats
        down = engine.downlink.stats
        for turn in self.tracker.update(up, down, now, self._rtt_ms):
            self.series.mark(turn.user_end_ns, "user_end", turn=turn.index)
            self.series.mark(turn.reply_play_ns, "reply_start", turn=turn.index)
            self._emit(turn)
        if force_sample or now >= self._next_sample_ns:
            self._next_sample_ns = now + self._sample_every_ns
            jitter = down.get("jitter")
            if jitter is not None and hasattr(jitter, "as_dict"):
                down = {**down, "jitter": jitter.as_dict()}
            self.series.sample(now, up, down, self._rtt_ms)

    def _emit(self, turn: Turn) -> None:
        session = self._session()
        if session is None:
            return
        from rtvoice import events

        data = {"type": TURN_EVENT, **turn.as_dict()}
        session._enqueue(events.ServerEvent(type=TURN_EVENT, event_id=None, data=data))

    # ---- results

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [t.as_dict() for t in self.tracker.turns]

    def report(
        self,
        *,
        connect_ms: Mapping[str, float | None] | None = None,
        settings: Mapping[str, Any] | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> CallReport:
        return CallReport(
            points=list(self.series.points),
            marks=list(self.series.marks),
            turns=list(self.tracker.turns),
            connect_ms=dict(connect_ms or {}),
            settings=dict(settings or {}),
            summary=dict(summary or {}),
            dropped_points=self.series.dropped_points,
            dropped_turns=self.tracker.dropped_turns,
        )


def recorder_of(session: Any) -> CallRecorder:
    """The :class:`CallRecorder` of a :class:`rtvoice.RealtimeSession`."""
    recorder = getattr(session, "_qoe", None)
    if not isinstance(recorder, CallRecorder):
        raise TypeError("this session has no QoE recorder")
    return recorder


# --------------------------------------------------------------------------------- report


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(f"the QoE report needs matplotlib: {REPORT_EXTRA}") from exc
    return plt


def _series(points: Sequence[QoePoint], name: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for p in points:
        v = getattr(p, name)
        xs.append(p.t_s)
        ys.append(math.nan if v is None else float(v))
    return xs, ys


def plot_report(report: CallReport) -> bytes:
    """The report's plots as one PNG (matplotlib, the ``report`` extra)."""
    plt = _pyplot()
    pts = report.points
    fig, axes = plt.subplots(5, 1, figsize=(10, 11), sharex=True)
    ax = axes[0]
    ax.plot(*_series(pts, "jb_delay_ms"), label="jitter-buffer delay", color="C0")
    ax.plot(*_series(pts, "jb_target_ms"), label="target", color="C0", ls="--", lw=0.8)
    ax.plot(*_series(pts, "rtt_ms"), label="RTT", color="C3")
    ax.set_ylabel("ms")
    ax.set_title("delay")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    ax.plot(*_series(pts, "loss_percent"), label="loss %", color="C3")
    ax.bar(*_series(pts, "fec_recovered"), width=0.4, label="FEC recoveries", color="C2")
    ax.set_title("loss and FEC (per point)")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    for i, (name, label) in enumerate(
        [
            ("concealed_ms", "concealed"),
            ("accelerated_ms", "accelerated"),
            ("expanded_ms", "expanded"),
        ]
    ):
        ax.plot(*_series(pts, name), label=label, color=f"C{i + 4}")
    ax.set_ylabel("ms per point")
    # The fade-out at the end of a talkspurt is not concealment: it is in the summary only.
    ax.set_title("concealment and time stretching")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    ax.plot(*_series(pts, "send_interval_mean_ms"), label="mean", color="C0")
    ax.plot(*_series(pts, "send_interval_max_ms"), label="max (500 ms window)", color="C1")
    ax.set_ylabel("ms")
    ax.set_title("uplink send interval")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[4]
    ax.plot(*_series(pts, "input_level_dbfs"), label="sent", color="C0")
    ax.plot(*_series(pts, "output_level_dbfs"), label="played", color="C1")
    ax.set_ylabel("dBFS")
    ax.set_ylim(-90, 0)
    ax.set_title("levels")
    ax.set_xlabel("call time (s)")
    ax.legend(loc="upper right", fontsize=8)
    for mark in report.marks:
        if mark.kind in ("user_end", "reply_start"):
            color = "k" if mark.kind == "user_end" else "C2"
            for a in axes:
                a.axvline(mark.t_s, color=color, lw=0.6, ls=":")
    latencies = [t.latency_ms for t in report.turns]
    title = "rtvoice call QoE"
    if latencies:
        title += f": {len(latencies)} turns, median latency {statistics.median(latencies):.0f} ms"
    fig.suptitle(title + "  (dotted: end of user speech, green: reply heard)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: CallReport, png: bytes) -> str:
    """A self-contained HTML page: the plots inline, the turn table, connect and settings."""
    turns = report.turns
    rows = [
        [
            t.index + 1,
            t.latency_ms,
            t.server_ms,
            t.network_ms,
            t.jitter_buffer_ms,
            t.playout_ms,
            t.speech_stopped_ms,
            t.after_speech_stopped_ms,
            t.user_speech_ms,
        ]
        for t in turns
    ]
    median = median_latency_ms(turns)
    image = base64.b64encode(png).decode("ascii")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rtvoice call QoE</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "th{background:#eee}</style></head><body>",
        "<h1>rtvoice call QoE</h1>",
        f"<p>{len(turns)} turns; median latency {_fmt(median)} ms"
        + (f" ({report.dropped_turns} older turns dropped)" if report.dropped_turns else "")
        + (f"; {report.dropped_points} older points dropped" if report.dropped_points else "")
        + "</p>",
        f"<img alt='QoE plots' src='data:image/png;base64,{image}'>",
        "<h2>Turns</h2><p>From the end of the user's speech as sent (uplink voice activity) to"
        " the first audible sample of the reply played; ms.</p>",
        _table(
            [
                "turn",
                "latency",
                "server",
                "network (RTT)",
                "jitter buffer",
                "playout",
                "to speech_stopped",
                "speech_stopped to reply",
                "user speech",
            ],
            rows,
        ),
        "<h2>Connect</h2>",
        _table(["step", "ms"], [[k, v] for k, v in report.connect_ms.items()]),
        "<h2>Call settings</h2>",
        _table(["setting", "value"], [[k, v] for k, v in report.settings.items()]),
    ]
    if report.summary:
        parts += [
            "<h2>Summary</h2>",
            _table(["figure", "value"], [[k, v] for k, v in report.summary.items()]),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_session_report(
    path: str | Path, session: Any, *, settings: Mapping[str, Any] | None = None
) -> Path:
    """The report of a session's call (its series, turns and connect breakdown, with
    ``settings`` and the session's transport and output rate) written to ``path``."""
    metrics = session.metrics
    base = {"transport": metrics.transport, "output rate Hz": session.output_rate_hz}
    return write_report(
        path,
        recorder_of(session).report(
            connect_ms=metrics.connect, settings={**base, **(settings or {})}
        ),
    )


def write_report(path: str | Path, report: CallReport) -> Path:
    """Write ``report`` to ``path``: ``.png`` gives the plots, ``.html`` (or ``.htm``) a
    self-contained page. Needs matplotlib (``pip install 'rtvoice[report]'``)."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise ValueError(f"a report is .html or .png, not {out.name!r}")
    png = plot_report(report)
    if suffix == ".png":
        out.write_bytes(png)
    else:
        out.write_text(render_html(report, png), encoding="utf-8")
    return out
