"""Validation and resolution of Live session configurations for the simulator (protocol-live.md
§1, §2, §8): ``session.start`` / create bodies, ``session.update``, fork overrides, appends.

Every check returns ``None`` or a :class:`Problem` (``code``, dotted ``param``, ``message``), as the
real server reports it in an HTTP 400 body or an ``error`` event. Pure functions, no I/O.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_APPEND_TOKENS",
    "MAX_INPUT_MESSAGES",
    "MAX_INPUT_TOKENS",
    "MAX_INSTRUCTIONS_TOKENS",
    "Problem",
    "approx_tokens",
    "check_fork_config",
    "check_session_config",
    "check_session_update",
    "fork_resource",
    "merge_update",
    "resolve_session",
]

MAX_INPUT_MESSAGES = 128
MAX_INPUT_TOKENS = 8192
MAX_INSTRUCTIONS_TOKENS = 16384
MAX_APPEND_TOKENS = 500
DEFAULT_VOICE = "marin"
DEFAULT_PCM_RATE_HZ = 24000


@dataclass(frozen=True)
class Problem:
    code: str
    param: str | None
    message: str


def approx_tokens(text: str) -> int:
    """The simulator's token count: one token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


# ------------------------------------------------------------------------------- a tiny schema
# A spec is one of: "str", "int", "number", "bool", "any" (anything), "object" (any JSON object),
# ("lit", values), ("null", spec) (nullable), ("list", spec, max_len), ("obj", fields, required),
# ("union", discriminator, {value: obj spec}).

Spec = Any


def _obj(fields: dict[str, Spec], *required: str) -> Spec:
    return ("obj", fields, frozenset(required))


def _null(spec: Spec) -> Spec:
    return ("null", spec)


def _lit(*values: Any) -> Spec:
    return ("lit", values)


_ACK = {"acknowledgement_delay_ms": "int"}
_BUILTIN_TOOL_TYPES = (
    "web_search",
    "file_search",
    "code_interpreter",
    "shell",
    "image_generation",
    "mcp",
    "custom",
    "namespace",
    "tool_search",
    "programmatic_tool_calling",
    "computer",
    "apply_patch",
)
_FUNCTION_TOOL = _obj(
    {
        "type": _lit("function"),
        "name": "str",
        "description": _null("str"),
        "parameters": _null("object"),
        "strict": _null("bool"),
    },
    "type",
    "name",
)
_TOOL = (
    "union",
    "type",
    {"function": _FUNCTION_TOOL, **{t: ("opaque", t) for t in _BUILTIN_TOOL_TYPES}},
)


def _responses_config(*, update: bool) -> Spec:
    fields = {
        "model": "str",
        "instructions": _null("str"),
        "max_output_tokens": _null("int"),
        "parallel_tool_calls": _null("bool"),
        "reasoning": _null(
            _obj(
                {
                    "effort": _null(_lit("none", "minimal", "low", "medium", "high", "xhigh")),
                    "summary": _null(_lit("concise", "detailed", "auto")),
                }
            )
        ),
        "service_tier": _null("str"),
        "text": _null(_obj({"verbosity": _null(_lit("low", "medium", "high"))})),
        "tool_choice": _null("any"),
        "tools": _null(("list", _TOOL, None)),
    }
    return _obj(fields) if update else _obj(fields, "model")


