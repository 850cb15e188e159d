"""`rtvoice talk` through real sound devices: a user-mode PulseAudio server (tests/integration/
pulse.py) with null sinks as the speaker and the microphone, PortAudio reaching it through ALSA's
pulse plugin, against the simulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.integration.pulse import (
    MIC,
    RATE_HZ,
    SPEAKER,
    PulseServer,
    SimulatorThread,
    pulse,
    simulator,
    talk_command,
)

from rtvoice._core import voice_processing_libraries
from rtvoice.audio.sources import read_wav, write_wav
from rtvoice.cli import bundled_clip

__all__ = ["pulse", "simulator"]  # fixtures

pytest.importorskip("sounddevice", reason="device tests need the sounddevice package")


# The user's turn: the first 2 s of the bundled speech clip.
SPEECH_S = 2.0


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    pcm, rate = read_wav(bundled_clip())
    path = tmp_path / "speech.wav"
    write_wav(path, pcm[: int(SPEECH_S * rate)], rate)
    return path


def _run_talk(
    pulse: PulseServer,
    sim: SimulatorThread,
    tmp_path: Path,
    *args: str,
    speech: Path | None = None,
    speak_after_s: float = 1.5,
    timeout_s: float = 40,
    quiet: bool = True,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    cmd = talk_command(sim, tmp_path / "key", "--json", *(["--quiet"] if quiet else []), *args)
    proc = subprocess.Popen(
        cmd, env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    player = None
    if speech is not None:
        time.sleep(speak_after_s)
        player = pulse.play_into_mic(speech)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        if player is not None:
            player.wait(10)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    summary = json.loads(out) if proc.returncode == 0 and out.strip() else None
    return done, summary


def _server_events(sim: SimulatorThread, kind: str) -> list[dict[str, Any]]:
    return [e for call in sim.calls() for e in call.server_events if e.get("type") == kind]


def test_devices_lists_the_test_devices_by_name(pulse: PulseServer) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rtvoice.cli", "devices", "--json"],
        env=pulse.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    devices = {d["name"]: d for d in json.loads(out)}
    assert {MIC, SPEAKER} <= set(devices)
    assert devices[MIC]["max_input_channels"] > 0
    assert devices[SPEAKER]["default_rate_hz"] > 0


def test_talk_holds_a_conversation_through_the_devices(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path, speech: Path
) -> None:
    played = tmp_path / "speaker.raw"
    report = tmp_path / "talk.html"
    recorder = pulse.record_speaker(played)
    try:
        done, summary = _run_talk(
            pulse, simulator, tmp_path, "--seconds", "8", "--report", str(report), speech=speech
        )
    finally:
        recorder.terminate()
        recorder.wait(5)
    assert done.returncode == 0, done.stderr
    assert summary is not None
    # The simulator heard the WAV's speech as one user turn and answered it.
    calls = simulator.calls()
    assert len(calls) == 1
    utterances = calls[0].utterances
    assert len(utterances) == 1
    assert SPEECH_S - 0.5 < utterances[0].pcm.size / RATE_HZ < SPEECH_S + 1.0
    assert summary["events"].get("response.done", 0) >= 1
    # The null sink played the reply (the simulator answers with the user's own speech).
    pcm = np.frombuffer(played.read_bytes(), dtype="<i2").astype(np.float32) / 32768
    frames = pcm[: pcm.size // 960 * 960].reshape(-1, 960)
    loud_ms = int((np.sqrt((frames**2).mean(axis=1)) > 10 ** (-40 / 20)).sum()) * 20
    assert loud_ms > 500
    # The pulse plugin's devices default to 44.1 kHz: both directions ran through the native
    # rate conversion.
    assert summary["device_rates_hz"] == [44100, 44100]
    # The callbacks ran natively on PortAudio's thread (no Python, no GIL).
    assert summary["native_callbacks"] is True
    # One native call per device block, every block counted, none lost: at least 4 s of the
    # 8 s call in 20 ms blocks (the sound server can take 2 s to get both streams going).
    assert summary["uplink"]["device_blocks"] > 200
    assert summary["downlink"]["device_blocks"] > 200
    assert summary["uplink"]["device_input_overflows"] == 0
    assert summary["uplink"]["frames_dropped"] == 0
    # --report: the call's QoE report, with its plots inline.
    assert summary["report"] == str(report)
    html = report.read_text()
    assert "data:image/png;base64," in html


def test_talk_with_sounddevices_python_callbacks_holds_the_conversation_too(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path, speech: Path
) -> None:
    done, summary = _run_talk(
        pulse, simulator, tmp_path, "--seconds", "7", "--callbacks", "python", speech=speech
    )
    assert done.returncode == 0, done.stderr
    assert summary is not None
    assert summary["native_callbacks"] is False
    utterances = simulator.calls()[0].utterances
    assert len(utterances) == 1
    assert SPEECH_S - 0.5 < utterances[0].pcm.size / RATE_HZ < SPEECH_S + 1.0
    assert summary["uplink"]["device_blocks"] > 250
    assert summary["downlink"]["device_blocks"] > 250


def test_talk_hangs_up_after_seconds_when_the_server_sends_nothing(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path
) -> None:
    # Nobody speaks: after session.created the server sends no event at all.
    done, summary = _run_talk(
        pulse, simulator, tmp_path, "--seconds", "2", timeout_s=25, quiet=False
    )
    assert done.returncode == 0, done.stderr
    assert summary is not None
    assert 2.0 <= summary["seconds"] < 4.0
    assert "hung up after" in done.stderr
    # The live status line: state, levels, RTT, jitter buffer, AEC state, device xruns.
    status = [line for line in done.stderr.splitlines() if line.startswith("connected ")]
    assert status
    assert all(k in status[-1] for k in ("dBFS", "rtt", "jb", "aec on", "xruns"))


def _echo_trials(
    pulse: PulseServer, sim: SimulatorThread, tmp_path: Path, speech: Path, n: int, *args: str
) -> list[tuple[int, dict[str, Any]]]:
    """``n`` calls through the acoustic loop (the speaker's monitor back into the microphone at
    -10 dB, 60 ms): for each, the server's speech_started count and the talk summary."""
    pulse.add_acoustic_loop(attenuation_db=10.0, delay_ms=60)
    out = []
    for _ in range(n):
        before = len(sim.calls())
        done, summary = _run_talk(pulse, sim, tmp_path, "--seconds", "8", *args, speech=speech)
        assert done.returncode == 0, done.stderr
        assert summary is not None
        calls = sim.calls()[before:]
        events = [e.get("type") for call in calls for e in call.server_events]
        assert "response.created" in events
        out.append((events.count("input_audio_buffer.speech_started"), summary))
    return out


