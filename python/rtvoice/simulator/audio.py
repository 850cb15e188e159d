"""Audio for the simulator: a server-side energy VAD over 20 ms frames, Opus framing, and a
deterministic speech-like test signal."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from rtvoice._core import OpusEncoder

__all__ = ["EnergyVad", "VadEvent", "encode_opus_frames", "frame_dbfs", "speechlike"]

RATE_HZ = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
FRAME_MS = 20
#: What a simulated call records for tests is bounded, so a long call or a long-running
#: `rtvoice serve-sim` stays small: events, and inbound packets and decoded audio (5 minutes).
MAX_RECORDED_EVENTS = 20_000
MAX_INPUT_FRAMES = 5 * 60 * 1000 // FRAME_MS
#: Replies whose sent audio a call keeps (for truncation and tests), the most recent.
MAX_PLAYED_REPLIES = 256


def frame_dbfs(frame: npt.NDArray[np.int16]) -> float:
    """RMS level of an int16 frame in dB relative to full scale (-120 for digital silence)."""
    if frame.size == 0:
        return -120.0
    x = frame.astype(np.float64) / 32768.0
    rms = math.sqrt(float(np.mean(x * x)))
    return 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


@dataclass
class VadEvent:
    kind: str  # "start" or "stop"
    audio_ms: int  # start: speech start minus prefix padding; stop: detection time


@dataclass
class EnergyVad:
    """Frame-level energy VAD with the semantics of server_vad's timing parameters.

    A frame is speech when its level exceeds ``threshold_dbfs``. Speech starts after
    ``min_speech_ms`` of consecutive speech frames (``audio_ms`` = first speech frame minus
    ``prefix_padding_ms``) and stops after ``silence_duration_ms`` of consecutive non-speech
    frames (``audio_ms`` = the time of detection, silence included, as the API reports it).
    Times are audio milliseconds since the first frame fed.
    """

    threshold_dbfs: float = -45.0
    min_speech_ms: int = 60
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    frames_fed: int = 0
    in_speech: bool = False
    _run_speech: int = 0
    _run_silence: int = 0
    last_speech_end_ms: int = field(default=0)

    def feed(self, frame: npt.NDArray[np.int16]) -> VadEvent | None:
        speech = frame_dbfs(frame) > self.threshold_dbfs
        self.frames_fed += 1
        now_ms = self.frames_fed * FRAME_MS
        if speech:
            self._run_speech += 1
            self._run_silence = 0
            self.last_speech_end_ms = now_ms
        else:
            self._run_silence += 1
            self._run_speech = 0
        if not self.in_speech and self._run_speech * FRAME_MS >= self.min_speech_ms:
            self.in_speech = True
            first_ms = now_ms - self._run_speech * FRAME_MS
            return VadEvent("start", max(0, first_ms - self.prefix_padding_ms))
        if self.in_speech and self._run_silence * FRAME_MS >= self.silence_duration_ms:
            self.in_speech = False
            return VadEvent("stop", now_ms)
        return None


def encode_opus_frames(
    pcm: npt.NDArray[np.int16], encoder: OpusEncoder | None = None
) -> list[bytes]:
    """Split 48 kHz mono int16 ``pcm`` into 20 ms frames (the last zero-padded) and encode each."""
    enc = encoder or OpusEncoder(48000, 1, "voip", 32000, 9, True, 10, False)
    n = -(-pcm.size // FRAME_SAMPLES)
    padded = np.zeros(n * FRAME_SAMPLES, dtype=np.int16)
    padded[: pcm.size] = pcm
    return [enc.encode(padded[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(n)]


def speechlike(
    duration_s: float, *, seed: int = 0, level_dbfs: float = -18.0
) -> npt.NDArray[np.int16]:
    """A deterministic voiced signal: a 140 Hz harmonic series with a 4 Hz syllable envelope and a
    slowly gliding pitch, so that it is loud enough for any VAD and easy to correlate."""
    n = int(duration_s * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    rng = np.random.default_rng(seed)
    f0 = 140.0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.28)))
    phase = 2 * np.pi * np.cumsum(f0) / RATE_HZ
    x = np.zeros(n)
    for k in range(1, 9):
        x += np.sin(k * phase) / k
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    fade = np.minimum(1.0, np.minimum(t, t[::-1] if n else t) / 0.02)
    x *= env * fade
    peak = float(np.max(np.abs(x))) if n else 1.0
    rms_target = 10 ** (level_dbfs / 20.0)
    rms = float(np.sqrt(np.mean(x * x))) if n else 1.0
    gain = min(rms_target / max(rms, 1e-9), 0.95 / max(peak, 1e-9))
    return (x * gain * 32767.0).astype(np.int16)