_CLIENT_DELEGATION = _obj({"type": _lit("client"), **_ACK}, "type")
_RESPONSES_DELEGATION = _obj(
    {"type": _lit("responses"), "responses": _responses_config(update=False), **_ACK},
    "type",
    "responses",
)
_DECISIONS_DELEGATION = _obj(
    {"type": _lit("decisions"), "decisions": "object", **_ACK}, "type", "decisions"
)
_DELEGATION = _null(
    (
        "union",
        "type",
        {
            "client": _CLIENT_DELEGATION,
            "responses": _RESPONSES_DELEGATION,
            "decisions": _DECISIONS_DELEGATION,
        },
    )
)
_UPDATE_DELEGATION = _null(
    (
        "union",
        "type",
        {
            "client": _CLIENT_DELEGATION,
            "responses": _obj(
                {
                    "type": _lit("responses"),
                    "responses": _null(_responses_config(update=True)),
                    **_ACK,
                },
                "type",
            ),
            "decisions": _obj(
                {"type": _lit("decisions"), "decisions": _null("object"), **_ACK}, "type"
            ),
        },
    )
)
_FORMAT = (
    "union",
    "type",
    {
        "audio/pcm": _obj({"type": _lit("audio/pcm"), "rate": _lit(16000, 24000)}, "type", "rate"),
        "audio/pcmu": _obj({"type": _lit("audio/pcmu"), "rate": "int"}, "type", "rate"),
        "audio/pcma": _obj({"type": _lit("audio/pcma"), "rate": "int"}, "type", "rate"),
    },
)
_VOICE = ("voice",)
_CLIENT = _obj(
    {
        "data_channel": _obj(
            {"allowed_client_events": _null("any"), "allowed_server_events": _null("any")}
        )
    },
    "data_channel",
)
_TEXT_PART = _obj({"text": "str", "type": _null(_lit("input_text"))}, "text")
_ASSISTANT_PART = _obj({"text": "str", "type": _null(_lit("text", "output_text"))}, "text")
_MESSAGE_COMMON = {
    "id": _null("str"),
    "status": _null(_lit("incomplete", "completed")),
    "type": _null(_lit("message")),
}
_INITIAL_ITEM = (
    "union",
    "role",
    {
        "developer": _obj(
            {"role": _lit("developer"), "content": ("list", _TEXT_PART, 1), **_MESSAGE_COMMON},
            "role",
            "content",
        ),
        "user": _obj(
            {"role": _lit("user"), "content": ("list", _TEXT_PART, 1), **_MESSAGE_COMMON},
            "role",
            "content",
        ),
        "assistant": _obj(
            {
                "role": _lit("assistant"),
                "content": ("list", _ASSISTANT_PART, 1),
                **_MESSAGE_COMMON,
            },
            "role",
            "content",
        ),
    },
)
_TRIGGERS = _null(("list", "object", None))
_COMMON_SESSION: dict[str, Spec] = {
    "model": "str",
    "client": _null(_CLIENT),
    "delegation": _DELEGATION,
    "input": _null(("list", _INITIAL_ITEM, MAX_INPUT_MESSAGES)),
    "instructions": _null("str"),
    "safety_identifier": _null("str"),
    "store": _null("bool"),
    "triggers": _TRIGGERS,
}
#: ``session.start`` on a primary WebSocket (SessionConfig).
WS_SESSION = _obj(
    {
        **_COMMON_SESSION,
        "audio": _null(_obj({"format": _null(_FORMAT), "output": _null(_obj({"voice": _VOICE}))})),
    },
    "model",
)
#: ``POST /v1/live/sessions`` ``session`` (MediaSessionConfig): no ``audio.format``.
WEBRTC_SESSION = _obj(
    {
        **_COMMON_SESSION,
        "audio": _null(_obj({"output": _null(_obj({"voice": _VOICE}))})),
        "idle_timeout_s": _null("int"),
        "wake_policy": _null(
            _obj({"type": _lit("speech"), "vad_threshold": _null("number")}, "type")
        ),
    },
    "model",
)
_FORK_DELEGATION = _null(
    _obj(
        {"type": _lit("responses"), "responses": _null(_responses_config(update=True)), **_ACK},
        "type",
    )
)
#: ``session.start`` on the fork WebSocket (ForkSessionConfig): no ``client``.
WS_FORK = _obj(
    {
        "audio": _null(_obj({"format": _null(_FORMAT)})),
        "delegation": _FORK_DELEGATION,
        "store": _null("bool"),
    }
)
#: ``POST /v1/live/sessions/{id}/fork`` ``session`` (MediaSessionForkConfig).
WEBRTC_FORK = _obj(
    {"client": _null(_CLIENT), "delegation": _FORK_DELEGATION, "store": _null("bool")}
)
#: ``session.update`` ``session`` (SessionUpdateConfig).
UPDATE = _obj({"delegation": _UPDATE_DELEGATION, "triggers": _TRIGGERS})

