"""The simulator's Live API (protocol-live.md §8) with a bare aiortc client and a bare aiohttp
WebSocket client; every server event checked against the SDK's Live server union, every client
event the tests send against the client unions."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from openai.types.live.client_event import ClientEvent
from openai.types.live.fork_client_event import ForkClientEvent
from openai.types.live.live_create_response import LiveCreateResponse
from openai.types.live.server_event import ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from rtvoice.simulator import LiveSession, Simulator
from rtvoice.simulator.audio import speechlike

from .sim_client import BareClient

SERVER = TypeAdapter(ServerEvent)
CLIENT = TypeAdapter(ClientEvent)
FORK_CLIENT = TypeAdapter(ForkClientEvent)
RESPONSE_STREAM = TypeAdapter(ResponseStreamEvent)
MODEL = "gpt-live-1"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
RESPONSES = {"type": "responses", "responses": {"model": "gpt-5", "tools": TOOLS}}


def no_extras(model: Any, path: str = "") -> None:
    """The SDK models accept unknown fields; the tests do not."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"unknown fields at {path or '<root>'}: {model.model_extra}"
        for name in type(model).model_fields:
            no_extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            no_extras(item, f"{path}[{i}]")


def check_server(ev: dict[str, Any]) -> None:
    parsed = SERVER.validate_python(ev)
    no_extras(parsed)
    if ev["type"] == "session.output_audio.delta":
        assert "event_id" not in ev
    else:
        assert ev["event_id"].startswith("event_")
    if ev["type"] == "response.event":
        no_extras(RESPONSE_STREAM.validate_python(ev["event"]))
    for key in ("start_ms", "end_ms"):
        if key in ev:
            assert ev["start_ms"] <= ev["end_ms"]


def check_client(ev: dict[str, Any], *, fork: bool = False) -> None:
    no_extras((FORK_CLIENT if fork else CLIENT).validate_python(ev))


def check_all(session: LiveSession) -> None:
    for ev in session.server_events:
        check_server(ev)


