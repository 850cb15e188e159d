"""The native audio path's hook into aiortc: the one module that touches aiortc's RTP internals.

Outbound: :class:`EncodedAudioTrack` yields Opus packets that are already encoded (``av.Packet``
with ``pts``/``time_base`` taken from the sample count). aiortc's ``RTCRtpSender`` hands packets,
unlike frames, to its codec's ``pack()``, which for Opus copies the payload as-is: Opus is
encoded exactly once, by the native core.

Inbound: :func:`attach_rtp_sink` replaces the receiver's own jitter buffer with a tap that hands
each RTP packet (sequence number, timestamp, payload, arrival time) to an :class:`RtpSink` and
returns nothing to aiortc, so aiortc's jitter buffer and decoder never see the audio. Everything
aiortc does before its jitter buffer (SRTP, payload-type check, RTX unwrapping, receiver
statistics and RTCP reports) keeps working.

Liveness: :func:`attach_rtcp_watch` wraps the receiver's and the sender's RTCP handlers (the
ones aiortc's DTLS transport dispatches each inbound RTCP packet to) so that the arrival of any
RTCP from the peer is recorded, as :class:`RtpTap` records RTP; a dead-peer watchdog reads both.

Supported aiortc versions: :data:`SUPPORTED_AIORTC`. :func:`check_aiortc` fails loudly on any
other version or when the internals relied on here have moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import inspect
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import aiortc
import av
from aiortc import rtcdtlstransport
from aiortc.codecs import opus as aiortc_opus
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

__all__ = [
    "SUPPORTED_AIORTC",
    "AiortcCompatibilityError",
    "EncodedAudioTrack",
    "PacketSource",
    "RtcpWatch",
    "RtpSink",
    "RtpTap",
    "attach_rtcp_watch",
    "attach_rtp_sink",
    "check_aiortc",
]

# Major.minor versions whose internals this module was checked against (see check_aiortc).
SUPPORTED_AIORTC: tuple[str, ...] = ("1.16",)

OPUS_CLOCK_RATE_HZ = 48000

# Name-mangled attribute of RTCRtpReceiver holding its JitterBuffer (aiortc/rtcrtpreceiver.py).
_RECEIVER_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"

# The RTCP handler aiortc's RTCDtlsTransport._handle_rtcp_data() calls on each recipient
# (receiver for SR/BYE, sender for RR/SR reports and feedback).
_RTCP_HANDLER = "_handle_rtcp_packet"

logger = logging.getLogger(__name__)


def _params(fn: Any) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


class AiortcCompatibilityError(RuntimeError):
    """The installed aiortc is not one whose RTP internals the native audio path supports."""


@runtime_checkable
class PacketSource(Protocol):
    """Where outbound Opus packets come from: the native :class:`rtvoice.Uplink`.

    ``pop_due(now_ns)`` is called on the network thread and never blocks: it returns
    ``(payload, rtp_timestamp, seq)`` when the sample clock says a packet is due (timestamp in
    48 kHz samples from the sample count), else ``None``; ``next_due_ns`` says when to ask again.
    """

    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None: ...

    @property
    def next_due_ns(self) -> int | None: ...


@runtime_checkable
class RtpSink(Protocol):
    """Where inbound Opus RTP goes: the native :class:`rtvoice.Downlink`.

    Called on the network thread for every packet; must not block.
    """

    def push_rtp(
        self, seq: int, timestamp: int, payload: bytes, arrival_ns: int
    ) -> bool | None: ...


_checked_lock = threading.Lock()
_checked_ok = False  # the internals passed the check once in this process


def check_aiortc(*, fresh: bool = False) -> None:
    """Raise :class:`AiortcCompatibilityError` unless aiortc's internals are the ones used here.

    A passing check is done once per process (reading sources with :mod:`inspect` parses whole
    modules, which is slow and must not run on many threads at once); ``fresh=True`` inspects
    again. A failing one is repeated at each call, so the error is always about what is there.
    """
    global _checked_ok
    with _checked_lock:
        if fresh:
            _checked_ok = False
        if not _checked_ok:
            _inspect_aiortc()
            _checked_ok = True


def _inspect_aiortc() -> None:
    version = getattr(aiortc, "__version__", "unknown")
    if not any(version == v or version.startswith(v + ".") for v in SUPPORTED_AIORTC):
        raise AiortcCompatibilityError(
            f"rtvoice's native audio path supports aiortc {', '.join(SUPPORTED_AIORTC)}.x, "
            f"found aiortc {version}; install a supported version (pip install 'aiortc~=1.16.0')"
        )
    problems = []
    if not callable(getattr(aiortc_opus.OpusEncoder, "pack", None)):
        problems.append("aiortc.codecs.opus.OpusEncoder.pack() is gone")
    if not hasattr(RTCRtpSender, "_next_encoded_frame"):
        problems.append("RTCRtpSender._next_encoded_frame() is gone")
    if not hasattr(RTCRtpReceiver, "_handle_rtp_packet"):
        problems.append("RTCRtpReceiver._handle_rtp_packet() is gone")
    for cls in (RTCRtpReceiver, RTCRtpSender):
        handler = getattr(cls, _RTCP_HANDLER, None)
        if not inspect.iscoroutinefunction(handler) or _params(handler) != ["self", "packet"]:
            problems.append(f"{cls.__name__}.{_RTCP_HANDLER}(self, packet) is gone")
    dispatch = getattr(rtcdtlstransport.RTCDtlsTransport, "_handle_rtcp_data", None)
    try:
        dispatch_src = inspect.getsource(dispatch) if dispatch is not None else ""
    except (OSError, TypeError):
        dispatch_src = ""
    if f"recipient.{_RTCP_HANDLER}(packet)" not in dispatch_src:
        problems.append(
            f"RTCDtlsTransport._handle_rtcp_data() no longer calls recipient.{_RTCP_HANDLER}()"
        )
    problems += _native_media_problems()
    if problems:
        raise AiortcCompatibilityError(
            f"aiortc {version} changed internals the native audio path relies on: "
            + "; ".join(problems)
        )


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _native_media_problems() -> list[str]:
    """What the native media path (:func:`start_native_media`) needs of aiortc and aioice."""
    import aioice.ice
    from aiortc import rtcpeerconnection
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    problems = []
    profiles = getattr(rtcdtlstransport, "SRTP_PROFILES", None)
    if not profiles or not all(
        hasattr(p, "openssl_profile")
        and hasattr(p, "key_length")
        and hasattr(p, "salt_length")
        and callable(getattr(p, "get_key_and_salt", None))
        for p in profiles
    ):
        problems.append("aiortc.rtcdtlstransport.SRTP_PROFILES changed shape")
    init = _source(RTCDtlsTransport.__init__)
    for attr in ("self._srtp_profiles", "self._ssl", "self._role"):
        if attr not in init and attr not in _source(RTCDtlsTransport):
            problems.append(f"RTCDtlsTransport no longer sets {attr}")
    if "export_keying_material" not in _source(RTCDtlsTransport):
        problems.append("RTCDtlsTransport no longer derives SRTP keys with export_keying_material")
    for cls, name in ((RTCRtpSender, "send"), (RTCRtpReceiver, "receive")):
        fn = getattr(cls, name, None)
        if not inspect.iscoroutinefunction(fn) or _params(fn) != ["self", "parameters"]:
            problems.append(f"{cls.__name__}.{name}(self, parameters) is gone")
    connect_src = _source(rtcpeerconnection.RTCPeerConnection)
    for call in ("transceiver.sender.send(", "transceiver.receiver.receive("):
        if call not in connect_src:
            problems.append(f"RTCPeerConnection no longer starts RTP with {call}...)")
    if "self._ssrc" not in _source(RTCRtpSender.__init__):
        problems.append("RTCRtpSender no longer keeps its SSRC in _ssrc")
    pair_init = _source(aioice.ice.CandidatePair.__init__)
    if "self.protocol" not in pair_init or "self.remote_candidate" not in pair_init:
        problems.append("aioice CandidatePair no longer has protocol and remote_candidate")
    received = getattr(aioice.ice.StunProtocol, "datagram_received", None)
    if _params(received) != ["self", "data", "addr"]:
        problems.append("aioice StunProtocol.datagram_received(self, data, addr) is gone")
    if not callable(getattr(asyncio.SelectorEventLoop, "_remove_reader", None)):
        problems.append("asyncio's selector loop has no _remove_reader()")
    return problems


class EncodedAudioTrack(MediaStreamTrack):
    """An audio track whose frames are already-encoded Opus packets from a :class:`PacketSource`.

    Runs on the event loop of the peer connection and is the uplink's clock there: it sleeps
    until ``next_due_ns`` and asks ``pop_due(now)``. It never raises into aiortc (whose sender
    stops a track that raises anything but ``MediaStreamError``): a failing source is counted in
    ``errors``, logged once, and the track carries on.
    """

    kind = "audio"

    def __init__(
        self,
        source: PacketSource,
        *,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        max_sleep_s: float = 0.02,
    ) -> None:
        super().__init__()
        self._source = source
        self._clock_ns = clock_ns
        self._max_sleep_s = max_sleep_s
        self._time_base = fractions.Fraction(1, OPUS_CLOCK_RATE_HZ)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.errors = 0
        # Monotonic ns of the last packet handed to aiortc (any thread may read it).
        self.last_sent_ns = 0

    async def recv(self) -> Any:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            now = self._clock_ns()
            try:
                item = self._source.pop_due(now)
                due = self._source.next_due_ns
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    logger.exception("the uplink failed; the track carries on")
                item, due = None, None
            if item is not None:
                payload, rtp_timestamp, _seq = item
                packet = av.Packet(bytes(payload))
                packet.pts = int(rtp_timestamp)
                packet.time_base = self._time_base
                self.packets_sent += 1
                self.bytes_sent += len(payload)
                self.last_sent_ns = now
                return packet
            delay_s = self._max_sleep_s
            if due is not None:
                delay_s = min(max((due - self._clock_ns()) / 1e9, 0.0), self._max_sleep_s)
            await asyncio.sleep(delay_s)


class RtpTap:
    """Stands in for aiortc's receiver jitter buffer: forwards every packet to an RtpSink.

    ``add()`` has the signature of ``aiortc.jitterbuffer.JitterBuffer.add`` and always returns
    ``(False, None)`` (no picture loss, no frame to decode), so aiortc's decoder stays idle. It
    never raises into aiortc's receiver: a failing sink is counted in ``errors``.
    """

    def __init__(self, sink: RtpSink, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.sink = sink
        self._clock_ns = clock_ns
        self.packets = 0
        self.bytes = 0
        self.errors = 0
        self.dropped = 0
        # Monotonic ns of the last packet received (any thread may read it).
        self.last_arrival_ns = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        try:
            payload = bytes(packet.payload)
            now = self._clock_ns()
            self.packets += 1
            self.bytes += len(payload)
            self.last_arrival_ns = now
            if payload:
                queued = self.sink.push_rtp(
                    int(packet.sequence_number), int(packet.timestamp), payload, now
                )
                if queued is False:  # the sink's queue was full (counted there too)
                    self.dropped += 1
        except Exception:
            self.errors += 1
            if self.errors == 1:
                logger.exception("the downlink refused an RTP packet; counted, carrying on")
        return False, None


def attach_rtp_sink(receiver: RTCRtpReceiver, sink: RtpSink) -> RtpTap:
    """Route the receiver's inbound RTP to ``sink`` instead of aiortc's jitter buffer and decoder.

    Call it before the first packet arrives (right after ``addTransceiver``).
    """
    check_aiortc()
    current = getattr(receiver, _RECEIVER_JITTER_ATTR, None)
    if current is None or not callable(getattr(current, "add", None)):
        raise AiortcCompatibilityError(
            f"aiortc {aiortc.__version__}: RTCRtpReceiver has no jitter buffer at "
            f"{_RECEIVER_JITTER_ATTR}; the native audio path cannot intercept inbound RTP"
        )
    tap = RtpTap(sink)
    setattr(receiver, _RECEIVER_JITTER_ATTR, tap)
    return tap


class RtcpWatch:
    """Records the arrival of every RTCP packet from the peer that aiortc dispatches to the
    watched receiver or sender (sender reports, receiver reports, BYE, feedback).

    Updated on the network thread; ``last_arrival_ns`` (monotonic ns, 0 before the first packet)
    and ``packets`` may be read from any thread. It never raises into aiortc.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock_ns = clock_ns
        self.packets = 0
        self.last_arrival_ns = 0

    def saw(self) -> None:
        self.packets += 1
        self.last_arrival_ns = self._clock_ns()


