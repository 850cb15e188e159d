"""What a session needs to survive a lost call: the reconnection policy, the decision what to do
with a loss or a failed attempt, the conversation kept for replay, and the queue of events sent
while no call is up.

None of it touches the network; :class:`rtvoice.session.RealtimeSession` drives it.
"""

from __future__ import annotations

import collections
import json
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rtvoice import errors

__all__ = [
    "MAX_DURATION_REASON",
    "RETRYABLE_CLOSE_CODES",
    "ConversationHistory",
    "LossKind",
    "ReconnectPolicy",
    "SendQueue",
    "attempt_decision",
    "classify_close",
]

# WebSocket close codes after which a new connection may well succeed (openai-python's set, plus
# 1014 "bad gateway"): going away, no status, abnormal closure, server error, service restart, try
# again later, bad gateway, TLS handshake.
RETRYABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015})
# What the service says when it ends a session at its maximum duration (close code 1001).
MAX_DURATION_REASON = "maximum duration"

LossKind = Literal["retry", "hangup", "recycle", "fatal"]


def classify_close(code: int | None, reason: str | None) -> LossKind:
    """What a WebSocket close means for the session: ``recycle`` (the session hit its maximum
    duration), ``hangup`` (a normal close by the server), ``retry`` (a code after which a new
    connection may succeed, or no close frame at all) or ``fatal`` (a policy or auth refusal)."""
    if code is None:
        return "retry"  # the socket broke without a close frame
    if code == 1001 and reason and MAX_DURATION_REASON in reason.lower():
        return "recycle"
    if code == 1000:
        return "hangup"
    if code in RETRYABLE_CLOSE_CODES:
        return "retry"
    return "fatal"


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a lost call is reconnected (the defaults are openai-python's).

    Attempt ``n`` (from 1) waits ``min(initial_delay_s * 2**(n-1), max_delay_s)`` times a random
    factor in ``[1 - jitter, 1]``, or the server's ``Retry-After`` when that is longer (capped
    at ``max_retry_after_s``). ``attempts`` bounds the attempts per loss.
    """

    attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.25
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool):
            raise TypeError(f"attempts must be an int, not {type(self.attempts).__name__}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        for name in ("initial_delay_s", "max_delay_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError("max_delay_s must be at least initial_delay_s")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter!r}")

    def delay_s(
        self,
        attempt: int,
        *,
        retry_after_s: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before attempt ``attempt`` (1-based)."""
        base = min(self.initial_delay_s * 2.0 ** (attempt - 1), self.max_delay_s)
        delay = base * (1.0 - self.jitter * rand())
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay

    def max_wait_s(self) -> float:
        """The longest total wait over all attempts, without Retry-After."""
        return sum(
            min(self.initial_delay_s * 2.0 ** (n - 1), self.max_delay_s)
            for n in range(1, self.attempts + 1)
        )


AttemptDecision = Literal["retry", "remint", "fatal"]


def attempt_decision(exc: BaseException, *, reminted: bool, can_remint: bool) -> AttemptDecision:
    """What to do after a connection attempt raised ``exc``: try again, mint a fresh ephemeral
    key and try again (a 401, once), or give up."""
    if isinstance(exc, errors.AuthenticationError):
        return "remint" if can_remint and not reminted else "fatal"
    if isinstance(exc, errors.RateLimitError):
        return "retry"
    if isinstance(exc, errors.APIStatusError):
        status = exc.status
        return "retry" if status >= 500 or status in (408, 409) else "fatal"
    if isinstance(exc, errors.ProtocolError):
        return "fatal"  # a server that answers garbage will answer it again
    if isinstance(exc, (errors.ConnectionError, errors.TransportError)):
        return "retry"  # refused, reset, timed out, ICE failed: the network may come back
    return "fatal"


# ----------------------------------------------------------------------------- history


def _text_of(content: Iterable[Any]) -> str:
    parts = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        value = part.get("text")
        if not isinstance(value, str):
            value = part.get("transcript")
        if isinstance(value, str) and value:
            parts.append(value)
    return " ".join(parts)


