"""The Live API through RealtimeSession, against the simulator, on both transports.

Every client event the session sent is validated against the SDK's Live client-event union.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import pytest
from pydantic import TypeAdapter

import rtvoice
from rtvoice import errors
from rtvoice.audio.sources import WavSource
from rtvoice.session import RealtimeSession
from rtvoice.simulator import LiveSession, Simulator

TRANSPORTS = ["webrtc", "websocket"]


def _client_union() -> TypeAdapter[Any]:
    from openai.types.live.client_event import ClientEvent

    return TypeAdapter(ClientEvent)


CLIENT_EVENTS = _client_union()


def validate_client_events(live: LiveSession) -> int:
    """Every event the session sent, checked strictly against openai.types.live."""
    n = 0
    for event in live.client_events:
        if event.get("type", "").startswith("rtvoice."):
            raise AssertionError(f"the session sent something unparseable: {event}")
        CLIENT_EVENTS.validate_python(event, strict=False)
        n += 1
    return n


def hello() -> WavSource:
    ref = resources.files("rtvoice") / "data" / "hello.wav"
    with resources.as_file(ref) as path:
        return WavSource(path, lead_s=0.3, tail_s=1.5)


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Events:
    def __init__(self, session: RealtimeSession) -> None:
        self.seen: list[Any] = []
        self.task = asyncio.ensure_future(self._run(session))

    async def _run(self, session: RealtimeSession) -> None:
        async for event in session:
            self.seen.append(event)

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def connect(sim: Simulator, transport: str, **kw: Any) -> RealtimeSession:
    kw.setdefault("dead_peer_timeout_s", 2.0)
    return rtvoice.connect(
        base_url=sim.base_url, api_key=sim.api_key, model="gpt-live-1", transport=transport, **kw
    )


def run(main: Callable[[], Awaitable[None]], timeout_s: float = 60.0) -> None:
    asyncio.run(asyncio.wait_for(main(), timeout_s))


def weather(city: str) -> dict[str, Any]:
    """Weather in a city."""
    return {"city": city, "temp_c": 21}


# ----------------------------------------------------------------------------- conversation


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_live_conversation_over_both_transports(transport: str) -> None:
    async def main() -> None:
        async with Simulator(api="live", transcribe=lambda pcm: "hello there") as sim:
            session = connect(sim, transport, instructions="Be brief.", voice="marin")
            assert session.api == "live"
            async with session:
                events = Events(session)
                assert session.session_id is not None
                assert session.session_id.startswith("live_")
                assert session.metrics.connect["session_created_ms"] is not None
                live = sim.live_sessions[session.session_id]
                assert live.session["instructions"] == "Be brief."
                assert live.transport == transport
                session.attach_source(hello())
                await until(lambda: bool(events.of("session.output_transcript.delta")), "reply")
                await until(lambda: session.downlink.media_samples_played > 4800, "reply audio")
                said = "".join(e.get("delta") for e in events.of("session.input_transcript.delta"))
                assert said.strip() == "hello there"
                assert live.utterances
                assert session.metrics.live["usage"].get("seconds", 0) > 0
                if transport == "websocket":
                    # The end of a reply with nobody speaking is no barge-in: it all plays out.
                    ws = session.transport
                    await until(lambda: all(r.done for r in live.replies), "the reply to end")
                    await asyncio.sleep(0.5)
                    received_ms = ws.audio_samples_received / 24.0  # type: ignore[attr-defined]
                    played_ms = session.downlink.media_samples_played / 48.0
                    assert session.metrics.barge_ins == 0
                    assert played_ms >= received_ms - 100.0
                await session.mute()
                await until(lambda: live.muted, "muted")
                await session.unmute()
                await until(lambda: not live.muted, "unmuted")
                await events.stop()
            assert live.closed_reason == "close_requested"  # close() ended it with session.close
            assert validate_client_events(live) >= 3
            if transport == "websocket":
                appends = [
                    e for e in live.client_events if e["type"] == "session.input_audio.append"
                ]
                assert len(appends) > 50  # the input timeline runs continuously

    run(main)


def test_realtime_only_operations_name_the_live_alternative() -> None:
    async def main() -> None:
        async with Simulator(api="live") as sim, connect(sim, "websocket") as session:
            with pytest.raises(errors.UnsupportedError, match="append_instructions"):
                await session.send_text("hi")
            with pytest.raises(errors.UnsupportedError, match="decides when to speak"):
                await session.create_response()
            with pytest.raises(ValueError, match="instructions"):
                await session.update(instructions="other")
            await session.append_instructions("Speak slowly.")
            live = sim.live_sessions[session.session_id or ""]
            await until(lambda: "Speak slowly." in live.instructions_appended, "appended")
            validate_client_events(live)

    run(main)


def test_live_arguments_are_checked_at_construction() -> None:
    with pytest.raises(errors.ConfigurationError, match="no ephemeral keys"):
        rtvoice.connect(
            base_url="http://127.0.0.1:9/v1", api_key="ek_abcdef0123456789", model="gpt-live-1"
        )
    with pytest.raises(ValueError, match="no beta"):
        rtvoice.connect(
            base_url="http://127.0.0.1:9/v1",
            api_key="sk-test-0123456789",
            model="gpt-live-1",
            api_version="beta",
        )
    with pytest.raises(ValueError, match="api must be"):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-test-0123456789", api="other")  # type: ignore[arg-type]
    session = rtvoice.connect(
        base_url="http://127.0.0.1:9/v1",
        api_key="sk-test-0123456789",
        model="some-new-model",
        api="live",
    )
    assert session.api == "live"


# ----------------------------------------------------------------------------- tools


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_tool_runs_through_responses_delegation(transport: str) -> None:
    async def main() -> None:
        async with Simulator(
            api="live",
            transcribe=lambda pcm: "weather in Paris",
            tool_arguments=lambda tool: {"city": "Paris"},
        ) as sim:
            session = connect(sim, transport, tools=[weather])
            async with session:
                events = Events(session)
                live = sim.live_sessions[session.session_id or ""]
                delegation = live.session.get("delegation") or {}
                assert delegation.get("type") == "responses"
                assert delegation["responses"]["tools"][0]["name"] == "weather"
                session.attach_source(hello())
                await until(
                    lambda: any(d.completed for d in live.delegations.values()), "delegation"
                )
                done = next(d for d in live.delegations.values() if d.completed)
                assert done.name == "weather"
                assert '"temp_c": 21' in (done.output or "")
                await until(
                    lambda: any("The result is" in r.text for r in live.replies), "spoken result"
                )
                assert session.metrics.tool_calls == 1
                kinds = [e["type"] for e in live.client_events]
                assert kinds.index("response.item.create") < kinds.index("response.create")
                assert events.of("session.delegation.created")
                await events.stop()
            validate_client_events(live)

    run(main)


def test_typed_text_goes_to_the_delegated_responses_model() -> None:
    async def main() -> None:
        async with Simulator(api="live") as sim, connect(sim, "websocket", tools=[weather]) as s:
            await s.send_text("What can you do?")
            live = sim.live_sessions[s.session_id or ""]
            await until(lambda: bool(live.replies), "a reply to the text")
            validate_client_events(live)

    run(main)


def test_client_delegation_is_answered_with_commentary() -> None:
    notices: list[dict[str, Any]] = []

    async def on_delegation(notice: dict[str, Any]) -> str:
        notices.append(notice)
        return "It is sunny in Paris."

    async def main() -> None:
        async with Simulator(
            api="live", transcribe=lambda pcm: "weather please", delegate=lambda text: True
        ) as sim:
            session = connect(sim, "webrtc", on_delegation=on_delegation)
            async with session:
                live = sim.live_sessions[session.session_id or ""]
                session.attach_source(hello())
                await until(lambda: "It is sunny in Paris." in live_commentary(live), "commentary")
                assert notices[0]["delegation"]["target"] == "client"
                assert session.metrics.live["delegations"] == 1
            validate_client_events(live)

    run(main)


def live_commentary(live: LiveSession) -> list[str]:
    return [c for d in live.delegations.values() for c in d.commentary]


# ----------------------------------------------------------------------------- continuation


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_lost_stored_session_continues_as_a_fork(transport: str) -> None:
    async def main() -> None:
        async with Simulator(api="live", transcribe=lambda pcm: "remember blue") as sim:
            session = connect(sim, transport, store=True)
            async with session:
                events = Events(session)
                first = sim.live_sessions[session.session_id or ""]
                session.attach_source(hello())
                await until(lambda: bool(first.replies), "a first exchange")
                await until(lambda: all(r.done for r in first.replies), "the reply to end")
                await first.close_with("connection_lost")
                await until(lambda: bool(events.of("rtvoice.reconnected")), "reconnected", 30)
                event = events.of("rtvoice.reconnected")[0]
                assert event.get("forked") is True
                second = sim.live_sessions[session.session_id or ""]
                assert second is not first
                assert second.forked_from == first.id
                assert any("remember blue" in str(m) for m in second.inherited)
                assert session.metrics.live["forks"] == 1
                assert session.state == "connected"
                await events.stop()

    run(main)


def test_a_lost_session_without_store_continues_with_the_transcript_as_input() -> None:
    async def main() -> None:
        async with Simulator(api="live", transcribe=lambda pcm: "my name is Ada") as sim:
            session = connect(sim, "websocket")
            async with session:
                events = Events(session)
                first = sim.live_sessions[session.session_id or ""]
                session.attach_source(hello())
                await until(lambda: bool(first.replies), "a first exchange")
                await until(lambda: all(r.done for r in first.replies), "the reply to end")
                await first.close_with("expired")
                await until(lambda: bool(events.of("rtvoice.reconnected")), "reconnected", 30)
                event = events.of("rtvoice.reconnected")[0]
                assert event.get("forked") is False
                assert event.get("items_restored") >= 2
                second = sim.live_sessions[session.session_id or ""]
                assert second.forked_from is None
                given = second.session.get("input") or []
                assert given[0]["role"] == "user"
                assert "my name is Ada" in given[0]["content"][0]["text"]
                assert given[1]["role"] == "assistant"
                await events.stop()
            validate_client_events(first)

    run(main)


def test_a_content_close_fails_with_a_typed_error() -> None:
    async def main() -> None:
        async with Simulator(api="live") as sim:
            session = connect(sim, "websocket")
            async with session:
                events = Events(session)
                live = sim.live_sessions[session.session_id or ""]
                await live.close_with("content")
                await until(lambda: session.state == "failed", "failed")
                with pytest.raises(errors.LiveSessionClosedError) as raised:
                    await session.append_instructions("hello?")
                assert raised.value.reason == "content"
                await events.stop()

    run(main)


def test_a_server_close_requested_ends_the_session_closed() -> None:
    async def main() -> None:
        async with Simulator(api="live") as sim:
            session = connect(sim, "webrtc")
            await session.open()
            events = Events(session)
            live = sim.live_sessions[session.session_id or ""]
            await live.close_with("close_requested")
            await asyncio.wait_for(events.task, 10)
            last = events.of("rtvoice.state_changed")[-1]
            assert last.get("state") == "closed"
            assert "close_requested" in str(last.get("reason"))
            assert "reconnecting" not in [
                e.get("state") for e in events.of("rtvoice.state_changed")
            ]
            await session.close()

    run(main)
