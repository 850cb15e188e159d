"""The CLI takes its key from OPENAI_API_KEY or a file, and warns about one on the command line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

import rtvoice.session
from rtvoice import errors
from rtvoice.cli import main

KEY = "corp-gw-7f3a9c21d4e5b6a7980112233445WXYZ"
BASE = "http://127.0.0.1:9/v1"


@pytest.fixture
def seen_keys(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replaces ``rtvoice.session.connect``: records the key the CLI passes, then fails the
    connection so that the command ends at once."""
    keys: list[Any] = []

    def fake_connect(**kwargs: Any) -> Any:
        keys.append(kwargs["api_key"])
        raise errors.ConnectionError("not connecting in this test")

    monkeypatch.setattr(rtvoice.session, "connect", fake_connect)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return keys


def test_api_key_file_is_read_and_its_key_passed_to_the_session(
    tmp_path: Path, seen_keys: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert main(["demo", "--base-url", BASE, "--api-key-file", str(key_file)]) == 1
    assert seen_keys == [KEY]
    err = capsys.readouterr().err
    assert "warning" not in err
    assert KEY not in err


def test_api_key_file_dash_reads_the_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, seen_keys: list[Any]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"  {KEY}\n"))
    assert main(["demo", "--base-url", BASE, "--api-key-file", "-"]) == 1
    assert seen_keys == [KEY]


def test_api_key_on_the_command_line_warns_on_stderr_that_it_is_visible(
    seen_keys: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--base-url", BASE, "--api-key", KEY]) == 1
    assert seen_keys == [KEY]
    out, err = capsys.readouterr()
    assert err.startswith("rtvoice: warning: --api-key is visible to other users")
    assert "OPENAI_API_KEY or use --api-key-file" in err
    assert KEY not in out + err


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read --api-key-file"),
        ("", "exactly one key"),
        (f"{KEY} x", "exactly one key"),
    ],
    ids=["missing", "empty", "two_words"],
)
@pytest.mark.parametrize("command", ["demo", "talk"])
def test_an_unusable_api_key_file_is_one_error_line_that_names_the_path_not_the_content(
    tmp_path: Path,
    seen_keys: list[Any],
    capsys: pytest.CaptureFixture[str],
    command: str,
    content: str | None,
    reason: str,
) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    assert main([command, "--base-url", BASE, "--api-key-file", str(key_file)]) == 1
    assert seen_keys == []
    err = capsys.readouterr().err
    assert err.startswith(f"rtvoice {command}: error: ")
    assert reason in err
    assert str(key_file) in err
    assert KEY not in err


def test_api_key_and_api_key_file_together_are_a_usage_error(
    tmp_path: Path, seen_keys: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["demo", "--api-key", KEY, "--api-key-file", str(tmp_path / "key")])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert seen_keys == []
