"""The Live API (GPT-Live): what differs from Realtime, for :class:`rtvoice.RealtimeSession`.

The Live API has its own endpoints (``POST /v1/live/sessions`` with a JSON body for WebRTC,
``wss://…/v1/live/sessions`` whose first frame is ``session.start``), its own ``session.*``
events, no items, no turn detection and no truncation: the model reads one continuous input
timeline and decides when to speak. Tools run through delegation. A lost session continues by
forking it (``store=True``) or in a new session whose ``input`` is rebuilt from the transcript.

This module holds the event builders, the session configuration, the transcript kept for that
rebuild, and the reading of ``session.closed`` reasons. Every client event built here validates
against ``openai.types.live`` (checked by the tests).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AUDIO_DELTA_TYPE",
    "CLOSE_OUTCOMES",
    "MAX_INPUT_MESSAGES",
    "MAX_INPUT_TOKENS",
    "LiveTranscript",
    "commentary_append",
    "input_audio_append",
    "instructions_append",
    "is_live_model",
    "mute",
    "response_create",
    "response_item_create",
    "session_close",
    "session_config",
    "session_start",
    "thinking_append",
    "unmute",
]

AUDIO_DELTA_TYPE = "session.output_audio.delta"
READY_EVENT = "session.started"
# The API's bounds on a session's startup ``input``.
MAX_INPUT_MESSAGES = 128
MAX_INPUT_TOKENS = 8192
# Characters per token, to keep a rebuilt input within MAX_INPUT_TOKENS without a tokenizer
# (English averages about 4; 3 leaves a margin).
CHARS_PER_TOKEN = 3.0
# What the fields of session.update may touch after startup.
UPDATABLE_FIELDS = frozenset({"delegation", "triggers"})
# ``session.closed`` reasons: what the session does next.
CloseOutcome = Literal["closed", "continue", "failed"]
CLOSE_OUTCOMES: dict[str, CloseOutcome] = {
    "close_requested": "closed",
    "remote_hangup": "closed",
    "expired": "continue",
    "connection_lost": "continue",
    "content": "failed",
}


# WebSocket barge-in (no server-side playout there): the rule that flushes what is still
# buffered for playout when the model has stopped itself because the user speaks.
BARGE_IN_GAP_MS = 100.0  # the server's output audio has stopped arriving for this long,
BARGE_IN_MIN_BUFFERED_MS = 40.0  # at least this much is still buffered here, and
BARGE_IN_VOICE_WINDOW_MS = 300.0  # the uplink sent speech this recently, after that output.


def should_flush_playout(
    *, now_ns: int, last_output_ns: int, buffered_ms: float, last_voiced_ns: int
) -> bool:
    """The WebSocket barge-in rule: flush the playout buffer when the server's output audio
    stopped arriving ``BARGE_IN_GAP_MS`` ago while at least ``BARGE_IN_MIN_BUFFERED_MS`` is
    still buffered, and the user's speech was sent within ``BARGE_IN_VOICE_WINDOW_MS`` and not
    before the output stopped (minus the gap). The end of a reply with nobody speaking is not a
    barge-in: its buffered tail plays out."""
    if not last_output_ns or not last_voiced_ns:
        return False
    gap_ns = int(BARGE_IN_GAP_MS * 1e6)
    if now_ns - last_output_ns < gap_ns or buffered_ms < BARGE_IN_MIN_BUFFERED_MS:
        return False
    recent = now_ns - last_voiced_ns <= BARGE_IN_VOICE_WINDOW_MS * 1e6
    return recent and last_voiced_ns >= last_output_ns - gap_ns


def is_live_model(model: str) -> bool:
    """Whether ``model`` names a Live API model (``gpt-live-…``)."""
    return model.startswith("gpt-live")


# ----------------------------------------------------------------------------- configuration


def session_config(
    *,
    model: str,
    instructions: str | None,
    voice: str | None,
    tools: Iterable[Mapping[str, Any]],
    delegation_model: str,
    store: bool,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The startup configuration (``SessionConfig`` / ``MediaSessionConfig``), without the
    transport-specific ``audio.format`` (WebSocket only) and ``input`` (a continuation's)."""
    cfg: dict[str, Any] = {"model": model}
    if instructions is not None:
        cfg["instructions"] = instructions
    if voice is not None:
        cfg["audio"] = {"output": {"voice": voice}}
    functions = [dict(t) for t in tools]
    if functions:
        cfg["delegation"] = {
            "type": "responses",
            "responses": {"model": delegation_model, "tools": functions},
        }
    if store:
        cfg["store"] = True
    for key, value in (overrides or {}).items():
        cfg[key] = value
    return cfg


