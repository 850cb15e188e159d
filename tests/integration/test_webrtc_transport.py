from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time

import pytest

from rtvoice import errors
from rtvoice.rtc.loopback import sdp_candidate_addresses
from rtvoice.transports.webrtc import WebRTCTransport

from .answerer import MiniAnswerer, RecordingSink


class ListSource:
    """Releases one packet every 20 ms of monotonic time (the sample clock of a test)."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.index = 0
        self.start_ns = time.monotonic_ns()

    @property
    def next_due_ns(self) -> int:
        return self.start_ns + self.index * 20_000_000

    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
        if self.index >= len(self.payloads) or now_ns < self.next_due_ns:
            return None
        payload = self.payloads[self.index]
        item = (payload, self.index * 960, self.index)
        self.index += 1
        return item


def run(coro):
    return asyncio.run(coro)


def test_connect_ephemeral_events_and_native_rtp_both_ways() -> None:
    payloads_up = [bytes([0xF8, i, i ^ 0x55]) + bytes(20) for i in range(60)]
    payloads_down = [bytes([0xF8, 200 - i, 7]) + bytes(30) for i in range(60)]

    async def main() -> None:
        answerer = MiniAnswerer(packet_source_factory=lambda: ListSource(payloads_down))
        base_url = await answerer.start()
        messages: list[str] = []
        sink = RecordingSink()
        source = ListSource(payloads_up)
        transport = WebRTCTransport(
            base_url=base_url,
            uplink=source,
            downlink=sink,
            on_message=messages.append,
        )
        await transport.connect(key="ek_test_key_1234")
        assert transport.call_id
        assert transport.call_id.startswith("rtc_")
        assert "a=fmtp:96 minptime=10;useinbandfec=1" in transport.local_sdp
        # On loopback both sides offer 127.0.0.1 candidates only.
        assert set(sdp_candidate_addresses(transport.local_sdp)) == {"127.0.0.1"}
        assert transport.remote_sdp is not None
        assert set(sdp_candidate_addresses(transport.remote_sdp)) == {"127.0.0.1"}
        assert transport.local_sdp.count("m=audio") == 1
        assert "a=sendrecv" in transport.local_sdp
        assert answerer.requests[0]["content_type"] == "application/sdp"
        assert json.loads(messages[0])["type"] == "session.created"
        t = transport.timings
        assert t.total_ms
        assert t.ice_gathering_ms is not None
        assert t.sdp_post_ms is not None
        await transport.send_text(json.dumps({"type": "response.create"}))
        for _ in range(200):
            if (
                len(sink.packets) >= 60
                and len(answerer.sinks[0].packets) >= 60
                and len(messages) >= 2
            ):
                break
            await asyncio.sleep(0.02)
        assert answerer.received == [{"type": "response.create"}]
        assert json.loads(messages[1])["of"] == {"type": "response.create"}
        # Payloads arrive byte-exact, in order, with timestamps spaced by the sample count.
        up = answerer.sinks[0].packets
        assert [p[2] for p in up] == payloads_up
        assert {(b[1] - a[1]) % 2**32 for a, b in itertools.pairwise(up)} == {960}
        assert {(b[0] - a[0]) % 2**16 for a, b in itertools.pairwise(up)} == {1}
        assert [p[2] for p in sink.packets] == payloads_down
        await transport.close()
        assert transport.state == "closed"
        await answerer.stop()

    run(main())


def test_multipart_standard_key_hangs_up_on_close() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        session = {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."}
        await transport.connect(key="sk-test-standard-key", session=session)
        assert answerer.requests[0]["content_type"] == "multipart/form-data"
        assert answerer.requests[0]["session"] == session
        await transport.close()
        assert answerer.hangups == [transport.call_id]
        await answerer.stop()

    run(main())


def test_beta_posts_offer_with_model_query() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        transport = WebRTCTransport(
            base_url=base_url,
            api_version="beta",
            model="gpt-4o-realtime-preview",
        )
        await transport.connect(key="ek_test_key_1234")
        assert answerer.requests[0]["path"] == "/v1/realtime"
        assert answerer.requests[0]["query"] == {"model": "gpt-4o-realtime-preview"}
        await transport.close()
        await answerer.stop()

    run(main())


def test_unknown_key_is_authentication_error_with_the_envelope_message() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        with pytest.raises(errors.AuthenticationError, match="Incorrect API key provided") as info:
            await transport.connect(key="ek_wrong_key_99999")
        assert info.value.status == 401
        assert info.value.code == "invalid_api_key"
        assert "ek_wrong_key_99999" not in str(info.value)
        assert transport.state == "failed"
        await answerer.stop()

    run(main())


def test_oversized_message_is_refused_with_a_clear_error() -> None:
    async def main() -> None:
        answerer = MiniAnswerer(max_message_size=1000)
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        await transport.connect(key="ek_test_key_1234")
        assert transport.max_message_bytes == 1000
        big = json.dumps({"type": "conversation.item.create", "pad": "x" * 2000})
        with pytest.raises(
            errors.TransportError, match="exceeds the peer's maximum message size of 1000"
        ):
            await transport.send_text(big)
        await transport.send_text(json.dumps({"type": "response.create"}))
        await transport.close()
        await answerer.stop()

    run(main())


def test_close_leaves_no_thread() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        before = {t.ident for t in threading.enumerate()}
        transport = WebRTCTransport(base_url=base_url)
        await transport.connect(key="ek_test_key_1234")
        rtc = transport.rtc_thread
        assert rtc is not None
        assert rtc.thread.is_alive()
        await transport.close()
        assert not rtc.thread.is_alive()
        assert rtc.loop.is_closed()
        leftover = [
            t for t in threading.enumerate() if t.ident not in before and t.name != "asyncio_0"
        ]
        assert leftover == []
        await answerer.stop()

    run(main())


def _socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
    return count


def test_close_releases_every_socket_and_task() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        before_sockets = _socket_fds()
        before_tasks = len(asyncio.all_tasks())
        transport = WebRTCTransport(base_url=base_url)
        await transport.connect(key="sk-test-standard-key", session={"type": "realtime"})
        assert _socket_fds() > before_sockets
        await transport.close()
        await answerer.stop()  # the answerer's own peer sockets
        await asyncio.sleep(0.1)
        assert len(asyncio.all_tasks()) == before_tasks
        # The answerer's HTTP listener was opened before the baseline and is closed now.
        assert _socket_fds() <= before_sockets - 1

    asyncio.run(main())


def test_an_answer_that_is_not_sdp_is_a_clear_protocol_error() -> None:
    async def main() -> None:
        answerer = MiniAnswerer(answer_override=(201, '{"ok": true}', "application/json"))
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        with pytest.raises(errors.ProtocolError, match="not an SDP answer"):
            await transport.connect(key="ek_test_key_1234")
        await answerer.stop()

    asyncio.run(main())


def test_a_corrupt_sdp_answer_is_rejected_before_any_media() -> None:
    async def main() -> None:
        answerer = MiniAnswerer(answer_override=(201, "v=0\r\nm=bogus\r\n", "application/sdp"))
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        with pytest.raises(errors.WebRTCUnavailableError, match="SDP answer was rejected"):
            await transport.connect(key="ek_test_key_1234")
        assert transport.state == "failed"
        await answerer.stop()

    asyncio.run(main())


def test_a_rejected_offer_is_a_bad_request_with_the_servers_message() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Invalid SDP offer. Offer did not have an audio media section.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_offer",
            }
        }
    )

    async def main() -> None:
        answerer = MiniAnswerer(answer_override=(400, body, "application/json"))
        base_url = await answerer.start()
        transport = WebRTCTransport(base_url=base_url)
        with pytest.raises(errors.BadRequestError, match="Offer did not have an audio") as info:
            await transport.connect(key="ek_test_key_1234")
        assert info.value.code == "invalid_offer"
        await answerer.stop()

    asyncio.run(main())