def attach_rtcp_watch(*endpoints: RTCRtpReceiver | RTCRtpSender) -> RtcpWatch:
    """Record inbound RTCP for ``endpoints`` (an RTCRtpReceiver and/or RTCRtpSender) in one
    :class:`RtcpWatch`; aiortc's own handling runs unchanged after it.

    Call it right after ``addTransceiver``. The wrapper is an instance attribute in front of the
    class's handler, which aiortc's DTLS transport looks up on each recipient per packet.
    """
    check_aiortc()
    watch = RtcpWatch()
    for endpoint in endpoints:
        original = getattr(endpoint, _RTCP_HANDLER, None)
        if original is None or not callable(original):
            raise AiortcCompatibilityError(
                f"aiortc {aiortc.__version__}: {type(endpoint).__name__} has no {_RTCP_HANDLER}"
            )

        async def handle(packet: Any, _original: Callable[[Any], Any] = original) -> None:
            watch.saw()
            await _original(packet)

        setattr(endpoint, _RTCP_HANDLER, handle)
    return watch


# ---------------------------------------------------------------------------------------------
# The native media path: RTP, RTCP and SRTP in the C++ core (rtvoice._core.MediaCall) on the
# process's one media thread, without the GIL.
#
# Socket sharing (RFC 7983 demultiplexing): once DTLS is connected, the ICE-selected pair's UDP
# socket stops being read by the RTC loop (``loop.remove_reader``) and is read by the media
# thread instead, through a duplicate of its descriptor. The media thread keeps RTP and RTCP
# (first byte 128-191) and queues everything else (STUN 0-3, DTLS 20-63) for the RTC loop,
# which hands each datagram to the pair's ``aioice.ice.StunProtocol.datagram_received`` exactly
# as its own read would have: consent checks, DTLS and the SCTP data channel carry on in aioice
# and aiortc. Python's sends (STUN, DTLS) and the media thread's (SRTP) share the socket; each
# sendto() is one whole datagram. The SRTP sessions are keyed from the DTLS-SRTP keying
# material of aiortc's DTLS connection (RFC 5764 section 4.2), as aiortc keys its own, and
# aiortc's RTP sender and receiver are never started for such a call: nothing else uses the
# SRTP streams.

_MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
_ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
# Datagrams for aioice handed over per wake-up of the RTC loop before it yields.
_DRAIN_BATCH = 256


class NativeMediaUnavailable(Exception):
    """The native media path cannot carry this call; the reason says why (the call then uses
    aiortc's RTP path)."""


def native_srtp_profiles() -> list[str]:
    """The DTLS-SRTP profiles (OpenSSL names) both the native core and aiortc can use."""
    from rtvoice import _core

    aiortc_names = {p.openssl_profile.decode() for p in rtcdtlstransport.SRTP_PROFILES}
    return [name for name in _core.srtp_profiles() if name in aiortc_names]


def restrict_srtp_profiles(dtls_transports: list[Any]) -> list[str]:
    """Offer only the SRTP profiles the native core supports on these DTLS transports (before
    their handshake), so that the negotiated one can be carried natively. Returns the names."""
    names = native_srtp_profiles()
    if not names:
        raise NativeMediaUnavailable("the native core supports none of aiortc's SRTP profiles")
    profiles = [p for p in rtcdtlstransport.SRTP_PROFILES if p.openssl_profile.decode() in names]
    for dtls in dtls_transports:
        if not hasattr(dtls, "_srtp_profiles"):
            raise NativeMediaUnavailable("aiortc's RTCDtlsTransport has no _srtp_profiles")
        dtls._srtp_profiles = list(profiles)
    return names