# The canceller does not keep every reply out: with webrtc-audio-processing 0.3 (AEC2) the first
# 100-200 ms of the first reply got through in 9 of 39 measured calls, and the simulator's VAD
# (-45 dBFS) took that for the user; with 1.3 (AEC3) as the library tunes it, a whole reply in
# 9 of 111; as the core tunes it (aec3_tuning(): the linear filter from 20 ms before the
# estimated delay), in none of 110 with its 72 ms filter and 1 of 70 with the 144 ms one it
# has now. So the claim is made over several calls: at least four of five keep the reply out
# (the user's turn is the only speech_started), where without AEC none does. At 1.4 % (1 in 70)
# a correct build fails this about 0.2 % of the time; at the library tuning's 8 %, about 5 %.
AEC_TRIALS = 5
AEC_CLEAN_AT_LEAST = 4


def _check_aec_trials(trials: list[tuple[int, dict[str, Any]]]) -> None:
    clean = sum(1 for started, _ in trials if started == 1)
    assert clean >= AEC_CLEAN_AT_LEAST, [started for started, _ in trials]
    for _, summary in trials:
        processing = summary["uplink"]["processing"]
        assert processing["aec"] is True
        assert processing["library"] == voice_processing_libraries()[processing["backend"]]
        assert processing["active_render_frames"] > 20  # the far end was really playing


@pytest.mark.slow
def test_with_aec_the_reply_coming_back_through_the_room_is_not_user_speech(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path, speech: Path
) -> None:
    trials = _echo_trials(pulse, simulator, tmp_path, speech, AEC_TRIALS)
    _check_aec_trials(trials)
    clean = [summary for started, summary in trials if started == 1]
    # In a clean call the reply played out and the canceller removed most of its echo.
    assert max(s["uplink"]["processing"]["active_render_frames"] for s in clean) > 100


@pytest.mark.slow
def test_without_aec_the_same_loop_makes_the_server_hear_its_own_reply(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path, speech: Path
) -> None:
    ((started, summary),) = _echo_trials(pulse, simulator, tmp_path, speech, 1, "--no-aec")
    # The reply came back at -10 dB and the server's VAD took it for the user (barge-in).
    assert started >= 2
    assert _server_events(simulator, "output_audio_buffer.cleared")
    assert summary["uplink"]["processing"]["aec"] is False


@pytest.mark.slow
def test_over_websocket_aec_keeps_the_reply_coming_back_through_the_room_out(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path, speech: Path
) -> None:
    # The WebSocket uplink carries 24 kHz PCM16; with voice processing it takes the device's
    # audio at 48 kHz, cancels the echo there and converts after.
    trials = _echo_trials(
        pulse, simulator, tmp_path, speech, AEC_TRIALS, "--transport", "websocket"
    )
    assert all(summary["transport"] == "websocket" for _, summary in trials)
    assert all(call.websocket for call in simulator.calls())
    _check_aec_trials(trials)


def test_a_missing_device_is_a_clear_error_before_connecting(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path
) -> None:
    for option in ("--input-device", "--output-device"):
        cmd = talk_command(simulator, tmp_path / "key", "--seconds", "1")
        cmd[cmd.index(option) + 1] = "no-such-device"
        done = subprocess.run(cmd, env=pulse.env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 1
        kind = "input" if option == "--input-device" else "output"
        assert f"no {kind} device matches 'no-such-device'" in done.stderr
        assert MIC in done.stderr  # the choices are listed
    assert simulator.calls() == []


def test_a_device_that_disappears_mid_call_is_a_clear_error(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path
) -> None:
    cmd = talk_command(simulator, tmp_path / "key", "--seconds", "20", "--quiet")
    proc = subprocess.Popen(
        cmd, env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        while not simulator.calls() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # the call is up and the devices run
        pulse.kill()
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "disappeared during the call" in err
    assert MIC in err or SPEAKER in err


def test_ctrl_c_hangs_up_cleanly(
    pulse: PulseServer, simulator: SimulatorThread, tmp_path: Path
) -> None:
    cmd = talk_command(simulator, tmp_path / "key", "--seconds", "30", "--quiet", "--json")
    proc = subprocess.Popen(
        cmd, env=pulse.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        while not simulator.calls() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "(interrupted)" in err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert summary["seconds"] < 20
    # The call was hung up, not left to time out at the server.
    deadline = time.monotonic() + 5
    while not simulator.calls()[0].closed and time.monotonic() < deadline:
        time.sleep(0.1)
    assert simulator.calls()[0].closed
