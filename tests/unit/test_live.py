"""rtvoice.live: event builders (validated against openai.types.live), the transcript that
rebuilds a session's input, the WebSocket barge-in rule."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from rtvoice import live

MS = 1_000_000


def _client() -> TypeAdapter[Any]:
    from openai.types.live.client_event import ClientEvent

    return TypeAdapter(ClientEvent)


def test_every_builder_makes_a_valid_live_client_event() -> None:
    adapter = _client()
    config = live.session_config(
        model="gpt-live-1",
        instructions="Be brief.",
        voice="marin",
        tools=[live.function_tool("weather", "Weather.", {"type": "object", "properties": {}})],
        delegation_model="gpt-5-mini",
        store=True,
    )
    built = [
        live.session_start(
            {**config, "audio": {**config["audio"], "format": {"type": "audio/pcm", "rate": 24000}}}
        ),
        live.session_close(),
        live.input_audio_append("AAAA"),
        live.mute(),
        live.unmute(),
        live.instructions_append("Speak slowly."),
        live.thinking_append("Looking it up.", "del_1"),
        live.commentary_append("It is sunny.", "del_1"),
        live.response_item_create(live.user_text_item("hi")),
        live.response_item_create(live.function_call_output_item("call_1", '{"ok":true}')),
        live.response_create(),
    ]
    for event in built:
        adapter.validate_python(event)
    with pytest.raises(ValueError, match="non-empty"):
        live.commentary_append("", None)


def test_the_transcript_groups_deltas_into_messages_and_fits_the_input_bounds() -> None:
    t = live.LiveTranscript()
    for delta in ("my ", "name ", "is Ada"):
        t.observe("session.input_transcript.delta", {"delta": delta})
    for delta in ("Hello ", "Ada."):
        t.observe("session.output_transcript.delta", {"delta": delta})
    t.observe("session.input_transcript.delta", {"delta": "thanks"})
    assert t.messages() == [
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada."),
        ("user", "thanks"),
    ]
    items, left = t.as_input()
    assert left == 0
    assert items[1] == {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello Ada."}],
    }
    items, left = t.as_input(max_messages=2)
    assert [i["role"] for i in items] == ["assistant", "user"]
    assert left == 1
    items, left = t.as_input(max_tokens=3)  # 9 characters: only "thanks" fits
    assert [i["content"][0]["text"] for i in items] == ["thanks"]
    from openai.types.live.initial_item import InitialItem

    adapter: TypeAdapter[Any] = TypeAdapter(InitialItem)
    for item in t.as_input()[0]:
        adapter.validate_python(item)


def test_the_transcript_is_bounded() -> None:
    t = live.LiveTranscript(max_messages=2)
    for i in range(4):
        kind = "session.input_transcript.delta" if i % 2 == 0 else "session.output_transcript.delta"
        t.observe(kind, {"delta": f"m{i}"})
    assert [text for _, text in t.messages()] == ["m2", "m3"]
    assert t.dropped == 2


def test_the_barge_in_rule() -> None:
    now = 10_000 * MS
    base: dict[str, Any] = {"now_ns": now, "last_output_ns": now - 150 * MS, "buffered_ms": 500.0}
    # The user spoke after the output stopped: flush.
    assert live.should_flush_playout(**base, last_voiced_ns=now - 20 * MS)
    # The end of a reply, nobody speaking: the tail plays out.
    assert not live.should_flush_playout(**base, last_voiced_ns=0)
    assert not live.should_flush_playout(**base, last_voiced_ns=now - 2000 * MS)
    # Speech long before the output stopped is no barge-in.
    assert not live.should_flush_playout(
        now_ns=now, last_output_ns=now - 150 * MS, buffered_ms=500.0, last_voiced_ns=now - 290 * MS
    )
    # Output still arriving, or nothing left to flush.
    assert not live.should_flush_playout(
        now_ns=now, last_output_ns=now - 50 * MS, buffered_ms=500.0, last_voiced_ns=now - 10 * MS
    )
    assert not live.should_flush_playout(
        now_ns=now, last_output_ns=now - 150 * MS, buffered_ms=10.0, last_voiced_ns=now - 10 * MS
    )


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("close_requested", "closed"),
        ("remote_hangup", "closed"),
        ("expired", "continue"),
        ("connection_lost", "continue"),
        ("content", "failed"),
    ],
)
def test_close_reasons(reason: str, outcome: str) -> None:
    assert live.CLOSE_OUTCOMES[reason] == outcome
    assert live.is_live_model("gpt-live-1.1")
    assert not live.is_live_model("gpt-realtime")


def test_live_server_events_decode_to_typed_events() -> None:
    import json

    from rtvoice import events

    codec = events.EventCodec()
    sent = codec.prepare(live.mute())

    def decode(data: dict[str, Any]) -> events.ServerEvent:
        return codec.decode(json.dumps(data))

    started = decode({"type": "session.started", "event_id": "e1", "session": {"id": "live_1"}})
    assert isinstance(started, events.SessionEvent)
    assert started.session_id == "live_1"
    closed = decode(
        {
            "type": "session.closed",
            "event_id": "e2",
            "reason": "expired",
            "session": {},
            "usage": {"seconds": 3},
        }
    )
    assert isinstance(closed, events.LiveSessionClosed)
    assert closed.reason == "expired"
    assert closed.usage == {"seconds": 3}
    delta = decode(
        {
            "type": "session.input_transcript.delta",
            "event_id": "e3",
            "delta": "hi",
            "start_ms": 10,
            "end_ms": 20,
        }
    )
    assert isinstance(delta, events.LiveTranscriptDelta)
    assert (delta.delta, delta.start_ms, delta.end_ms) == ("hi", 10, 20)
    created = decode(
        {
            "type": "session.delegation.created",
            "event_id": "e4",
            "offset_ms": 5,
            "delegation": {
                "id": "d1",
                "type": "delegation",
                "target": "responses",
                "response_id": "r1",
            },
        }
    )
    assert isinstance(created, events.DelegationCreated)
    assert (created.delegation_id, created.target, created.response_id) == ("d1", "responses", "r1")
    nested = decode(
        {
            "type": "response.event",
            "event_id": "e5",
            "delegation_id": "d1",
            "event": {"type": "response.completed"},
        }
    )
    assert isinstance(nested, events.DelegatedResponseEvent)
    assert nested.event_type == "response.completed"
    usage = decode(
        {
            "type": "session.usage.updated",
            "event_id": "e6",
            "usage": {"seconds": 1.5},
            "context_window": {"usage_ratio": 0.1},
        }
    )
    assert isinstance(usage, events.UsageUpdated)
    assert usage.usage["seconds"] == 1.5
    info = decode(
        {"type": "info", "event_id": "e7", "code": "data_channel_permissions", "message": "m"}
    )
    assert isinstance(info, events.InfoEvent)
    assert info.code == "data_channel_permissions"
    # A Live error names the client event as client_event_id; it is matched all the same.
    error = decode(
        {
            "type": "error",
            "event_id": "e8",
            "error": {
                "type": "invalid_request_error",
                "code": "x",
                "message": "no",
                "client_event_id": sent["event_id"],
            },
        }
    )
    assert isinstance(error, events.ErrorEvent)
    assert error.client_event_id == sent["event_id"]
    assert error.client_event is not None
    assert error.client_event["type"] == "session.input_audio.mute"
    assert error.exception().event_id == sent["event_id"]
