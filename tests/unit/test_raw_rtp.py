"""rtvoice.rtc.raw_rtp: fails loudly if an aiortc upgrade moves the sender internals it uses."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from rtvoice.rtc import raw_rtp


def test_sender_internals_are_where_raw_rtp_expects_them() -> None:
    async def main() -> None:
        pc = RTCPeerConnection()
        try:
            sender = pc.addTrack(raw_rtp.IdleAudioTrack())
            raw_rtp.check_raw_rtp(sender)
            out = raw_rtp.RawRtpSender(sender, 111)
            assert out.ssrc == sender._ssrc
            with pytest.raises(ValueError, match="payload_type"):
                raw_rtp.RawRtpSender(sender, 128)
            with pytest.raises(ConnectionError):  # DTLS not connected: nothing is sent
                await out.send(1, 2, b"\x00")
            assert out.packets_sent == 0
        finally:
            await pc.close()

    asyncio.run(main())


def test_check_rejects_an_incompatible_sender() -> None:
    class NotASender:
        _ssrc = None

    with pytest.raises(raw_rtp.RawRtpUnsupportedError, match="_ssrc"):
        raw_rtp.check_raw_rtp(NotASender())


def test_idle_track_never_yields_and_ends_on_stop() -> None:
    async def main() -> None:
        track = raw_rtp.IdleAudioTrack()
        pending = asyncio.ensure_future(track.recv())
        await asyncio.sleep(0.05)
        assert not pending.done()
        track.stop()
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(pending, 1)

    asyncio.run(main())