@dataclass
class _Item:
    id: str
    type: str
    role: str | None = None
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""
    output: str = ""
    # Milliseconds of the assistant's audio the user heard, when it was cut short (truncate).
    heard_ms: int | None = None
    audio_ms: float | None = None


class ConversationHistory:
    """The conversation so far, from the server's events, kept to be replayed into a new call.

    Items are recorded in the order the server added them, by id (an item seen again is updated,
    not repeated): messages with their text or transcript (a user's audio turn by its input
    transcription, an assistant's by its output transcript), function calls and their outputs.
    An assistant turn the user cut short keeps only about what was heard. At most ``max_items``
    are kept; older ones are dropped and counted in ``dropped``.
    """

    def __init__(self, max_items: int = 500) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        self._items: collections.OrderedDict[str, _Item] = collections.OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ids(self) -> list[str]:
        return list(self._items)

    def _upsert(self, raw: Mapping[str, Any]) -> _Item | None:
        item_id = raw.get("id")
        kind = raw.get("type")
        if not isinstance(item_id, str) or kind not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            return None
        item = self._items.get(item_id)
        if item is None:
            item = _Item(id=item_id, type=str(kind))
            self._items[item_id] = item
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
                self.dropped += 1
        if kind == "message":
            role = raw.get("role")
            item.role = role if isinstance(role, str) else item.role
            content = raw.get("content")
            if isinstance(content, list):
                text = _text_of(content)
                if text:
                    item.text = text
        elif kind == "function_call":
            for attr in ("call_id", "name", "arguments"):
                value = raw.get(attr)
                if isinstance(value, str):
                    setattr(item, attr, value)
        else:
            call_id, output = raw.get("call_id"), raw.get("output")
            if isinstance(call_id, str):
                item.call_id = call_id
            if isinstance(output, str):
                item.output = output
        return item

    def observe(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Record what a server event says about the conversation."""
        if event_type in (
            "conversation.item.added",
            "conversation.item.created",
            "conversation.item.done",
            "response.output_item.done",
            "conversation.item.retrieved",
        ):
            raw = data.get("item")
            if isinstance(raw, Mapping):
                self._upsert(raw)
            return
        item_id = data.get("item_id")
        if not isinstance(item_id, str):
            return
        item = self._items.get(item_id)
        if event_type == "conversation.item.deleted":
            self._items.pop(item_id, None)
        elif item is None:
            return
        elif event_type == "conversation.item.input_audio_transcription.completed":
            transcript = data.get("transcript")
            if isinstance(transcript, str) and transcript:
                item.text = transcript
        elif event_type in ("response.output_audio_transcript.done", "response.output_text.done"):
            text = data.get("transcript", data.get("text"))
            if isinstance(text, str) and text:
                item.text = text
        elif event_type == "conversation.item.truncated":
            end = data.get("audio_end_ms")
            if isinstance(end, int) and not isinstance(end, bool) and end >= 0:
                item.heard_ms = end

    def note_audio_ms(self, item_id: str, audio_ms: float | None) -> None:
        """The length of an assistant item's audio, where the client knows it (to cut the
        transcript of a truncated turn in proportion)."""
        item = self._items.get(item_id)
        if item is not None and audio_ms:
            item.audio_ms = audio_ms

    def add_local(self, raw: Mapping[str, Any]) -> None:
        """An item the client created (``conversation.item.create``), recorded at once so that a
        call lost before the server echoes it still replays it."""
        if isinstance(raw.get("id"), str):
            self._upsert(raw)

    # Characters per second of speech, to estimate how much of a cut-short turn was heard when
    # the item's audio length is unknown (the server keeps it on WebRTC).
    SPEECH_CHARS_PER_S = 15.0

    @classmethod
    def _heard_text(cls, item: _Item) -> str:
        if item.heard_ms is None or not item.text:
            return item.text
        if item.audio_ms:
            keep = int(len(item.text) * min(item.heard_ms / item.audio_ms, 1.0))
        else:
            keep = int(item.heard_ms / 1000.0 * cls.SPEECH_CHARS_PER_S)
        if keep >= len(item.text):
            return item.text
        cut = item.text[:keep]
        # Whole words only: a word half heard is not part of what the model said to the user.
        return cut[: cut.rfind(" ")].rstrip() if " " in cut else ""

    @classmethod
    def _replay_item(cls, item: _Item) -> dict[str, Any] | None:
        if item.type == "message":
            text = cls._heard_text(item)
            if not text or item.role not in ("user", "assistant", "system"):
                return None
            kind = "output_text" if item.role == "assistant" else "input_text"
            return {
                "id": item.id,
                "type": "message",
                "role": item.role,
                "content": [{"type": kind, "text": text}],
            }
        if item.type == "function_call":
            if not item.call_id or not item.name:
                return None
            return {
                "id": item.id,
                "type": "function_call",
                "call_id": item.call_id,
                "name": item.name,
                "arguments": item.arguments or "{}",
            }
        if not item.call_id:
            return None
        return {
            "id": item.id,
            "type": "function_call_output",
            "call_id": item.call_id,
            "output": item.output,
        }

    def replay(
        self, *, max_items: int, max_chars: int, skip: Iterable[str] = ()
    ) -> tuple[list[dict[str, Any]], int]:
        """The items to create in a new call, oldest first, and how many were left out.

        The most recent items that fit in ``max_items`` and ``max_chars`` (of JSON) are chosen,
        without gaps: the first that does not fit ends the choice. A function call and its output
        go together or not at all; items without a usable text (a user's audio turn without
        input transcription) and outputs whose call is unknown are left out. ``skip``: ids
        already replayed.
        """
        skipped = set(skip)
        left_out = 0
        # Units, oldest first: one item, or a function call with its output.
        units: list[list[dict[str, Any]]] = []
        call_units: dict[str, list[dict[str, Any]]] = {}
        for item in self._items.values():
            if item.id in skipped:
                continue
            replayed = self._replay_item(item)
            if replayed is None:
                left_out += 1
            elif item.type == "function_call_output":
                unit = call_units.get(item.call_id or "")
                if unit is None:
                    left_out += 1
                else:
                    unit.append(replayed)
            else:
                unit = [replayed]
                units.append(unit)
                if item.type == "function_call" and item.call_id:
                    call_units[item.call_id] = unit
        chosen: list[list[dict[str, Any]]] = []
        count = chars = 0
        for index in range(len(units) - 1, -1, -1):
            unit = units[index]
            size = sum(len(json.dumps(i, separators=(",", ":"))) for i in unit)
            if count + len(unit) > max_items or chars + size > max_chars:
                left_out += sum(len(u) for u in units[: index + 1])
                break
            chosen.append(unit)
            count += len(unit)
            chars += size
        chosen.reverse()
        return [item for unit in chosen for item in unit], left_out


# ----------------------------------------------------------------------------- send queue


class SendQueue:
    """Client events sent while no call is up (encoded, in order), bounded by their size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: collections.deque[tuple[str, str, Mapping[str, Any]]] = collections.deque()
        self.bytes = 0
        self.queued_total = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, text: str, event_id: str, event: Mapping[str, Any]) -> None:
        """Queue ``text`` (the encoded ``event``) or raise :class:`errors.SendQueueFullError`."""
        size = len(text.encode("utf-8"))
        if self.bytes + size > self.max_bytes:
            raise errors.SendQueueFullError(
                f"{len(self._items)} events ({self.bytes} bytes) are already waiting for the "
                f"session to reconnect; this one ({size} bytes) would exceed the "
                f"{self.max_bytes}-byte queue (reconnect_queue_bytes)"
            )
        self._items.append((text, event_id, event))
        self.bytes += size
        self.queued_total += 1

    def peek(self) -> tuple[str, Mapping[str, Any]] | None:
        """The oldest queued (text, event), left in the queue."""
        if not self._items:
            return None
        text, _, event = self._items[0]
        return text, event

    def pop(self) -> None:
        text, _, _ = self._items.popleft()
        self.bytes -= len(text.encode("utf-8"))

    def drain_ids(self) -> tuple[str, ...]:
        """Empty the queue; the event ids that were in it."""
        ids = tuple(event_id for _, event_id, _ in self._items)
        self._items.clear()
        self.bytes = 0
        return ids
