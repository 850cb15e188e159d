"""WebSocket transport: JSON events and base64 PCM16 audio over one aiohttp WebSocket.

Like the WebRTC transport it runs on a private :class:`~rtvoice.rtc.thread.RtcThread` loop, so
a blocked application loop never delays audio. On that loop:

- the sender drains the native :class:`rtvoice.Uplink` (``mode="pcm16"``, 24 kHz) on its sample
  clock with ``pop_due`` and sends ``input_audio_buffer.append`` every ``chunk_ms`` (a multiple of
  20 ms). The uplink sends silence when the app has nothing, as a microphone would;
- the reader hands ``response.output_audio.delta`` (beta: ``response.audio.delta``) PCM16 to the
  native :class:`rtvoice.Downlink` (``mode="pcm16"``), which buffers TCP bursts with a small
  prebuffer and counts underruns, and passes every other event to the session. Audio deltas are
  not passed on: the audio goes to the speaker, as on WebRTC; :attr:`audio_samples_by_item`
  counts what was received per item (barge-in never truncates past it);
- WebSocket pings measure the round-trip time and keep the server talking: with
  ``dead_peer_timeout_s`` (default 5 s), a call from which no message and no pong arrived for that
  long is declared lost (pings go out every ``min(ping_interval_s, dead_peer_timeout_s / 3)``, so
  a live server always answers in time).

GA: ``wss://…/v1/realtime?model=…`` with ``Authorization: Bearer`` (standard or ephemeral key);
the beta interface adds ``OpenAI-Beta: realtime=v1``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import aiohttp
import numpy as np

from rtvoice import _checks, errors
from rtvoice.rtc.thread import RtcThread
from rtvoice.transports.base import (
    ConnectTimings,
    ThreadedTransport,
    TransportKind,
    TransportState,
    close_rtc_now,
)

__all__ = ["WebSocketTransport", "websocket_url"]

logger = logging.getLogger(__name__)

FRAME_MS = 20
AUDIO_DELTA_TYPES = (
    "response.output_audio.delta",
    "response.audio.delta",
    "session.output_audio.delta",
)
# How long closing a Live session waits for session.closed after session.close.
LIVE_CLOSE_WAIT_S = 1.0
# Bounded per-item received-audio bookkeeping (barge-in needs only the current item).
_ITEMS_KEPT = 64
# How often the dead-peer watchdog looks at the last arrival (at most).
WATCHDOG_INTERVAL_S = 0.5


class PcmUplink(Protocol):
    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None: ...

    @property
    def next_due_ns(self) -> int | None: ...


class PcmDownlink(Protocol):
    def push_pcm(self, pcm: Any) -> int: ...


def websocket_url(base_url: str, *, model: str | None) -> str:
    """``http(s)://host/v1`` -> ``ws(s)://host/v1/realtime?model=...``."""
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None:
        raise errors.ConfigurationError(f"base_url must be http(s) or ws(s), not {parts.scheme!r}")
    query = urllib.parse.urlencode({"model": model}) if model else ""
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path + "/realtime", query, ""))


def live_websocket_url(base_url: str, *, fork_of: str | None = None) -> str:
    """``http(s)://host/v1`` -> ``ws(s)://host/v1/live/sessions`` (or ``…/{id}/fork``)."""
    parts = urllib.parse.urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None:
        raise errors.ConfigurationError(f"base_url must be http(s) or ws(s), not {parts.scheme!r}")
    path = parts.path + "/live/sessions"
    if fork_of is not None:
        path += f"/{urllib.parse.quote(fork_of, safe='')}/fork"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, "", ""))


