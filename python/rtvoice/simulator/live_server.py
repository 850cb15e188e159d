"""The Live API endpoints of the simulator (protocol-live.md §1, §6, §8): WebRTC create and fork
over HTTP, the primary and fork WebSockets, and the store of sessions by id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtvoice.rtc.compat import filter_outbound, filter_stun_requests
from rtvoice.rtc.loopback import (
    filter_candidates,
    is_loopback_host,
    loopback_configuration,
    restrict_to_loopback,
    sdp_candidate_addresses,
)
from rtvoice.rtc.raw_rtp import IdleAudioTrack, RawRtpSender
from rtvoice.simulator.live import LiveSession
from rtvoice.simulator.live_config import (
    Problem,
    check_fork_config,
    check_session_config,
    fork_resource,
    resolve_session,
)
from rtvoice.simulator.pacer import RtpPacer

if TYPE_CHECKING:
    from rtvoice.simulator.server import Simulator

__all__ = ["LiveEndpoints"]

logger = logging.getLogger("rtvoice.simulator")

LIVE_PATH = "/v1/live/sessions"


def _error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def _json_error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    return web.json_response(_error_body(code, message, param), status=status)


def _problem(problem: Problem, status: int = 400) -> web.Response:
    return _json_error(status, problem.code, problem.message, problem.param)


class LiveEndpoints:
    """The Live half of a :class:`~rtvoice.simulator.Simulator` (``sim.live``)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        #: Every Live session by id, open or closed (kept for forks).
        self.sessions: dict[str, LiveSession] = {}
        self.order: list[str] = []
        self._new = asyncio.Condition() if _has_loop() else None
        self._background: set[asyncio.Task[Any]] = set()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(LIVE_PATH, self._create)
        app.router.add_get(LIVE_PATH, self._websocket)
        app.router.add_post(LIVE_PATH + "/{session_id}/fork", self._fork_http)
        app.router.add_get(LIVE_PATH + "/{session_id}/fork", self._fork_websocket)

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            if not session.closed:
                await session._shutdown("close_requested")
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------------------- sessions

    def _expires_at(self) -> int:
        length = self.sim.session_max_s if self.sim.session_max_s is not None else 3600.0
        return int(self.sim.now() + length)

    async def _register(self, session: LiveSession) -> None:
        self.sessions[session.id] = session
        self.order.append(session.id)
        if self._new is None:
            self._new = asyncio.Condition()
        async with self._new:
            self._new.notify_all()

    async def wait_for_session(self, timeout: float = 10.0, *, index: int = -1) -> LiveSession:
        """The Live session at ``index`` of creation order once ``session.started`` was sent."""
        if self._new is None:
            self._new = asyncio.Condition()
        cond = self._new

        async def wait() -> LiveSession:
            need = index + 1 if index >= 0 else -index
            async with cond:
                await cond.wait_for(lambda: len(self.order) >= need)
            session = self.sessions[self.order[index]]
            await session.ready.wait()
            return session

        return await asyncio.wait_for(wait(), timeout)

    def _auth(self, token: str) -> bool:
        return bool(token) and secrets.compare_digest(token, self.sim.api_key)

    def _unauthorized(self, token: str) -> web.Response:
        message = (
            "Ephemeral keys are not accepted by the Live API; create Live sessions server-side "
            "with a standard API key."
            if token.startswith("ek_")
            else "Incorrect API key provided."
        )
        return _json_error(401, "invalid_api_key", message)

    @staticmethod
    def _bearer(request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        return header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""

    async def _json_body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json_error(400, "invalid_json", "The body is not valid JSON.")
        if not isinstance(body, dict):
            return _json_error(400, "invalid_type", "The body must be a JSON object.")
        return body

    @staticmethod
    def _transport(body: dict[str, Any]) -> str | web.Response:
        transport = body.get("transport")
        if not isinstance(transport, dict):
            return _json_error(
                400,
                "missing_required_parameter",
                "Missing required parameter: 'transport'.",
                "transport",
            )
        for key in transport:
            if key not in ("type", "sdp"):
                return _json_error(
                    400,
                    "unknown_parameter",
                    f"Unknown parameter: 'transport.{key}'.",
                    f"transport.{key}",
                )
        if transport.get("type") != "webrtc":
            return _json_error(
                400,
                "invalid_value",
                "Invalid value for 'transport.type': only 'webrtc' is supported.",
                "transport.type",
            )
        sdp = transport.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            return _json_error(
                400,
                "missing_required_parameter",
                "Missing required parameter: 'transport.sdp'.",
                "transport.sdp",
            )
        return sdp

    def fork_refusal(self, source_id: str) -> tuple[int, str, str] | None:
        """``(status, code, message)`` when the stored session cannot be forked now."""
        source = self.sessions.get(source_id)
        if source is None:
            return (404, "session_not_found", f"Live session '{source_id}' not found.")
        if not source.session.get("store"):
            return (
                400,
                "session_not_stored",
                f"Live session '{source_id}' was not stored (store: false); it cannot be forked.",
            )
        if not source.closed:
            return (
                409,
                "session_not_closed",
                f"Live session '{source_id}' is still active; fork it after it closed.",
            )
        if not source.finalized:
            return (
                409,
                "session_not_finalized",
                f"Live session '{source_id}' is still being finalized; retry shortly.",
            )
        return None

    # ------------------------------------------------------------------------------- HTTP

    async def _create(self, request: web.Request) -> web.StreamResponse:
        token = self._bearer(request)
        if not self._auth(token):
            return self._unauthorized(token)
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        for key in body:
            if key not in ("session", "transport"):
                return _json_error(400, "unknown_parameter", f"Unknown parameter: '{key}'.", key)
        if "session" not in body:
            return _json_error(
                400,
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                "session",
            )
        problem = check_session_config(body["session"], webrtc=True)
        if problem is not None:
            return _problem(problem)
        sdp = self._transport(body)
        if isinstance(sdp, web.Response):
            return sdp
        session_id = "live_" + secrets.token_hex(12)
        resource = resolve_session(
            body["session"], session_id=session_id, expires_at=self._expires_at(), webrtc=True
        )
        return await self._answer(
            sdp, LiveSession(self.sim, session_id, resource, transport="webrtc")
        )

    async def _fork_http(self, request: web.Request) -> web.StreamResponse:
        token = self._bearer(request)
        if not self._auth(token):
            return self._unauthorized(token)
        source_id = request.match_info["session_id"]
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        for key in body:
            if key not in ("session", "transport"):
                return _json_error(400, "unknown_parameter", f"Unknown parameter: '{key}'.", key)
        refusal = self.fork_refusal(source_id)
        if refusal is not None:
            return _json_error(refusal[0], refusal[1], refusal[2])
        source = self.sessions[source_id]
        overrides = body.get("session") or {}
        problem = check_fork_config(overrides, source.session, webrtc=True)
        if problem is not None:
            return _problem(problem)
        sdp = self._transport(body)
        if isinstance(sdp, web.Response):
            return sdp
        session_id = "live_" + secrets.token_hex(12)
        resource = fork_resource(
            source.session,
            overrides,
            session_id=session_id,
            expires_at=self._expires_at(),
            webrtc=True,
        )
        session = LiveSession(
            self.sim,
            session_id,
            resource,
            transport="webrtc",
            forked_from=source_id,
            inherited=source.transcript(),
        )
        return await self._answer(sdp, session)

    async def _answer(self, sdp: str, session: LiveSession) -> web.StreamResponse:
        if not re.search(r"^v=0", sdp, re.M) or not re.search(r"^m=audio ", sdp, re.M):
            return _json_error(
                400,
                "invalid_offer",
                "Invalid SDP offer: it has no audio media section.",
                "transport.sdp",
            )
        offered = sdp_candidate_addresses(sdp)
        if offered and not any(is_loopback_host(a) for a in offered):
            return _json_error(
                400,
                "invalid_offer",
                "Invalid SDP offer: no 127.0.0.1 ICE candidate. The simulator only talks over "
                "loopback; gather loopback candidates (rtvoice.rtc.loopback.restrict_to_loopback).",
                "transport.sdp",
            )
        sim = self.sim
        if sim.faults.answer_delay_s:
            await asyncio.sleep(sim.faults.answer_delay_s)
        pc = RTCPeerConnection(loopback_configuration())
        restrict_to_loopback(pc)
        session.pc = pc

        @pc.on("datachannel")
        def _on_datachannel(channel: Any) -> None:
            if channel.label == "oai-events" and session.channel is None:
                session.on_channel(channel)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState == "connected":
                session.connected.set()
                self._start_audio(session)
            elif pc.connectionState in ("failed", "closed") and not session.closed:
                session.primary_gone()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(filter_candidates(sdp), "offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise ValueError("no audio transceiver")
            from rtvoice.rtc.native_audio import attach_rtp_sink

            attach_rtp_sink(audio[0].receiver, session)
            pc.addTrack(IdleAudioTrack())
            await pc.setLocalDescription(await pc.createAnswer())
            filter_stun_requests(pc, sim._ignores_stun_request, session.stun)
            filter_outbound(pc, lambda: session.silent, session.outbound)
        except Exception as exc:
            await pc.close()
            logger.info("simulator: Live offer rejected: %s", exc)
            return _json_error(400, "invalid_offer", f"Invalid SDP offer: {exc}", "transport.sdp")
        answer = pc.localDescription.sdp
        if sim.ice_lite:
            answer = re.sub(
                r"^(t=[^\r\n]*\r?\n)", "\\g<1>a=ice-lite\r\n", answer, count=1, flags=re.M
            )
        await self._register(session)
        return web.json_response(
            {"session": {"id": session.id}, "transport": {"type": "webrtc", "sdp": answer}},
            status=200,
        )

    def _start_audio(self, session: LiveSession) -> None:
        if session.pacer is not None or session.closed:
            return
        audio = [t for t in session.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            return
        m = re.search(r"^a=rtpmap:(\d+) opus/48000", session.pc.localDescription.sdp, re.M | re.I)
        if m is None:
            return
        raw = RawRtpSender(audio[0].sender, int(m.group(1)))

        async def send(seq: int, ts: int, payload: bytes, marker: bool) -> None:
            await raw.send(seq, ts, payload, marker=marker)

        session.pacer = RtpPacer(send, self.sim.impairment, seed_offset=len(self.sessions))
        session.pacer.start()

    # ------------------------------------------------------------------------------- WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_websocket(request, fork_of=None)

    async def _fork_websocket(self, request: web.Request) -> web.StreamResponse:
        return await self._serve_websocket(request, fork_of=request.match_info["session_id"])

    async def _serve_websocket(
        self, request: web.Request, *, fork_of: str | None
    ) -> web.StreamResponse:
        """``GET /v1/live/sessions`` (primary) or ``/{id}/fork``: auth by Bearer or the
        ``openai-insecure-api-key.<key>`` subprotocol; first frame ``session.start``."""
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        token = self._bearer(request)
        for p in offered:
            if p.startswith("openai-insecure-api-key."):
                token = p[len("openai-insecure-api-key.") :]
        ws = web.WebSocketResponse(max_msg_size=0, compress=False, autoping=False)
        await ws.prepare(request)

        async def refuse(
            code: str,
            message: str,
            close_code: int,
            param: str | None = None,
            client_event_id: str | None = None,
        ) -> web.WebSocketResponse:
            error: dict[str, Any] = {
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
            }
            event: dict[str, Any] = {"type": "error", "event_id": "event_" + secrets.token_hex(10)}
            if client_event_id is not None:
                error["client_event_id"] = client_event_id
                event["client_event_id"] = client_event_id
            event["error"] = error
            await ws.send_str(json.dumps(event))
            await ws.close(code=close_code, message=code.encode())
            return ws

        if not self._auth(token):
            text = (
                "Ephemeral keys are not accepted by the Live API."
                if token.startswith("ek_")
                else "Incorrect API key provided."
            )
            return await refuse("invalid_api_key", text, 1008)
        if request.query_string:
            return await refuse(
                "unknown_parameter",
                "The Live WebSocket takes no query parameters; put the model in session.start.",
                1008,
                param=next(iter(request.query), None),
            )
        try:
            first = await ws.receive(timeout=30)
        except TimeoutError:
            return await refuse("session_start_timeout", "No session.start within 30 s.", 1008)
        if first.type not in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
            return ws
        try:
            start = json.loads(first.data)
        except (ValueError, UnicodeDecodeError):
            start = None
        eid = start.get("event_id") if isinstance(start, dict) else None
        eid = eid if isinstance(eid, str) else None
        if not isinstance(start, dict) or start.get("type") != "session.start":
            return await refuse(
                "session_start_required",
                "The first event on a Live WebSocket must be session.start.",
                1008,
                param="type",
                client_event_id=eid,
            )
        for key in start:
            if key not in ("type", "event_id", "session"):
                return await refuse(
                    "unknown_parameter",
                    f"Unknown parameter: '{key}'.",
                    1008,
                    param=key,
                    client_event_id=eid,
                )
        session_id = "live_" + secrets.token_hex(12)
        if "session" not in start:
            return await refuse(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                1008,
                "session",
                eid,
            )
        if fork_of is None:
            config = start.get("session")
            problem = check_session_config(config, webrtc=False)
            if problem is not None:
                return await refuse(problem.code, problem.message, 1008, problem.param, eid)
            assert isinstance(config, dict)
            resource = resolve_session(
                config, session_id=session_id, expires_at=self._expires_at(), webrtc=False
            )
            session = LiveSession(self.sim, session_id, resource, transport="websocket")
        else:
            refusal = self.fork_refusal(fork_of)
            if refusal is not None:
                return await refuse(refusal[1], refusal[2], 1008, None, eid)
            source = self.sessions[fork_of]
            overrides = start.get("session", {})
            problem = check_fork_config(overrides, source.session, webrtc=False)
            if problem is not None:
                return await refuse(problem.code, problem.message, 1008, problem.param, eid)
            resource = fork_resource(
                source.session,
                overrides,
                session_id=session_id,
                expires_at=self._expires_at(),
                webrtc=False,
            )
            session = LiveSession(
                self.sim,
                session_id,
                resource,
                transport="websocket",
                forked_from=fork_of,
                inherited=source.transcript(),
            )
        session.client_events.append(start)
        outbox: asyncio.Queue[str | None] = asyncio.Queue()
        session.ws_outbox = outbox
        session.connected.set()
        await self._register(session)
        session.announce(eid)

        async def writer() -> None:
            while True:
                item = await outbox.get()
                if item is None:
                    if session.ws_end == "abort":
                        if request.transport is not None:
                            request.transport.abort()
                    else:
                        await ws.close(code=1000, message=b"session closed")
                    return
                await session.wait_until_audible()
                await ws.send_str(item)

        writer_task = asyncio.ensure_future(writer())
        try:
            async for msg in ws:
                if msg.type in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
                    session.handle_client_message(msg.data)
                elif msg.type == web.WSMsgType.PING and not session.silent:
                    await ws.pong(msg.data)
        finally:
            if not session.closed and not session.closing:
                session.primary_gone()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(writer_task), 2.0)
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer_task
        return ws


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