#: Startup fields: refused with ``immutable_field_update`` in ``session.update`` and fork overrides.
STARTUP_FIELDS = frozenset(
    {
        "model",
        "instructions",
        "audio",
        "input",
        "store",
        "client",
        "safety_identifier",
        "idle_timeout_s",
        "wake_policy",
        "voice",
    }
)

_JSON_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "str": (str, "a string"),
    "int": (int, "an integer"),
    "number": ((int, float), "a number"),
    "bool": (bool, "a boolean"),
    "object": (dict, "an object"),
}


def _type_problem(param: str, wanted: str) -> Problem:
    return Problem("invalid_type", param, f"Invalid type for '{param}': expected {wanted}.")


def validate(spec: Spec, value: Any, param: str) -> Problem | None:
    """Check ``value`` against ``spec``; ``param`` is its dotted path."""
    if spec == "any":
        return None
    if isinstance(spec, str):
        types, wanted = _JSON_TYPES[spec]
        bad_bool = isinstance(value, bool) and spec in ("int", "number")
        if not isinstance(value, types) or bad_bool:
            return _type_problem(param, wanted)
        return None
    kind = spec[0]
    if kind == "null":
        return None if value is None else validate(spec[1], value, param)
    if kind == "lit":
        if isinstance(value, bool) or value not in spec[1]:
            allowed = ", ".join(repr(v) for v in spec[1])
            return Problem(
                "invalid_value",
                param,
                f"Invalid value for '{param}': {value!r}. Supported values are: {allowed}.",
            )
        return None
    if kind == "voice":
        if isinstance(value, str) and value:
            return None
        if isinstance(value, dict):
            return validate(_obj({"id": "str"}, "id"), value, param)
        return _type_problem(param, "a voice name or {'id': ...}")
    if kind == "opaque":
        return None if isinstance(value, dict) else _type_problem(param, "an object")
    if kind == "list":
        if not isinstance(value, list):
            return _type_problem(param, "an array")
        if spec[2] is not None and len(value) > spec[2]:
            return Problem(
                "array_above_max_length",
                param,
                f"Invalid '{param}': array too long. Expected at most {spec[2]} items, "
                f"got {len(value)}.",
            )
        for i, item in enumerate(value):
            problem = validate(spec[1], item, f"{param}[{i}]")
            if problem is not None:
                return problem
        return None
    if kind == "union":
        if not isinstance(value, dict):
            return _type_problem(param, "an object")
        key = spec[1]
        sub = f"{param}.{key}"
        if key not in value:
            return Problem(
                "missing_required_parameter", sub, f"Missing required parameter: '{sub}'."
            )
        if value[key] not in spec[2] or isinstance(value[key], bool):
            allowed = ", ".join(repr(v) for v in spec[2])
            return Problem(
                "invalid_value",
                sub,
                f"Invalid value for '{sub}': {value[key]!r}. Supported values are: {allowed}.",
            )
        return validate(spec[2][value[key]], value, param)
    if kind == "obj":
        if not isinstance(value, dict):
            return _type_problem(param, "an object")
        fields, required = spec[1], spec[2]
        for name in value:
            if name not in fields:
                p = f"{param}.{name}"
                return Problem("unknown_parameter", p, f"Unknown parameter: '{p}'.")
        for name in sorted(required):
            if name not in value:
                p = f"{param}.{name}"
                return Problem(
                    "missing_required_parameter", p, f"Missing required parameter: '{p}'."
                )
        for name, item in value.items():
            problem = validate(fields[name], item, f"{param}.{name}")
            if problem is not None:
                return problem
        return None
    raise ValueError(f"bad spec {spec!r}")


# ------------------------------------------------------------------------------- checks


