"""The pieces of reconnection that need no network: policy, decisions, history, send queue."""

from __future__ import annotations

import json

import pytest

from rtvoice import errors
from rtvoice.resilience import (
    ConversationHistory,
    ReconnectPolicy,
    SendQueue,
    attempt_decision,
    classify_close,
)


def test_the_default_policy_is_openai_pythons() -> None:
    policy = ReconnectPolicy()
    # Factor 1 (rand() = 0) and 0.75 (rand() = 1): min(0.5 * 2**(n-1), 8) * U(0.75, 1).
    assert [policy.delay_s(n, rand=lambda: 0.0) for n in range(1, 6)] == [0.5, 1, 2, 4, 8]
    assert [policy.delay_s(n, rand=lambda: 1.0) for n in range(1, 6)] == [0.375, 0.75, 1.5, 3, 6]
    assert policy.delay_s(9, rand=lambda: 0.0) == 8.0
    assert policy.max_wait_s() == 15.5


def test_retry_after_lengthens_the_wait_within_its_cap() -> None:
    policy = ReconnectPolicy(max_retry_after_s=10)
    assert policy.delay_s(1, retry_after_s=3, rand=lambda: 0.0) == 3
    assert policy.delay_s(1, retry_after_s=0.1, rand=lambda: 0.0) == 0.5
    assert policy.delay_s(1, retry_after_s=100, rand=lambda: 0.0) == 10


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"attempts": 0}, ValueError),
        ({"attempts": 2.5}, TypeError),
        ({"initial_delay_s": -1}, ValueError),
        ({"initial_delay_s": float("nan")}, ValueError),
        ({"initial_delay_s": 2, "max_delay_s": 1}, ValueError),
        ({"jitter": 1.5}, ValueError),
        ({"max_delay_s": "8"}, TypeError),
    ],
)
def test_a_bad_policy_is_refused(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        ReconnectPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (1001, "Your session hit the maximum duration of 60 minutes.", "recycle"),
        (1001, "going away", "retry"),
        (1000, "", "hangup"),
        (1006, None, "retry"),
        (1011, "internal error", "retry"),
        (1012, None, "retry"),
        (1013, None, "retry"),
        (1014, None, "retry"),
        (1015, None, "retry"),
        (1005, None, "retry"),
        (None, None, "retry"),
        (1008, "policy", "fatal"),
        (3000, "invalid_request_error.invalid_api_key", "fatal"),
        (4000, "beta", "fatal"),
    ],
)
def test_websocket_close_codes(code: int | None, reason: str | None, kind: str) -> None:
    assert classify_close(code, reason) == kind


def _status(status: int) -> errors.APIStatusError:
    return errors.error_from_response(status, {"error": {"message": "x"}})


def test_attempt_decisions() -> None:
    assert attempt_decision(_status(401), reminted=False, can_remint=True) == "remint"
    assert attempt_decision(_status(401), reminted=True, can_remint=True) == "fatal"
    assert attempt_decision(_status(401), reminted=False, can_remint=False) == "fatal"
    assert attempt_decision(_status(429), reminted=False, can_remint=True) == "retry"
    for status in (500, 502, 503):
        assert attempt_decision(_status(status), reminted=False, can_remint=True) == "retry"
    for status in (400, 403, 404, 422):
        assert attempt_decision(_status(status), reminted=False, can_remint=True) == "fatal"
    assert (
        attempt_decision(errors.ProtocolError("bad sdp"), reminted=False, can_remint=1) == "fatal"
    )
    for exc in (errors.ConnectionError("x"), errors.TimeoutError("x"), errors.TransportError("x")):
        assert attempt_decision(exc, reminted=False, can_remint=True) == "retry"
    assert attempt_decision(ValueError("bug"), reminted=False, can_remint=True) == "fatal"


def test_retry_after_is_read_from_the_response() -> None:
    err = errors.error_from_response(429, {}, headers={"Retry-After": "2"})
    assert err.retry_after_s == 2.0
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after("nan") is None
    assert errors.parse_retry_after("-5") == 0.0


# ----------------------------------------------------------------------------- history


def _added(item: dict[str, object]) -> tuple[str, dict[str, object]]:
    return "conversation.item.added", {"item": item}


def _conversation() -> ConversationHistory:
    h = ConversationHistory()
    h.observe("session.created", {"session": {}})
    h.observe(
        *_added(
            {
                "id": "u1",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )
    )
    h.observe(
        "conversation.item.input_audio_transcription.completed",
        {"item_id": "u1", "transcript": "what is the weather"},
    )
    h.observe(
        "response.output_item.done",
        {
            "item": {
                "id": "f1",
                "type": "function_call",
                "call_id": "c1",
                "name": "weather",
                "arguments": '{"city":"Paris"}',
            }
        },
    )
    h.observe(
        *_added(
            {"id": "o1", "type": "function_call_output", "call_id": "c1", "output": '{"temp_c":21}'}
        )
    )
    h.observe(*_added({"id": "a1", "type": "message", "role": "assistant", "content": []}))
    h.observe(
        "response.output_audio_transcript.done",
        {"item_id": "a1", "transcript": "It is 21 degrees in Paris."},
    )
    h.observe(
        *_added(
            {
                "id": "u2",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "thanks"}],
            }
        )
    )
    return h


