"""The transport interface: what a session needs from WebRTC and WebSocket alike.

A transport carries JSON events both ways and the audio of the session's native
:class:`rtvoice.Uplink` (which it drains on the uplink's sample clock, ``pop_due``) and
:class:`rtvoice.Downlink` (which it feeds with received audio). It runs its network I/O on its own
thread and loop, so blocking the application's loop never delays audio; ``on_message(text)`` and
``on_state(state, reason)`` are called on the loop that called :meth:`Transport.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from rtvoice.rtc.thread import RtcThread

__all__ = [
    "ConnectTimings",
    "MediaGate",
    "ThreadedTransport",
    "Transport",
    "TransportKind",
    "TransportState",
    "close_rtc_now",
]

TransportKind = Literal["webrtc", "websocket"]
TransportState = Literal["new", "connecting", "connected", "closed", "failed"]


@dataclass
class ConnectTimings:
    """Connect-time breakdown in milliseconds (None: the phase did not run or has not ended).

    WebRTC runs every phase; WebSocket has no ICE, SDP or data channel: its handshake is
    ``sdp_post_ms`` 's place, reported as ``handshake_ms``.
    """

    key_ms: float | None = None
    ice_gathering_ms: float | None = None
    sdp_post_ms: float | None = None
    ice_dtls_ms: float | None = None
    data_channel_ms: float | None = None
    handshake_ms: float | None = None
    session_created_ms: float | None = None
    total_ms: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


class Transport(Protocol):
    """One connection to a Realtime API server (WebRTC or WebSocket)."""

    kind: TransportKind
    state: TransportState
    timings: ConnectTimings
    call_id: str | None
    max_message_bytes: int
    # Why the transport failed or closed, when it did.
    reason: str | None
    # True when the server buffers the output audio, reports output_audio_buffer.* and stops it
    # itself on barge-in (WebRTC); False when the client's playout is the only buffer (WebSocket).
    server_output_buffer: bool
    # How a standard key's session configuration reaches the server: in a multipart offer
    # (WebRTC) or as a session.update after session.created (WebSocket).
    session_delivery: Literal["multipart", "session.update"]

    async def connect(
        self,
        *,
        key: str,
        session: Mapping[str, Any] | None = None,
        multipart: bool | None = None,
        hangup_key: str | None = None,
    ) -> None:
        """Open the connection and wait until ready (``session.created`` received)."""
        ...

    async def send_text(self, text: str) -> None:
        """Send one JSON event; raises :class:`rtvoice.errors.TransportError` if it cannot."""
        ...

    async def send_texts(self, texts: list[str]) -> None:
        """Send several events in order (one hop to the network thread)."""
        ...

    async def get_stats(self) -> dict[str, Any]:
        """Network statistics with the same names on every transport: ``rtt_ms``,
        ``packets_sent``, ``packets_received``, ``packets_lost``, ``jitter_ms``, and
        ``remote_fraction_lost`` where the peer reports it, and ``media_errors``: failures of the
        media callbacks (outbound track, RTP tap, audio deltas), counted instead of raised."""
        ...

    def audio_received_ms(self, item_id: str) -> float | None:
        """Milliseconds of the item's audio received so far, where the client counts it
        (WebSocket); None where the server keeps the output buffer (WebRTC)."""
        ...

    def set_loss_hint(self, percent: int) -> None:
        """Expected loss for the uplink's FEC (applied on the thread that owns the encoder)."""
        ...

    async def close(self) -> None:
        """Hang up and release every thread, task and socket. Idempotent."""
        ...

    def close_now(self, timeout_s: float = 2.0) -> None:
        """Release the connection and its thread without the application's loop, from any
        thread (a session's finalizer or exit hook): no hangup request, no state callback.
        Idempotent; a no-op after :meth:`close`."""
        ...


def close_rtc_now(rtc: RtcThread, closing: Coroutine[Any, Any, None], timeout_s: float) -> None:
    """Run ``closing`` on ``rtc``'s loop, then stop that loop, needing no other loop.

    From any other thread: waits at most ``timeout_s`` for ``closing``, then joins the thread.
    On the RTC thread itself (a finalizer the garbage collector ran there) both are scheduled,
    not awaited.
    """
    if threading.current_thread() is rtc.thread:

        async def close_then_stop() -> None:
            with contextlib.suppress(Exception):
                await closing
            rtc.stop()

        with contextlib.suppress(RuntimeError):  # already stopped
            rtc.submit(close_then_stop())
        return
    with contextlib.suppress(Exception):  # stopped meanwhile, or closing took too long
        rtc.submit(closing).result(timeout_s)
    rtc.stop()


