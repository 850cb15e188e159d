"""Client events that cannot be sent are refused when prepared; only sent events are counted."""

from __future__ import annotations

import math
from typing import Any

import pytest

from rtvoice import events as ev


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_client_event_holding_nan_or_infinity_is_refused_naming_the_field(number: float) -> None:
    codec = ev.EventCodec()
    event = ev.session_update(speed=number)
    with pytest.raises(ValueError, match=r"session\.audio\.output\.speed is .*finite number"):
        codec.prepare(event)
    with pytest.raises(ValueError, match=r"session\.audio\.output\.speed"):
        codec.encode(event)


def test_non_finite_numbers_are_found_inside_lists_and_in_beta_mode() -> None:
    event = ev.response_create(tools=[{"type": "function", "name": "f", "weight": math.nan}])
    with pytest.raises(ValueError, match=r"response\.create field response\.tools\[0\]\.weight"):
        ev.EventCodec("beta").prepare(event)


def test_a_refused_client_event_is_not_remembered_for_error_matching() -> None:
    codec = ev.EventCodec()
    with pytest.raises(ValueError, match=r"response\.create field x is nan"):
        codec.prepare({"type": "response.create", "event_id": "bad", "x": math.nan})
    assert codec.sent_event("bad") is None


def test_prepare_does_not_count_an_event_as_sent_until_note_sent() -> None:
    codec = ev.EventCodec()
    codec.prepare(ev.response_create())
    codec.encode(ev.response_cancel())
    assert codec.sent_count == 0
    codec.note_sent()
    assert codec.sent_count == 1


@pytest.mark.parametrize("session", ["garbage", [("voice", "marin")], 42, b"{}", ""])
def test_session_update_with_a_non_mapping_raises_type_error_asking_for_a_mapping(
    session: Any,
) -> None:
    with pytest.raises(TypeError, match=r"session must be a mapping \(e\.g\. a dict\)"):
        ev.session_update(session)
