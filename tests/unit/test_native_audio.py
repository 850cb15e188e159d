"""The aiortc hook of the native audio path. These fail loudly when an aiortc upgrade moves the
internals rtvoice.rtc.native_audio relies on (the loopback test in tests/integration checks that
payloads really pass through byte-exact)."""

from __future__ import annotations

import asyncio
import fractions

import aiortc
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

import rtvoice
from rtvoice.rtc import native_audio
from rtvoice.rtc.native_audio import (
    AiortcCompatibilityError,
    EncodedAudioTrack,
    RtpTap,
    attach_rtp_sink,
    check_aiortc,
)


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[int, int, bytes, int]] = []

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self.got.append((seq, timestamp, payload, arrival_ns))


def test_installed_aiortc_is_supported() -> None:
    check_aiortc(fresh=True)


def test_unsupported_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.99.0")
    with pytest.raises(AiortcCompatibilityError, match=r"supports aiortc 1\.16"):
        check_aiortc(fresh=True)


def test_opus_packets_are_packed_as_is_without_a_second_encode() -> None:
    # RTCRtpSender hands av.Packet (not frames) to the codec's pack(): the payload must come out
    # byte-identical with the timestamp taken from pts in 48 kHz units.
    codec = RTCRtpCodecParameters(
        mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96
    )
    encoder = get_encoder(codec)

    class One:
        next_due_ns = None

        def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
            return b"\xf8\x01\x02\x03", 960 * 7, 7

    track = EncodedAudioTrack(One())
    packet = asyncio.run(track.recv())
    assert packet.time_base == fractions.Fraction(1, 48000)
    payloads, timestamp = encoder.pack(packet)
    assert payloads == [b"\xf8\x01\x02\x03"]
    assert timestamp == 960 * 7


def test_receiver_jitter_buffer_is_replaced_by_the_tap() -> None:
    async def main() -> None:
        pc = aiortc.RTCPeerConnection()
        transceiver = pc.addTransceiver("audio")
        sink = Sink()
        tap = attach_rtp_sink(transceiver.receiver, sink)
        assert getattr(transceiver.receiver, native_audio._RECEIVER_JITTER_ATTR) is tap
        packet = RtpPacket(payload_type=96, sequence_number=65535, timestamp=123456)
        packet.payload = b"\xf8abc"
        assert tap.add(packet) == (False, None)
        assert sink.got[0][:3] == (65535, 123456, b"\xf8abc")
        await pc.close()

    asyncio.run(main())


def test_moved_internals_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtp_packet")
    with pytest.raises(AiortcCompatibilityError, match="_handle_rtp_packet"):
        check_aiortc(fresh=True)


def test_empty_payload_is_not_forwarded() -> None:
    sink = Sink()
    tap = RtpTap(sink)
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0)
    tap.add(packet)
    assert sink.got == []
    assert tap.packets == 1


def test_a_failing_uplink_never_raises_into_aiortcs_sender() -> None:
    class Broken:
        next_due_ns = None

        def __init__(self) -> None:
            self.calls = 0

        def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
            self.calls += 1
            if self.calls < 3:
                raise ValueError("boom")
            return b"\xf8\x01", 0, 0

    source = Broken()
    track = EncodedAudioTrack(source, max_sleep_s=0.0)
    packet = asyncio.run(track.recv())  # carries on past the two failures
    assert bytes(packet) == b"\xf8\x01"
    assert track.errors == 2


def test_a_failing_sink_never_raises_into_aiortcs_receiver() -> None:
    class Broken:
        def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> bool:
            raise RuntimeError("boom")

    tap = RtpTap(Broken())
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0)
    packet.payload = b"\xf8abc"
    assert tap.add(packet) == (False, None)
    assert tap.add(packet) == (False, None)
    assert tap.errors == 2


def test_the_native_uplink_drives_the_track_on_its_sample_clock() -> None:
    up = rtvoice.Uplink(48000)
    clock = [10**9]
    track = EncodedAudioTrack(up, clock_ns=lambda: clock[0], max_sleep_s=0.0)

    async def main() -> list[int]:
        pts = [int((await track.recv()).pts)]
        clock[0] += 20_000_000
        pts.append(int((await track.recv()).pts))
        return pts

    assert asyncio.run(main()) == [0, 960]  # silence on the clock when nothing was pushed
    assert up.stats["silent_frames"] == 2


