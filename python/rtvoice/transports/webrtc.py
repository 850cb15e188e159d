"""WebRTC transport: aiortc peer connection, SDP exchange with the Realtime API, data channel.

The peer connection lives on a private :class:`~rtvoice.rtc.thread.RtcThread` loop, so blocking
the application's loop never delays RTP. Public coroutines are awaited on the application loop;
received data-channel messages are handed to it with ``call_soon_threadsafe``.

Signaling (protocol.md §2): one sendrecv audio transceiver and the ``oai-events`` data channel are
created before the offer; Opus is offered with ``minptime=10;useinbandfec=1``; the complete
(non-trickle) offer is POSTed to ``{base_url}/realtime/calls`` as ``application/sdp`` (ephemeral
key) or multipart ``sdp`` + ``session`` (standard key), or to ``{base_url}/realtime?model=`` for
the beta interface. The HTTP status is checked before the answer is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from rtvoice import _checks, errors
from rtvoice.auth import Secret
from rtvoice.rtc import loopback
from rtvoice.rtc.loopback import is_loopback_url
from rtvoice.rtc.native_audio import (
    EncodedAudioTrack,
    NativeMedia,
    NativeMediaUnavailable,
    PacketSource,
    RtcpWatch,
    RtpSink,
    RtpTap,
    attach_rtcp_watch,
    attach_rtp_sink,
    intercept_rtp_start,
    restrict_srtp_profiles,
    start_native_media,
)
from rtvoice.rtc.thread import RtcThread
from rtvoice.transports.base import (
    ConnectTimings,
    ThreadedTransport,
    TransportKind,
    TransportState,
    close_rtc_now,
)

__all__ = ["DATA_CHANNEL_LABEL", "ConnectTimings", "WebRTCTransport", "is_loopback_url"]

logger = logging.getLogger(__name__)

DATA_CHANNEL_LABEL = "oai-events"
# RFC 8841 default when the answer carries no a=max-message-size (what aiortc assumes too).
DEFAULT_MAX_MESSAGE_BYTES = 65536
OPUS_FMTP = {"minptime": 10, "useinbandfec": 1}
# Who carries RTP, RTCP and SRTP: the native media thread ("native"), aiortc on the RTC loop
# ("python"), or the native one when the call allows it, else aiortc ("auto").
MediaPath = Literal["auto", "native", "python"]
# How often the dead-peer watchdog looks at the last RTP and RTCP arrival (at most).
WATCHDOG_INTERVAL_S = 0.5


# How long closing a Live session waits for session.closed after session.close.
LIVE_CLOSE_WAIT_S = 1.0
# How long a closed data channel waits for the peer connection to report that it closed too.
CHANNEL_CLOSE_GRACE_S = 0.25


@dataclass
class _Pending:
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    session_created: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str = ""


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _parse_max_message_size(sdp: str) -> int:
    """a=max-message-size of the answer's application section (RFC 8841); 0 means no limit."""
    in_application = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_application = line.startswith("m=application")
        elif in_application and line.startswith("a=max-message-size:"):
            try:
                size = int(line.split(":", 1)[1].strip())
            except ValueError:
                break
            # A negative size is invalid (RFC 8841 allows 0 and up) and would refuse every send.
            return size if size >= 0 else DEFAULT_MAX_MESSAGE_BYTES
    return DEFAULT_MAX_MESSAGE_BYTES


