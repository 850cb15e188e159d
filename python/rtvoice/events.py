"""Realtime API events: names, typed access, beta/GA translation, and client event builders.

Receiving: :meth:`EventCodec.decode` turns one data-channel or WebSocket message into a
:class:`ServerEvent`. Beta names (``response.audio.delta``, ...) are renamed to GA
(``response.output_audio.delta``) and a beta session object is reshaped to GA, so the rest of the
library sees GA only. The events the library acts on come back as small typed subclasses
(:class:`ErrorEvent`, :class:`ResponseDone`, :class:`SpeechStarted`, ...); every other event is a
plain :class:`ServerEvent` whose ``data`` is the message as received. A message that is not a JSON
object, is nested too deeply to decode, or is larger than ``max_event_bytes`` (4 MiB by default)
becomes a :class:`MalformedEvent` (type ``rtvoice.malformed_event``) and is counted; it never
raises.

Sending: the builders below return GA client events as dicts. :meth:`EventCodec.encode` assigns
an ``event_id`` when there is none, remembers the event so that a later ``error`` whose
``error.event_id`` names it can be matched (:attr:`ErrorEvent.client_event`), converts it to the
beta shape when ``api_version="beta"``, and serializes it. A client event holding NaN or an
infinity (which JSON cannot carry) is refused with ``ValueError`` naming the field.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rtvoice import _checks
from rtvoice.errors import ServerEventError, error_from_event

__all__ = [
    "BETA_TO_GA_SERVER_EVENTS",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_MAX_EVENT_BYTES",
    "GA_SERVER_EVENT_TYPES",
    "MALFORMED_EVENT",
    "ApiVersion",
    "DelegatedResponseEvent",
    "DelegationCreated",
    "ErrorEvent",
    "EventCodec",
    "FunctionCallArgumentsDone",
    "InfoEvent",
    "InputAudioCommitted",
    "LiveSessionClosed",
    "LiveTranscriptDelta",
    "MalformedEvent",
    "OutputAudioBufferEvent",
    "RateLimitsUpdated",
    "ResponseEvent",
    "ServerEvent",
    "SessionEvent",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptDelta",
    "TranscriptDone",
    "UsageUpdated",
    "conversation_item_create_text",
    "conversation_item_truncate",
    "function_call_output",
    "input_audio_buffer_append",
    "input_audio_buffer_clear",
    "input_audio_buffer_commit",
    "new_event_id",
    "output_audio_buffer_clear",
    "parse_server_event",
    "response_cancel",
    "response_create",
    "session_beta_to_ga",
    "session_ga_to_beta",
    "session_update",
    "to_beta",
]

ApiVersion = Literal["ga", "beta"]

MALFORMED_EVENT = "rtvoice.malformed_event"
# A bound on one server message. The largest real events (session objects with many tools, audio
# deltas) stay far below it; aiohttp's WebSocket default max_msg_size is the same 4 MiB.
DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024

CLIENT_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
    }
)

GA_SERVER_EVENT_TYPES: frozenset[str] = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.dtmf_event_received",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "output_audio_buffer.cleared",
        "rate_limits.updated",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
    }
)

BETA_TO_GA_SERVER_EVENTS: Mapping[str, str] = {
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "transcription_session.created": "session.created",
    "transcription_session.updated": "session.updated",
}
GA_TO_BETA_SERVER_EVENTS: Mapping[str, str] = {
    ga: beta
    for beta, ga in BETA_TO_GA_SERVER_EVENTS.items()
    if not beta.startswith("transcription_")
}


def new_event_id() -> str:
    """A fresh client event id (``evt_`` + 20 hex digits)."""
    return "evt_" + secrets.token_hex(10)


# --------------------------------------------------------------------------------------------
# Typed server events


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One server event. ``data`` is the decoded message (GA-named); ``beta_type`` holds the
    original name when a beta name was normalized."""

    type: str
    event_id: str | None
    data: dict[str, Any] = field(repr=False)
    beta_type: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


@dataclass(frozen=True, slots=True)
class MalformedEvent(ServerEvent):
    """A message that was not a JSON object with a string ``type``, was nested too deeply to
    decode, or exceeded ``max_event_bytes``. ``reason`` says which; ``raw`` is truncated to 200
    characters."""

    reason: str = ""
    raw: str = ""