def _srtp_keys(dtls: Any) -> tuple[str, bytes, bytes]:
    """(profile name, outbound key+salt, inbound key+salt) of a connected aiortc DTLS transport,
    derived as RFC 5764 section 4.2 says (and as aiortc derives its own)."""
    ssl = getattr(dtls, "_ssl", None)
    role = getattr(dtls, "_role", None)
    if ssl is None or role not in ("client", "server"):
        raise NativeMediaUnavailable("aiortc's DTLS transport has no connection or role")
    selected = ssl.get_selected_srtp_profile()
    for profile in getattr(dtls, "_srtp_profiles", rtcdtlstransport.SRTP_PROFILES):
        if profile.openssl_profile == selected:
            break
    else:
        raise NativeMediaUnavailable(f"no SRTP profile was negotiated ({selected!r})")
    name = profile.openssl_profile.decode()
    if name not in native_srtp_profiles():
        raise NativeMediaUnavailable(f"the native core does not support {name}")
    material = ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
    )
    client = profile.get_key_and_salt(material, 0)
    server = profile.get_key_and_salt(material, 1)
    return (name, server, client) if role == "server" else (name, client, server)


class NativeMedia:
    """One call's native media path, once set up: the :class:`rtvoice._core.MediaCall` on the
    media thread and the RTC loop's reader that hands it non-media datagrams for aioice.

    Built on the RTC loop by :func:`start_native_media`; :meth:`close` (on that loop too) takes
    the call off the media thread. Counters: :meth:`stats` (native) and ``handoff_errors``
    (datagrams that aioice's protocol raised on).
    """

    def __init__(
        self, call: Any, protocol: Any, loop: asyncio.AbstractEventLoop, profile: str
    ) -> None:
        self.call = call
        self.profile = profile
        self._protocol = protocol
        self._loop = loop
        self._notify_fd = int(call.notify_fd)
        self.handoff_errors = 0
        self.handed_off = 0
        self._closed = False
        loop.add_reader(self._notify_fd, self._drain)

    def _drain(self) -> None:
        call, protocol = self.call, self._protocol
        for _ in range(_DRAIN_BATCH):
            item = call.pop_datagram()
            if item is None:
                return
            data, addr = item
            self.handed_off += 1
            try:
                protocol.datagram_received(data, addr)
            except Exception:
                self.handoff_errors += 1
                if self.handoff_errors == 1:
                    logger.exception("aioice refused a datagram from the media thread; counted")
        # More are waiting: yield to the loop, then go on.
        self._loop.call_soon(self._drain)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.call.stats())
        out["handed_off"] = self.handed_off
        out["handoff_errors"] = self.handoff_errors
        return out

    def last_heard_ns(self) -> int:
        stats = self.call.stats()
        return max(int(stats["last_rtp_ns"]), int(stats["last_rtcp_ns"]))

    def close(self) -> None:
        """Take the call off the media thread (returns once it let go). Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._notify_fd)
        self.call.stop()


def _native_target(gate: Any, kind: type) -> Any:
    target = getattr(gate, "target", gate)
    return target if isinstance(target, kind) else None


def start_native_media(
    sender: RTCRtpSender,
    parameters: Any,
    uplink: Any,
    downlink: Any,
    loop: asyncio.AbstractEventLoop,
) -> NativeMedia:
    """Move a connected call's RTP, RTCP and SRTP to the native media thread.

    ``uplink``/``downlink`` are the transport's media gates (or the native pipelines
    themselves); the native call follows the gates' ``is_open`` from now on. Raises
    :class:`NativeMediaUnavailable` (nothing changed) when the call cannot be carried natively:
    pipelines that are not the native ones, a codec other than Opus, a relayed (TURN) or
    otherwise unexpected ICE pair, an SRTP profile the core lacks, or moved aiortc internals.
    """
    import aioice.ice

    from rtvoice import _core

    up = _native_target(uplink, _core.Uplink)
    down = _native_target(downlink, _core.Downlink)
    if up is None or down is None:
        raise NativeMediaUnavailable("the uplink or downlink is not a native pipeline")
    codecs = getattr(parameters, "codecs", None) or []
    if not codecs or getattr(codecs[0], "mimeType", "").lower() != "audio/opus":
        raise NativeMediaUnavailable("the negotiated codec is not Opus")
    payload_type = int(codecs[0].payloadType)
    dtls = getattr(sender, "transport", None)
    if dtls is None or getattr(dtls, "state", None) != "connected":
        raise NativeMediaUnavailable("DTLS is not connected")
    profile, tx_key, rx_key = _srtp_keys(dtls)
    ice = getattr(dtls, "transport", None)
    connection = getattr(ice, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict) or 1 not in nominated:
        raise NativeMediaUnavailable("ICE has no nominated pair")
    pair = nominated[1]
    protocol = getattr(pair, "protocol", None)
    if type(protocol) is not aioice.ice.StunProtocol:
        raise NativeMediaUnavailable(
            f"the selected ICE pair is {type(protocol).__name__}, not a plain UDP socket"
        )
    udp = getattr(protocol, "transport", None)
    sock = udp.get_extra_info("socket") if udp is not None else None
    if udp is None or sock is None or udp.is_closing():
        raise NativeMediaUnavailable("the selected ICE pair has no open socket")
    remote = pair.remote_candidate
    ssrc = getattr(sender, "_ssrc", None)
    if not isinstance(ssrc, int):
        raise NativeMediaUnavailable("aiortc's RTCRtpSender has no _ssrc")
    extensions = {e.uri: int(e.id) for e in getattr(parameters, "headerExtensions", [])}
    mid = getattr(parameters, "muxId", "") or ""
    rtcp = getattr(parameters, "rtcp", None)
    cname = (getattr(rtcp, "cname", None) or "")[:255]
    rng = random.SystemRandom()
    try:
        call = _core.MediaCall(
            sock.fileno(),
            str(remote.host),
            int(remote.port),
            profile,
            tx_key,
            rx_key,
            ssrc,
            payload_type,
            up,
            down,
            seq_offset=rng.randrange(65536),
            timestamp_offset=rng.randrange(1 << 32),
            mid=mid if len(mid.encode()) <= 16 else "",
            mid_id=extensions.get(_MID_URI, 0) if extensions.get(_MID_URI, 0) < 15 else 0,
            abs_send_time_id=(
                extensions.get(_ABS_SEND_TIME_URI, 0)
                if extensions.get(_ABS_SEND_TIME_URI, 0) < 15
                else 0
            ),
            cname=cname,
            seed=rng.randrange(1 << 32),
        )
    except (ValueError, RuntimeError) as exc:
        raise NativeMediaUnavailable(f"the native core refused the call: {exc}") from exc
    finally:
        del tx_key, rx_key
    call.send_open = bool(getattr(uplink, "is_open", True))
    call.recv_open = bool(getattr(downlink, "is_open", True))
    for gate, attr in ((uplink, "send_open"), (downlink, "recv_open")):
        watch = getattr(gate, "watch", None)
        if callable(watch):
            watch(functools.partial(setattr, call, attr))
    # From here the media thread reads the socket: the RTC loop must not. The public
    # remove_reader() refuses a descriptor owned by a transport; the selector loop's own
    # _remove_reader() is what the transport itself uses to pause.
    stop_reading = getattr(loop, "_remove_reader", None)
    if not callable(stop_reading) or not stop_reading(sock.fileno()):
        call.stop()  # releases its descriptors at once
        raise NativeMediaUnavailable("the RTC loop was not reading the selected socket")
    native = NativeMedia(call, protocol, loop, profile)
    call.start()
    return native


def intercept_rtp_start(
    transceiver: Any, start_native: Callable[[Any], bool]
) -> Callable[[], bool | None]:
    """Let ``start_native(send_parameters)`` decide, when aiortc starts the transceiver's RTP
    (DTLS just connected), whether the native path carries it: True, and aiortc's RTP sender and
    receiver are never started; False, and they start as usual. Returns a function telling
    which was chosen (None: not yet)."""
    sender, receiver = transceiver.sender, transceiver.receiver
    original_send, original_receive = sender.send, receiver.receive
    chosen: list[bool] = []

    async def send(parameters: Any) -> None:
        if not chosen:
            chosen.append(bool(start_native(parameters)))
        if not chosen[0]:
            await original_send(parameters)

    async def receive(parameters: Any) -> None:
        if not (chosen and chosen[0]):
            await original_receive(parameters)

    sender.send = send
    receiver.receive = receive
    return lambda: chosen[0] if chosen else None