def run(fn: Callable[[Simulator, aiohttp.ClientSession], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        kw.setdefault("live_usage_interval_s", 0.3)
        async with Simulator(**kw) as sim, aiohttp.ClientSession() as http:
            return await fn(sim, http)

    return asyncio.run(main())


# ------------------------------------------------------------------------------- WebSocket


class LiveWs:
    """A bare Live WebSocket client: validates what it sends and what it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, fork: bool = False) -> None:
        self.ws = ws
        self.fork = fork
        self.events: list[dict[str, Any]] = []
        self._seen = 0

    async def send(self, ev: dict[str, Any]) -> None:
        check_client(ev, fork=self.fork)
        await self.ws.send_str(json.dumps(ev))

    async def send_pcm(self, pcm48: np.ndarray[Any, Any], rate: int = 24000) -> None:
        """48 kHz int16 PCM sent as 20 ms appends at ``rate`` (faster than real time)."""
        pcm = pcm48[:: 48000 // rate].astype("<i2")
        step = rate // 50
        for i in range(0, pcm.size, step):
            await self.send(
                {
                    "type": "session.input_audio.append",
                    "audio": base64.b64encode(pcm[i : i + step].tobytes()).decode(),
                }
            )

    async def next(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                while self._seen < len(self.events):
                    ev = self.events[self._seen]
                    self._seen += 1
                    if ev["type"] == type_:
                        return ev
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket ended before {type_}: {msg.type} {msg.extra}")
                ev = json.loads(msg.data)
                check_server(ev)
                self.events.append(ev)

        return await asyncio.wait_for(find(), timeout)

    async def drain(self) -> aiohttp.WSMessage:
        """Read to the end of the socket; the closing message."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                return msg
            ev = json.loads(msg.data)
            check_server(ev)
            self.events.append(ev)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def ws_url(sim: Simulator, path: str = "") -> str:
    return f"ws://127.0.0.1:{sim.port}/v1/live/sessions{path}"


async def start_ws(
    sim: Simulator,
    http: aiohttp.ClientSession,
    session: dict[str, Any] | None = None,
    *,
    path: str = "",
    fork: bool = False,
) -> tuple[LiveWs, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {sim.api_key}"}
    ws = await http.ws_connect(ws_url(sim, path), headers=auth)
    client = LiveWs(ws, fork=fork)
    body = session if session is not None else ({} if fork else {"model": MODEL})
    await client.send({"type": "session.start", "event_id": "start_1", "session": body})
    started = await client.next("session.started")
    return client, started


def test_ws_start_resolves_defaults_and_acks_with_client_event_id() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(sim, http)
        res = started["session"]
        assert started["client_event_id"] == "start_1"
        assert res["id"].startswith("live_")
        assert res["status"] == "active"
        assert res["audio"] == {
            "format": {"type": "audio/pcm", "rate": 24000},
            "output": {"voice": "marin"},
        }
        assert res["delegation"] == {"type": "client"}
        assert res["input"] == []
        assert res["store"] is False
        assert res["expires_at"] > sim.now()
        await client.send({"type": "session.input_audio.mute", "event_id": "m1"})
        assert (await client.next("session.input_audio.muted"))["client_event_id"] == "m1"
        await client.send({"type": "session.input_audio.unmute", "event_id": "u1"})
        assert (await client.next("session.input_audio.unmuted"))["client_event_id"] == "u1"
        for kind in ("instructions", "thinking"):
            await client.send(
                {
                    "type": f"session.{kind}.append",
                    "event_id": f"a_{kind}",
                    "content": "Be brief.",
                    "delegation_id": None,
                }
            )
            ack = await client.next(f"session.{kind}.appended")
            assert ack["client_event_id"] == f"a_{kind}"
        usage = await client.next("session.usage.updated")
        assert usage["usage"]["seconds"] > 0
        await client.ws.close()
        session = sim.live_sessions[res["id"]]
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.closed_reason == "connection_lost"
        check_all(session)

    run(go)


def test_ws_first_frame_must_be_session_start_and_config_is_strict() -> None:
    async def refused(
        sim: Simulator, http: aiohttp.ClientSession, first: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        ws = await http.ws_connect(ws_url(sim, kw.get("path", "")), **kw.get("connect", {}))
        await ws.send_str(json.dumps(first))
        client = LiveWs(ws)
        closing = await client.drain()
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert client.types() == ["error"]
        return client.events[0]["error"]

    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        auth = {"headers": {"Authorization": f"Bearer {sim.api_key}"}}
        err = await refused(sim, http, {"type": "session.update", "session": {}}, connect=auth)
        assert err["code"] == "session_start_required"
        cases = [
            ({}, "missing_required_parameter", "session.model"),
            ({"model": MODEL, "voice": "x"}, "unknown_parameter", "session.voice"),
            (
                {"model": MODEL, "audio": {"format": {"type": "audio/pcm", "rate": 8000}}},
                "invalid_value",
                "session.audio.format.rate",
            ),
            (
                {"model": MODEL, "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}},
                "unsupported_audio_format",
                "session.audio.format.type",
            ),
            (
                {"model": MODEL, "delegation": {"type": "responses"}},
                "missing_required_parameter",
                "session.delegation.responses",
            ),
            (
                {"model": MODEL, "input": [{"role": "user", "content": [{"text": "hi"}]}] * 129},
                "array_above_max_length",
                "session.input",
            ),
        ]
        for config, code, param in cases:
            err = await refused(
                sim, http, {"type": "session.start", "session": config}, connect=auth
            )
            assert (err["code"], err["param"]) == (code, param), config
        ek = sim.mint_key()
        err = await refused(
            sim,
            http,
            {"type": "session.start", "session": {"model": MODEL}},
            connect={"protocols": (f"openai-insecure-api-key.{ek}",)},
        )
        assert err["code"] == "invalid_api_key"
        # The subprotocol carries the standard key too.
        ws = await http.ws_connect(
            ws_url(sim), protocols=(f"openai-insecure-api-key.{sim.api_key}",)
        )
        client = LiveWs(ws)
        await client.send({"type": "session.start", "session": {"model": MODEL}})
        await client.next("session.started")
        await ws.close()
        assert not any(
            e["type"] == "session.started"
            for s in sim.live_sessions.values()
            for e in s.server_events
            if s.session["model"] != MODEL
        )

    run(go)


def test_ws_session_update_accepts_only_delegation_and_triggers() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, _started = await start_ws(sim, http, {"model": MODEL, "delegation": RESPONSES})
        await client.send(
            {
                "type": "session.update",
                "event_id": "up1",
                "session": {
                    "delegation": {"type": "responses", "responses": {"model": "gpt-5.1"}},
                    "triggers": [],
                },
            }
        )
        updated = await client.next("session.updated")
        assert updated["client_event_id"] == "up1"
        assert updated["session"]["delegation"]["responses"]["model"] == "gpt-5.1"
        assert updated["session"]["delegation"]["responses"]["tools"] == TOOLS
        bad = [
            ({"instructions": "x"}, "immutable_field_update", "session.instructions"),
            (
                {"delegation": {"type": "client"}},
                "immutable_field_update",
                "session.delegation.type",
            ),
            ({"colour": 1}, "unknown_parameter", "session.colour"),
        ]
        for i, (body, code, param) in enumerate(bad):
            raw = {"type": "session.update", "event_id": f"bad{i}", "session": body}
            await client.ws.send_str(json.dumps(raw))
            err = await client.next("error")
            assert (err["error"]["code"], err["error"]["param"]) == (code, param)
            assert err["client_event_id"] == f"bad{i}" == err["error"]["client_event_id"]
        odd = {"type": "session.input_audio.append", "audio": "AAAA"}  # 3 bytes
        await client.ws.send_str(json.dumps(odd))
        assert (await client.next("error"))["error"]["code"] == "invalid_audio"
        await client.ws.send_str("{nope")
        assert (await client.next("error"))["error"]["code"] == "invalid_json"
        # The session carries on after every error.
        await client.send({"type": "session.input_audio.mute"})
        await client.next("session.input_audio.muted")
        await client.ws.close()

    run(go)


def test_ws_speech_gives_input_transcript_then_reply_transcript_and_audio() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(
            sim, http, {"model": MODEL, "audio": {"format": {"type": "audio/pcm", "rate": 16000}}}
        )
        speech = speechlike(1.0, seed=3)
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16), 16000)
        await client.send_pcm(speech, 16000)
        await client.send_pcm(np.zeros(48000, dtype=np.int16), 16000)
        heard = await client.next("session.input_transcript.delta")
        assert 400 <= heard["start_ms"] <= 500 < heard["end_ms"]
        said = await client.next("session.output_transcript.delta")
        assert said["start_ms"] >= heard["end_ms"]
        audio = await client.next("session.output_audio.delta")
        assert len(base64.b64decode(audio["delta"])) % 2 == 0
        session = sim.live_sessions[started["session"]["id"]]
        while not session.replies or not session.replies[0].done:
            await asyncio.sleep(0.05)
        reply = session.replies[0]
        assert reply.transcript_sent == sim.reply_text(session.utterances[0].transcript)
        got = b"".join(
            base64.b64decode(e["delta"])
            for e in client.events
            if e["type"] == "session.output_audio.delta"
        )
        while len(got) < reply.pcm.size // 3 * 2:
            got += base64.b64decode((await client.next("session.output_audio.delta"))["delta"])
        assert len(got) == reply.pcm.size // 3 * 2  # 16 kHz PCM16 of the whole reply
        types = set(client.types())
        assert not {t for t in types if t.endswith((".done", ".completed"))}
        assert [m["role"] for m in session.conversation] == ["user", "assistant"]
        # Muted input is silence to the model: no utterance.
        await client.send({"type": "session.input_audio.mute"})
        await client.send_pcm(speech, 16000)
        await client.send_pcm(np.zeros(48000, dtype=np.int16), 16000)
        await client.send({"type": "session.input_audio.unmute"})
        await client.next("session.input_audio.unmuted")
        assert len(session.utterances) == 1
        assert not session.received_pcm()[-48000 * 2 :].any()
        await client.ws.close()

    run(go)


def test_ws_barge_in_stops_the_reply() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(sim, http)
        session = sim.live_sessions[started["session"]["id"]]
        await client.send_pcm(speechlike(2.0, seed=4))
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16))
        await client.next("session.output_transcript.delta")
        await client.send_pcm(speechlike(0.5, seed=5))
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16))
        await client.next("session.input_transcript.delta")
        await client.next("session.input_transcript.delta")
        first = session.replies[0]
        assert first.interrupted
        assert first.done
        assert first.transcript_sent != first.text
        await client.ws.close()

    run(go)


