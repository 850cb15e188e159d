"""rtvoice.rtc.loopback: fails loudly if an aiortc/aioice upgrade breaks loopback-only ICE."""

from __future__ import annotations

import asyncio
from importlib import metadata

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtvoice.rtc import loopback


def test_installed_versions_are_supported() -> None:
    loopback.check_supported()  # raises LoopbackError on an unsupported aiortc/aioice
    assert metadata.version("aiortc").startswith("1.16")


def test_unpatched_aioice_skips_127_0_0_1() -> None:
    # The reason the module exists. If aioice starts gathering 127.0.0.1 itself, revisit it.
    original = loopback._original or aioice.ice.get_host_addresses
    assert "127.0.0.1" not in original(use_ipv4=True, use_ipv6=False)


async def _offer(pc: RTCPeerConnection) -> str:
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


def test_gathering_is_scoped() -> None:
    async def main() -> tuple[str, str, str]:
        pcs = [RTCPeerConnection(loopback.loopback_configuration()) for _ in range(3)]
        try:
            with loopback.loopback_only():
                inside = await _offer(pcs[0])
            outside = await _offer(pcs[1])
            with loopback.loopback_only():
                task = asyncio.ensure_future(_offer(pcs[2]))  # a task started in the scope
            in_task = await task
            return inside, outside, in_task
        finally:
            for pc in pcs:
                await pc.close()

    inside, outside, in_task = asyncio.run(main())
    assert set(loopback.sdp_candidate_addresses(inside)) == {"127.0.0.1"}
    loopback.assert_loopback_sdp(inside)
    loopback.assert_loopback_sdp(in_task)
    assert "127.0.0.1" not in loopback.sdp_candidate_addresses(outside)
    assert aioice.ice.get_host_addresses is loopback._hooked_get_host_addresses


def test_restrict_to_loopback_is_per_connection() -> None:
    async def main() -> tuple[str, str]:
        restricted = loopback.restrict_to_loopback(
            RTCPeerConnection(loopback.loopback_configuration())
        )
        assert loopback.restrict_to_loopback(restricted) is restricted  # idempotent
        plain = RTCPeerConnection(loopback.loopback_configuration())
        try:
            return await _offer(restricted), await _offer(plain)
        finally:
            await restricted.close()
            await plain.close()

    restricted_sdp, plain_sdp = asyncio.run(main())
    loopback.assert_loopback_sdp(restricted_sdp)
    assert "127.0.0.1" not in loopback.sdp_candidate_addresses(plain_sdp)


def test_hook_survives_a_replaced_function(monkeypatch: pytest.MonkeyPatch) -> None:
    with loopback.loopback_only():
        pass
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["10.9.9.9"])
    with loopback.loopback_only():
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]


def test_two_peers_connect_over_loopback_only() -> None:
    async def main() -> None:
        offerer = RTCPeerConnection(loopback.loopback_configuration())
        answerer = RTCPeerConnection(loopback.loopback_configuration())
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @answerer.on("datachannel")
        def on_datachannel(channel: object) -> None:
            @channel.on("message")  # type: ignore[attr-defined]
            def on_message(message: str) -> None:
                if not got.done():
                    got.set_result(message)

        try:
            offerer.addTransceiver("audio", direction="sendrecv")
            channel = offerer.createDataChannel("oai-events")
            channel.on("open", lambda: channel.send("ping"))
            with loopback.loopback_only():
                await offerer.setLocalDescription(await offerer.createOffer())
                await answerer.setRemoteDescription(offerer.localDescription)
                await answerer.setLocalDescription(await answerer.createAnswer())
            await offerer.setRemoteDescription(
                RTCSessionDescription(answerer.localDescription.sdp, "answer")
            )
            loopback.assert_loopback_sdp(offerer.localDescription.sdp)
            loopback.assert_loopback_sdp(answerer.localDescription.sdp)
            assert await asyncio.wait_for(got, 10) == "ping"
            for pc in (offerer, answerer):
                pairs = loopback.nominated_pairs(pc)
                assert pairs, "no nominated ICE pair"
                for local, remote in pairs:
                    assert local[0] == "127.0.0.1"
                    assert remote[0] == "127.0.0.1"
        finally:
            await offerer.close()
            await answerer.close()

    asyncio.run(main())


def test_sdp_helpers() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 2130706431 192.0.2.2 5000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host\r\n"
        "a=candidate:3 1 udp 1694498815 203.0.113.9 6000 typ srflx raddr 192.0.2.2 rport 5000\r\n"
        "a=end-of-candidates\r\n"
    )
    assert loopback.sdp_candidate_addresses(sdp) == ["192.0.2.2", "127.0.0.1", "203.0.113.9"]
    with pytest.raises(loopback.LoopbackError, match=r"192\.0\.2\.2"):
        loopback.assert_loopback_sdp(sdp)
    kept = loopback.filter_candidates(sdp)
    assert loopback.sdp_candidate_addresses(kept) == ["127.0.0.1"]
    assert "a=end-of-candidates\r\n" in kept
    with pytest.raises(loopback.LoopbackError, match="no ICE candidate"):
        loopback.assert_loopback_sdp("v=0\r\n")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("localhost", True),
        ("[::1]", True),
        ("::1", True),
        ("192.0.2.2", False),
        ("api.openai.com", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_host(host: str | None, expected: bool) -> None:
    assert loopback.is_loopback_host(host) is expected


def test_is_loopback_url() -> None:
    assert loopback.is_loopback_url("http://127.0.0.1:8123/v1")
    assert not loopback.is_loopback_url("https://api.openai.com/v1")


def test_version_parsing_and_rejection(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loopback._version_tuple("1.16.0") == (1, 16, 0)
    assert loopback._version_tuple("0.13.0rc1") == (0, 13, 0)
    monkeypatch.setitem(loopback.SUPPORTED, "aiortc", ((1, 17), (1, 18)))
    with pytest.raises(loopback.LoopbackError, match=r"aiortc .* is not supported"):
        loopback.check_supported()
