"""Outbound RTP pacing for the simulator: 20 ms Opus frames sent on absolute deadlines from a
monotonic clock (a late wake-up never shifts later packets), impaired per packet."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rtvoice.simulator.audio import MAX_INPUT_FRAMES
from rtvoice.simulator.impair import Impairer, Impairment

__all__ = ["FRAME_MS", "RtpPacer", "SentPacket"]

logger = logging.getLogger("rtvoice.simulator")

FRAME_MS = 20
FRAME_NS = FRAME_MS * 1_000_000
SAMPLES_PER_FRAME_48K = 960


@dataclass
class SentPacket:
    """One outbound RTP packet. ``due_ns`` is its nominal (unimpaired) send time,
    ``sent_ns`` the time it went on the wire (``None`` if dropped by the impairment)."""

    seq: int
    timestamp: int
    payload: bytes
    marker: bool
    due_ns: int
    sent_ns: int | None = None
    dropped: bool = False
    tag: object = None


SendFn = Callable[[int, int, bytes, bool], Awaitable[None]]


class _Playback:
    __slots__ = ("done", "frames", "tag", "taken")

    def __init__(self, tag: object, frames: list[bytes]) -> None:
        self.tag = tag
        self.frames = collections.deque(frames)
        self.taken = 0
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()


class RtpPacer:
    """Owns sequence numbers and timestamps of one outbound stream. Event-loop only.

    ``play(frames, tag)`` queues Opus payloads (20 ms each) and returns a future that resolves
    to ``True`` when the last of them has been handed to the wire, or ``False`` if ``clear()``
    discarded them. Between playbacks the RTP timestamp keeps advancing with the clock, and the
    first packet of each talkspurt has the marker bit.
    """

    def __init__(
        self,
        send: SendFn,
        impairment: Impairment | None = None,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        seed_offset: int = 0,
    ) -> None:
        self._send = send
        imp = impairment or Impairment()
        if seed_offset:
            imp = Impairment(
                imp.loss, imp.burst_length, imp.jitter_ms, imp.reorder, imp.seed + seed_offset
            )
        self.impairer = Impairer(imp)
        self._clock = clock_ns
        rng = random.Random()
        self._seq = rng.randrange(0, 1 << 16)
        self._ts_origin = rng.randrange(0, 1 << 32)
        self._t0_ns: int | None = None
        self._queue: collections.deque[_Playback] = collections.deque()
        self._next_due_ns: int | None = None
        self._wire: list[tuple[int, int, SentPacket]] = []
        self._order = itertools.count()
        self._held: SentPacket | None = None
        self._marker_pending = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Every packet sent, the last MAX_INPUT_FRAMES (5 minutes); sent_dropped the older ones.
        self.sent: collections.deque[SentPacket] = collections.deque(maxlen=MAX_INPUT_FRAMES)
        self.sent_dropped = 0
        self.max_lateness_ns = 0
        self.send_errors = 0

    @property
    def playing(self) -> bool:
        return bool(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def play(self, frames: list[bytes], tag: object = None) -> asyncio.Future[bool]:
        pb = _Playback(tag, frames)
        if not frames:
            pb.done.set_result(True)
            return pb.done
        self._queue.append(pb)
        self._wake.set()
        return pb.done

    def clear(self) -> int:
        """Discard every queued frame; returns how many were discarded."""
        n = 0
        while self._queue:
            pb = self._queue.popleft()
            n += len(pb.frames)
            if not pb.done.done():
                pb.done.set_result(False)
        self._next_due_ns = None
        return n

    def frames_taken(self, tag: object) -> int:
        for pb in self._queue:
            if pb.tag == tag:
                return pb.taken
        return -1

    def _timestamp(self, due_ns: int) -> int:
        assert self._t0_ns is not None
        frames = (due_ns - self._t0_ns) // FRAME_NS
        return (self._ts_origin + frames * SAMPLES_PER_FRAME_48K) & 0xFFFFFFFF

    def _arm(self, now_ns: int) -> None:
        """Start a talkspurt on this stream's 20 ms grid."""
        if self._t0_ns is None:
            self._t0_ns = now_ns
        elapsed = max(0, now_ns - self._t0_ns)
        self._next_due_ns = self._t0_ns + -(-elapsed // FRAME_NS) * FRAME_NS
        self._marker_pending = True

    def _take_frame(self) -> None:
        pb = self._queue[0]
        assert self._next_due_ns is not None
        due = self._next_due_ns
        payload = pb.frames.popleft()
        pb.taken += 1
        pkt = SentPacket(
            seq=self._seq,
            timestamp=self._timestamp(due),
            payload=payload,
            marker=self._marker_pending,
            due_ns=due,
            tag=pb.tag,
        )
        self._marker_pending = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._next_due_ns = due + FRAME_NS
        if len(self.sent) == self.sent.maxlen:
            self.sent_dropped += 1
        self.sent.append(pkt)
        if not pb.frames:
            self._queue.popleft()
            if not pb.done.done():
                pb.done.set_result(True)
            if not self._queue:
                self._next_due_ns = None
        imp = self.impairer
        if imp.drop():
            pkt.dropped = True
        else:
            wire_ns = due + imp.delay_ns()
            if self._wire:
                wire_ns = max(wire_ns, max(w[0] for w in self._wire))  # jitter alone keeps order
            if self._held is not None:
                held, self._held = self._held, None
                heapq.heappush(self._wire, (wire_ns, next(self._order), pkt))
                heapq.heappush(self._wire, (wire_ns, next(self._order), held))
            elif imp.hold_back():
                self._held = pkt
            else:
                heapq.heappush(self._wire, (wire_ns, next(self._order), pkt))
        if self._held is not None and not self._queue:
            held, self._held = self._held, None
            heapq.heappush(self._wire, (due, next(self._order), held))

    def _next_deadline(self) -> int | None:
        candidates = []
        if self._queue:
            candidates.append(self._next_due_ns if self._next_due_ns is not None else self._clock())
        if self._wire:
            candidates.append(self._wire[0][0])
        return min(candidates) if candidates else None

    async def _run(self) -> None:
        while True:
            deadline = self._next_deadline()
            if deadline is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay_ns = deadline - self._clock()
            if delay_ns > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay_ns / 1e9)
                continue
            now = self._clock()
            # Everything due by now: frames taken in order, then packets put on the wire.
            while self._queue:
                if self._next_due_ns is None:
                    self._arm(now)
                assert self._next_due_ns is not None
                if self._next_due_ns > now:
                    break
                self._take_frame()
            while self._wire and self._wire[0][0] <= now:
                due_wire, _, pkt = heapq.heappop(self._wire)
                self.max_lateness_ns = max(self.max_lateness_ns, now - due_wire)
                try:
                    await self._send(pkt.seq, pkt.timestamp, pkt.payload, pkt.marker)
                    pkt.sent_ns = self._clock()
                except ConnectionError:
                    self.send_errors += 1
                except Exception:  # a failing send must not end the stream
                    self.send_errors += 1
                    logger.exception("simulator: RTP send failed")