class WebSocketTransport(ThreadedTransport):
    """One WebSocket connection to a Realtime API server.

    ``on_message(text)`` and ``on_state(state, reason)`` are called on the loop that called
    :meth:`connect`. When :meth:`connect` is given a ``session``, it is sent as
    ``session.update`` right after ``session.created`` (a standard key carries no session).
    """

    label = "WebSocket transport"
    kind: TransportKind = "websocket"
    server_output_buffer = False
    session_delivery: Literal["multipart", "session.update"] = "session.update"

    def __init__(
        self,
        *,
        base_url: str,
        api_version: Literal["ga", "beta"] = "ga",
        model: str | None = None,
        uplink: PcmUplink | None = None,
        downlink: PcmDownlink | None = None,
        chunk_ms: int = 20,
        http_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        ping_interval_s: float = 5.0,
        dead_peer_timeout_s: float | None = 5.0,
        on_message: Callable[[str], None] | None = None,
        on_state: Callable[[str, str | None], None] | None = None,
        api: Literal["realtime", "live"] = "realtime",
        fork_of: str | None = None,
    ) -> None:
        if api_version not in ("ga", "beta"):
            raise ValueError(f"api_version must be 'ga' or 'beta', not {api_version!r}")
        if chunk_ms % FRAME_MS or chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be a positive multiple of 20, not {chunk_ms}")
        if api not in ("realtime", "live"):
            raise ValueError(f"api must be 'realtime' or 'live', not {api!r}")
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.model = model
        # Live: wss://…/v1/live/sessions (first frame session.start), or …/{id}/fork.
        self.api = api
        self.fork_of = fork_of
        if api == "live":
            self.url = live_websocket_url(self.base_url, fork_of=fork_of)
        else:
            self.url = websocket_url(self.base_url, model=model)
        self._ready_type = "session.started" if api == "live" else "session.created"
        self._append_type = (
            "session.input_audio.append" if api == "live" else "input_audio_buffer.append"
        )
        self._uplink = uplink
        self._downlink = downlink
        self.chunk_ms = chunk_ms
        self._http_timeout_s = http_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self.dead_peer_timeout_s = _checks.positive_timeout(
            dead_peer_timeout_s, "dead_peer_timeout_s", allow_none=True
        )
        self.ping_interval_s = _checks.positive_interval(ping_interval_s, "ping_interval_s")
        if self.dead_peer_timeout_s is not None:
            self.ping_interval_s = min(self.ping_interval_s, self.dead_peer_timeout_s / 3)
        self._on_message = on_message
        self._on_state = on_state

        self.timings = ConnectTimings()
        self.call_id: str | None = None
        self.max_message_bytes = 0  # no SCTP limit on WebSocket
        self.state: TransportState = "new"
        self.reason: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.messages_received = 0
        self.messages_sent = 0
        self.audio_chunks_sent = 0
        self.audio_bytes_sent = 0
        self.audio_deltas_received = 0
        self.audio_samples_received = 0
        # Received samples the downlink's PCM ring had no room for (it holds 20 s ahead of
        # playout), counted rather than dropped silently.
        self.audio_samples_dropped = 0
        self.bad_audio_deltas = 0
        # Monotonic ns of the last output audio delta (0 before the first).
        self.last_audio_delta_ns = 0
        self.rtt_ms: float | None = None
        self.pongs_received = 0
        # Monotonic ns of the last frame (message, pong, ping) from the server, or of connecting.
        self.last_heard_ns = 0
        self.audio_samples_by_item: collections.OrderedDict[str, int] = collections.OrderedDict()

        self._rtc: RtcThread | None = None
        self._app_loop: asyncio.AbstractEventLoop | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._closed = False
        self._created: asyncio.Event | None = None
        # Live: set when session.closed arrives (closing waits for it after session.close).
        self._live_closed: asyncio.Event | None = None
        self._ping_sent: dict[bytes, int] = {}

    # ------------------------------------------------------------------ application side

    async def connect(
        self,
        *,
        key: str,
        session: Mapping[str, Any] | None = None,
        multipart: bool | None = None,
        hangup_key: str | None = None,
    ) -> None:
        """Open the WebSocket and wait for ``session.created`` (Live: send ``session.start``
        with ``session`` and wait for ``session.started``)."""
        del multipart, hangup_key  # WebRTC notions; closing the socket ends the session
        if self.state != "new":
            raise errors.SessionError(f"connect() called on a transport in state {self.state!r}")
        self._app_loop = asyncio.get_running_loop()
        self._set_state("connecting")
        self._rtc = RtcThread(name="rtvoice-ws")
        try:
            await self._rtc.run(self._connect_on_rtc(key, session))
        except BaseException as exc:
            self._set_state("failed", errors.redact(str(exc)) or type(exc).__name__)
            await self._shutdown()
            raise
        self._set_state("connected")

    async def send_text(self, text: str) -> None:
        await self._send_all([text], "send_text()")

    async def send_texts(self, texts: list[str]) -> None:
        """Send several events in order in one hop to the network thread (a restore's replay);
        the same checks as :meth:`send_text`, all made before anything is sent."""
        await self._send_all(texts, "send_texts()")

    async def _send_all(self, texts: list[str], caller: str) -> None:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"{caller} takes str, not {type(text).__name__}")
        if self.state != "connected" or self._rtc is None:
            raise errors.TransportError(f"cannot send: transport is {self.state}")
        await self._rtc.run(self._send_many_on_rtc(texts))
        self.messages_sent += len(texts)

    async def _send_many_on_rtc(self, texts: list[str]) -> None:
        for text in texts:
            await self._send_on_rtc(text)

    async def get_stats(self) -> dict[str, Any]:
        return {
            "rtt_ms": self.rtt_ms,
            "packets_sent": self.audio_chunks_sent,
            "bytes_sent": self.audio_bytes_sent,
            "packets_received": self.audio_deltas_received,
            "packets_lost": 0,
            "jitter_ms": None,
            "media_errors": self.bad_audio_deltas,
            "pcm_dropped_samples": self.audio_samples_dropped,
        }

    def audio_received_ms(self, item_id: str) -> float | None:
        """Milliseconds of the item's audio received (24 kHz PCM16 deltas)."""
        return float(self.audio_samples_by_item.get(item_id, 0)) / 24.0

    def set_loss_hint(self, percent: int) -> None:
        """No FEC on WebSocket (TCP does not lose)."""
        del percent

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._shutdown()
        if self.state != "failed":
            self._set_state("closed")

    def close_now(self, timeout_s: float = 2.0) -> None:
        """Close the socket on the RTC loop (at most ``timeout_s``) and stop the RTC thread, from
        any thread and without the application's loop; no state callback. Idempotent; a no-op
        after :meth:`close`."""
        rtc = self._rtc
        if self._closed or rtc is None:
            return
        self._closed = True
        close_rtc_now(rtc, self._close_on_rtc(), timeout_s)

    @property
    def rtc_thread(self) -> RtcThread | None:
        return self._rtc

    # ------------------------------------------------------------------ internals

    async def _connect_on_rtc(self, key: str, session: Mapping[str, Any] | None) -> None:
        start = time.perf_counter()
        headers = {"Authorization": f"Bearer {key}"}
        if self.api_version == "beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self._http_timeout_s)
        )
        path = urllib.parse.urlsplit(self.url).path
        try:
            self._ws = await self._http.ws_connect(
                self.url,
                headers=headers,
                autoping=False,
                max_msg_size=0,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise errors.error_from_response(
                exc.status,
                {"error": {"message": exc.message}},
                context=f"GET {path}",
                headers=dict(exc.headers) if exc.headers else None,
            ) from exc
        except TimeoutError as exc:
            raise errors.TimeoutError(
                f"WebSocket {path} timed out after {self._http_timeout_s:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.ConnectionError(f"WebSocket {path} failed: {exc}") from exc
        self.timings.handshake_ms = (time.perf_counter() - start) * 1000.0
        self._created = asyncio.Event()
        self._live_closed = asyncio.Event() if self.api == "live" else None
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._reader()))
        t0 = time.perf_counter()
        if self.api == "live":
            # The session starts with the client's first frame (a fork's may be empty).
            start_event = {"type": "session.start", "session": dict(session or {})}
            await self._ws.send_str(json.dumps(start_event, separators=(",", ":")))
            self.messages_sent += 1
            session = None
        try:
            await asyncio.wait_for(self._created.wait(), self._connect_timeout_s)
        except TimeoutError as exc:
            raise errors.TimeoutError(
                f"timed out after {self._connect_timeout_s:g} s waiting for {self._ready_type}"
                + (f" ({self.reason})" if self.reason else "")
            ) from exc
        if self._ws.closed:
            raise errors.TransportError(
                f"the server closed the WebSocket before {self._ready_type}: {self.reason}"
            )
        self.timings.session_created_ms = (time.perf_counter() - t0) * 1000.0
        if session is not None:
            update = {"type": "session.update", "session": dict(session)}
            await self._ws.send_str(json.dumps(update, separators=(",", ":")))
            self.messages_sent += 1
        if self._uplink is not None:
            self._tasks.append(loop.create_task(self._sender()))
        self._tasks.append(loop.create_task(self._pinger()))
        self.last_heard_ns = max(self.last_heard_ns, time.monotonic_ns())
        if self.dead_peer_timeout_s is not None:
            self._tasks.append(loop.create_task(self._watch_peer(self.dead_peer_timeout_s)))
        self.timings.total_ms = (time.perf_counter() - start) * 1000.0

    async def _reader(self) -> None:
        ws = self._ws
        assert ws is not None
        assert self._created is not None
        close_extra: object = None
        try:
            while True:
                msg = await ws.receive()
                self.last_heard_ns = time.monotonic_ns()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    # The server's close frame: its reason is in the message, not on ws
                    # (which keeps only the code). `async for` would swallow this message.
                    close_extra = msg.extra
                    break
                if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._on_text(bytes(msg.data).decode("utf-8", "replace"))
                elif msg.type == aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    self.pongs_received += 1
                    sent = self._ping_sent.pop(bytes(msg.data), None)
                    if sent is not None:
                        self.rtt_ms = (time.monotonic_ns() - sent) / 1e6
        except Exception as exc:  # a broken socket: reported below as a loss
            self.reason = f"WebSocket read failed: {exc}"
        self.close_code = ws.close_code
        ext = close_extra if isinstance(close_extra, str) and close_extra else None
        self.close_reason = ext
        self.reason = self.reason or (
            f"the server closed the WebSocket (code {ws.close_code}"
            + (f", {ext}" if ext else "")
            + ")"
        )
        self._created.set()  # a close before session.created ends the wait
        self._to_app(self._lost, self.reason)

    def _on_text(self, text: str) -> None:
        assert self._created is not None
        # Only audio deltas contain this (transcript deltas end in "transcript.delta").
        if 'audio.delta"' in text and self._on_audio_delta(text):
            return
        if not self._created.is_set() and f'"{self._ready_type}"' in text[:200]:
            self._created.set()
            if self.api == "live":  # the Live session's id names the call
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    session_id = json.loads(text).get("session", {}).get("id")
                    self.call_id = session_id if isinstance(session_id, str) else None
        if self.api == "live" and '"session.closed"' in text[:200] and self._live_closed:
            self._live_closed.set()
        self._to_app(self._deliver, text)

    def _on_audio_delta(self, text: str) -> bool:
        """Network thread: PCM16 into the Downlink. False: not an audio delta after all."""
        try:
            event = json.loads(text)
        except ValueError:
            return False
        if not isinstance(event, dict) or event.get("type") not in AUDIO_DELTA_TYPES:
            return False
        try:
            pcm = np.frombuffer(base64.b64decode(str(event.get("delta", "")), validate=True), "<i2")
        except (binascii.Error, ValueError):
            self.bad_audio_deltas += 1
            return True
        self.audio_deltas_received += 1
        self.audio_samples_received += int(pcm.size)
        self.last_audio_delta_ns = time.monotonic_ns()
        item = event.get("item_id")
        if isinstance(item, str):
            self.audio_samples_by_item[item] = self.audio_samples_by_item.get(item, 0) + pcm.size
            self.audio_samples_by_item.move_to_end(item)
            while len(self.audio_samples_by_item) > _ITEMS_KEPT:
                self.audio_samples_by_item.popitem(last=False)
        downlink = self._downlink
        if downlink is not None and pcm.size:
            pushed = int(downlink.push_pcm(np.ascontiguousarray(pcm, dtype=np.int16)))
            # A closed media gate (a call being replaced) counts its own drops.
            if pushed < pcm.size and getattr(downlink, "is_open", True):
                self.audio_samples_dropped += int(pcm.size) - pushed
        return True

    async def _sender(self) -> None:
        """The uplink's clock on WebSocket: one append per chunk_ms of audio."""
        uplink, ws = self._uplink, self._ws
        assert uplink is not None
        assert ws is not None
        frames_per_chunk = self.chunk_ms // FRAME_MS
        chunk: list[bytes] = []
        while not ws.closed:
            now = time.monotonic_ns()
            try:
                while (item := uplink.pop_due(now)) is not None:
                    chunk.append(item[0])
                    if len(chunk) >= frames_per_chunk:
                        audio = b"".join(chunk)
                        chunk.clear()
                        event = {
                            "type": self._append_type,
                            "audio": base64.b64encode(audio).decode("ascii"),
                        }
                        await ws.send_str(json.dumps(event, separators=(",", ":")))
                        self.audio_chunks_sent += 1
                        self.audio_bytes_sent += len(audio)
                due = uplink.next_due_ns
            except (ConnectionResetError, aiohttp.ClientError, RuntimeError) as exc:
                self.reason = self.reason or f"WebSocket send failed: {exc}"
                return
            delay_s = 0.02 if due is None else min(max((due - time.monotonic_ns()) / 1e9, 0), 0.02)
            await asyncio.sleep(delay_s)

    async def _pinger(self) -> None:
        ws = self._ws
        assert ws is not None
        while not ws.closed:
            payload = os.urandom(8)
            self._ping_sent = {payload: time.monotonic_ns()}
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError, RuntimeError):
                await ws.ping(payload)
            await asyncio.sleep(self.ping_interval_s)

    async def _watch_peer(self, timeout_s: float) -> None:
        """RTC loop, from connected until closed: declare the call lost after ``timeout_s``
        without any frame from the server (the pinger makes a live one answer)."""
        timeout_ns = int(timeout_s * 1e9)
        interval_s = min(WATCHDOG_INTERVAL_S, timeout_s / 4)
        while True:
            silent_ns = time.monotonic_ns() - self.last_heard_ns
            if silent_ns >= timeout_ns:
                self._to_app(self._lost, f"no message or pong from the server for {timeout_s:g} s")
                return
            await asyncio.sleep(min(interval_s, (timeout_ns - silent_ns) / 1e9))

    async def _send_on_rtc(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise errors.TransportError("cannot send: the WebSocket is closed")
        try:
            await ws.send_str(text)
        except (ConnectionResetError, aiohttp.ClientError, RuntimeError) as exc:
            raise errors.TransportError(f"WebSocket send failed: {exc}") from exc

    async def _close_on_rtc(self) -> None:
        ws, closed = self._ws, self._live_closed
        if ws is not None and not ws.closed and closed is not None and not closed.is_set():
            # Live: ask the server to end the session and wait (briefly) until it says so, so
            # that a stored session is finalized (forkable) rather than dropped.
            with contextlib.suppress(Exception):
                await ws.send_str(json.dumps({"type": "session.close"}))
                await asyncio.wait_for(closed.wait(), LIVE_CLOSE_WAIT_S)
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
