"""A minimal Realtime-style answerer for transport tests: aiohttp on 127.0.0.1 + an aiortc peer.

It speaks just enough of protocol.md §2 (POST /v1/realtime/calls with application/sdp or
multipart, 201 + Location, 400 invalid_offer, 401 invalid_api_key, hangup, beta
POST /v1/realtime?model=) for the transport's own tests.
"""

from __future__ import annotations

import collections
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtvoice.rtc.loopback import restrict_to_loopback
from rtvoice.rtc.native_audio import EncodedAudioTrack, PacketSource, attach_rtp_sink


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode()
    return value.file.read().decode()


class RecordingSink:
    def __init__(self) -> None:
        self.packets: list[tuple[int, int, bytes, int]] = []

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self.packets.append((seq, timestamp, payload, arrival_ns))


class EchoSource:
    """Sends back what the peer sent, packet for packet, as soon as it arrives."""

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[bytes, int, int]] = collections.deque()

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self.queue.append((payload, timestamp, seq))

    next_due_ns = None

    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
        return self.queue.popleft() if self.queue else None


class TeeSink:
    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        for sink in self.sinks:
            sink.push_rtp(seq, timestamp, payload, arrival_ns)


class MiniAnswerer:
    def __init__(
        self,
        *,
        keys: tuple[str, ...] = ("ek_test_key_1234", "sk-test-standard-key"),
        packet_source_factory: Callable[[], PacketSource] | None = None,
        max_message_size: int | None = None,
        echo: bool = False,
        on_event: Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], None] | None = None,
        answer_override: tuple[int, str, str] | None = None,
    ) -> None:
        self.echo = echo
        # on_event(event, send): a scripted reply to each client event (default: an "echo").
        self.on_event = on_event
        # (status, body, content type) returned instead of a real answer.
        self.answer_override = answer_override
        self.channels: list[Any] = []
        self.minted: list[dict[str, Any]] = []
        self.keys = set(keys)
        self.packet_source_factory = packet_source_factory
        self.max_message_size = max_message_size
        self.pcs: list[RTCPeerConnection] = []
        self.sinks: list[RecordingSink] = []
        self.received: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.hangups: list[str] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self._calls)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self._hangup)
        app.router.add_post("/v1/realtime", self._calls)
        app.router.add_post("/v1/realtime/client_secrets", self._client_secret)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        for pc in self.pcs:
            await pc.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _error(self, status: int, message: str, code: str) -> web.Response:
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
        return web.json_response(body, status=status)

    async def _client_secret(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") != "Bearer sk-test-standard-key":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        body = await request.json()
        self.minted.append(body)
        session = dict(body.get("session") or {}, object="realtime.session", id="sess_1")
        return web.json_response(
            {"value": "ek_test_key_1234", "expires_at": int(time.time()) + 600, "session": session}
        )

    async def _hangup(self, request: web.Request) -> web.Response:
        self.hangups.append(request.match_info["call_id"])
        return web.Response(status=200)

    async def _calls(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        if key not in self.keys:
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        session = None
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            offer = _text(form["sdp"])
            session = json.loads(_text(form["session"]))
        else:
            offer = await request.text()
        self.requests.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "session": session,
                "content_type": request.content_type,
                "offer": offer,
            }
        )
        if self.answer_override is not None:
            status, body, ctype = self.answer_override
            return web.Response(status=status, text=body, content_type=ctype)
        if "m=audio" not in offer:
            return self._error(
                400,
                "Invalid SDP offer. Offer did not have an audio media section.",
                "invalid_offer",
            )

        pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        self.pcs.append(pc)
        sink = RecordingSink()
        self.sinks.append(sink)

        @pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            self.channels.append(channel)

            def _send_created() -> None:
                channel.send(
                    json.dumps(
                        {
                            "type": "session.created",
                            "event_id": "event_1",
                            "session": {"type": "realtime", "id": "sess_1"},
                        }
                    )
                )

            if channel.readyState == "open":
                _send_created()
            else:
                channel.on("open", _send_created)

            @channel.on("message")
            def _on_message(message: str) -> None:
                event = json.loads(message)
                self.received.append(event)
                if self.on_event is not None:
                    self.on_event(event, lambda e: channel.send(json.dumps(e)))
                else:
                    channel.send(json.dumps({"type": "echo", "event_id": "event_x", "of": event}))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.direction = "sendrecv"
                if self.echo:
                    echo = EchoSource()
                    attach_rtp_sink(transceiver.receiver, TeeSink(sink, echo))
                    transceiver.sender.replaceTrack(EncodedAudioTrack(echo, max_sleep_s=0.001))
                else:
                    attach_rtp_sink(transceiver.receiver, sink)
                if self.packet_source_factory is not None:
                    transceiver.sender.replaceTrack(EncodedAudioTrack(self.packet_source_factory()))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        if self.max_message_size is not None:
            answer = answer.replace(
                "a=max-message-size:262144", f"a=max-message-size:{self.max_message_size}"
            )
        call_id = "rtc_" + uuid.uuid4().hex
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/{call_id}"},
        )