@dataclass(frozen=True, slots=True)
class ErrorEvent(ServerEvent):
    """``error``. ``client_event_id`` is ``error.event_id``; ``client_event`` is the event this
    codec sent with that id, when it is still remembered."""

    code: str | None = None
    message: str = ""
    error_type: str | None = None
    param: str | None = None
    client_event_id: str | None = None
    client_event: dict[str, Any] | None = field(default=None, repr=False)

    def exception(self) -> ServerEventError:
        return error_from_event(self.data)


@dataclass(frozen=True, slots=True)
class SessionEvent(ServerEvent):
    """``session.created`` / ``session.updated`` (session always GA-shaped)."""

    session: dict[str, Any] = field(default_factory=dict, repr=False)
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseEvent(ServerEvent):
    """``response.created`` / ``response.done``."""

    response: dict[str, Any] = field(default_factory=dict, repr=False)
    response_id: str | None = None
    status: str | None = None
    status_details: dict[str, Any] | None = None


ResponseDone = ResponseEvent


@dataclass(frozen=True, slots=True)
class OutputAudioBufferEvent(ServerEvent):
    """``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` (WebRTC only)."""

    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted(ServerEvent):
    audio_start_ms: int = 0
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStopped(ServerEvent):
    audio_end_ms: int = 0
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudioCommitted(ServerEvent):
    item_id: str | None = None
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptDelta(ServerEvent):
    """Assistant transcript/text deltas and user input transcription deltas."""

    delta: str = ""
    item_id: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptDone(ServerEvent):
    """Final assistant transcript/text, or the completed user input transcription."""

    transcript: str = ""
    item_id: str | None = None
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class FunctionCallArgumentsDone(ServerEvent):
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    item_id: str | None = None
    response_id: str | None = None

    def parsed_arguments(self) -> Any:
        """``arguments`` decoded as JSON (raises ``ValueError`` if it is not valid JSON)."""
        return json.loads(self.arguments) if self.arguments else {}


@dataclass(frozen=True, slots=True)
class RateLimitsUpdated(ServerEvent):
    rate_limits: list[dict[str, Any]] = field(default_factory=list)


# The Live API's server events (``session.started`` is a :class:`SessionEvent`).


@dataclass(frozen=True, slots=True)
class LiveSessionClosed(ServerEvent):
    """``session.closed``: ``reason`` is close_requested, expired, content, remote_hangup or
    connection_lost; ``usage`` the session's final usage."""

    reason: str = ""
    usage: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class LiveTranscriptDelta(ServerEvent):
    """``session.input_transcript.delta`` / ``session.output_transcript.delta``, positioned on
    the session's timeline (ms from its start)."""

    delta: str = ""
    start_ms: int = 0
    end_ms: int = 0


@dataclass(frozen=True, slots=True)
class DelegationCreated(ServerEvent):
    """``session.delegation.created``: the model hands a task to ``target`` (client, responses
    or decisions); no task text."""

    delegation_id: str | None = None
    target: str | None = None
    response_id: str | None = None
    offset_ms: int = 0


@dataclass(frozen=True, slots=True)
class DelegatedResponseEvent(ServerEvent):
    """``response.event``: one event of a delegated Responses stream (``event``)."""

    event: dict[str, Any] = field(default_factory=dict, repr=False)
    event_type: str | None = None
    delegation_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageUpdated(ServerEvent):
    """``session.usage.updated``: cumulative ``usage`` (seconds) and the context window."""

    usage: dict[str, Any] = field(default_factory=dict)
    context_window: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class InfoEvent(ServerEvent):
    """``info``: a notice that is no error (e.g. ``data_channel_permissions``)."""

    code: str | None = None
    message: str = ""


