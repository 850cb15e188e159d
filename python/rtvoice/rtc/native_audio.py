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
import fractions
import inspect
import logging
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


def check_aiortc() -> None:
    """Raise :class:`AiortcCompatibilityError` unless aiortc's internals are the ones used here."""
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
    if problems:
        raise AiortcCompatibilityError(
            f"aiortc {version} changed internals the native audio path relies on: "
            + "; ".join(problems)
        )


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
