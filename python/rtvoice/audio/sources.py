"""Audio sources and sinks for sessions: WAV files and (lazily) sound devices.

A source runs on its own thread and calls ``push(pcm, sample_rate)``; the session's uplink turns
that into packets on its own sample clock, so a source only has to deliver audio no later than
real time.
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DeviceError",
    "MicrophoneSource",
    "SpeakerSink",
    "WavSource",
    "read_wav",
    "write_wav",
]

FloatArray = npt.NDArray[np.float32]


class DeviceError(RuntimeError):
    """No usable sound device (PortAudio missing, no device, device refused the format)."""


def read_wav(path: str | Path) -> tuple[FloatArray, int]:
    """Read a 16-bit PCM WAV file as mono float32 and its sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
            rate_hz = w.getframerate()
            channels = w.getnchannels()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from exc
    pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(pcm, dtype=np.float32), rate_hz


def write_wav(path: str | Path, pcm: FloatArray, rate_hz: int) -> None:
    """Write mono float32 audio as a 16-bit PCM WAV file."""
    data = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
    ints = np.round(data * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(ints.tobytes())


class WavSource:
    """Plays a WAV file (or an array) as a microphone: 20 ms chunks at real-time pace on a
    thread, then ``tail_s`` of silence. ``done`` is set when it has pushed everything."""

    def __init__(
        self,
        path_or_pcm: str | Path | FloatArray,
        rate_hz: int | None = None,
        *,
        lead_s: float = 0.5,
        tail_s: float = 1.0,
        chunk_ms: int = 20,
    ) -> None:
        if isinstance(path_or_pcm, (str, Path)):
            self.pcm, self.rate_hz = read_wav(path_or_pcm)
        else:
            if rate_hz is None:
                raise ValueError("rate_hz is required with an array")
            self.pcm, self.rate_hz = np.asarray(path_or_pcm, dtype=np.float32), rate_hz
        lead = np.zeros(int(lead_s * self.rate_hz), dtype=np.float32)
        tail = np.zeros(int(tail_s * self.rate_hz), dtype=np.float32)
        self._signal = np.concatenate([lead, self.pcm, tail])
        self.lead_s = lead_s
        self._chunk = self.rate_hz * chunk_ms // 1000
        self._chunk_ms = chunk_ms
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_ns: int | None = None

    @property
    def duration_s(self) -> float:
        return self._signal.size / self.rate_hz

    def start(self, push: Callable[[Any, int], Any]) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(push,), name="rtvoice-wav-source", daemon=True
        )
        self._thread.start()

    def _run(self, push: Callable[[Any, int], Any]) -> None:
        start = time.monotonic_ns()
        self.start_ns = start
        period_ns = self._chunk_ms * 1_000_000
        for k, offset in enumerate(range(0, self._signal.size, self._chunk)):
            due = start + k * period_ns
            delay_s = (due - time.monotonic_ns()) / 1e9
            if delay_s > 0 and self._stop.wait(delay_s):
                return
            try:
                push(self._signal[offset : offset + self._chunk], self.rate_hz)
            except Exception:  # the session closed under us
                return
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)


def _sounddevice() -> Any:
    try:
        import sounddevice  # type: ignore[import-untyped]
    except OSError as exc:  # PortAudio library missing
        raise DeviceError(
            f"sound devices need the PortAudio library ({exc}); on Debian: apt-get install "
            "libportaudio2"
        ) from exc
    except ImportError as exc:
        raise DeviceError(
            "sound devices need the sounddevice package: pip install sounddevice"
        ) from exc
    return sounddevice


class MicrophoneSource:
    """The default input device through sounddevice as an :class:`AudioSource` of any session;
    its callback pushes a copy of each block through ``push`` (Python). The native path, one
    call into the Uplink per block with voice processing, is
    :class:`rtvoice.audio.devices.DeviceStreams` (what ``rtvoice talk`` uses)."""

    def __init__(self, rate_hz: int = 48000, block_ms: int = 10, device: Any = None) -> None:
        self.rate_hz = rate_hz
        self.block = rate_hz * block_ms // 1000
        self.device = device
        self._stream: Any = None

    def start(self, push: Callable[[Any, int], Any]) -> None:
        sd = _sounddevice()

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            push(indata[:, 0].copy(), self.rate_hz)

        try:
            self._stream = sd.InputStream(
                samplerate=self.rate_hz,
                blocksize=self.block,
                channels=1,
                dtype="float32",
                device=self.device,
                callback=callback,
            )
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"cannot open the microphone: {exc}") from exc

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class SpeakerSink:
    """The default output device; its callback pulls from a session's downlink (the device is
    the playout clock) through ``pull`` (Python); see
    :class:`rtvoice.audio.devices.DeviceStreams` for the native path."""

    def __init__(self, rate_hz: int = 48000, block_ms: int = 10, device: Any = None) -> None:
        self.rate_hz = rate_hz
        self.block = rate_hz * block_ms // 1000
        self.device = device
        self._stream: Any = None

    def start(self, pull: Callable[[int], FloatArray]) -> None:
        sd = _sounddevice()

        def callback(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            outdata[:, 0] = pull(frames)

        try:
            self._stream = sd.OutputStream(
                samplerate=self.rate_hz,
                blocksize=self.block,
                channels=1,
                dtype="float32",
                device=self.device,
                callback=callback,
            )
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"cannot open the speaker: {exc}") from exc

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