def test_ws_client_delegation_commentary_is_spoken() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(sim, http)
        await client.send_pcm(speechlike(0.8, seed=6))
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16))
        created = await client.next("session.delegation.created")
        d = created["delegation"]
        assert d["target"] == "client"
        assert d["type"] == "delegation"
        assert "response_id" not in d
        assert "session.output_transcript.delta" not in client.types()
        await client.send(
            {
                "type": "session.commentary.append",
                "event_id": "c1",
                "delegation_id": "dlg_x",
                "content": "x",
            }
        )
        assert (await client.next("error"))["error"]["param"] == "delegation_id"
        await client.send(
            {
                "type": "session.commentary.append",
                "event_id": "c2",
                "delegation_id": d["id"],
                "content": "It is sunny in Paris.",
            }
        )
        ack = await client.next("session.commentary.appended")
        assert ack["client_event_id"] == "c2"
        words = ""
        while words != "It is sunny in Paris.":
            words += (await client.next("session.output_transcript.delta"))["delta"]
        session = sim.live_sessions[started["session"]["id"]]
        assert session.delegations[d["id"]].commentary == ["It is sunny in Paris."]
        assert session.replies[-1].source == "commentary"
        await client.ws.close()

    run(go, delegate=lambda transcript: True)


def test_ws_responses_delegation_function_call_round_trip() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, _started = await start_ws(sim, http, {"model": MODEL, "delegation": RESPONSES})
        await client.send_pcm(speechlike(0.8, seed=7))
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16))
        created = await client.next("session.delegation.created")
        d = created["delegation"]
        assert d["target"] == "responses"
        assert d["response_id"].startswith("resp_")
        wrapped: list[dict[str, Any]] = []
        while not wrapped or wrapped[-1]["type"] != "response.output_item.done":
            ev = await client.next("response.event")
            assert ev["delegation_id"] == d["id"]
            wrapped.append(ev["event"])
        kinds = [e["type"] for e in wrapped]
        assert kinds[0] == "response.created"
        assert kinds[-2] == "response.function_call_arguments.done"
        assert "response.function_call_arguments.delta" in kinds
        item = wrapped[-1]["item"]
        assert item["type"] == "function_call"
        assert item["name"] == "get_weather"
        assert json.loads(item["arguments"]) == {"city": "San Francisco"}
        await client.send({"type": "response.create", "event_id": "early"})
        early = await client.next("error")
        assert early["error"]["code"] == "tool_output_missing"
        assert early["client_event_id"] == "early"
        await client.send(
            {
                "type": "response.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": item["call_id"],
                    "output": "21 degrees",
                },
            }
        )
        await client.send({"type": "response.create"})
        done = await client.next("response.event")
        assert done["event"]["type"] == "response.completed"
        assert done["event"]["response"]["id"] == d["response_id"]
        words = ""
        while "21 degrees" not in words:
            words += (await client.next("session.output_transcript.delta"))["delta"]
        # Typed text under Responses delegation: a user message and response.create.
        await client.send(
            {
                "type": "response.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "thanks"}],
                },
            }
        )
        await client.send({"type": "response.create"})
        words = ""
        while "thanks" not in words:
            words += (await client.next("session.output_transcript.delta"))["delta"]
        # No acks for response.item.create / response.create.
        acked = [e.get("client_event_id") for e in client.events]
        assert acked.count("early") == 1
        await client.ws.close()

    run(go)


