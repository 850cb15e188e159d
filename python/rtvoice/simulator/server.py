"""The simulator's HTTP surface (aiohttp on 127.0.0.1) and its aiortc answerer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import random
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from rtvoice.errors import redact
from rtvoice.events import session_beta_to_ga, session_ga_to_beta
from rtvoice.rtc.compat import (
    filter_inbound_rtp,
    filter_outbound,
    filter_stun_requests,
    lite_server_ignores,
)
from rtvoice.rtc.loopback import (
    filter_candidates,
    is_loopback_host,
    loopback_configuration,
    restrict_to_loopback,
    sdp_candidate_addresses,
)
from rtvoice.rtc.raw_rtp import IdleAudioTrack, RawRtpSender
from rtvoice.simulator.call import Call, _id, default_session, session_errors
from rtvoice.simulator.impair import Impairment
from rtvoice.simulator.live import LiveSession
from rtvoice.simulator.live_server import LiveEndpoints
from rtvoice.simulator.pacer import RtpPacer

__all__ = ["Faults", "HttpFault", "RequestRecord", "Simulator"]

logger = logging.getLogger("rtvoice.simulator")

INVALID_OFFER_MESSAGE = "Invalid SDP offer. Offer did not have an audio media section."
#: Ended calls a Simulator keeps (with their recordings) for tests to read; older ones go.
MAX_CLOSED_CALLS = 256


def _error_body(
    message: str, code: str | None, *, type: str = "invalid_request_error", param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _json_error(status: int, message: str, code: str | None, **kw: Any) -> web.Response:
    return web.json_response(_error_body(message, code, **kw), status=status)


@dataclass
class HttpFault:
    """Answer the next ``times`` requests whose path ends with ``path_suffix`` with ``status``
    and ``body`` (a dict is sent as JSON; ``None`` gives an empty body)."""

    path_suffix: str
    status: int
    body: Any = None
    times: int = 1
    headers: dict[str, str] | None = None


@dataclass
class Faults:
    """Fault injection switches; change them at any time.

    ``http``: queued :class:`HttpFault`\\ s (see :meth:`fail_next`). ``bad_answer``: answer 201
    with a body that is not SDP. ``ice_failure``: answer with candidates no one listens on, so ICE
    fails. ``answer_delay_s``: wait before answering an offer. ``malformed_after_created``: send
    this many malformed messages right after ``session.created``. ``drop_channel_after_s``: close
    the data channel this long after it opens. ``block_ice``: the answerer ignores every STUN
    request (no response, no triggered check): the SDP POST still gets a valid answer, but ICE
    never reaches connected (read per request, so setting it during a call also cuts consent).

    :meth:`vanish` and :meth:`freeze` make every call (current and new) go quiet without closing
    anything, as a killed process or a dropped network would: no RTP, no RTCP, no STUN, no
    data-channel (SCTP) datagram, no WebSocket frame and no pong. UDP datagrams are dropped;
    WebSocket frames are held and sent on :meth:`resume` (TCP delivers late). Per call:
    ``call.vanish()``, ``call.freeze(s)``, ``call.resume()``.
    """

    http: list[HttpFault] = field(default_factory=list)
    bad_answer: bool = False
    ice_failure: bool = False
    answer_delay_s: float = 0.0
    malformed_after_created: int = 0
    drop_channel_after_s: float | None = None
    block_ice: bool = False
    #: time.monotonic() until which the simulator sends nothing (see vanish() and freeze()).
    silent_until: float = 0.0

    def vanish(self) -> None:
        """From now on send nothing at all, on every call, until :meth:`resume`."""
        self.silent_until = math.inf

    def freeze(self, seconds: float) -> None:
        """Send nothing, on every call, for ``seconds`` from now; then carry on."""
        self.silent_until = max(self.silent_until, time.monotonic() + seconds)

    def resume(self) -> None:
        """End a vanish or a freeze now."""
        self.silent_until = 0.0

    @property
    def silent(self) -> bool:
        return time.monotonic() < self.silent_until

    def fail_next(
        self,
        path_suffix: str,
        status: int,
        body: Any = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """E.g. ``fail_next("/realtime/calls", 500)``, ``fail_next("/client_secrets", 503)`` or
        ``fail_next("/realtime/calls", 429, headers={"Retry-After": "1"})``."""
        self.http.append(HttpFault(path_suffix, status, body, times, headers))

    def take(self, path: str) -> HttpFault | None:
        for fault in self.http:
            if path.endswith(fault.path_suffix) and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.http.remove(fault)
                return fault
        return None


@dataclass
class RequestRecord:
    method: str
    path: str
    query: str
    content_type: str
    status: int
    authorization: str  # redacted


@dataclass
class _Key:
    expires_at: float
    session: dict[str, Any]
    beta: bool = False


def _default_tool_arguments(tool: dict[str, Any]) -> dict[str, Any]:
    """Plausible arguments for a function tool: a sample value for each required property."""
    params: Any = tool.get("parameters")
    params = params if isinstance(params, dict) else {}
    props: Any = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required: Any = params.get("required")
    names = required if isinstance(required, list) else list(props)
    samples = {"string": "San Francisco", "number": 21.5, "integer": 3, "boolean": True}
    out: dict[str, Any] = {}
    for name in names:
        spec: Any = props.get(name)
        spec = spec if isinstance(spec, dict) else {}
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            out[name] = enum[0]
        else:
            out[name] = samples.get(str(spec.get("type")), "value")
    return out


class Simulator:
    """A local Realtime API on 127.0.0.1 speaking the real protocol over real WebRTC.

    ``await sim.start()`` (or ``async with Simulator() as sim``) binds it; ``sim.base_url``
    (``http://127.0.0.1:<port>/v1``) and ``sim.api_key`` (the one standard key it accepts) are
    what a client needs. See the package docstring for the full API.

    ``ice_lite=True`` behaves like OpenAI's media servers: the answer says ``a=ice-lite`` and,
    once a pair is nominated, the answerer ignores STUN binding requests without USE-CANDIDATE
    (so consent checks without it go unanswered). ``call.stun`` counts what it passed and
    ignored.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        model: str = "gpt-realtime",
        beta: bool = False,
        impairment: Impairment | None = None,
        loss: float = 0.0,
        burst_length: float = 0.0,
        jitter_ms: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
        uplink_loss: float = 0.0,
        reject_model_query: bool = True,
        max_message_size: int | None = None,
        vad_threshold_dbfs: float = -45.0,
        reply_audio: str = "echo",
        reply_text: Callable[[str], str] | None = None,
        transcribe: Callable[[npt.NDArray[np.int16]], str] | None = None,
        tool_arguments: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        session_max_s: float | None = None,
        ice_lite: bool = False,
        api: str = "both",
        delegate: Callable[[str], bool] | None = None,
        fork_ready_after_s: float = 0.2,
        live_usage_interval_s: float | None = 1.0,
    ) -> None:
        if api not in ("realtime", "live", "both"):
            raise ValueError("api must be 'realtime', 'live' or 'both'")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the simulator only listens on loopback")
        if reply_audio not in ("echo", "synth"):
            raise ValueError("reply_audio must be 'echo' or 'synth'")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.api_key = api_key or "sk-sim-" + secrets.token_hex(16)
        self.model = model
        self.beta = beta
        self.impairment = impairment or Impairment(
            loss=loss, burst_length=burst_length, jitter_ms=jitter_ms, reorder=reorder, seed=seed
        )
        if not 0.0 <= uplink_loss < 1.0:
            raise ValueError(f"uplink_loss must be within [0, 1), got {uplink_loss}")
        # WebRTC: the fraction of the client's RTP packets dropped on arrival (seeded).
        self.uplink_loss = uplink_loss
        self.reject_model_query = reject_model_query
        self.max_message_size = max_message_size
        self.vad_threshold_dbfs = vad_threshold_dbfs
        self.reply_audio = reply_audio
        self.reply_text: Callable[[str], str] = reply_text or (
            lambda heard: f"You said: {heard}" if heard else "Hello from the simulator."
        )
        self.transcribe: Callable[[npt.NDArray[np.int16]], str] = transcribe or (
            lambda pcm: f"speech of {pcm.size / 48000:.2f} seconds"
        )
        self.tool_arguments: Callable[[dict[str, Any]], dict[str, Any]] = (
            tool_arguments or _default_tool_arguments
        )
        self.session_max_s = session_max_s
        self.ice_lite = ice_lite
        self.api = api
        #: Live: whether an utterance is delegated (client delegation: never when None;
        #: Responses delegation: whenever the session has function tools when None).
        self.live_delegate = delegate
        self.fork_ready_after_s = fork_ready_after_s
        self.live_usage_interval_s = live_usage_interval_s
        self.live = LiveEndpoints(self)
        self.faults = Faults()
        self.calls: dict[str, Call] = {}
        self.requests: list[RequestRecord] = []
        self.time_offset_s = 0.0
        self._keys: dict[str, _Key] = {}
        self._runner: web.AppRunner | None = None
        self._new_call = asyncio.Condition() if _has_loop() else None
        self._call_order: collections.deque[str] = collections.deque()
        #: Ended calls let go to keep at most MAX_CLOSED_CALLS of them (the oldest first), and
        #: calls ever made (what seeds each call's impairments, so they stay distinct).
        self.calls_evicted = 0
        self._calls_made = 0

    def _register_call(self, call: Call) -> None:
        """A new call into ``calls``; ended calls beyond MAX_CLOSED_CALLS go, oldest first, so a
        long-running simulator keeps what recent tests read, not every call it ever served."""
        self.calls[call.id] = call
        self._call_order.append(call.id)
        self._calls_made += 1
        ended = [cid for cid in self._call_order if self.calls[cid].closed]
        for cid in ended[: max(0, len(ended) - MAX_CLOSED_CALLS)]:
            del self.calls[cid]
            self._call_order.remove(cid)
            self.calls_evicted += 1

    # ------------------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the simulator is not started")
        return f"http://{self.host}:{self.port}/v1"

    def now(self) -> float:
        """The simulator's Unix time (shifted by :meth:`advance_time`)."""
        return time.time() + self.time_offset_s

    def advance_time(self, seconds: float) -> None:
        """Move the simulator's clock forward, e.g. past an ephemeral key's expiry."""
        self.time_offset_s += seconds

    async def start(self) -> Self:
        if self._runner is not None:
            return self
        if self._new_call is None:
            self._new_call = asyncio.Condition()
        app = web.Application(middlewares=[self._record_middleware], client_max_size=1 << 20)
        if self.api in ("realtime", "both"):
            app.router.add_post("/v1/realtime/client_secrets", self._client_secrets)
            app.router.add_post("/v1/realtime/calls", self._calls)
            app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self._hangup)
            app.router.add_post("/v1/realtime/sessions", self._beta_sessions)
            app.router.add_post("/v1/realtime", self._beta_sdp)
            app.router.add_get("/v1/realtime", self._websocket)
        if self.api in ("live", "both"):
            self.live.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        if server is None or not server.sockets:
            raise RuntimeError("the simulator's HTTP server has no socket")
        self.port = int(server.sockets[0].getsockname()[1])
        logger.info("simulator listening on %s", self.base_url)
        return self

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.close()
        await self.live.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------- keys

    def mint_key(
        self, ttl_s: int = 600, session: dict[str, Any] | None = None, *, beta: bool = False
    ) -> str:
        """Mint an ephemeral key directly (as ``POST /v1/realtime/client_secrets`` would)."""
        value = "ek_" + secrets.token_hex(16)
        sess = default_session(self.model, _id("sess"), int(self.now() + ttl_s))
        if session:
            sess.update({k: v for k, v in session.items() if k != "audio"})
            if isinstance(session.get("audio"), dict):
                from rtvoice.simulator.call import merge_session

                sess = merge_session(sess, {"audio": session["audio"]})
        self._keys[value] = _Key(self.now() + ttl_s, sess, beta)
        return value

    def expire_keys(self) -> None:
        """Make every ephemeral key minted so far expired."""
        for key in self._keys.values():
            key.expires_at = min(key.expires_at, self.now() - 1)

    def _auth(self, request: web.Request) -> tuple[str, _Key | None] | None:
        """``("standard", None)``, ``("ephemeral", key)`` or ``None`` if not authorized."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        return self._auth_token(header[len("Bearer ") :].strip())

    def _unauthorized(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        shown = redact(header[len("Bearer ") :]) if header.startswith("Bearer ") else "none"
        return _json_error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_api_key",
        )

    # ------------------------------------------------------------------------- HTTP

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        fault = self.faults.take(request.path)
        if fault is not None:
            if isinstance(fault.body, (dict, list)):
                resp: web.StreamResponse = web.json_response(
                    fault.body, status=fault.status, headers=fault.headers
                )
            else:
                resp = web.Response(
                    status=fault.status, text=fault.body or "", headers=fault.headers
                )
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                # A plain response: returning the exception object is deprecated in aiohttp.
                resp = web.Response(status=exc.status, reason=exc.reason, text=exc.text)
        self.requests.append(
            RequestRecord(
                method=request.method,
                path=request.path,
                query=request.query_string,
                content_type=request.content_type,
                status=resp.status,
                authorization=redact(request.headers.get("Authorization", "")),
            )
        )
        return resp

    async def _client_secrets(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if auth is None or auth[0] != "standard":
            return self._unauthorized(request)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json_error(400, "The body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict):
            return _json_error(400, "The body must be a JSON object.", "invalid_type")
        ttl = 600
        expires_after = body.get("expires_after")
        if expires_after is not None:
            if not isinstance(expires_after, dict) or expires_after.get("anchor") != "created_at":
                return _json_error(
                    400,
                    "Invalid value for 'expires_after.anchor': only 'created_at' is supported.",
                    "invalid_value",
                    param="expires_after.anchor",
                )
            seconds = expires_after.get("seconds", 600)
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int)
                or not 10 <= seconds <= 7200
            ):
                return _json_error(
                    400,
                    "Invalid 'expires_after.seconds': must be an integer between 10 and 7200.",
                    "invalid_value",
                    param="expires_after.seconds",
                )
            ttl = seconds
        session = body.get("session")
        if session is not None:
            problem = session_errors(session, beta=False)
            if problem is not None:
                code, param, message = problem
                return _json_error(400, message, code, param=param)
        for key in body:
            if key not in ("expires_after", "session"):
                return _json_error(
                    400, f"Unknown parameter: '{key}'.", "unknown_parameter", param=key
                )
        value = self.mint_key(ttl, session)
        return web.json_response(
            {
                "value": value,
                "expires_at": int(self._keys[value].expires_at),
                "session": self._keys[value].session,
            }
        )

    async def _beta_sessions(self, request: web.Request) -> web.Response:
        if not self.beta:
            return _json_error(404, "Not found: the beta interface is disabled.", "not_found")
        auth = self._auth(request)
        if auth is None or auth[0] != "standard":
            return self._unauthorized(request)
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json_error(400, "The body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict):
            return _json_error(400, "The body must be a JSON object.", "invalid_type")
        problem = session_errors(body, beta=True)
        if problem is not None:
            code, param, message = problem
            return _json_error(400, message, code, param=param)
        ttl = 60
        cs = body.get("client_secret")
        if isinstance(cs, dict) and isinstance(cs.get("expires_after"), dict):
            seconds = cs["expires_after"].get("seconds", 60)
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int)
                or not 10 <= seconds <= 7200
            ):
                return _json_error(
                    400,
                    "Invalid 'client_secret.expires_after.seconds'.",
                    "invalid_value",
                    param="client_secret.expires_after.seconds",
                )
            ttl = seconds
        ga = session_beta_to_ga({k: v for k, v in body.items() if k != "client_secret"})
        value = self.mint_key(ttl, ga, beta=True)
        key = self._keys[value]
        flat = session_ga_to_beta(key.session)
        return web.json_response(
            {**flat, "client_secret": {"value": value, "expires_at": int(key.expires_at)}}
        )

    async def _read_offer(
        self, request: web.Request
    ) -> tuple[str, dict[str, Any] | None] | web.Response:
        if request.content_type == "application/sdp":
            return (await request.text(), None)
        if request.content_type == "multipart/form-data":
            sdp: str | None = None
            session: dict[str, Any] | None = None
            reader = await request.multipart()
            while True:
                part: Any = await reader.next()
                if part is None:
                    break
                name = getattr(part, "name", None)
                text = await part.text()
                if name == "sdp":
                    sdp = text
                elif name == "session":
                    try:
                        parsed = json.loads(text)
                    except ValueError:
                        return _json_error(
                            400,
                            "The session part is not valid JSON.",
                            "invalid_json",
                            param="session",
                        )
                    if not isinstance(parsed, dict):
                        return _json_error(
                            400,
                            "The session part must be an object.",
                            "invalid_type",
                            param="session",
                        )
                    session = parsed
            if sdp is None:
                return _json_error(
                    400,
                    "Missing required parameter: 'sdp'.",
                    "missing_required_parameter",
                    param="sdp",
                )
            return (sdp, session)
        return _json_error(
            400,
            f"Unsupported content type '{request.content_type}': use application/sdp or "
            "multipart/form-data.",
            "unsupported_content_type",
        )

    async def _calls(self, request: web.Request) -> web.StreamResponse:
        if "model" in request.query and self.reject_model_query:
            return web.Response(status=400)  # reported behaviour of the real server (empty body)
        auth = self._auth(request)
        if auth is None:
            return self._unauthorized(request)
        offer = await self._read_offer(request)
        if isinstance(offer, web.StreamResponse):
            return offer
        sdp, session_part = offer
        _, key = auth
        if session_part is not None:
            problem = session_errors(session_part, beta=False)
            if problem is not None:
                code, param, message = problem
                return _json_error(400, message, code, param=param)
        session = (
            dict(key.session)
            if key is not None
            else default_session(self.model, _id("sess"), int(self.now() + 3600))
        )
        if session_part is not None:
            from rtvoice.simulator.call import merge_session

            session = merge_session(session, session_part)
        return await self._answer(sdp, session, beta=bool(key.beta) if key else False, ga=True)

    async def _beta_sdp(self, request: web.Request) -> web.StreamResponse:
        if not self.beta:
            return _json_error(
                400,
                "The beta interface is disabled on this server.",
                "beta_api_shape_disabled",
            )
        if "model" not in request.query:
            return _json_error(
                400,
                "Missing required parameter: 'model'.",
                "missing_required_parameter",
                param="model",
            )
        auth = self._auth(request)
        if auth is None:
            return self._unauthorized(request)
        offer = await self._read_offer(request)
        if isinstance(offer, web.StreamResponse):
            return offer
        sdp, _ = offer
        key = auth[1]
        session = (
            dict(key.session)
            if key
            else default_session(request.query["model"], _id("sess"), int(self.now() + 1800))
        )
        return await self._answer(sdp, session, beta=True, ga=False)

    async def _hangup(self, request: web.Request) -> web.Response:
        auth = self._auth(request)
        if auth is None:
            return self._unauthorized(request)
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return _json_error(404, "Call not found.", "not_found")
        call.hung_up = True
        await call.close()
        return web.Response(status=200)

    # ------------------------------------------------------------------------- WebSocket

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/realtime?model=|call_id=`` upgraded to a WebSocket (protocol.md §3).

        Auth: ``Authorization: Bearer`` or the subprotocol ``openai-insecure-api-key.<key>``;
        ``realtime`` is echoed when offered. ``OpenAI-Beta: realtime=v1`` (or the subprotocol
        ``openai-beta.realtime-v1``) selects the beta shape when ``beta=True``, and otherwise gets
        ``beta_api_shape_disabled`` and close code 4000, as the real server does today.
        """
        offered = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        protocols = ["realtime"] if "realtime" in offered else []
        # Pings are answered below, so that a vanished or frozen call does not answer them.
        ws = web.WebSocketResponse(
            protocols=protocols, max_msg_size=0, compress=False, autoping=False
        )
        await ws.prepare(request)
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        for p in offered:
            if p.startswith("openai-insecure-api-key."):
                token = p[len("openai-insecure-api-key.") :]
        wants_beta = request.headers.get("OpenAI-Beta", "") == "realtime=v1" or (
            "openai-beta.realtime-v1" in offered
        )
        outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()

        async def refuse(code: str, message: str, close_code: int) -> web.WebSocketResponse:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "error",
                        "event_id": _id("event"),
                        "error": {
                            "type": "invalid_request_error",
                            "code": code,
                            "message": message,
                            "param": None,
                            "event_id": None,
                        },
                    }
                )
            )
            await ws.close(code=close_code, message=f"invalid_request_error.{code}".encode())
            return ws

        auth = self._auth_token(token)
        if auth is None:
            return await refuse("invalid_api_key", "Incorrect API key provided.", 3000)
        if wants_beta and not self.beta:
            return await refuse(
                "beta_api_shape_disabled",
                "The beta Realtime API shape is disabled; use the GA interface.",
                4000,
            )
        model = request.query.get("model")
        call_id = request.query.get("call_id")
        if (model is None) == (call_id is None):
            return await refuse(
                "invalid_request", "Provide exactly one of 'model' or 'call_id'.", 1008
            )
        if call_id is not None:
            joined = self.calls.get(call_id)
            if joined is None or joined.closed or auth[0] != "standard":
                return await refuse("call_not_found", f"Call '{call_id}' not found.", 1008)
            call = joined
            call.sidebands.append(outbox)
        else:
            key = auth[1]
            session = (
                dict(key.session)
                if key is not None
                else default_session(model or self.model, _id("sess"), int(self.now() + 3600))
            )
            call = Call(
                sim=self,
                id="ws_" + secrets.token_hex(16),
                pc=None,
                session=self._new_session(session),
                beta=wants_beta,
                ws_outbox=outbox,
            )
            self._register_call(call)
            call.connected.set()
            call.channel_open.set()
            assert self._new_call is not None
            async with self._new_call:
                self._new_call.notify_all()
            call.announce()
            if self.session_max_s is not None:
                call._spawn(self._expire_later(call, self.session_max_s))

        async def writer() -> None:
            while True:
                item = await outbox.get()
                if item is None:
                    code, reason = call.ws_close if call.ws_outbox is outbox else (1000, "")
                    await ws.close(code=code, message=reason.encode())
                    return
                await call.wait_until_audible()
                if isinstance(item, bytes):
                    await ws.send_bytes(item)
                else:
                    await ws.send_str(item)

        writer_task = asyncio.ensure_future(writer())
        try:
            async for msg in ws:
                if msg.type in (web.WSMsgType.TEXT, web.WSMsgType.BINARY):
                    call.handle_client_message(msg.data)
                elif msg.type == web.WSMsgType.PING and not call.silent:
                    await ws.pong(msg.data)
        finally:
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer_task
            if outbox in call.sidebands:
                call.sidebands.remove(outbox)
            elif call.ws_outbox is outbox:
                await call.close()
        return ws

    def _auth_token(self, token: str) -> tuple[str, _Key | None] | None:
        if token and secrets.compare_digest(token, self.api_key):
            return ("standard", None)
        key = self._keys.get(token)
        if key is not None and key.expires_at > self.now():
            return ("ephemeral", key)
        return None

    # ------------------------------------------------------------------------- answerer

    async def _answer(
        self, sdp: str, session: dict[str, Any], *, beta: bool, ga: bool
    ) -> web.StreamResponse:
        if not re.search(r"^v=0", sdp, re.M) or not re.search(r"^m=", sdp, re.M):
            return _json_error(
                400,
                "Invalid SDP offer. Please try again with a WHIP-compliant offer.",
                "invalid_offer",
            )
        if not re.search(r"^m=audio ", sdp, re.M):
            return _json_error(400, INVALID_OFFER_MESSAGE, "invalid_offer")
        offered = sdp_candidate_addresses(sdp)
        if offered and not any(is_loopback_host(a) for a in offered):
            return _json_error(
                400,
                "Invalid SDP offer: no 127.0.0.1 ICE candidate. The simulator only talks over "
                "loopback; gather loopback candidates (rtvoice.rtc.loopback.restrict_to_loopback).",
                "invalid_offer",
            )
        if self.faults.answer_delay_s:
            await asyncio.sleep(self.faults.answer_delay_s)
        session = self._new_session(session)
        call_id = "rtc_" + secrets.token_hex(16)
        pc = RTCPeerConnection(loopback_configuration())
        restrict_to_loopback(pc)
        call = Call(sim=self, id=call_id, pc=pc, session=session, beta=beta)

        @pc.on("datachannel")
        def _on_datachannel(channel: Any) -> None:
            if channel.label == "oai-events" and call.channel is None:
                call.on_channel(channel)
                self._after_channel(call)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState == "connected":
                call.connected.set()
                self._start_audio(call)
            elif pc.connectionState in ("failed", "closed") and not call.closed:
                await call.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(filter_candidates(sdp), "offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise ValueError("no audio transceiver")
            from rtvoice.rtc.native_audio import attach_rtp_sink

            attach_rtp_sink(audio[0].receiver, call)
            pc.addTrack(IdleAudioTrack())
            await pc.setLocalDescription(await pc.createAnswer())
            filter_stun_requests(pc, self._ignores_stun_request, call.stun)
            filter_outbound(pc, lambda: call.silent, call.outbound)
            if self.uplink_loss > 0:
                rng = random.Random(self.impairment.seed + 7919 * self._calls_made)
                loss = self.uplink_loss
                call.inbound = filter_inbound_rtp(pc, lambda: rng.random() < loss)
        except Exception as exc:
            await pc.close()
            logger.info("simulator: offer rejected: %s", exc)
            return _json_error(400, f"Invalid SDP offer: {exc}", "invalid_offer")
        answer = pc.localDescription.sdp
        if self.max_message_size is not None:
            answer = re.sub(
                r"a=max-message-size:\d+", f"a=max-message-size:{self.max_message_size}", answer
            )
        if self.ice_lite:
            answer = re.sub(
                r"^(t=[^\r\n]*\r?\n)", "\\g<1>a=ice-lite\r\n", answer, count=1, flags=re.M
            )
        if self.faults.ice_failure:
            # Credentials the answerer does not use: every connectivity check fails its
            # integrity check in both directions, and the candidates point at a dead port.
            answer = re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:simfail", answer)
            answer = re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:" + "f" * 24, answer)
            answer = re.sub(
                r"(a=candidate:\S+ \d+ \S+ \d+ )(\S+) (\d+)", r"\g<1>127.0.0.1 9", answer
            )
        if self.faults.bad_answer:
            answer = "this is not an SDP answer"
        self._register_call(call)
        if self.session_max_s is not None:
            call._spawn(self._expire_later(call, self.session_max_s))
        assert self._new_call is not None
        async with self._new_call:
            self._new_call.notify_all()
        headers = {"Content-Type": "application/sdp"}
        if ga:
            headers["Location"] = f"/v1/realtime/calls/{call_id}"
        return web.Response(status=201, body=answer.encode(), headers=headers)

    def _new_session(self, session: dict[str, Any]) -> dict[str, Any]:
        """Every call is a new session (a key minted once may open several): its own id, and
        ``expires_at`` at the maximum session length (``session_max_s``, else 60 minutes)."""
        length = self.session_max_s if self.session_max_s is not None else 3600.0
        return {**session, "id": _id("sess"), "expires_at": int(self.now() + length)}

    def _ignores_stun_request(self, conn: Any, message: Any) -> bool:
        if self.faults.block_ice:
            return True
        return self.ice_lite and lite_server_ignores(conn, message)

    async def _expire_later(self, call: Call, after_s: float) -> None:
        await asyncio.sleep(after_s)
        if not call.closed:
            await call.expire_session(max(1, int(after_s // 60)))

    def _after_channel(self, call: Call) -> None:
        async def inject() -> None:
            await call.channel_open.wait()
            for i in range(self.faults.malformed_after_created):
                call.send_raw("{not json" if i % 2 == 0 else '["no", "type"]')
            if self.faults.drop_channel_after_s is not None:
                await asyncio.sleep(self.faults.drop_channel_after_s)
                call.drop_data_channel()

        call._spawn(inject())

    def _start_audio(self, call: Call) -> None:
        if call.pacer is not None or call.closed:
            return
        audio = [t for t in call.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            return
        pt = _opus_payload_type(call.pc.localDescription.sdp)
        raw = RawRtpSender(audio[0].sender, pt)

        async def send(seq: int, ts: int, payload: bytes, marker: bool) -> None:
            await raw.send(seq, ts, payload, marker=marker)

        call.pacer = RtpPacer(send, self.impairment, seed_offset=self._calls_made)
        call.pacer.start()

    # ------------------------------------------------------------------------- tests

    @property
    def live_sessions(self) -> dict[str, LiveSession]:
        """Every Live session by id (open and closed; closed ones stay for forks)."""
        return self.live.sessions

    async def wait_for_live_session(self, timeout: float = 10.0, *, index: int = -1) -> LiveSession:
        """The Live session at ``index`` of creation order, once ``session.started`` was sent."""
        return await self.live.wait_for_session(timeout, index=index)

    @property
    def last_call(self) -> Call | None:
        return self.calls[self._call_order[-1]] if self._call_order else None

    async def wait_for_call(self, timeout: float = 10.0, *, index: int = -1) -> Call:
        """The call at ``index`` of creation order, once it exists, connected and its data
        channel open."""
        assert self._new_call is not None

        async def wait() -> Call:
            async with self._new_call:  # type: ignore[union-attr]
                await self._new_call.wait_for(  # type: ignore[union-attr]
                    lambda: len(self._call_order) > (index if index >= 0 else -index - 1)
                )
            call = self.calls[self._call_order[index]]
            await call.connected.wait()
            await call.channel_open.wait()
            return call

        return await asyncio.wait_for(wait(), timeout)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _opus_payload_type(sdp: str) -> int:
    m = re.search(r"^a=rtpmap:(\d+) opus/48000", sdp, re.M | re.I)
    if m is None:
        raise ValueError("the answer has no Opus payload type")
    return int(m.group(1))