def function_tool(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": dict(parameters),
    }


# ----------------------------------------------------------------------------- client events


def session_start(session: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "session.start", "session": dict(session)}


def session_close() -> dict[str, Any]:
    return {"type": "session.close"}


def input_audio_append(audio_b64: str) -> dict[str, Any]:
    return {"type": "session.input_audio.append", "audio": audio_b64}


def mute() -> dict[str, Any]:
    return {"type": "session.input_audio.mute"}


def unmute() -> dict[str, Any]:
    return {"type": "session.input_audio.unmute"}


def _append(kind: str, content: str, delegation_id: str | None) -> dict[str, Any]:
    if not isinstance(content, str) or not content:
        raise ValueError(f"{kind} content must be a non-empty string")
    if delegation_id is not None and not isinstance(delegation_id, str):
        raise TypeError("delegation_id must be a string or None")
    return {"type": kind, "content": content, "delegation_id": delegation_id}


def instructions_append(content: str, delegation_id: str | None = None) -> dict[str, Any]:
    return _append("session.instructions.append", content, delegation_id)


def thinking_append(content: str, delegation_id: str | None = None) -> dict[str, Any]:
    return _append("session.thinking.append", content, delegation_id)


def commentary_append(content: str, delegation_id: str | None = None) -> dict[str, Any]:
    return _append("session.commentary.append", content, delegation_id)


def response_item_create(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "response.item.create", "item": dict(item)}


def response_create() -> dict[str, Any]:
    return {"type": "response.create"}


def user_text_item(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


# ----------------------------------------------------------------------------- transcript


@dataclass
class _Message:
    role: Literal["user", "assistant"]
    text: str


class LiveTranscript:
    """The conversation as the transcripts tell it: consecutive ``session.input_transcript
    .delta`` make one user message, ``session.output_transcript.delta`` one assistant message.
    At most ``max_messages`` are kept (older ones dropped and counted)."""

    def __init__(self, max_messages: int = 4 * MAX_INPUT_MESSAGES) -> None:
        self._messages: collections.deque[_Message] = collections.deque()
        self.max_messages = max_messages
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._messages)

    def seed(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Start from a session's ``input`` (a continuation's rebuilt conversation)."""
        for item in items:
            role = item.get("role")
            parts = item.get("content") or []
            text = " ".join(
                p.get("text", "") for p in parts if isinstance(p, Mapping) and p.get("text")
            )
            if role in ("user", "assistant") and text:
                self._add(role, text, join=False)

    def _add(self, role: Literal["user", "assistant"], text: str, *, join: bool) -> None:
        last = self._messages[-1] if self._messages else None
        if join and last is not None and last.role == role:
            last.text += text
            return
        self._messages.append(_Message(role, text))
        while len(self._messages) > self.max_messages:
            self._messages.popleft()
            self.dropped += 1

    def observe(self, event_type: str, data: Mapping[str, Any]) -> None:
        delta = data.get("delta")
        if not isinstance(delta, str) or not delta:
            return
        if event_type == "session.input_transcript.delta":
            self._add("user", delta, join=True)
        elif event_type == "session.output_transcript.delta":
            self._add("assistant", delta, join=True)

    def messages(self) -> list[tuple[str, str]]:
        return [(m.role, m.text.strip()) for m in self._messages if m.text.strip()]

    def as_input(
        self, *, max_messages: int = MAX_INPUT_MESSAGES, max_tokens: int = MAX_INPUT_TOKENS
    ) -> tuple[list[dict[str, Any]], int]:
        """The most recent messages as a session's startup ``input`` within the API's bounds,
        oldest first, and how many were left out."""
        chosen: list[dict[str, Any]] = []
        budget = max_tokens * CHARS_PER_TOKEN
        messages = self.messages()
        for index in range(len(messages) - 1, -1, -1):
            role, text = messages[index]
            if len(chosen) >= max_messages or len(text) > budget:
                return list(reversed(chosen)), index + 1
            budget -= len(text)
            kind = "output_text" if role == "assistant" else "input_text"
            chosen.append(
                {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
            )
        return list(reversed(chosen)), 0
