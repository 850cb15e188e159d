"""Synthetic but realistic echo scenes for benchmarks/aec/run_aec.py.

Each scene is 48 kHz mono, three sections:

  far-end only   0 ... FAR_END_S            the assistant talks; the microphone hears its echo
  near-end only  ... + NEAR_ONLY_S          the user talks alone
  double-talk    ... + DOUBLE_TALK_S        both at once

The far end is espeak-ng speech played through a mildly nonlinear loudspeaker (soft clipping),
then a room impulse response at -6 dB coupling: 30-200 ms of extra delay for the device path, the
direct path, a few early reflections (the table, the enclosure) and a diffuse tail decaying with
the room's RT60. The near end is another voice at the same level as the echo, plus white noise
40 dB under the speech. Everything is seeded: the same scene every run.

How loud the tail is against the direct path follows from the geometry, by the diffuse-field
(Sabine) model: the critical distance r_c = 0.057 sqrt(V / RT60) m of a room of V m^3, and a
reverberant-to-direct energy ratio of (r / r_c)^2 at r m between loudspeaker and microphone. Each
room is measured at two distances: a device's (a laptop's or a kiosk's own loudspeaker, 0.2-0.5
m from its microphone; the direct path dominates) and far-field (a loudspeaker across the room,
2-5 m; the tail dominates).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

RATE = 48000
FAR_END_S = 6.0
NEAR_ONLY_S = 3.0
DOUBLE_TALK_S = 6.0
ECHO_GAIN_DB = -6.0
SPEECH_DBFS = -24.0
NOISE_BELOW_SPEECH_DB = 40.0

Audio = npt.NDArray[np.float32]

FAR_TEXT = (
    "The weather in Paris is mild today, with light rain in the afternoon. "
    "Would you like me to book a table for two at eight, or should I look for something closer "
    "to your hotel? I can also read you the headlines while you wait."
)
NEAR_TEXT = (
    "Yes please, book the table at eight and send the confirmation to my phone. "
    "Actually wait, make it half past eight, and ask for a seat by the window if they have one."
)


@dataclass(frozen=True)
class Room:
    name: str
    rt60_s: float
    volume_m3: float
    delay_ms: int  # extra delay of the device path (buffers, converters)
    distance_m: float  # loudspeaker to microphone

    @property
    def critical_distance_m(self) -> float:
        return 0.057 * float(np.sqrt(self.volume_m3 / self.rt60_s))

    @property
    def drr_db(self) -> float:
        """Direct-to-reverberant energy ratio of the diffuse-field model at this distance."""
        return 20 * float(np.log10(self.critical_distance_m / self.distance_m))

    @property
    def far_field(self) -> bool:
        return self.distance_m > self.critical_distance_m


ROOMS = (
    Room("office", 0.2, 40.0, 30, 0.2),
    Room("living", 0.4, 80.0, 100, 0.5),
    Room("hall", 0.6, 400.0, 200, 0.5),
    Room("office", 0.2, 40.0, 30, 2.0),
    Room("living", 0.4, 80.0, 100, 3.0),
    Room("hall", 0.6, 400.0, 200, 5.0),
)


@dataclass
class Scene:
    room: Room
    far: Audio  # what the speaker is given (the reference)
    echo: Audio  # its echo at the microphone
    near: Audio  # the user's clean speech at the microphone
    noise: Audio
    far_end: slice
    near_only: slice
    double_talk: slice

    @property
    def mic(self) -> Audio:
        return (self.echo + self.near + self.noise).astype(np.float32)

    @property
    def mic_without_echo(self) -> Audio:
        return (self.near + self.noise).astype(np.float32)


def espeak(text: str, voice: str) -> Audio:
    """espeak-ng speech at 48 kHz."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise SystemExit("the AEC benchmark needs espeak-ng (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768
    g = np.gcd(RATE, rate)
    return resample_poly(pcm, RATE // g, rate // g).astype(np.float32)


def _fit(x: Audio, seconds: float) -> Audio:
    n = int(seconds * RATE)
    reps = int(np.ceil(n / max(x.size, 1)))
    return np.tile(x, reps)[:n].astype(np.float32)


def _level(x: Audio, dbfs: float) -> Audio:
    active = x[np.abs(x) > 1e-4]
    rms = float(np.sqrt(np.mean(active.astype(np.float64) ** 2))) if active.size else 1.0
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def room_impulse_response(room: Room, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Extra delay, a direct path, early reflections, then a diffuse tail decaying 60 dB in
    RT60 with (distance / critical distance)^2 of the direct path's energy; scaled to
    ECHO_GAIN_DB of energy coupling."""
    d = int(room.delay_ms * RATE / 1000)
    length = int(room.rt60_s * RATE)
    t = np.arange(length) / RATE
    h = np.zeros(d + length)
    h[d] = 1.0
    for k in range(6):
        at = d + int(rng.uniform(0.002, 0.02) * RATE)
        h[at] += rng.uniform(-0.6, 0.6) / (1 + k * 0.3)
    onset = int(0.005 * RATE)
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / room.rt60_s)
    tail[:onset] = 0.0
    tail *= np.sqrt((room.distance_m / room.critical_distance_m) ** 2 / (tail**2).sum())
    h[d:] += tail
    h *= 10 ** (ECHO_GAIN_DB / 20) / np.sqrt((h**2).sum())
    return h


def loudspeaker(x: Audio) -> Audio:
    """Mild nonlinearity: soft clipping that bends the loudest peaks by a few percent."""
    drive = 0.5
    return (np.tanh(drive * x) / drive).astype(np.float32)


def make_scene(room: Room, far_speech: Audio, near_speech: Audio, seed: int) -> Scene:
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    total_s = FAR_END_S + NEAR_ONLY_S + DOUBLE_TALK_S
    n = int(total_s * RATE)
    far_end = slice(0, int(FAR_END_S * RATE))
    near_only = slice(far_end.stop, far_end.stop + int(NEAR_ONLY_S * RATE))
    double_talk = slice(near_only.stop, n)

    far = np.zeros(n, np.float32)
    far_clip = _level(_fit(far_speech, FAR_END_S + DOUBLE_TALK_S), SPEECH_DBFS + 4)
    far[far_end] = far_clip[: far_end.stop]
    far[double_talk] = far_clip[far_end.stop : far_end.stop + (n - double_talk.start)]
    h = room_impulse_response(room, rng)
    echo = fftconvolve(loudspeaker(far), h)[:n].astype(np.float32)

    near = np.zeros(n, np.float32)
    near_clip = _level(_fit(near_speech, NEAR_ONLY_S + DOUBLE_TALK_S), SPEECH_DBFS)
    near[near_only.start :] = near_clip[: n - near_only.start]
    noise_rms = 10 ** ((SPEECH_DBFS - NOISE_BELOW_SPEECH_DB) / 20)
    noise = (rng.standard_normal(n) * noise_rms).astype(np.float32)
    return Scene(room, far, echo, near, noise, far_end, near_only, double_talk)


def make_scenes() -> list[Scene]:
    far_speech = espeak(FAR_TEXT, "en-us")
    near_speech = espeak(NEAR_TEXT, "en+f3")
    return [make_scene(room, far_speech, near_speech, seed=i) for i, room in enumerate(ROOMS)]