def _s(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _i(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    return int(v) if math.isfinite(v) else 0


def _d(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = d.get(key)
    return v if isinstance(v, dict) else {}


_TRANSCRIPT_DELTAS = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "conversation.item.input_audio_transcription.delta",
    }
)
_TRANSCRIPT_DONE = {
    "response.output_audio_transcript.done": "transcript",
    "response.output_text.done": "text",
    "conversation.item.input_audio_transcription.completed": "transcript",
}


def _typed(data: dict[str, Any], beta_type: str | None) -> ServerEvent:
    t: str = data["type"]
    eid = _s(data, "event_id")
    base: dict[str, Any] = {"type": t, "event_id": eid, "data": data, "beta_type": beta_type}
    if t == "error":
        err = _d(data, "error")
        return ErrorEvent(
            **base,
            code=_s(err, "code"),
            message=_s(err, "message") or "",
            error_type=_s(err, "type"),
            param=_s(err, "param"),
            # Realtime quotes the client event as event_id, Live as client_event_id.
            client_event_id=_s(err, "event_id") or _s(err, "client_event_id"),
        )
    if t in ("session.created", "session.updated", "session.started"):
        sess = _d(data, "session")
        return SessionEvent(**base, session=sess, session_id=_s(sess, "id"))
    if t in ("response.created", "response.done"):
        resp = _d(data, "response")
        details = resp.get("status_details")
        return ResponseEvent(
            **base,
            response=resp,
            response_id=_s(resp, "id"),
            status=_s(resp, "status"),
            status_details=details if isinstance(details, dict) else None,
        )
    if t.startswith("output_audio_buffer."):
        return OutputAudioBufferEvent(**base, response_id=_s(data, "response_id"))
    if t == "input_audio_buffer.speech_started":
        return SpeechStarted(
            **base, audio_start_ms=_i(data, "audio_start_ms"), item_id=_s(data, "item_id")
        )
    if t == "input_audio_buffer.speech_stopped":
        return SpeechStopped(
            **base, audio_end_ms=_i(data, "audio_end_ms"), item_id=_s(data, "item_id")
        )
    if t == "input_audio_buffer.committed":
        return InputAudioCommitted(
            **base, item_id=_s(data, "item_id"), previous_item_id=_s(data, "previous_item_id")
        )
    if t in _TRANSCRIPT_DELTAS:
        return TranscriptDelta(
            **base,
            delta=_s(data, "delta") or "",
            item_id=_s(data, "item_id"),
            response_id=_s(data, "response_id"),
        )
    if t in _TRANSCRIPT_DONE:
        return TranscriptDone(
            **base,
            transcript=_s(data, _TRANSCRIPT_DONE[t]) or "",
            item_id=_s(data, "item_id"),
            response_id=_s(data, "response_id"),
        )
    if t == "response.function_call_arguments.done":
        return FunctionCallArgumentsDone(
            **base,
            call_id=_s(data, "call_id") or "",
            name=_s(data, "name") or "",
            arguments=_s(data, "arguments") or "",
            item_id=_s(data, "item_id"),
            response_id=_s(data, "response_id"),
        )
    if t == "session.closed":
        return LiveSessionClosed(**base, reason=_s(data, "reason") or "", usage=_d(data, "usage"))
    if t in ("session.input_transcript.delta", "session.output_transcript.delta"):
        return LiveTranscriptDelta(
            **base,
            delta=_s(data, "delta") or "",
            start_ms=_i(data, "start_ms"),
            end_ms=_i(data, "end_ms"),
        )
    if t == "session.delegation.created":
        delegation = _d(data, "delegation")
        return DelegationCreated(
            **base,
            delegation_id=_s(delegation, "id"),
            target=_s(delegation, "target"),
            response_id=_s(delegation, "response_id"),
            offset_ms=_i(data, "offset_ms"),
        )
    if t == "response.event":
        nested = _d(data, "event")
        return DelegatedResponseEvent(
            **base,
            event=nested,
            event_type=_s(nested, "type"),
            delegation_id=_s(data, "delegation_id"),
        )
    if t == "session.usage.updated":
        window = data.get("context_window")
        return UsageUpdated(
            **base,
            usage=_d(data, "usage"),
            context_window=window if isinstance(window, dict) else None,
        )
    if t == "info":
        return InfoEvent(**base, code=_s(data, "code"), message=_s(data, "message") or "")
    if t == "rate_limits.updated":
        limits = data.get("rate_limits")
        return RateLimitsUpdated(
            **base,
            rate_limits=[x for x in limits if isinstance(x, dict)]
            if isinstance(limits, list)
            else [],
        )
    return ServerEvent(**base)


_RAW_CHARS = 200


def _malformed(raw: str | bytes, reason: str) -> MalformedEvent:
    # Slice before decoding: an oversized message is never copied whole.
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw[: 4 * _RAW_CHARS]).decode("utf-8", "replace")[:_RAW_CHARS]
    else:
        text = str(raw)[:_RAW_CHARS]
    data = {"type": MALFORMED_EVENT, "reason": reason, "raw": text}
    return MalformedEvent(type=MALFORMED_EVENT, event_id=None, data=data, reason=reason, raw=text)