def test_inbound_rtcp_dispatched_by_the_dtls_transport_reaches_the_watch() -> None:
    # The real dispatch path of aiortc: RTCDtlsTransport._handle_rtcp_data() parses the compound
    # packet and routes a sender report to the receiver of its SSRC and a receiver report to the
    # sender it reports on; fails when an aiortc upgrade moves that dispatch.
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket

    async def main() -> None:
        pc = aiortc.RTCPeerConnection()
        transceiver = pc.addTransceiver("audio")
        receiver, sender = transceiver.receiver, transceiver.sender
        dtls = receiver.transport
        remote_ssrc = 0x1234
        dtls._rtp_router.register_receiver(receiver, ssrcs=[remote_ssrc], payload_types=[])
        dtls._rtp_router.register_sender(sender, sender._ssrc)
        clock = [5_000]
        watch = native_audio.attach_rtcp_watch(receiver, sender)
        watch._clock_ns = lambda: clock[0]
        assert (watch.packets, watch.last_arrival_ns) == (0, 0)
        sr = RtcpSrPacket(
            ssrc=remote_ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1 << 32, rtp_timestamp=960, packet_count=1, octet_count=10
            ),
        )
        report = RtcpReceiverInfo(
            ssrc=sender._ssrc,
            fraction_lost=0,
            packets_lost=0,
            highest_sequence=1,
            jitter=0,
            lsr=0,
            dlsr=0,
        )
        rr = RtcpRrPacket(ssrc=remote_ssrc, reports=[report])
        await dtls._handle_rtcp_data(bytes(sr) + bytes(rr))
        assert watch.packets == 2  # one to the receiver, one to the sender
        assert watch.last_arrival_ns == 5_000
        # aiortc's own handling still ran: the sender report is in the receiver's stats.
        stats = await receiver.getStats()
        assert any(getattr(s, "type", "") == "remote-outbound-rtp" for s in stats.values())
        await pc.close()

    asyncio.run(main())


def test_moved_rtcp_handling_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtpsender import RTCRtpSender

    with monkeypatch.context() as m:
        m.delattr(RTCRtpSender, "_handle_rtcp_packet")
        with pytest.raises(AiortcCompatibilityError, match=r"RTCRtpSender\._handle_rtcp_packet"):
            check_aiortc(fresh=True)

    async def elsewhere(self: object, data: bytes) -> None:
        del self, data

    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtcp_data", elsewhere)
    with pytest.raises(AiortcCompatibilityError, match="_handle_rtcp_data"):
        check_aiortc(fresh=True)


@pytest.mark.parametrize(
    ("target", "attr", "match"),
    [
        ("aiortc.rtcrtpsender.RTCRtpSender", "send", r"RTCRtpSender\.send\(self, parameters\)"),
        ("aiortc.rtcrtpreceiver.RTCRtpReceiver", "receive", r"RTCRtpReceiver\.receive"),
        ("aioice.ice.StunProtocol", "datagram_received", "datagram_received"),
    ],
)
def test_moved_native_media_internals_fail_loudly(
    monkeypatch: pytest.MonkeyPatch, target: str, attr: str, match: str
) -> None:
    import importlib

    module, cls_name = target.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls_name)

    def moved(self: object) -> None:
        del self

    monkeypatch.setattr(cls, attr, moved)
    with pytest.raises(AiortcCompatibilityError, match=match):
        check_aiortc(fresh=True)
    monkeypatch.undo()
    check_aiortc(fresh=True)  # and the real thing passes again


def test_the_check_runs_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    check_aiortc(fresh=True)
    calls: list[int] = []
    monkeypatch.setattr(native_audio, "_inspect_aiortc", lambda: calls.append(1))
    for _ in range(3):
        check_aiortc()
    assert calls == []
    check_aiortc(fresh=True)
    assert calls == [1]
