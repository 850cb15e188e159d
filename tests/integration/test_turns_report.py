"""`rtvoice demo --report`: the QoE report of a demo call (matplotlib, the ``report`` extra),
and the demo's turn lines."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

import rtvoice
from rtvoice import qoe
from rtvoice.audio.sources import write_wav
from rtvoice.cli import main
from rtvoice.simulator import Simulator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def voice_like(path: Path, seconds: float = 1.2) -> None:
    t = np.arange(int(16000 * seconds)) / 16000
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    pcm = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))
    write_wav(path, pcm.astype(np.float32), 16000)


@pytest.mark.slow
def test_demo_writes_a_self_contained_html_report_and_prints_its_turns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = tmp_path / "in.wav"
    voice_like(clip)
    report = tmp_path / "qoe.html"
    status = main(["demo", "--input", str(clip), "--json", "--report", str(report)])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert len(summary["turns"]) == 1
    assert summary["turn_latency_median_ms"] == summary["turns"][0]["latency_ms"]
    page = report.read_text(encoding="utf-8")
    # One image, inline: the page needs nothing else.
    [image] = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert base64.b64decode(image).startswith(PNG_SIGNATURE)
    assert "http" not in page.replace(summary["server"], "")  # no external resources
    # The turn table: a header and one row per turn, with the measured latency.
    turn_table = page.split("<h2>Turns</h2>", 1)[1].split("</table>", 1)[0]
    assert turn_table.count("<tr>") == 1 + len(summary["turns"])
    assert f"{summary['turns'][0]['latency_ms']:.1f}" in turn_table
    for section in ("<h2>Connect</h2>", "<h2>Call settings</h2>", "ice_dtls_ms", "simulator loss"):
        assert section in page


def test_a_png_report_is_the_plots_alone(tmp_path: Path) -> None:
    series = qoe.QoeSeries(0)
    for k in range(6):
        series.sample(k * 500_000_000, {}, {"jitter": {"current_delay_ms": 20.0}})
    tracker = qoe.TurnTracker()
    tracker.update(
        {"voiced_frames": 30, "last_voiced_ns": 1_000_000_000},
        {"onsets": [{"index": 0, "play_ns": 1_700_000_000}]},
        2_000_000_000,
    )
    report = qoe.CallReport(points=list(series.points), marks=[], turns=list(tracker.turns))
    out = qoe.write_report(tmp_path / "qoe.png", report)
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def test_a_session_report_after_the_call(tmp_path: Path) -> None:
    async def call() -> Path:
        async with Simulator() as sim:
            session = rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key)
            async with session:
                await asyncio.sleep(1.2)  # two or three series points
        return qoe.write_session_report(tmp_path / "qoe.html", session, settings={"k": "v"})

    page = asyncio.run(call()).read_text(encoding="utf-8")
    assert "<td>transport</td><td>webrtc</td>" in page
    assert "<td>k</td><td>v</td>" in page


def test_demo_refuses_a_report_it_cannot_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--report", "qoe.pdf"]) == 1
    assert "the report is a .html or .png file" in capsys.readouterr().err
