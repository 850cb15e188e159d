"""Fuzzes the server event parser (rtvoice.events): EventCodec.decode must never raise, whatever
arrives on the data channel, and must classify every message as a typed event or MalformedEvent.

Half the inputs are raw bytes; the other half are JSON objects built from the input with a known
event type and fields of arbitrary JSON types, to reach the typed-event paths.
Run: python fuzz/fuzz_events.py [libFuzzer flags] [corpus dirs]   (or scripts/gates/fuzz.sh events)
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris

# Coverage instrumentation for the parser module only (instrumenting its dependencies is slow).
with atheris.instrument_imports(include=["rtvoice.events"]):
    from rtvoice import events

EVENT_TYPES = sorted(
    {
        *events.BETA_TO_GA_SERVER_EVENTS,
        *events.BETA_TO_GA_SERVER_EVENTS.values(),
        "error",
        "session.created",
        "session.updated",
        "response.created",
        "response.done",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        "output_audio_buffer.started",
    }
)
KEYS = [
    "type", "event_id", "error", "session", "response", "status_details", "item_id",
    "response_id", "delta", "transcript", "text", "call_id", "name", "arguments", "rate_limits",
    "audio_start_ms", "audio_end_ms", "previous_item_id", "code", "message", "param", "id",
    "status", "modalities", "voice", "input_audio_format", "output_audio_format", "audio",
    "turn_detection", "input_audio_transcription", "output_modalities", "format", "rate",
]  # fmt: skip


def value(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 5:
        return fdp.PickValueInList(EVENT_TYPES)
    if kind == 6:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return obj(fdp, depth + 1)


def obj(fdp: atheris.FuzzedDataProvider, depth: int) -> dict[str, Any]:
    entries = fdp.ConsumeIntInRange(0, 6)
    return {fdp.PickValueInList(KEYS): value(fdp, depth) for _ in range(entries)}


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    codec = events.EventCodec(fdp.PickValueInList(["ga", "beta"]))
    if fdp.ConsumeBool():
        raw: str | bytes = fdp.ConsumeBytes(fdp.remaining_bytes())
    else:
        message = obj(fdp, 0)
        if fdp.ConsumeBool():
            message["type"] = fdp.PickValueInList(EVENT_TYPES)
        raw = json.dumps(message)
    event = codec.decode(raw)
    assert isinstance(event, events.ServerEvent)
    if isinstance(event, events.MalformedEvent):
        assert codec.malformed_count == 1
        assert len(event.raw) <= 200
    else:
        assert isinstance(event.type, str)
        assert event.type
        assert event.data["type"] == event.type
    assert codec.received_count == 1


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