class ThreadedTransport:
    """What both transports share: a private RtcThread loop for the network, callbacks handed to
    the application's loop, and the state changes reported through ``on_state``."""

    label = "transport"
    state: TransportState
    reason: str | None
    messages_received: int
    _closed: bool
    _rtc: RtcThread | None
    _app_loop: asyncio.AbstractEventLoop | None
    _on_message: Callable[[str], None] | None
    _on_state: Callable[[str, str | None], None] | None

    def _set_state(self, state: TransportState, reason: str | None = None) -> None:
        if self.state == state or self.state == "closed":
            return
        self.state = state
        if reason is not None:
            self.reason = reason
        if self._on_state is not None:
            self._on_state(state, reason)

    def _to_app(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._app_loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    def _deliver(self, text: str) -> None:
        self.messages_received += 1
        if self._on_message is not None:
            self._on_message(text)

    def _lost(self, reason: str) -> None:
        if self.state == "connected" and not self._closed:
            logging.getLogger(type(self).__module__).warning("%s lost: %s", self.label, reason)
            self._set_state("failed", reason)

    async def _close_on_rtc(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        rtc = self._rtc
        if rtc is None:
            return
        with contextlib.suppress(Exception):
            await rtc.run(self._close_on_rtc())
        await asyncio.get_running_loop().run_in_executor(None, rtc.stop)


class MediaGate:
    """Stands between a transport and the session's native uplink or downlink, so that two calls
    can share one audio engine while only one of them carries the audio.

    A session that opens a new call while the old one still runs (recycling) gives the new call
    closed gates: its transport pulls no uplink packet and its received audio is dropped. At the
    switch the old call's gates close and the new call's open. ``open`` is a plain attribute read
    on the network thread; a packet in flight at the switch goes to the call that took it.
    """

    __slots__ = ("_lock", "_open", "_watchers", "dropped", "target")

    def __init__(
        self, target: Any, *, is_open: bool = True, lock: threading.Lock | None = None
    ) -> None:
        self.target = target
        self._open = is_open
        # Shared by the gates of one target: the native uplink has a single consumer, and at a
        # switch the old call's thread may still be inside pop_due when the new call's asks.
        self._lock = lock
        # Called with the new state on every change (the native media path's own gate).
        self._watchers: list[Callable[[bool], None]] = []
        # Packets or audio chunks offered while closed.
        self.dropped = 0

    @property
    def is_open(self) -> bool:
        return self._open

    @is_open.setter
    def is_open(self, value: bool) -> None:
        self._open = bool(value)
        for watcher in self._watchers:
            watcher(self._open)

    def watch(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(is_open)`` on every change from now on (a native media call keeps
        its own copy of the gate, read on the media thread)."""
        self._watchers.append(callback)

    # Uplink side (PacketSource / PcmUplink).
    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
        if not self.is_open:
            return None
        lock = self._lock
        if lock is None:
            result: tuple[bytes, int, int] | None = self.target.pop_due(now_ns)
            return result
        with lock:
            if not self._still_open():  # closed while this thread waited
                return None
            locked: tuple[bytes, int, int] | None = self.target.pop_due(now_ns)
            return locked

    def _still_open(self) -> bool:
        return self._open

    @property
    def next_due_ns(self) -> int | None:
        if not self.is_open:
            return None
        due: int | None = self.target.next_due_ns
        return due

    def set_packet_loss_perc(self, percent: int) -> None:
        setter = getattr(self.target, "set_packet_loss_perc", None)
        if setter is not None:
            setter(percent)

    # Downlink side (RtpSink / PcmDownlink).
    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> bool | None:
        if not self.is_open:
            self.dropped += 1
            return False
        result: bool | None = self.target.push_rtp(seq, timestamp, payload, arrival_ns)
        return result

    def push_pcm(self, pcm: Any) -> int:
        if not self.is_open:
            self.dropped += 1
            return 0
        pushed: int = self.target.push_pcm(pcm)
        return pushed