def munge_opus_fmtp(sdp: str, params: Mapping[str, int]) -> str:
    """Put ``params`` on every Opus payload type of ``sdp`` (replacing an existing fmtp line)."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    eol = "\r\n" if "\r\n" in sdp else "\n"
    opus_pts = {
        line.split(":", 1)[1].split()[0]
        for line in lines
        if line.startswith("a=rtpmap:") and " opus/48000" in line.lower()
    }
    value = ";".join(f"{k}={v}" for k, v in params.items())
    out: list[str] = []
    for line in lines:
        if line.startswith("a=fmtp:") and line[7:].split()[0] in opus_pts:
            continue
        out.append(line)
        if line.startswith("a=rtpmap:") and line.split(":", 1)[1].split()[0] in opus_pts:
            out.append(f"a=fmtp:{line.split(':', 1)[1].split()[0]} {value}")
    return eol.join(out)


class WebRTCTransport(ThreadedTransport):
    """One WebRTC call to a Realtime API server.

    ``uplink`` (the native :class:`rtvoice.Uplink` in Opus mode, or any :class:`PacketSource`)
    feeds the outbound audio track with Opus on its sample clock; ``downlink`` (the native
    :class:`rtvoice.Downlink`, or any :class:`RtpSink`) receives inbound RTP before aiortc's
    jitter buffer. ``track`` may be given instead of ``uplink`` to send a stock aiortc track (then
    aiortc encodes it).

    ``ice_timeout_s`` bounds the wait for ICE and DTLS after the answer; when it runs out, or ICE
    fails, or the answer is unusable, :meth:`connect` raises :class:`errors.WebRTCUnavailableError`
    (a session with ``transport="auto"`` then falls back to WebSocket).

    ``dead_peer_timeout_s``: once connected, when neither RTP nor RTCP has arrived from the
    server for this long (a live server sends RTCP reports about every second even when the
    assistant is silent), the call is declared lost: state ``"failed"``, reason ``"no RTP or
    RTCP from the server for N s"``. A shorter freeze is ridden out; ``None`` disables the check.
    The data channel closing and the peer connection failing (ICE, DTLS) or closing are reported
    the same way at once, whatever the timeout.

    ``on_message(text)`` and ``on_state(state, reason)`` are called on the loop that called
    :meth:`connect`.
    """

    label = "WebRTC transport"
    kind: TransportKind = "webrtc"
    server_output_buffer = True
    session_delivery: Literal["multipart", "session.update"] = "multipart"

    def __init__(
        self,
        *,
        base_url: str,
        api_version: Literal["ga", "beta"] = "ga",
        model: str | None = None,
        ice_servers: list[RTCIceServer] | None = None,
        loopback_only: bool | None = None,
        uplink: PacketSource | None = None,
        downlink: RtpSink | None = None,
        track: MediaStreamTrack | None = None,
        http_timeout_s: float = 10.0,
        connect_timeout_s: float = 15.0,
        ice_timeout_s: float = 5.0,
        dead_peer_timeout_s: float | None = 5.0,
        on_message: Callable[[str], None] | None = None,
        on_state: Callable[[str, str | None], None] | None = None,
        api: Literal["realtime", "live"] = "realtime",
        fork_of: str | None = None,
        media_path: MediaPath = "auto",
    ) -> None:
        if media_path not in ("auto", "native", "python"):
            raise ValueError(f"media_path must be 'auto', 'native' or 'python', not {media_path!r}")
        self.media_path = media_path
        # Which path carries this call's RTP ("native" or "python"; None before DTLS connected)
        # and, for "python" under media_path="auto", why the native one could not.
        self.media_path_used: Literal["native", "python"] | None = None
        self.media_path_reason: str | None = None
        self.native: NativeMedia | None = None
        if api_version not in ("ga", "beta"):
            raise ValueError(f"api_version must be 'ga' or 'beta', not {api_version!r}")
        if api not in ("realtime", "live"):
            raise ValueError(f"api must be 'realtime' or 'live', not {api!r}")
        # Live: POST /live/sessions (or /live/sessions/{id}/fork) with a JSON body; ready on
        # session.started; closed with session.close.
        self.api = api
        self.fork_of = fork_of
        self._ready_type = "session.started" if api == "live" else "session.created"
        self._live_closed: asyncio.Event | None = None
        if api_version == "beta" and not model:
            raise ValueError("the beta interface needs a model (POST /realtime?model=...)")
        if uplink is not None and track is not None:
            raise ValueError("give uplink or track, not both")
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.model = model
        self.loopback = is_loopback_url(base_url) if loopback_only is None else loopback_only
        # No STUN by default: a Realtime server has public host candidates, so the client's host
        # candidates plus peer-reflexive discovery suffice, and nothing waits on STUN.
        self.ice_servers = list(ice_servers) if ice_servers is not None else []
        self._uplink = uplink
        self._downlink = downlink
        self._track = track
        self._http_timeout_s = http_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._ice_timeout_s = ice_timeout_s
        self.dead_peer_timeout_s = _checks.positive_timeout(
            dead_peer_timeout_s, "dead_peer_timeout_s", allow_none=True
        )
        self._on_message = on_message
        self._on_state = on_state

        self.timings = ConnectTimings()
        self.call_id: str | None = None
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES
        self.state: TransportState = "new"
        self.reason: str | None = None
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self.messages_received = 0
        self.messages_sent = 0
        self.rtp_tap: RtpTap | None = None
        self.rtcp_watch: RtcpWatch | None = None
        # Monotonic ns when the call became connected (the dead-peer clock starts there).
        self.connected_ns = 0
        self.outbound_track: MediaStreamTrack | None = None
        self.remote_ice_lite = False

        self._rtc: RtcThread | None = None
        self._app_loop: asyncio.AbstractEventLoop | None = None
        self._pc: RTCPeerConnection | None = None
        self._channel: Any = None
        self._pending: _Pending | None = None
        self._hangup_key: Secret | None = None
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ application side

    async def connect(
        self,
        *,
        key: str,
        session: Mapping[str, Any] | None = None,
        multipart: bool | None = None,
        hangup_key: str | None = None,
    ) -> None:
        """Open the call and wait until ready: peer connection connected, data channel open and
        ``session.created`` received.

        ``key`` is an ephemeral key (``application/sdp`` body) or a standard key; ``multipart``
        (default: True when ``session`` is given) sends ``sdp`` + ``session`` parts (GA only).
        ``hangup_key`` (a standard key; default ``key`` for multipart) is used to hang up the
        call on :meth:`close`.
        """
        if self.state != "new":
            raise errors.SessionError(f"connect() called on a transport in state {self.state!r}")
        if self.api == "live":
            multipart = False  # the session goes in the JSON body
        elif multipart is None:
            multipart = session is not None
        if multipart and self.api_version == "beta":
            raise ValueError("multipart offers are a GA feature; use an ephemeral key for beta")
        if multipart and session is None:
            raise ValueError("a multipart offer needs a session")
        self._app_loop = asyncio.get_running_loop()
        self._set_state("connecting")
        self._rtc = RtcThread()
        hangup = hangup_key or (key if multipart else None)
        self._hangup_key = Secret(hangup) if hangup else None
        try:
            body_session = session if (multipart or self.api == "live") else None
            await self._rtc.run(self._connect_on_rtc(key, body_session))
        except BaseException as exc:
            self._set_state("failed", errors.redact(str(exc)) or type(exc).__name__)
            await self._shutdown()
            raise
        self._set_state("connected")

    async def send_text(self, text: str) -> None:
        """Send one event (JSON text) on the data channel.

        Raises :class:`errors.TransportError` if the channel is not open or the message exceeds
        the SCTP maximum message size the server accepts (it is never dropped silently).
        """
        self._check_text(text, "send_text()")
        await self._send_checked([text])

    async def send_texts(self, texts: list[str]) -> None:
        """Send several events in order in one hop to the network thread (a restore's replay);
        the same checks as :meth:`send_text`, all made before anything is sent."""
        for text in texts:
            self._check_text(text, "send_texts()")
        await self._send_checked(texts)

    def _check_text(self, text: str, caller: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"{caller} takes str, not {type(text).__name__}")
        size = len(text.encode("utf-8"))
        if self.max_message_bytes and size > self.max_message_bytes:
            raise errors.TransportError(
                f"data-channel message of {size} bytes exceeds the peer's maximum message size "
                f"of {self.max_message_bytes} bytes; split it or send less (e.g. smaller images)"
            )

    async def _send_checked(self, texts: list[str]) -> None:
        if self.state != "connected" or self._rtc is None:
            raise errors.TransportError(f"cannot send: transport is {self.state}")
        await self._rtc.run(self._send_many_on_rtc(texts))
        self.messages_sent += len(texts)

    async def _send_many_on_rtc(self, texts: list[str]) -> None:
        for text in texts:
            await self._send_on_rtc(text)

    async def get_stats(self) -> dict[str, Any]:
        """RTP statistics from aiortc's getStats(): RTT, packets and loss both ways, jitter."""
        if self._rtc is None or self._pc is None or self.state != "connected":
            return {}
        return await self._rtc.run(self._stats_on_rtc())

    async def close(self) -> None:
        """Hang up (POST .../hangup when a standard key is at hand) and release the peer
        connection, its RTC thread, tasks and sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._shutdown()
        if self.state != "failed":
            self._set_state("closed")

    def close_now(self, timeout_s: float = 2.0) -> None:
        """Close the peer connection on the RTC loop (at most ``timeout_s``) and stop the RTC
        thread, from any thread and without the application's loop; no hangup POST, no state
        callback. Idempotent; a no-op after :meth:`close`."""
        rtc = self._rtc
        if self._closed or rtc is None:
            return
        self._closed = True
        self._hangup_key = None
        close_rtc_now(rtc, self._close_on_rtc(), timeout_s)

    def audio_received_ms(self, item_id: str) -> float | None:
        """None: the server keeps the output buffer and knows what it sent."""
        del item_id
        return None

    def set_loss_hint(self, percent: int) -> None:
        """The encoder belongs to the thread that sends: the media thread (which applies it
        before its next packet) or the RTC thread."""
        native = self.native
        if native is not None:
            native.call.set_loss_hint(int(min(max(percent, 0), 100)))
            return
        uplink = self._uplink
        setter = getattr(uplink, "set_packet_loss_perc", None)
        if self._rtc is not None and setter is not None:
            self._rtc.call_soon(setter, int(min(max(percent, 0), 100)))

    @property
    def rtc_thread(self) -> RtcThread | None:
        return self._rtc

    # ------------------------------------------------------------------ internals

    def _url(self) -> str:
        if self.api == "live":
            if self.fork_of is not None:
                source = urllib.parse.quote(self.fork_of, safe="")
                return f"{self.base_url}/live/sessions/{source}/fork"
            return f"{self.base_url}/live/sessions"
        if self.api_version == "beta":
            query = urllib.parse.urlencode({"model": self.model})
            return f"{self.base_url}/realtime?{query}"
        return f"{self.base_url}/realtime/calls"

    async def _connect_on_rtc(self, key: str, session: Mapping[str, Any] | None) -> None:
        start = time.perf_counter()
        pending = _Pending()
        self._pending = pending
        if self.api == "live":
            self._live_closed = asyncio.Event()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        self._pc = pc
        if self.loopback:
            loopback.restrict_to_loopback(pc)

        @pc.on("connectionstatechange")
        def _on_pc_state() -> None:
            state = pc.connectionState
            if state == "connected":
                pending.connected.set()
            elif state in ("failed", "closed"):
                what = f"peer connection {state}"
                if state == "failed":
                    what += (
                        " (ICE failed)" if pc.iceConnectionState == "failed" else " (DTLS failed)"
                    )
                pending.failure = pending.failure or what
                pending.failed.set()
                self._to_app(self._lost, what)

        # The track, when there is one, is attached now: the offer must say sendrecv.
        if self._uplink is not None:
            self.outbound_track = EncodedAudioTrack(self._uplink)
        elif self._track is not None:
            self.outbound_track = self._track
        transceiver = pc.addTransceiver(self.outbound_track or "audio", direction="sendrecv")
        transceiver.setCodecPreferences(
            [
                RTCRtpCodecCapability(
                    mimeType="audio/opus", clockRate=48000, channels=2, parameters={}
                )
            ]
        )
        if self._downlink is not None:
            self.rtp_tap = attach_rtp_sink(transceiver.receiver, self._downlink)
        self.rtcp_watch = attach_rtcp_watch(transceiver.receiver, transceiver.sender)

        channel = pc.createDataChannel(DATA_CHANNEL_LABEL)
        self._channel = channel
        self._prepare_media_path(pc, transceiver, pending)

        @channel.on("open")
        def _on_open() -> None:
            pending.channel_open.set()

        @channel.on("close")
        def _on_close() -> None:
            pending.failure = pending.failure or "data channel closed"
            pending.failed.set()
            # A server that hangs up closes the channel a moment before the peer connection;
            # the connection's own report ("peer connection closed") wins when it comes.
            asyncio.get_running_loop().call_later(
                CHANNEL_CLOSE_GRACE_S, self._to_app, self._lost, "data channel closed"
            )

        @channel.on("message")
        def _on_message(message: str | bytes) -> None:
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            ready = self._ready_type
            if not pending.session_created.is_set() and f'"{ready}"' in message:
                with contextlib.suppress(ValueError, AttributeError):
                    if json.loads(message).get("type") == ready:
                        pending.session_created.set()
            closed = self._live_closed
            if closed is not None and '"session.closed"' in message[:200]:
                closed.set()
            self._to_app(self._deliver, message)

        # aiortc gathers every candidate inside setLocalDescription: the offer is complete.
        t0 = time.perf_counter()
        await pc.setLocalDescription(await pc.createOffer())
        self.timings.ice_gathering_ms = _ms_since(t0)
        # aiortc cannot attach fmtp parameters to its Opus capability, so they go into the text
        # of the offer; aiortc itself does not act on Opus fmtp.
        self.local_sdp = munge_opus_fmtp(pc.localDescription.sdp, OPUS_FMTP)

        t0 = time.perf_counter()
        answer_sdp = await self._post_offer(self.local_sdp, key, session)
        self.timings.sdp_post_ms = _ms_since(t0)
        self.remote_sdp = answer_sdp
        self.max_message_bytes = _parse_max_message_size(answer_sdp)

        self.remote_ice_lite = any(line.strip() == "a=ice-lite" for line in answer_sdp.splitlines())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:  # aiortc raises ValueError and friends on a bad answer
            raise errors.WebRTCUnavailableError(
                f"the server's SDP answer was rejected: {exc}"
            ) from exc

        deadline = time.perf_counter() + self._connect_timeout_s
        t0 = time.perf_counter()
        try:
            await self._wait(
                pending, pending.connected, min(deadline, t0 + self._ice_timeout_s), "ICE+DTLS"
            )
        except errors.RtvoiceError as exc:
            raise errors.WebRTCUnavailableError(f"ICE/DTLS did not connect: {exc}") from exc
        self.timings.ice_dtls_ms = _ms_since(t0)
        t0 = time.perf_counter()
        await self._wait(pending, pending.channel_open, deadline, "the data channel to open")
        self.timings.data_channel_ms = _ms_since(t0)
        t0 = time.perf_counter()
        await self._wait(pending, pending.session_created, deadline, self._ready_type)
        self.timings.session_created_ms = _ms_since(t0)
        self.timings.total_ms = _ms_since(start)
        self.connected_ns = time.monotonic_ns()
        if self.dead_peer_timeout_s is not None:
            self._watchdog = asyncio.ensure_future(self._watch_peer(self.dead_peer_timeout_s))

    def _prepare_media_path(
        self, pc: RTCPeerConnection, transceiver: Any, pending: _Pending
    ) -> None:
        """Before the offer: arrange for the native media path to take the call's RTP when
        DTLS connects (media_path "auto" or "native", native pipelines given)."""
        if self.media_path == "python" or self._uplink is None or self._downlink is None:
            self.media_path_used = "python"
            self.media_path_reason = (
                "media_path='python'" if self.media_path == "python" else "no native pipelines"
            )
            return
        loop = asyncio.get_running_loop()
        try:
            dtls = [transceiver.receiver.transport]
            sctp = getattr(pc, "sctp", None)
            if sctp is not None:
                dtls.append(sctp.transport)
            restrict_srtp_profiles(dtls)
        except NativeMediaUnavailable as exc:
            self._native_refused(str(exc), pending)
            return

        def start(parameters: Any) -> bool:
            try:
                self.native = start_native_media(
                    transceiver.sender, parameters, self._uplink, self._downlink, loop
                )
            except NativeMediaUnavailable as exc:
                self._native_refused(str(exc), pending)
                return False
            except Exception as exc:  # an aiortc internal that moved in an unforeseen way
                self._native_refused(f"{type(exc).__name__}: {exc}", pending)
                return False
            self.media_path_used = "native"
            return True

        intercept_rtp_start(transceiver, start)

    def _native_refused(self, reason: str, pending: _Pending) -> None:
        self.media_path_used = "python"
        self.media_path_reason = reason
        if self.media_path == "native":
            pending.failure = pending.failure or f"the native media path is unavailable: {reason}"
            pending.failed.set()
        else:
            logger.info("native media path unavailable, using aiortc's: %s", reason)

    def heard_counts(self) -> tuple[int, int]:
        """(RTP, RTCP) packets received from the server so far, on whichever media path."""
        native = self.native
        if native is not None:
            stats = native.call.stats()
            return int(stats["packets_received"]), int(stats["rtcp_received"])
        tap, watch = self.rtp_tap, self.rtcp_watch
        return (tap.packets if tap is not None else 0), (watch.packets if watch is not None else 0)

    def packets_heard(self) -> int:
        """RTP and RTCP packets received from the server so far, on whichever media path."""
        rtp, rtcp = self.heard_counts()
        return rtp + rtcp

    def last_heard_ns(self) -> int:
        """Monotonic ns of the last RTP or RTCP from the server (or of connecting, if later)."""
        tap, watch, native = self.rtp_tap, self.rtcp_watch, self.native
        return max(
            self.connected_ns,
            tap.last_arrival_ns if tap is not None else 0,
            watch.last_arrival_ns if watch is not None else 0,
            native.last_heard_ns() if native is not None else 0,
        )

    async def _watch_peer(self, timeout_s: float) -> None:
        """RTC loop, from connected until closed: declare the call lost after ``timeout_s``
        without RTP or RTCP from the server."""
        timeout_ns = int(timeout_s * 1e9)
        interval_s = min(WATCHDOG_INTERVAL_S, timeout_s / 4)
        while True:
            silent_ns = time.monotonic_ns() - self.last_heard_ns()
            if silent_ns >= timeout_ns:
                self._to_app(self._lost, f"no RTP or RTCP from the server for {timeout_s:g} s")
                return
            await asyncio.sleep(min(interval_s, (timeout_ns - silent_ns) / 1e9))

    async def _wait(
        self, pending: _Pending, event: asyncio.Event, deadline: float, what: str
    ) -> None:
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        failed = asyncio.ensure_future(pending.failed.wait())
        try:
            remaining = max(deadline - time.perf_counter(), 0.0)
            _done, _ = await asyncio.wait(
                {waiter, failed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            failed.cancel()
        if event.is_set():
            return
        if pending.failed.is_set():
            raise errors.TransportError(
                f"connect failed while waiting for {what}: {pending.failure}"
            )
        raise errors.TimeoutError(f"timed out waiting for {what}")

    async def _post_offer(self, offer_sdp: str, key: str, session: Mapping[str, Any] | None) -> str:
        url = self._url()
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/sdp"}
        data: Any
        if self.api == "live":
            headers["Accept"] = headers["Content-Type"] = "application/json"
            payload: dict[str, Any] = {"transport": {"type": "webrtc", "sdp": offer_sdp}}
            if session is not None and (session or self.fork_of is None):
                payload["session"] = dict(session)
            data = json.dumps(payload).encode("utf-8")
        elif session is not None:
            form = aiohttp.FormData()
            form.add_field("sdp", offer_sdp, content_type="application/sdp")
            form.add_field("session", json.dumps(dict(session)), content_type="application/json")
            data = form
        else:
            headers["Content-Type"] = "application/sdp"
            data = offer_sdp.encode("utf-8")
        timeout = aiohttp.ClientTimeout(total=self._http_timeout_s)
        path = urllib.parse.urlsplit(url).path
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, data=data, headers=headers) as resp,
            ):
                body = await resp.read()
                status = resp.status
                location = resp.headers.get("Location")
                content_type = resp.headers.get("Content-Type", "")
                request_id = resp.headers.get("x-request-id")
                response_headers = dict(resp.headers)
        except TimeoutError as exc:
            raise errors.TimeoutError(
                f"POST {path} timed out after {self._http_timeout_s:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise errors.ConnectionError(f"POST {path} failed: {exc}") from exc

        if status not in (200, 201):
            decoded: Any = body
            with contextlib.suppress(ValueError):
                decoded = json.loads(body)
            raise errors.error_from_response(
                status,
                decoded,
                request_id=request_id,
                context=f"POST {path}",
                headers=response_headers,
            )
        if self.api == "live":
            return self._live_answer(path, status, body)
        answer = body.decode("utf-8", "replace")
        if not answer.lstrip().startswith("v=0"):
            raise errors.ProtocolError(
                f"POST {path} returned {status} ({content_type or 'no content type'}) "
                f"but the body is not an SDP answer: {answer[:80]!r}"
            )
        if location:
            self.call_id = location.rstrip("/").rsplit("/", 1)[-1] or None
        return answer

    def _live_answer(self, path: str, status: int, body: bytes) -> str:
        """The SDP answer and session id of a Live create or fork response (JSON)."""
        try:
            decoded = json.loads(body)
            answer = decoded["transport"]["sdp"]
            session_id = decoded["session"]["id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.ProtocolError(
                f"POST {path} returned {status} but not a Live session with an SDP answer: "
                f"{body[:80]!r}"
            ) from exc
        if not isinstance(answer, str) or not answer.lstrip().startswith("v=0"):
            raise errors.ProtocolError(f"POST {path}: transport.sdp is not an SDP answer")
        if isinstance(session_id, str) and session_id:
            self.call_id = session_id
        return answer

    async def _send_on_rtc(self, text: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open":
            raise errors.TransportError("cannot send: the data channel is not open")
        try:
            channel.send(text)
        except ValueError as exc:  # aiortc's own size check, should the limits disagree
            raise errors.TransportError(f"data channel refused the message: {exc}") from exc

    async def _stats_on_rtc(self) -> dict[str, Any]:
        assert self._pc is not None
        native = self.native
        if native is not None:
            return self._native_stats(native)
        report = await self._pc.getStats()
        out: dict[str, Any] = {"media_path": self.media_path_used or "python"}
        if self.media_path_reason:
            out["media_path_reason"] = self.media_path_reason
        for stats in report.values():
            kind = getattr(stats, "type", "")
            if kind == "outbound-rtp":
                out["packets_sent"] = stats.packetsSent
                out["bytes_sent"] = stats.bytesSent
            elif kind == "inbound-rtp":
                out["packets_received"] = stats.packetsReceived
                out["packets_lost"] = stats.packetsLost
                out["jitter_ms"] = stats.jitter / 48.0  # RTP units of the 48 kHz Opus clock
            elif kind == "remote-inbound-rtp":
                rtt = stats.roundTripTime
                out["rtt_ms"] = None if rtt is None else rtt * 1000.0
                out["remote_packets_lost"] = stats.packetsLost
                out["remote_fraction_lost"] = stats.fractionLost / 256.0
                out["remote_jitter_ms"] = stats.jitter / 48.0
        track = self.outbound_track
        track_errors = track.errors if isinstance(track, EncodedAudioTrack) else 0
        out["media_errors"] = track_errors + (self.rtp_tap.errors if self.rtp_tap else 0)
        return out

    @staticmethod
    def _native_stats(native: NativeMedia) -> dict[str, Any]:
        n = native.stats()
        out: dict[str, Any] = {
            "media_path": "native",
            "srtp_profile": native.profile,
            "packets_sent": n["packets_sent"],
            "bytes_sent": n["payload_bytes_sent"],
            "packets_received": n["packets_received"],
            "packets_lost": n["packets_lost"],
            "jitter_ms": n["jitter_ms"],
            "media_errors": n["protect_errors"] + n["send_errors"] + n["handoff_errors"],
            "native": n,
        }
        if n["reports_received"]:  # what the peer's receiver reports say about this stream
            out["rtt_ms"] = n["rtt_ms"]
            out["remote_packets_lost"] = n["remote_packets_lost"]
            out["remote_fraction_lost"] = n["remote_fraction_lost"]
            out["remote_jitter_ms"] = n["remote_jitter_ms"]
        return out

    async def _close_on_rtc(self) -> None:
        native, self.native = self.native, None
        if native is not None:
            # Off the media thread before the socket and the pipelines go away.
            native.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        closed, channel = self._live_closed, self._channel
        if closed is not None and not closed.is_set() and channel is not None:
            # Live: end the session on the server and wait (briefly) for session.closed, so
            # that a stored session is finalized (forkable) rather than dropped.
            with contextlib.suppress(Exception):
                if channel.readyState == "open":
                    channel.send(json.dumps({"type": "session.close"}))
                    await asyncio.wait_for(closed.wait(), LIVE_CLOSE_WAIT_S)
        if self.call_id and self._hangup_key and self.api_version == "ga" and self.api != "live":
            url = f"{self.base_url}/realtime/calls/{urllib.parse.quote(self.call_id)}/hangup"
            bearer = self._hangup_key.get_secret_value()
            headers = {"Authorization": f"Bearer {bearer}", "Accept": "*/*"}
            try:
                timeout = aiohttp.ClientTimeout(total=min(self._http_timeout_s, 3.0))
                async with (
                    aiohttp.ClientSession(timeout=timeout) as http,
                    http.post(url, headers=headers) as resp,
                ):
                    await resp.read()
                    if resp.status >= 400:
                        logger.info("hangup of %s returned %d", self.call_id, resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                logger.info("hangup of %s failed: %s", self.call_id, errors.redact(str(exc)))
        if self._pending is not None:
            self._pending.failure = self._pending.failure or "closed"
        if self._pc is not None:
            await self._pc.close()
        if self.outbound_track is not None:
            self.outbound_track.stop()
        self._channel = None