def _check_max_event_bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"max_event_bytes must be an int number of bytes, got {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"max_event_bytes must be >= 1, got {value}")
    return value


def _oversize(raw: str | bytes, limit: int) -> int | None:
    """The size in bytes (a lower bound for a long str) when ``raw`` exceeds ``limit``."""
    if isinstance(raw, str):
        if len(raw) * 4 <= limit:  # UTF-8 takes at most 4 bytes per character
            return None
        size = len(raw) if len(raw) > limit else len(raw.encode("utf-8", "surrogatepass"))
    else:
        size = len(raw)
    return size if size > limit else None


def parse_server_event(
    raw: str | bytes | Mapping[str, Any], *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> ServerEvent:
    """Decode one server message without any codec state (no error matching, no counting).

    Never raises for bad input: a message larger than ``max_event_bytes`` is not parsed, and one
    nested too deeply for the decoder is reported instead of raising ``RecursionError``.
    """
    if not isinstance(raw, Mapping):
        size = _oversize(raw, max_event_bytes)
        if size is not None:
            return _malformed(
                raw, f"event of at least {size} bytes exceeds max_event_bytes={max_event_bytes}"
            )
    try:
        return _parse(raw)
    except RecursionError:
        return _malformed(
            raw if not isinstance(raw, Mapping) else "", "nested too deeply to decode"
        )


def _parse(raw: str | bytes | Mapping[str, Any]) -> ServerEvent:
    if isinstance(raw, Mapping):
        data: Any = dict(raw)
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _malformed(raw, f"invalid JSON: {exc}")
    if not isinstance(data, dict):
        return _malformed(raw if not isinstance(raw, Mapping) else repr(raw), "not a JSON object")
    t = data.get("type")
    if not isinstance(t, str) or not t:
        return _malformed(
            raw if not isinstance(raw, Mapping) else json.dumps(data)[:200],
            "missing or non-string 'type'",
        )
    beta_type: str | None = None
    if t in BETA_TO_GA_SERVER_EVENTS:
        beta_type = t
        data["type"] = t = BETA_TO_GA_SERVER_EVENTS[t]
    if t in ("session.created", "session.updated") and isinstance(data.get("session"), dict):
        sess = data["session"]
        if _looks_beta_session(sess):
            data["session"] = session_beta_to_ga(sess)
            beta_type = beta_type or t
    return _typed(data, beta_type)


# --------------------------------------------------------------------------------------------
# Codec: event ids, error matching, beta translation, malformed counting


class EventCodec:
    """Per-connection encoder/decoder. Not thread-safe: use it from the event loop only.

    ``remember`` bounds how many sent events are kept for error matching (oldest dropped first).
    ``max_event_bytes`` bounds one received message; a larger one is counted as malformed and not
    parsed. ``sent_count`` counts the events the caller reported sent with :meth:`note_sent`.
    """

    def __init__(
        self,
        api_version: ApiVersion = "ga",
        *,
        remember: int = 512,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        if api_version not in ("ga", "beta"):
            raise ValueError(f"api_version must be 'ga' or 'beta', got {api_version!r}")
        if remember < 1:
            raise ValueError(f"remember must be >= 1, got {remember}")
        self.api_version: ApiVersion = api_version
        self._remember = remember
        self.max_event_bytes = _check_max_event_bytes(max_event_bytes)
        self._sent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.malformed_count = 0
        self.received_count = 0
        self.sent_count = 0

    def prepare(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Return the wire form of a GA client ``event`` (a copy) with an ``event_id`` and, for
        ``api_version="beta"``, the beta shape; remember it for error matching.

        Raises ``ValueError`` when a number in the event is NaN or infinite (JSON has neither).
        Does not count the event as sent: call :meth:`note_sent` once the transport took it."""
        if not isinstance(event, Mapping):
            raise TypeError(f"event must be a mapping, got {type(event).__name__}")
        t = event.get("type")
        if not isinstance(t, str) or not t:
            raise ValueError("event has no 'type'")
        out = copy.deepcopy(dict(event))
        eid = out.get("event_id")
        if eid is None:
            out["event_id"] = eid = new_event_id()
        elif not isinstance(eid, str) or not eid:
            raise ValueError("event_id must be a non-empty string")
        _refuse_non_finite(out, t)
        if self.api_version == "beta":
            out = to_beta(out)
        self._sent[eid] = out
        self._sent.move_to_end(eid)
        while len(self._sent) > self._remember:
            self._sent.popitem(last=False)
        return out

    def note_sent(self) -> None:
        """Count one prepared event as sent; call it after the transport's send succeeded."""
        self.sent_count += 1

    def encode(self, event: Mapping[str, Any]) -> str:
        """:meth:`prepare` then JSON-serialize (compact separators). Not counted as sent either."""
        return json.dumps(self.prepare(event), separators=(",", ":"), allow_nan=False)

    def sent_event(self, event_id: str) -> dict[str, Any] | None:
        return self._sent.get(event_id)

    def decode(self, raw: str | bytes) -> ServerEvent:
        """Decode one message. Never raises for bad input: see :class:`MalformedEvent`."""
        self.received_count += 1
        ev = parse_server_event(raw, max_event_bytes=self.max_event_bytes)
        if isinstance(ev, MalformedEvent):
            self.malformed_count += 1
            return ev
        if isinstance(ev, ErrorEvent) and ev.client_event_id is not None:
            sent = self._sent.get(ev.client_event_id)
            if sent is not None:
                object.__setattr__(ev, "client_event", sent)
        return ev


def _refuse_non_finite(event: Mapping[str, Any], event_type: str) -> None:
    # Iterative, so that a deeply nested event cannot raise RecursionError here.
    stack: list[tuple[Any, str]] = [(event, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"{event_type} field {path} is {value}: JSON has no NaN or infinity, "
                    "pass a finite number"
                )
        elif isinstance(value, Mapping):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


# --------------------------------------------------------------------------------------------
# Beta <-> GA shapes

_GA_FORMAT_TO_BETA = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_BETA_FORMAT_TO_GA: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
_BETA_ONLY_SESSION_KEYS = frozenset(
    {
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "max_response_output_tokens",
        "temperature",
        "speed",
        "client_secret",
    }
)


def _looks_beta_session(sess: Mapping[str, Any]) -> bool:
    return "audio" not in sess and any(k in sess for k in _BETA_ONLY_SESSION_KEYS)


def _format_to_beta(fmt: Any) -> Any:
    if isinstance(fmt, Mapping) and isinstance(fmt.get("type"), str):
        return _GA_FORMAT_TO_BETA.get(fmt["type"], fmt["type"])
    return fmt


def _modalities_to_beta(mods: Any) -> Any:
    if isinstance(mods, list) and "audio" in mods:
        return ["text", "audio"]
    return mods


def session_ga_to_beta(session: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a GA session config to the beta shape (§4.6). ``type`` is dropped; fields with no
    beta counterpart (``tracing``, ``truncation``, ``prompt``, ``include``...) pass through."""
    s = copy.deepcopy(dict(session))
    s.pop("type", None)
    if "output_modalities" in s:
        s["modalities"] = _modalities_to_beta(s.pop("output_modalities"))
    if "max_output_tokens" in s:
        s["max_response_output_tokens"] = s.pop("max_output_tokens")
    audio = s.pop("audio", None)
    if isinstance(audio, Mapping):
        inp = audio.get("input")
        if isinstance(inp, Mapping):
            if "format" in inp:
                s["input_audio_format"] = _format_to_beta(inp["format"])
            if "turn_detection" in inp:
                s["turn_detection"] = inp["turn_detection"]
            if "transcription" in inp:
                s["input_audio_transcription"] = inp["transcription"]
            if "noise_reduction" in inp:
                s["input_audio_noise_reduction"] = inp["noise_reduction"]
        out = audio.get("output")
        if isinstance(out, Mapping):
            if "format" in out:
                s["output_audio_format"] = _format_to_beta(out["format"])
            if "voice" in out:
                s["voice"] = out["voice"]
            if "speed" in out:
                s["speed"] = out["speed"]
    return s


def session_beta_to_ga(session: Mapping[str, Any]) -> dict[str, Any]:
    """Reshape a flat beta session object to GA (the inverse of :func:`session_ga_to_beta`).
    ``temperature`` (removed in GA) and ``client_secret`` are dropped."""
    s = copy.deepcopy(dict(session))
    s.setdefault("type", "realtime")
    if "modalities" in s:
        mods = s.pop("modalities")
        s["output_modalities"] = ["audio"] if isinstance(mods, list) and "audio" in mods else mods
    if "max_response_output_tokens" in s:
        s["max_output_tokens"] = s.pop("max_response_output_tokens")
    s.pop("temperature", None)
    s.pop("client_secret", None)
    inp: dict[str, Any] = {}
    out: dict[str, Any] = {}
    if "input_audio_format" in s:
        f = s.pop("input_audio_format")
        inp["format"] = (
            copy.deepcopy(_BETA_FORMAT_TO_GA.get(f, {"type": f})) if isinstance(f, str) else f
        )
    for beta_key, ga_key in (
        ("turn_detection", "turn_detection"),
        ("input_audio_transcription", "transcription"),
        ("input_audio_noise_reduction", "noise_reduction"),
    ):
        if beta_key in s:
            inp[ga_key] = s.pop(beta_key)
    if "output_audio_format" in s:
        f = s.pop("output_audio_format")
        out["format"] = (
            copy.deepcopy(_BETA_FORMAT_TO_GA.get(f, {"type": f})) if isinstance(f, str) else f
        )
    for key in ("voice", "speed"):
        if key in s:
            out[key] = s.pop(key)
    if inp or out:
        audio: dict[str, Any] = {}
        if inp:
            audio["input"] = inp
        if out:
            audio["output"] = out
        s["audio"] = audio
    return s


_CONTENT_GA_TO_BETA = {"output_text": "text", "output_audio": "audio"}


def _item_to_beta(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    content = item.get("content")
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") in _CONTENT_GA_TO_BETA:
                part["type"] = _CONTENT_GA_TO_BETA[part["type"]]
    return item


def to_beta(event: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a GA client event to its beta shape (a copy)."""
    ev = copy.deepcopy(dict(event))
    t = ev.get("type")
    if t == "session.update" and isinstance(ev.get("session"), Mapping):
        if ev["session"].get("type") == "transcription":
            ev["type"] = "transcription_session.update"
        ev["session"] = session_ga_to_beta(ev["session"])
    elif t == "response.create" and isinstance(ev.get("response"), Mapping):
        r = ev["response"]
        if "output_modalities" in r:
            r["modalities"] = _modalities_to_beta(r.pop("output_modalities"))
        if "max_output_tokens" in r:
            r["max_response_output_tokens"] = r.pop("max_output_tokens")
        audio = r.pop("audio", None)
        if isinstance(audio, Mapping) and isinstance(audio.get("output"), Mapping):
            o = audio["output"]
            if "voice" in o:
                r["voice"] = o["voice"]
            if "format" in o:
                r["output_audio_format"] = _format_to_beta(o["format"])
        if isinstance(r.get("input"), list):
            r["input"] = [_item_to_beta(i) for i in r["input"]]
    elif t == "conversation.item.create":
        ev["item"] = _item_to_beta(ev.get("item"))
    return ev


# --------------------------------------------------------------------------------------------
# Client event builders (GA shapes; the codec converts to beta on send when needed)


def session_update(session: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """``session.update``. ``session`` and ``fields`` are merged (fields win); ``type`` defaults
    to ``"realtime"``. Convenience keywords ``voice``, ``input_format``/``output_format``,
    ``turn_detection``, ``transcription`` and ``speed`` are placed under ``audio``."""
    s: dict[str, Any] = (
        copy.deepcopy(dict(_checks.mapping(session, "session"))) if session is not None else {}
    )
    audio_in = {
        "input_format": "format",
        "turn_detection": "turn_detection",
        "transcription": "transcription",
        "noise_reduction": "noise_reduction",
    }
    audio_out = {"voice": "voice", "output_format": "format", "speed": "speed"}
    for key, value in fields.items():
        if key in audio_in:
            s.setdefault("audio", {}).setdefault("input", {})[audio_in[key]] = value
        elif key in audio_out:
            s.setdefault("audio", {}).setdefault("output", {})[audio_out[key]] = value
        else:
            s[key] = value
    s.setdefault("type", "realtime")
    return {"type": "session.update", "session": s}


def response_create(
    *,
    instructions: str | None = None,
    output_modalities: Iterable[str] | None = None,
    conversation: str | None = None,
    input: Iterable[Mapping[str, Any]] | None = None,
    metadata: Mapping[str, str] | None = None,
    tool_choice: Any = None,
    tools: Iterable[Mapping[str, Any]] | None = None,
    voice: str | None = None,
    max_output_tokens: int | Literal["inf"] | None = None,
) -> dict[str, Any]:
    """``response.create``; with no argument, ``{"type": "response.create"}``."""
    r: dict[str, Any] = {}
    if instructions is not None:
        r["instructions"] = instructions
    if output_modalities is not None:
        r["output_modalities"] = list(output_modalities)
    if conversation is not None:
        r["conversation"] = conversation
    if input is not None:
        r["input"] = [dict(i) for i in input]
    if metadata is not None:
        r["metadata"] = dict(metadata)
    if tool_choice is not None:
        r["tool_choice"] = tool_choice
    if tools is not None:
        r["tools"] = [dict(t) for t in tools]
    if voice is not None:
        r["audio"] = {"output": {"voice": voice}}
    if max_output_tokens is not None:
        r["max_output_tokens"] = max_output_tokens
    ev: dict[str, Any] = {"type": "response.create"}
    if r:
        ev["response"] = r
    return ev


def conversation_item_create_text(
    text: str,
    *,
    role: Literal["user", "system", "assistant"] = "user",
    previous_item_id: str | None = None,
) -> dict[str, Any]:
    """``conversation.item.create`` with a text message."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    part_type = "output_text" if role == "assistant" else "input_text"
    ev: dict[str, Any] = {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": role, "content": [{"type": part_type, "text": text}]},
    }
    if previous_item_id is not None:
        ev["previous_item_id"] = previous_item_id
    return ev


def function_call_output(call_id: str, output: Any) -> dict[str, Any]:
    """``conversation.item.create`` with a tool result (a non-string ``output`` is JSON-encoded)."""
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("call_id must be a non-empty string")
    out = output if isinstance(output, str) else json.dumps(output)
    return {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": out},
    }


def conversation_item_truncate(
    item_id: str, audio_end_ms: int, *, content_index: int = 0
) -> dict[str, Any]:
    """``conversation.item.truncate``; ``audio_end_ms`` is a non-negative integer."""
    if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
        raise ValueError(f"audio_end_ms must be a non-negative int, got {audio_end_ms!r}")
    return {
        "type": "conversation.item.truncate",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": audio_end_ms,
    }


def input_audio_buffer_append(pcm16_24k: bytes | str) -> dict[str, Any]:
    """``input_audio_buffer.append`` from raw PCM16 24 kHz mono bytes (or already base64 text)."""
    if isinstance(pcm16_24k, (bytes, bytearray, memoryview)):
        audio = base64.b64encode(bytes(pcm16_24k)).decode("ascii")
    elif isinstance(pcm16_24k, str):
        audio = pcm16_24k
    else:
        raise TypeError(f"audio must be bytes or base64 str, got {type(pcm16_24k).__name__}")
    return {"type": "input_audio_buffer.append", "audio": audio}


def input_audio_buffer_commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def input_audio_buffer_clear() -> dict[str, Any]:
    return {"type": "input_audio_buffer.clear"}


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "response.cancel"}
    if response_id is not None:
        ev["response_id"] = response_id
    return ev


def output_audio_buffer_clear() -> dict[str, Any]:
    """``output_audio_buffer.clear`` (WebRTC only; send ``response.cancel`` first)."""
    return {"type": "output_audio_buffer.clear"}
