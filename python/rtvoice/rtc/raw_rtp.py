"""Sending caller-built RTP on an aiortc ``RTCRtpSender``'s transport: the simulator's one hook
into aiortc's sender internals.

The simulator impairs what it sends per RTP packet (loss leaves a sequence-number gap, reordering
swaps packets on the wire), so it must own sequence numbers and timestamps itself; aiortc's
sender numbers whatever its track yields. :class:`RawRtpSender` therefore keeps aiortc's sender
idle (its track never yields a frame) and writes packets with the sender's SSRC straight to the
sender's DTLS transport (SRTP-protected there). It also keeps the sender's RTCP sender-report
counters current, so the peer's receiver statistics and RTT stay meaningful.

Supported aiortc versions: those of :data:`rtvoice.rtc.loopback.SUPPORTED`;
:func:`check_raw_rtp` fails loudly when the internals used here have moved.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

__all__ = ["IdleAudioTrack", "RawRtpSender", "RawRtpUnsupportedError", "check_raw_rtp"]

# Name-mangled RTCP sender-report state of aiortc.rtcrtpsender.RTCRtpSender.
_SR_ATTRS = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
)


class RawRtpUnsupportedError(RuntimeError):
    """The installed aiortc does not have the sender internals :class:`RawRtpSender` uses."""


class IdleAudioTrack(MediaStreamTrack):
    """An audio track that never yields a frame, so aiortc's own RTP loop never sends; ``stop()``
    ends it (``recv`` then raises ``MediaStreamError``, which is how aiortc's sender exits)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self._stopped.set()
        super().stop()


def check_raw_rtp(sender: Any) -> None:
    """Raise :class:`RawRtpUnsupportedError` unless ``sender`` has what :class:`RawRtpSender`
    needs (an SSRC, a DTLS transport with ``_send_rtp``, sender-report counters)."""
    if not isinstance(getattr(sender, "_ssrc", None), int):
        raise RawRtpUnsupportedError("RTCRtpSender has no integer _ssrc")
    transport = getattr(sender, "transport", None)
    if not callable(getattr(transport, "_send_rtp", None)):
        raise RawRtpUnsupportedError("RTCDtlsTransport has no _send_rtp")
    for attr in _SR_ATTRS:
        if not hasattr(sender, attr):
            raise RawRtpUnsupportedError(f"RTCRtpSender has no {attr}")


class RawRtpSender:
    """Writes RTP packets with the given payload type on ``sender``'s SSRC. Event-loop only."""

    def __init__(self, sender: Any, payload_type: int) -> None:
        check_raw_rtp(sender)
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload_type must be within 0..127, got {payload_type}")
        self._sender = sender
        self.payload_type = payload_type
        self.ssrc: int = sender._ssrc
        self.packets_sent = 0
        self.octets_sent = 0

    async def send(self, seq: int, timestamp: int, payload: bytes, *, marker: bool = False) -> None:
        """Send one packet now. Raises ``ConnectionError`` if DTLS is not connected."""
        from aiortc import clock

        packet = RtpPacket(
            payload_type=self.payload_type,
            marker=1 if marker else 0,
            sequence_number=seq & 0xFFFF,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=self.ssrc,
            payload=payload,
        )
        await self._sender.transport._send_rtp(packet.serialize())
        self.packets_sent += 1
        self.octets_sent += len(payload)
        s = self._sender
        setattr(s, _SR_ATTRS[0], clock.current_ntp_time())
        setattr(s, _SR_ATTRS[1], packet.timestamp)
        setattr(s, _SR_ATTRS[2], self.octets_sent)
        setattr(s, _SR_ATTRS[3], self.packets_sent)
