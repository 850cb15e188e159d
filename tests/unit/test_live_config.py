"""Live session configuration checks of the simulator (rtvoice.simulator.live_config)."""

from __future__ import annotations

from typing import Any

import pytest

from rtvoice.simulator.live_config import (
    check_fork_config,
    check_session_config,
    check_session_update,
    fork_resource,
    merge_update,
    resolve_session,
)

RESPONSES: dict[str, Any] = {
    "type": "responses",
    "responses": {"model": "gpt-5", "tools": [{"type": "function", "name": "f"}]},
}


@pytest.mark.parametrize(
    ("config", "webrtc", "code", "param"),
    [
        (
            {"model": "m", "audio": {"format": {"type": "audio/pcm", "rate": 24000}}},
            True,
            "unknown_parameter",
            "session.audio.format",
        ),
        ({"model": "m", "idle_timeout_s": 5}, False, "unknown_parameter", "session.idle_timeout_s"),
        ({"model": 3}, False, "invalid_type", "session.model"),
        ({"model": "m", "store": "yes"}, False, "invalid_type", "session.store"),
        (
            {"model": "m", "input": [{"role": "tool", "content": []}]},
            False,
            "invalid_value",
            "session.input[0].role",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"text": "x" * 40000}]}]},
            False,
            "token_limit_exceeded",
            "session.input",
        ),
        (
            {
                "model": "m",
                "delegation": {
                    "type": "responses",
                    "responses": {
                        "model": "g",
                        "tools": [{"type": "function", "name": "f", "extra": 1}],
                    },
                },
            },
            False,
            "unknown_parameter",
            "session.delegation.responses.tools[0].extra",
        ),
        (
            {"model": "m", "delegation": {"type": "decisions", "decisions": {}}},
            False,
            "unsupported_delegation",
            "session.delegation.type",
        ),
    ],
)
def test_bad_configs_name_the_dotted_param(
    config: dict[str, Any], webrtc: bool, code: str, param: str
) -> None:
    problem = check_session_config(config, webrtc=webrtc)
    assert problem is not None
    assert (problem.code, problem.param) == (code, param)


def test_good_configs_resolve_defaults() -> None:
    assert check_session_config({"model": "m", "delegation": RESPONSES}, webrtc=True) is None
    res = resolve_session({"model": "m"}, session_id="live_1", expires_at=9, webrtc=False)
    assert res["audio"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "output": {"voice": "marin"},
    }
    assert (res["delegation"], res["input"], res["store"], res["status"]) == (
        {"type": "client"},
        [],
        False,
        "active",
    )
    assert (
        "format"
        not in resolve_session({"model": "m"}, session_id="live_1", expires_at=9, webrtc=True)[
            "audio"
        ]
    )


def test_update_is_sparse_and_keeps_the_delegation_type() -> None:
    current = resolve_session(
        {"model": "m", "delegation": RESPONSES}, session_id="s", expires_at=1, webrtc=True
    )
    update = {"delegation": {"type": "responses", "responses": {"model": "gpt-5.1"}}}
    assert check_session_update(update, current) is None
    merged = merge_update(current, update)
    assert merged["delegation"]["responses"] == {
        "model": "gpt-5.1",
        "tools": RESPONSES["responses"]["tools"],
    }
    problem = check_session_update({"delegation": {"type": "client"}}, current)
    assert problem is not None
    assert problem.code == "immutable_field_update"
    problem = check_session_update({"model": "x"}, current)
    assert problem is not None
    assert (problem.code, problem.param) == ("immutable_field_update", "session.model")


def test_fork_overrides() -> None:
    source = resolve_session(
        {"model": "m", "store": True}, session_id="s", expires_at=1, webrtc=True
    )
    problem = check_fork_config({"delegation": RESPONSES | {"responses": {}}}, source, webrtc=True)
    assert problem is not None
    assert problem.param == "session.delegation"
    problem = check_fork_config({"instructions": "x"}, source, webrtc=False)
    assert problem is not None
    assert problem.code == "immutable_field_update"
    assert check_fork_config({}, source, webrtc=False) is None
    fmt = {"type": "audio/pcm", "rate": 16000}
    forked = fork_resource(
        source,
        {"audio": {"format": fmt}, "store": False},
        session_id="n",
        expires_at=2,
        webrtc=False,
    )
    assert forked["audio"]["format"] == fmt
    assert (forked["id"], forked["store"], forked["model"]) == ("n", False, "m")