def test_ws_close_expiry_and_faults() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(sim, http)
        await client.send({"type": "session.close", "event_id": "bye"})
        closed = await client.next("session.closed")
        assert closed["reason"] == "close_requested"
        assert closed["client_event_id"] == "bye"
        assert closed["usage"]["seconds"] > 0
        end = await client.drain()
        assert end.type == aiohttp.WSMsgType.CLOSE
        assert end.data == 1000
        # Expiry (session_max_s): session.closed expired, then close 1000.
        sim.session_max_s = 0.5
        client, started = await start_ws(sim, http)
        closed = await client.next("session.closed", timeout=5)
        assert closed["reason"] == "expired"
        assert (await client.drain()).data == 1000
        sim.session_max_s = None
        # content: session.closed then close; connection_lost: the socket just drops.
        client, started = await start_ws(sim, http)
        await sim.live_sessions[started["session"]["id"]].close_with("content")
        assert (await client.next("session.closed"))["reason"] == "content"
        client, started = await start_ws(sim, http)
        session = sim.live_sessions[started["session"]["id"]]
        await session.close_with("connection_lost")
        end = await client.drain()
        assert end.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert "session.closed" not in client.types()
        assert session.closed_reason == "connection_lost"
        for s in sim.live_sessions.values():
            check_all(s)

    run(go)