def test_the_history_replays_roles_order_and_function_calls() -> None:
    items, left_out = _conversation().replay(max_items=100, max_chars=100_000)
    assert left_out == 0
    assert [i["id"] for i in items] == ["u1", "f1", "o1", "a1", "u2"]
    assert items[0] == {
        "id": "u1",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "what is the weather"}],
    }
    assert items[1]["name"] == "weather"
    assert items[1]["arguments"] == '{"city":"Paris"}'
    assert items[2]["output"] == '{"temp_c":21}'
    assert items[3]["content"] == [{"type": "output_text", "text": "It is 21 degrees in Paris."}]


def test_an_item_seen_again_is_updated_not_repeated_and_deleted_items_go() -> None:
    h = _conversation()
    h.observe(
        "conversation.item.done",
        {
            "item": {
                "id": "u2",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "ok"}],
            }
        },
    )
    h.observe("conversation.item.deleted", {"item_id": "u1"})
    items, _ = h.replay(max_items=100, max_chars=100_000)
    assert [i["id"] for i in items] == ["f1", "o1", "a1", "u2"]
    assert items[-1]["content"][0]["text"] == "ok"


def test_the_budget_keeps_the_most_recent_and_a_call_with_its_output() -> None:
    h = _conversation()
    items, left_out = h.replay(max_items=2, max_chars=100_000)
    assert [i["id"] for i in items] == ["a1", "u2"]
    assert left_out == 3
    # Three items: the pair f1+o1 would make four, so it and everything older stay out.
    items, left_out = h.replay(max_items=3, max_chars=100_000)
    assert [i["id"] for i in items] == ["a1", "u2"]
    items, _ = h.replay(max_items=4, max_chars=100_000)
    assert [i["id"] for i in items] == ["f1", "o1", "a1", "u2"]
    size = sum(len(json.dumps(i, separators=(",", ":"))) for i in items[-2:])
    items, _ = h.replay(max_items=100, max_chars=size)
    assert [i["id"] for i in items] == ["a1", "u2"]
    assert h.replay(max_items=0, max_chars=100)[0] == []


def test_an_audio_turn_without_transcript_and_an_orphan_output_are_left_out() -> None:
    h = ConversationHistory()
    h.observe(
        *_added(
            {
                "id": "u1",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )
    )
    h.observe(*_added({"id": "o9", "type": "function_call_output", "call_id": "zz", "output": "x"}))
    h.observe(
        *_added(
            {
                "id": "u2",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
    )
    items, left_out = h.replay(max_items=10, max_chars=10_000)
    assert [i["id"] for i in items] == ["u2"]
    assert left_out == 2


def test_a_cut_short_assistant_turn_keeps_about_what_was_heard() -> None:
    h = ConversationHistory()
    text = "one two three four five six seven eight nine ten"
    h.observe(
        *_added(
            {
                "id": "a1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "transcript": text}],
            }
        )
    )
    h.note_audio_ms("a1", 4000.0)
    h.observe("conversation.item.truncated", {"item_id": "a1", "audio_end_ms": 2000})
    items, _ = h.replay(max_items=10, max_chars=10_000)
    heard = items[0]["content"][0]["text"]
    assert text.startswith(heard)
    assert heard == "one two three four five six"[: len(heard)]
    assert 15 <= len(heard) <= 25  # about half, whole words


def test_the_history_is_bounded_and_counts_what_it_dropped() -> None:
    h = ConversationHistory(max_items=3)
    for i in range(5):
        h.observe(
            *_added(
                {
                    "id": f"u{i}",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": str(i)}],
                }
            )
        )
    assert h.ids == ["u2", "u3", "u4"]
    assert h.dropped == 2


def test_the_send_queue_is_bounded_in_bytes_and_keeps_order() -> None:
    q = SendQueue(max_bytes=10)
    q.put("aaaa", "e1", {"type": "a"})
    q.put("bbbb", "e2", {"type": "b"})
    with pytest.raises(errors.SendQueueFullError, match="reconnect_queue_bytes"):
        q.put("cccc", "e3", {"type": "c"})
    assert len(q) == 2
    assert q.bytes == 8
    peeked = q.peek()
    assert peeked is not None
    assert peeked[0] == "aaaa"
    q.pop()
    assert q.drain_ids() == ("e2",)
    assert q.bytes == 0
    assert q.peek() is None
