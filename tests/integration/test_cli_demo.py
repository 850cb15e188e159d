from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtvoice.audio.sources import read_wav, write_wav
from rtvoice.cli import main


def _voice_like(path: Path, seconds: float = 1.0) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    pcm = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))
    write_wav(path, pcm.astype(np.float32), 16000)


def test_demo_runs_end_to_end_and_prints_a_json_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "in.wav"
    out = tmp_path / "out.wav"
    _voice_like(clip)
    status = main(["demo", "--input", str(clip), "--output", str(out), "--json", "--loss", "0.05"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True
    assert summary["connect_ms"]["total_ms"] > 0
    assert summary["packets_sent"] > 50
    assert summary["packets_received"] > 20
    assert summary["events"]["response.done"] >= 1
    assert summary["mouth_to_ear_ms"] is not None
    played, rate = read_wav(out)
    assert rate == 48000
    assert played.size / rate == pytest.approx(summary["played_seconds"], abs=0.05)
    assert float(np.abs(played).max()) > 0.05  # the echoed voice was played


def test_demo_failure_is_one_clear_line_and_a_nonzero_status(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000")
    status = main(["demo", "--base-url", "http://127.0.0.1:9/v1"])
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("rtvoice demo: error: could not connect to http://127.0.0.1:9/v1")
    assert "sk-test-0000" not in err


def test_demo_falls_back_to_websocket_when_ice_is_blocked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["demo", "--json", "--block-ice", "--seconds", "4"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transport"] == "websocket"
    assert "ICE" in summary["transport_fallback"]
    assert summary["packets_sent"] > 50


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_demo_holds_a_live_api_conversation(
    transport: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["demo", "--model", "gpt-live-1", "--transport", transport, "--json"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["api"] == "live"
    assert str(summary["call_id"]).startswith("live_")
    assert summary["events"]["session.started"] == 1
    assert summary["events"]["session.output_transcript.delta"] >= 1
    assert summary["transcripts"]
    assert summary["transcripts"][0].startswith("You said")
    assert summary["played_seconds"] > 1.0
    assert len(summary["turns"]) >= 1