def test_ws_fork_refused_until_stored_session_closed_then_inherits() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, started = await start_ws(
            sim, http, {"model": MODEL, "store": True, "instructions": "Be kind."}
        )
        source_id = started["session"]["id"]
        await client.send_pcm(speechlike(0.8, seed=8))
        await client.send_pcm(np.zeros(48000 // 2, dtype=np.int16))
        await client.next("session.output_transcript.delta")

        async def fork_error(path: str, body: dict[str, Any]) -> dict[str, Any]:
            ws = await http.ws_connect(
                ws_url(sim, path), headers={"Authorization": f"Bearer {sim.api_key}"}
            )
            c = LiveWs(ws, fork=True)
            await ws.send_str(json.dumps({"type": "session.start", "session": body}))
            await c.drain()
            assert c.types() == ["error"]
            return dict(c.events[0]["error"])

        assert (await fork_error(f"/{source_id}/fork", {}))["code"] == "session_not_closed"
        session = sim.live_sessions[source_id]
        await asyncio.sleep(1.2)  # the reply ends
        await client.send({"type": "session.close"})
        await client.drain()
        assert (await fork_error(f"/{source_id}/fork", {}))["code"] == "session_not_finalized"
        await asyncio.sleep(sim.fork_ready_after_s)
        err = await fork_error(f"/{source_id}/fork", {"model": "gpt-live-1.1"})
        assert (err["code"], err["param"]) == ("immutable_field_update", "session.model")
        err = await fork_error(f"/{source_id}/fork", {"client": {"data_channel": {}}})
        assert err["param"] == "session.client"
        fork, started2 = await start_ws(sim, http, path=f"/{source_id}/fork", fork=True)
        res = started2["session"]
        assert res["id"].startswith("live_")
        assert res["id"] != source_id
        assert res["instructions"] == "Be kind."
        assert res["store"] is True
        new = sim.live_sessions[res["id"]]
        assert new.forked_from == source_id
        assert new.inherited == session.transcript()
        assert [m["role"] for m in new.inherited] == ["user", "assistant"]
        # A session without store cannot be forked.
        other, started3 = await start_ws(sim, http)
        await other.send({"type": "session.close"})
        await other.drain()
        await asyncio.sleep(sim.fork_ready_after_s)
        err = await fork_error(f"/{started3['session']['id']}/fork", {})
        assert err["code"] == "session_not_stored"
        await fork.ws.close()

    run(go, fork_ready_after_s=0.3)


# ------------------------------------------------------------------------------- WebRTC


async def create_webrtc(
    sim: Simulator,
    http: aiohttp.ClientSession,
    session: dict[str, Any] | None = None,
    *,
    path: str = "",
    key: str | None = None,
) -> tuple[BareClient | None, int, dict[str, Any]]:
    client = BareClient()
    sdp = await client.offer()
    body: dict[str, Any] = {"transport": {"type": "webrtc", "sdp": sdp}}
    if session is not None or not path:
        body["session"] = session if session is not None else {"model": MODEL}
    async with http.post(
        f"{sim.base_url}/live/sessions{path}",
        json=body,
        headers={"Authorization": f"Bearer {key or sim.api_key}"},
    ) as resp:
        status = resp.status
        data = await resp.json()
    if status != 200:
        await client.close()
        return None, status, data
    LiveCreateResponse.model_validate(data)
    await client.pc.setRemoteDescription(RTCSessionDescription(data["transport"]["sdp"], "answer"))
    await asyncio.wait_for(client.opened.wait(), 10)
    return client, status, data


async def dc_next(client: BareClient, type_: str, timeout: float = 10.0) -> dict[str, Any]:
    ev = await client.next_event(type_, timeout)
    check_server(ev)
    return ev


def dc_send(client: BareClient, ev: dict[str, Any]) -> None:
    check_client(ev)
    client.send(ev)


def test_webrtc_create_validation_and_auth() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        cases = [
            (
                {"model": MODEL, "audio": {"format": {"type": "audio/pcm", "rate": 24000}}},
                "unknown_parameter",
                "session.audio.format",
            ),
            ({}, "missing_required_parameter", "session.model"),
            ({"model": MODEL, "tools": []}, "unknown_parameter", "session.tools"),
            (
                {
                    "model": MODEL,
                    "delegation": {
                        "type": "responses",
                        "responses": {"model": "gpt-5", "tools": [{"type": "function"}]},
                    },
                },
                "missing_required_parameter",
                "session.delegation.responses.tools[0].name",
            ),
        ]
        for config, code, param in cases:
            _, status, data = await create_webrtc(sim, http, config)
            assert status == 400, config
            assert (data["error"]["code"], data["error"]["param"]) == (code, param)
        _, status, data = await create_webrtc(sim, http, key=sim.mint_key())
        assert status == 401
        assert "Ephemeral" in data["error"]["message"]
        async with http.post(
            f"{sim.base_url}/live/sessions",
            json={"session": {"model": MODEL}, "transport": {"type": "webrtc", "sdp": "v=0"}},
            headers={"Authorization": f"Bearer {sim.api_key}"},
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_offer"

    run(go)


def test_webrtc_session_started_audio_transcripts_and_responses_tool() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, _status, data = await create_webrtc(
            sim, http, {"model": MODEL, "delegation": RESPONSES}
        )
        assert client is not None
        started = await dc_next(client, "session.started")
        assert started["session"]["id"] == data["session"]["id"]
        assert "format" not in started["session"]["audio"]
        session = await sim.wait_for_live_session()
        client.mic.play(speechlike(0.8, seed=9))
        heard = await dc_next(client, "session.input_transcript.delta")
        assert heard["end_ms"] > heard["start_ms"]
        created = await dc_next(client, "session.delegation.created")
        done = None
        while done is None:
            ev = await dc_next(client, "response.event")
            if ev["event"]["type"] == "response.output_item.done":
                done = ev["event"]["item"]
        dc_send(
            client,
            {
                "type": "response.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": done["call_id"],
                    "output": "sunny",
                },
            },
        )
        dc_send(client, {"type": "response.create"})
        completed = await dc_next(client, "response.event")
        assert completed["event"]["type"] == "response.completed"
        assert completed["delegation_id"] == created["delegation"]["id"]
        await dc_next(client, "session.output_transcript.delta")
        n0 = len(client.rtp.packets)
        while session.replies and not session.replies[-1].done:
            await asyncio.sleep(0.05)
        assert len(client.rtp.packets) - n0 >= 10  # the reply's Opus frames on the track
        assert session.replies[-1].text == "The result is sunny."
        dc_send(client, {"type": "session.close", "event_id": "bye"})
        closed = await dc_next(client, "session.closed")
        assert closed["reason"] == "close_requested"
        await asyncio.wait_for(session.ended.wait(), 5)
        for _ in range(100):
            if client.pc.connectionState == "closed":
                break
            await asyncio.sleep(0.05)
        check_all(session)
        await client.close()

    run(go)


def test_webrtc_connection_lost_then_fork_over_http_inherits_conversation() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client, status, data = await create_webrtc(sim, http, {"model": MODEL, "store": True})
        assert client is not None
        source_id = data["session"]["id"]
        await dc_next(client, "session.started")
        client.mic.play(speechlike(0.8, seed=10))
        await dc_next(client, "session.output_transcript.delta")
        _, status, err = await create_webrtc(sim, http, path=f"/{source_id}/fork")
        assert status == 409
        assert err["error"]["code"] == "session_not_closed"
        session = sim.live_sessions[source_id]
        await session.close_with("connection_lost")
        assert "session.closed" not in client.types()
        assert session.closed_reason == "connection_lost"
        await client.close()
        for _ in range(40):
            fork, status, data2 = await create_webrtc(
                sim, http, {"store": False}, path=f"/{source_id}/fork"
            )
            if status != 409:
                break
            assert data2["error"]["code"] == "session_not_finalized"
            await asyncio.sleep(0.05)
        assert status == 200
        assert fork is not None
        started = await dc_next(fork, "session.started")
        assert started["session"]["id"] == data2["session"]["id"] != source_id
        assert started["session"]["store"] is False
        new = sim.live_sessions[started["session"]["id"]]
        assert new.forked_from == source_id
        assert new.inherited == session.transcript()
        assert new.inherited[0]["role"] == "user"
        _, status, err = await create_webrtc(
            sim, http, {"audio": {"output": {"voice": "cedar"}}}, path=f"/{source_id}/fork"
        )
        assert status == 400
        assert err["error"]["code"] == "immutable_field_update"
        check_all(session)
        check_all(new)
        await fork.close()

    run(go)


@pytest.mark.parametrize("api", ["realtime", "live"])
def test_api_selects_which_endpoints_are_served(api: str) -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        auth = {"Authorization": f"Bearer {sim.api_key}"}
        async with http.post(f"{sim.base_url}/live/sessions", json={}, headers=auth) as resp:
            assert (resp.status == 404) == (api == "realtime")
        async with http.post(f"{sim.base_url}/realtime/calls", data="v=0", headers=auth) as resp:
            assert (resp.status == 404) == (api == "live")

    run(go, api=api)