def _semantic_problems(session: Mapping[str, Any], param: str) -> Problem | None:
    fmt = (session.get("audio") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") in ("audio/pcmu", "audio/pcma"):
        if fmt.get("rate") != 8000:
            return Problem(
                "invalid_value",
                f"{param}.audio.format.rate",
                f"Invalid value for '{param}.audio.format.rate': G.711 audio uses 8000 Hz.",
            )
        return Problem(
            "unsupported_audio_format",
            f"{param}.audio.format.type",
            f"The simulator does not support {fmt['type']}; use audio/pcm at 16000 or 24000 Hz.",
        )
    delegation = session.get("delegation")
    if isinstance(delegation, dict) and delegation.get("type") == "decisions":
        return Problem(
            "unsupported_delegation",
            f"{param}.delegation.type",
            "The simulator does not support Decisions delegation; use 'client' or 'responses'.",
        )
    instructions = session.get("instructions")
    if isinstance(instructions, str) and approx_tokens(instructions) > MAX_INSTRUCTIONS_TOKENS:
        return Problem(
            "token_limit_exceeded",
            f"{param}.instructions",
            f"'{param}.instructions' exceeds {MAX_INSTRUCTIONS_TOKENS} tokens.",
        )
    items = session.get("input") or []
    total = sum(approx_tokens(str(p.get("text", ""))) for i in items for p in i["content"])
    if total > MAX_INPUT_TOKENS:
        return Problem(
            "token_limit_exceeded",
            f"{param}.input",
            f"'{param}.input' renders to about {total} tokens; the limit is {MAX_INPUT_TOKENS}.",
        )
    return None


def check_session_config(session: Any, *, webrtc: bool, param: str = "session") -> Problem | None:
    """A ``session.start`` (``webrtc=False``) or ``POST /v1/live/sessions`` session body."""
    if webrtc and isinstance(session, dict):
        audio = session.get("audio")
        if isinstance(audio, dict) and "format" in audio:
            p = f"{param}.audio.format"
            return Problem(
                "unknown_parameter",
                p,
                f"Unknown parameter: '{p}'. WebRTC sessions negotiate their audio format in SDP; "
                "audio.format is only supported on WebSocket sessions.",
            )
    problem = validate(WEBRTC_SESSION if webrtc else WS_SESSION, session, param)
    return problem or _semantic_problems(session, param)


def _immutable(param: str) -> Problem:
    return Problem(
        "immutable_field_update",
        param,
        f"'{param}' cannot be changed after the session started.",
    )


def check_session_update(session: Any, current: Mapping[str, Any]) -> Problem | None:
    """A ``session.update`` body against the running session's resource."""
    if isinstance(session, dict):
        for name in session:
            if name in STARTUP_FIELDS:
                return _immutable(f"session.{name}")
    problem = validate(UPDATE, session, "session")
    if problem is not None:
        return problem
    assert isinstance(session, dict)
    delegation = session.get("delegation")
    if "delegation" in session:
        now = (current.get("delegation") or {}).get("type", "client")
        new = (delegation or {}).get("type", "client")
        if new != now:
            return Problem(
                "immutable_field_update",
                "session.delegation.type",
                f"The delegation type cannot change after startup (it is '{now}').",
            )
    return None


def check_fork_config(session: Any, source: Mapping[str, Any], *, webrtc: bool) -> Problem | None:
    """Fork overrides (``session.start`` on ``/fork`` or the ``session`` of the HTTP fork)."""
    if isinstance(session, dict):
        for name in session:
            if name in STARTUP_FIELDS - {"store", "client", "audio"}:
                return _immutable(f"session.{name}")
        audio = session.get("audio")
        if isinstance(audio, dict) and "output" in audio:
            return _immutable("session.audio.output")
        if webrtc and "audio" in session:
            return Problem(
                "unknown_parameter",
                "session.audio",
                "Unknown parameter: 'session.audio'. audio.format is only supported on "
                "WebSocket forks.",
            )
        if not webrtc and "client" in session:
            return Problem(
                "unknown_parameter",
                "session.client",
                "Unknown parameter: 'session.client'. client overrides are only supported on "
                "WebRTC forks.",
            )
    problem = validate(WEBRTC_FORK if webrtc else WS_FORK, session, "session")
    if problem is not None:
        return problem
    assert isinstance(session, dict)
    stored_type = (source.get("delegation") or {}).get("type")
    if session.get("delegation") is not None and stored_type != "responses":
        return Problem(
            "invalid_value",
            "session.delegation",
            "Delegation settings can be overridden only when the stored session used "
            "Responses delegation.",
        )
    return _semantic_problems(session, "session")


# ------------------------------------------------------------------------------- resolution


def resolve_session(
    session: Mapping[str, Any], *, session_id: str, expires_at: int, webrtc: bool
) -> dict[str, Any]:
    """The SessionResource of a validated config: defaults resolved (voice ``marin``, PCM 24 kHz
    on WebSocket, client delegation, ``input: []``, ``store: false``, ``status: "active"``)."""
    audio = session.get("audio") or {}
    voice = (audio.get("output") or {}).get("voice") or DEFAULT_VOICE
    resolved_audio: dict[str, Any] = {"output": {"voice": copy.deepcopy(voice)}}
    if not webrtc:
        resolved_audio["format"] = copy.deepcopy(
            audio.get("format") or {"type": "audio/pcm", "rate": DEFAULT_PCM_RATE_HZ}
        )
    out: dict[str, Any] = {
        "id": session_id,
        "expires_at": expires_at,
        "model": session["model"],
        "status": "active",
        "audio": resolved_audio,
        "delegation": copy.deepcopy(session.get("delegation") or {"type": "client"}),
        "input": copy.deepcopy(list(session.get("input") or [])),
        "instructions": session.get("instructions"),
        "store": bool(session.get("store") or False),
        "triggers": copy.deepcopy(list(session.get("triggers") or [])),
    }
    if session.get("client") is not None:
        out["client"] = copy.deepcopy(session["client"])
    if session.get("safety_identifier") is not None:
        out["safety_identifier"] = session["safety_identifier"]
    return out


def merge_update(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a validated sparse ``session.update``: ``triggers`` replaced, ``delegation`` merged
    (Responses settings field by field; omitted fields keep their values)."""
    out = copy.deepcopy(dict(current))
    if "triggers" in update and update["triggers"] is not None:
        out["triggers"] = copy.deepcopy(update["triggers"])
    delegation = update.get("delegation")
    if isinstance(delegation, dict):
        merged = out.get("delegation") or {"type": "client"}
        for key, value in delegation.items():
            if key == "responses" and isinstance(value, dict):
                merged["responses"] = {**(merged.get("responses") or {}), **copy.deepcopy(value)}
            elif value is not None:
                merged[key] = copy.deepcopy(value)
        out["delegation"] = merged
    return out


def fork_resource(
    source: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    session_id: str,
    expires_at: int,
    webrtc: bool,
) -> dict[str, Any]:
    """The new session's resource: model, voice, instructions, input, delegation and store from
    the stored session, then the (validated) overrides."""
    out = copy.deepcopy(dict(source))
    out["id"] = session_id
    out["expires_at"] = expires_at
    out["status"] = "active"
    audio = {"output": out.get("audio", {}).get("output") or {"voice": DEFAULT_VOICE}}
    if not webrtc:
        fmt = (overrides.get("audio") or {}).get("format") or (
            source.get("audio", {}).get("format")
            or {"type": "audio/pcm", "rate": DEFAULT_PCM_RATE_HZ}
        )
        audio["format"] = copy.deepcopy(fmt)
    out["audio"] = audio
    if overrides.get("store") is not None:
        out["store"] = bool(overrides["store"])
    if webrtc and overrides.get("client") is not None:
        out["client"] = copy.deepcopy(overrides["client"])
    elif not webrtc:
        out.pop("client", None)
    if overrides.get("delegation") is not None:
        out = merge_update(out, {"delegation": overrides["delegation"]})
    return out
