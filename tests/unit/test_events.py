from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeClientEventParam as BetaClientEventParam
from openai.types.realtime import RealtimeClientEvent, RealtimeClientEventParam, RealtimeServerEvent
from openai.types.realtime.response_create_event_with_references_param import (
    ResponseCreateEventWithReferencesParam,
)

from rtvoice import events as ev
from rtvoice.errors import ServerEventError, SessionExpiredError

_GA = pydantic.TypeAdapter(RealtimeClientEvent)
_BETA = pydantic.TypeAdapter(BetaClientEvent)
_FORBID = pydantic.ConfigDict(extra="forbid")
_GA_PARAM = pydantic.TypeAdapter(RealtimeClientEventParam, config=_FORBID)
# response.create's `input` also accepts item references; this variant of the param covers them.
# (wrapped in a list because TypeAdapter refuses a config for a bare TypedDict)
_GA_RESPONSE_CREATE = pydantic.TypeAdapter(
    list[ResponseCreateEventWithReferencesParam], config=_FORBID
)
_BETA_PARAM = pydantic.TypeAdapter(BetaClientEventParam, config=_FORBID)
_SERVER = pydantic.TypeAdapter(RealtimeServerEvent)


def _extras(model: Any, path: str = "") -> list[str]:
    """Paths of fields the SDK model did not declare (the SDK models accept extras silently)."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}.{key}")
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            found += _extras(item, f"{path}[{i}]")
    return found


def _consume(value: Any) -> Any:
    """Pydantic validates ``Iterable`` fields lazily; force every item through its validator."""
    if isinstance(value, dict):
        return {k: _consume(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, Iterator)) or type(value).__name__ == "ValidatorIterator":
        return [_consume(v) for v in value]
    return value


def _has_item_reference(event: dict[str, Any]) -> bool:
    inputs = (
        event.get("response", {}).get("input", [])
        if isinstance(event.get("response"), dict)
        else []
    )
    return any(i.get("type") == "item_reference" for i in inputs)


def assert_sdk_valid(event: dict[str, Any], *, beta: bool = False) -> None:
    """Validate against the SDK's TypedDict params (extra keys forbidden) and, where the SDK's
    pydantic event models cover the shape, against those too (no undeclared fields)."""
    plain = json.loads(json.dumps(event))
    if beta:
        validated = _consume(_BETA_PARAM.validate_python(plain))
    elif plain["type"] == "response.create":
        validated = _consume(_GA_RESPONSE_CREATE.validate_python([plain]))[0]
    else:
        validated = _consume(_GA_PARAM.validate_python(plain))
    assert validated["type"] == event["type"]
    if not beta and _has_item_reference(plain):
        return  # the GA pydantic models lack item_reference; the params above cover it
    model = (_BETA if beta else _GA).validate_python(plain)
    assert model.type == event["type"]
    assert _extras(model) == [], f"fields unknown to the SDK: {_extras(model)}"


TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}

BUILT = [
    ev.session_update(),
    ev.session_update(
        instructions="Be brief.",
        output_modalities=["audio"],
        voice="marin",
        speed=1.1,
        input_format={"type": "audio/pcm", "rate": 24000},
        output_format={"type": "audio/pcm", "rate": 24000},
        turn_detection={
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        },
        transcription={"model": "gpt-4o-mini-transcribe"},
        tools=[TOOL],
        tool_choice="auto",
        max_output_tokens="inf",
    ),
    ev.session_update({"type": "realtime", "audio": {"input": {"turn_detection": None}}}),
    ev.response_create(),
    ev.response_create(
        instructions="Summarize.",
        output_modalities=["text"],
        conversation="none",
        metadata={"purpose": "summary"},
        input=[
            {"type": "item_reference", "id": "item_12345"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Summarize."}],
            },
        ],
        max_output_tokens=512,
    ),
    ev.response_create(voice="marin", tools=[TOOL], tool_choice="required"),
    ev.conversation_item_create_text("hi"),
    ev.conversation_item_create_text("be nice", role="system"),
    ev.conversation_item_create_text("ok", role="assistant", previous_item_id="root"),
    ev.function_call_output("call_001", {"temp_c": 21}),
    ev.function_call_output("call_002", "plain"),
    ev.conversation_item_truncate("item_002", 1500),
    ev.input_audio_buffer_append(b"\x00\x01" * 480),
    ev.input_audio_buffer_commit(),
    ev.input_audio_buffer_clear(),
    ev.response_cancel(),
    ev.response_cancel("resp_1"),
    ev.output_audio_buffer_clear(),
]


@pytest.mark.parametrize("event", BUILT, ids=[f"{i}-{e['type']}" for i, e in enumerate(BUILT)])
def test_built_events_validate_against_the_sdk(event: dict[str, Any]) -> None:
    codec = ev.EventCodec()
    wire = json.loads(codec.encode(event))
    assert wire["event_id"].startswith("evt_")
    assert_sdk_valid(wire)


@pytest.mark.parametrize(
    "event",
    # output_audio_buffer.clear is GA-only; the beta SDK types `turn_detection` as non-nullable
    # although the beta server accepted null to turn VAD off, so that case is left out too.
    [e for i, e in enumerate(BUILT) if e["type"] != "output_audio_buffer.clear" and i != 2],
    ids=lambda e: e["type"],
)
def test_beta_shapes_validate_against_the_beta_sdk(event: dict[str, Any]) -> None:
    codec = ev.EventCodec("beta")
    wire = json.loads(codec.encode(event))
    # Fields the beta API never had (GA-only) are not produced by our builders except these:
    if wire["type"] == "session.update":
        assert "type" not in wire["session"]
        assert "audio" not in wire["session"]
    assert_sdk_valid(wire, beta=True)


def test_extras_check_can_fail() -> None:
    with pytest.raises(pydantic.ValidationError):
        assert_sdk_valid(
            {"type": "session.update", "session": {"type": "realtime", "modalities": ["audio"]}}
        )
    model = _GA.validate_python(
        {"type": "session.update", "session": {"type": "realtime", "modalities": ["a"]}}
    )
    assert _extras(model) == [".session.modalities"]
    with pytest.raises(pydantic.ValidationError):
        assert_sdk_valid({"type": "response.create", "response": {"output_modalities": "audio"}})
    with pytest.raises(pydantic.ValidationError):  # an invalid item inside an Iterable field
        assert_sdk_valid(
            {"type": "response.create", "response": {"input": [{"type": "item_reference"}]}}
        )
    with pytest.raises(pydantic.ValidationError):
        assert_sdk_valid(
            {"type": "session.update", "session": {"voice": "alloy", "bogus": 1}}, beta=True
        )


def test_session_update_ga_to_beta_mapping() -> None:
    beta = ev.to_beta(BUILT[1])
    s = beta["session"]
    assert s["modalities"] == ["text", "audio"]
    assert s["voice"] == "marin"
    assert s["speed"] == 1.1
    assert s["input_audio_format"] == "pcm16"
    assert s["output_audio_format"] == "pcm16"
    assert s["turn_detection"]["type"] == "server_vad"
    assert s["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert s["max_response_output_tokens"] == "inf"
    assert ev.session_beta_to_ga(s) == BUILT[1]["session"]
    g711 = ev.session_ga_to_beta(
        {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    )
    assert g711 == {"input_audio_format": "g711_ulaw"}
    trans = ev.to_beta(ev.session_update({"type": "transcription"}))
    assert trans["type"] == "transcription_session.update"


def test_beta_assistant_content_types() -> None:
    beta = ev.to_beta(ev.conversation_item_create_text("ok", role="assistant"))
    assert beta["item"]["content"][0]["type"] == "text"


def test_event_ids_unique_and_kept() -> None:
    codec = ev.EventCodec()
    a = codec.prepare(ev.response_create())
    b = codec.prepare(ev.response_create())
    assert a["event_id"] != b["event_id"]
    c = codec.prepare({"type": "response.cancel", "event_id": "mine"})
    assert c["event_id"] == "mine"
    with pytest.raises(ValueError, match="no 'type'"):
        codec.prepare({"event_id": "x"})
    with pytest.raises(TypeError):
        codec.prepare("response.create")  # type: ignore[arg-type]


def test_prepare_does_not_mutate_caller_event() -> None:
    original = ev.session_update(voice="marin")
    snapshot = json.dumps(original)
    ev.EventCodec("beta").prepare(original)
    assert json.dumps(original) == snapshot


def test_error_matched_to_client_event() -> None:
    codec = ev.EventCodec()
    sent = codec.prepare(ev.session_update({"type": "realtime", "modalities": ["audio"]}))
    raw = json.dumps(
        {
            "type": "error",
            "event_id": "event_890",
            "error": {
                "type": "invalid_request_error",
                "code": "unknown_parameter",
                "message": "Unknown parameter: 'session.modalities'.",
                "param": "session.modalities",
                "event_id": sent["event_id"],
            },
        }
    )
    got = codec.decode(raw)
    assert isinstance(got, ev.ErrorEvent)
    assert got.client_event_id == sent["event_id"]
    assert got.client_event == sent
    assert got.code == "unknown_parameter"
    assert got.param == "session.modalities"
    exc = got.exception()
    assert isinstance(exc, ServerEventError)
    assert exc.event_id == sent["event_id"]
    unmatched = codec.decode(raw.replace(sent["event_id"], "evt_unknown"))
    assert isinstance(unmatched, ev.ErrorEvent)
    assert unmatched.client_event is None


def test_error_memory_is_bounded() -> None:
    codec = ev.EventCodec(remember=2)
    first = codec.prepare(ev.response_create())
    codec.prepare(ev.response_create())
    codec.prepare(ev.response_create())
    assert codec.sent_event(first["event_id"]) is None


def test_session_expired_maps_to_its_exception() -> None:
    got = ev.parse_server_event(
        {
            "type": "error",
            "event_id": "e1",
            "error": {
                "type": "invalid_request_error",
                "code": "session_expired",
                "message": "max duration",
            },
        }
    )
    assert isinstance(got, ev.ErrorEvent)
    assert isinstance(got.exception(), SessionExpiredError)


@pytest.mark.parametrize(
    ("beta", "ga"),
    sorted(
        (k, v) for k, v in ev.BETA_TO_GA_SERVER_EVENTS.items() if not k.startswith("transcription_")
    ),
)
def test_beta_names_normalized(beta: str, ga: str) -> None:
    got = ev.parse_server_event(
        json.dumps({"type": beta, "event_id": "e", "delta": "ab", "transcript": "t"})
    )
    assert got.type == ga
    assert got.beta_type == beta
    assert got.data["type"] == ga
    assert ga in ev.GA_SERVER_EVENT_TYPES


def test_beta_session_created_reshaped_to_ga() -> None:
    got = ev.parse_server_event(
        {
            "type": "session.created",
            "event_id": "e",
            "session": {
                "id": "sess_1",
                "modalities": ["text", "audio"],
                "voice": "alloy",
                "input_audio_format": "pcm16",
            },
        }
    )
    assert isinstance(got, ev.SessionEvent)
    assert got.session["audio"]["output"]["voice"] == "alloy"
    assert got.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert got.session["output_modalities"] == ["audio"]
    assert got.session_id == "sess_1"


SERVER_SAMPLES: list[dict[str, Any]] = [
    {
        "type": "response.output_audio_transcript.delta",
        "event_id": "event_4546",
        "response_id": "resp_001",
        "item_id": "msg_008",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hello, how can I a",
    },
    {
        "type": "response.function_call_arguments.done",
        "event_id": "event_5556",
        "response_id": "resp_002",
        "item_id": "fc_001",
        "output_index": 0,
        "call_id": "call_001",
        "name": "get_weather",
        "arguments": '{"location": "San Francisco"}',
    },
    {
        "type": "input_audio_buffer.speech_started",
        "event_id": "event_1516",
        "audio_start_ms": 1000,
        "item_id": "msg_003",
    },
    {
        "type": "input_audio_buffer.speech_stopped",
        "event_id": "event_1517",
        "audio_end_ms": 2000,
        "item_id": "msg_003",
    },
    {
        "type": "input_audio_buffer.committed",
        "event_id": "e",
        "item_id": "msg_003",
        "previous_item_id": None,
    },
    {
        "type": "output_audio_buffer.started",
        "event_id": "event_abc123",
        "response_id": "resp_abc123",
    },
    {
        "type": "rate_limits.updated",
        "event_id": "event_5758",
        "rate_limits": [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60}],
    },
    {
        "type": "response.done",
        "event_id": "e",
        "response": {
            "object": "realtime.response",
            "id": "resp_1",
            "status": "cancelled",
            "status_details": {"type": "cancelled", "reason": "turn_detected"},
            "output": [],
        },
    },
    {
        "type": "conversation.item.input_audio_transcription.completed",
        "event_id": "e",
        "item_id": "msg_003",
        "content_index": 0,
        "transcript": "hello",
        "usage": {"type": "duration", "seconds": 1.0},
    },
]


@pytest.mark.parametrize("sample", SERVER_SAMPLES, ids=lambda s: s["type"])
def test_typed_server_events(sample: dict[str, Any]) -> None:
    _SERVER.validate_python(sample)  # the samples themselves are valid GA server events
    got = ev.parse_server_event(json.dumps(sample))
    assert type(got) is not ev.ServerEvent
    assert got.data == sample
    assert got.type == sample["type"]
    assert got.event_id == sample["event_id"]
    if isinstance(got, ev.TranscriptDelta):
        assert got.delta == "Hello, how can I a"
        assert got.response_id == "resp_001"
    elif isinstance(got, ev.FunctionCallArgumentsDone):
        assert got.parsed_arguments() == {"location": "San Francisco"}
        assert got.call_id == "call_001"
    elif isinstance(got, ev.SpeechStarted):
        assert got.audio_start_ms == 1000
        assert got.item_id == "msg_003"
    elif isinstance(got, ev.SpeechStopped):
        assert got.audio_end_ms == 2000
    elif isinstance(got, ev.InputAudioCommitted):
        assert got.item_id == "msg_003"
        assert got.previous_item_id is None
    elif isinstance(got, ev.OutputAudioBufferEvent):
        assert got.response_id == "resp_abc123"
    elif isinstance(got, ev.RateLimitsUpdated):
        assert got.rate_limits[0]["remaining"] == 999
    elif isinstance(got, ev.ResponseEvent):
        assert got.status == "cancelled"
        assert got.status_details == {
            "type": "cancelled",
            "reason": "turn_detected",
        }
    elif isinstance(got, ev.TranscriptDone):
        assert got.transcript == "hello"
        assert got.item_id == "msg_003"
    else:
        pytest.fail(f"unexpected class {type(got).__name__}")


def test_unknown_events_pass_through_untouched() -> None:
    sample = {
        "type": "mcp_list_tools.completed",
        "event_id": "e",
        "item_id": "x",
        "extra": {"nested": [1, 2]},
    }
    got = ev.EventCodec().decode(json.dumps(sample))
    assert type(got) is ev.ServerEvent
    assert got.data == sample
    assert got["extra"] == {"nested": [1, 2]}
    future = ev.parse_server_event('{"type":"brand.new.event","x":1}')
    assert future.type == "brand.new.event"
    assert future.data == {"type": "brand.new.event", "x": 1}


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b"\xff\xfe",
        "[1,2]",
        "42",
        '{"no_type": 1}',
        '{"type": 5}',
        '{"type": ""}',
        "",
        '{"type":"x"',
    ],
)
def test_malformed_is_an_event_and_counted(raw: str | bytes) -> None:
    codec = ev.EventCodec()
    got = codec.decode(raw)
    assert isinstance(got, ev.MalformedEvent)
    assert got.type == ev.MALFORMED_EVENT
    assert got.reason
    assert codec.malformed_count == 1
    assert codec.received_count == 1
    ok = codec.decode('{"type":"session.created","event_id":"e","session":{"id":"s"}}')
    assert isinstance(ok, ev.SessionEvent)
    assert codec.malformed_count == 1


def test_malformed_raw_is_truncated() -> None:
    got = ev.parse_server_event("x" * 10_000)
    assert isinstance(got, ev.MalformedEvent)
    assert len(got.raw) == 200


def test_builder_argument_checks() -> None:
    with pytest.raises(ValueError, match="audio_end_ms"):
        ev.conversation_item_truncate("i", -1)
    with pytest.raises(ValueError, match="audio_end_ms"):
        ev.conversation_item_truncate("i", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="call_id"):
        ev.function_call_output("", "x")
    with pytest.raises(TypeError):
        ev.input_audio_buffer_append(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ev.conversation_item_create_text(b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_version"):
        ev.EventCodec("v2")  # type: ignore[arg-type]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_non_finite_numbers_do_not_raise(number: str) -> None:
    raw = f'{{"type":"input_audio_buffer.speech_started","audio_start_ms":{number}}}'
    got = ev.EventCodec().decode(raw)
    assert isinstance(got, ev.SpeechStarted)
    assert got.audio_start_ms == 0
