"""A user-mode PulseAudio server for device tests, and the simulator on a thread of its own.

The server runs with a private runtime directory and socket, no daemon, no autospawn, no D-Bus:

- ``speaker``: a null sink, the speaker (its monitor is what was played);
- ``micmix``: a null sink whose monitor is the microphone; a WAV played into it with paplay is
  the user talking;
- optionally an acoustic loop: ``module-loopback`` from the speaker's monitor into ``micmix``,
  attenuated and delayed, so the assistant's voice comes back into the microphone.

PortAudio reaches the server through ALSA's pulse plugin (libasound2-plugins): the ALSA devices
``rtv_mic`` and ``rtv_speaker`` (an ``.asoundrc`` in a private HOME) name the two ends, so the
tests choose devices by name as a user would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MIC = "rtv_mic"
SPEAKER = "rtv_speaker"
RATE_HZ = 48000

_ASOUNDRC = """\
pcm.rtv_speaker { type pulse device speaker hint { show on description "rtvoice test speaker" } }
pcm.rtv_mic { type pulse device micmix.monitor hint { show on description "rtvoice test mic" } }
"""


def require_pulse() -> None:
    missing = [b for b in ("pulseaudio", "pactl", "paplay", "parec") if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"device tests need PulseAudio ({', '.join(missing)} not found): apt-get install "
            "pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 "
            "(scripts/bootstrap.sh installs them)"
        )


class PulseServer:
    """One private PulseAudio server; :attr:`env` is the environment of its clients."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "native"
        home = root / "home"
        home.mkdir(parents=True)
        (home / ".asoundrc").write_text(_ASOUNDRC)
        script = root / "server.pa"
        script.write_text(
            f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n"
            f"load-module module-null-sink sink_name=speaker rate={RATE_HZ} channels=1\n"
            f"load-module module-null-sink sink_name=micmix rate={RATE_HZ} channels=1\n"
            "set-default-sink speaker\n"
            "set-default-source micmix.monitor\n"
        )
        self.env = {
            **os.environ,
            "HOME": str(home),
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(root / "runtime"),
            "PULSE_STATE_PATH": str(root / "state"),
        }
        self.log = root / "pulseaudio.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--disallow-exit",
                "-n",
                "-F",
                str(script),
                "--log-target=stderr",
            ],
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited: {self.log.read_text()[-2000:]}")
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pulseaudio did not start: {self.log.read_text()[-2000:]}")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10
        )

    def add_acoustic_loop(self, attenuation_db: float = 10.0, delay_ms: int = 60) -> None:
        """The speaker's output back into the microphone, attenuation_db down, delay_ms late."""
        module = self.pactl(
            "load-module",
            "module-loopback",
            "source=speaker.monitor",
            "sink=micmix",
            f"latency_msec={delay_ms}",
            "source_dont_move=true",
            "sink_dont_move=true",
        ).stdout.strip()
        factor = 10 ** (-attenuation_db / 20)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for line in self.pactl("list", "short", "sink-inputs").stdout.splitlines():
                fields = line.split()
                if len(fields) >= 4 and fields[3] == "module-loopback.c":
                    self.pactl("set-sink-input-volume", fields[0], f"{factor:.4f}")
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the loopback module {module} has no sink input")

    def play_into_mic(self, wav: Path) -> subprocess.Popen[bytes]:
        """The user speaks: the WAV into the microphone's sink, at real-time pace."""
        return subprocess.Popen(["paplay", "-d", "micmix", str(wav)], env=self.env)

    def record_speaker(self, path: Path) -> subprocess.Popen[bytes]:
        """Everything the speaker plays, as raw 48 kHz mono int16, until terminated."""
        with path.open("wb") as out:
            return subprocess.Popen(
                [
                    "parec",
                    "-d",
                    "speaker.monitor",
                    "--raw",
                    "--format=s16le",
                    f"--rate={RATE_HZ}",
                    "--channels=1",
                ],
                env=self.env,
                stdout=out,
            )

    def kill(self) -> None:
        """The sound server dies: every device disappears at once."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseServer]:
    require_pulse()
    server = PulseServer(tmp_path / "pulse")
    try:
        yield server
    finally:
        server.stop()


class SimulatorThread:
    """``rtvoice.simulator.Simulator`` on its own event loop and thread, so that a subprocess
    can talk to it while the test inspects its calls."""

    def __init__(self, **kwargs: Any) -> None:
        from rtvoice.simulator import Simulator

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.sim = Simulator(**kwargs)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    @property
    def base_url(self) -> str:
        return str(self.sim.base_url)

    @property
    def api_key(self) -> str:
        return str(self.sim.api_key)

    def calls(self) -> list[Any]:
        async def snapshot() -> list[Any]:
            return list(self.sim.calls.values())

        return asyncio.run_coroutine_threadsafe(snapshot(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def simulator() -> Iterator[SimulatorThread]:
    sim = SimulatorThread()
    try:
        yield sim
    finally:
        sim.stop()


def talk_command(sim: SimulatorThread, key_file: Path, *args: str) -> list[str]:
    key_file.write_text(sim.api_key)
    return [
        sys.executable,
        "-m",
        "rtvoice.cli",
        "talk",
        "--base-url",
        sim.base_url,
        "--api-key-file",
        str(key_file),
        "--input-device",
        MIC,
        "--output-device",
        SPEAKER,
        *args,
    ]
