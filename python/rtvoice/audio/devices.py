"""Sound devices through sounddevice (PortAudio): listing, choosing by name or index, and the
microphone and speaker streams of a session.

The callbacks are native where the core has them (POSIX): the PortAudio library sounddevice
loaded is opened again by the core (:class:`rtvoice._core.NativeAudioStream`), and its streams
call the pipelines on PortAudio's thread with no Python and no GIL, so an application thread
that holds the GIL cannot delay playout or capture. Otherwise (or with
``native_callbacks=False``) sounddevice's Python callbacks are used, each doing one native call:
the input callback hands the block to
``Uplink.push_from_device`` (the capture path: conversion from the device's rate, voice
processing, the ring), the output callback fills PortAudio's buffer with
``Downlink.pull_into_device`` (the device is the playout clock; conversion to its rate). Devices
are opened at their own default rate when the native resampler handles it.
Both release the GIL inside and count PortAudio's under- and overflow flags in the native
statistics (``device_input_overflows``, ``device_output_underflows``, ...), so nothing in a
callback allocates, logs or takes a lock of ours. A stream that stops delivering blocks (its
device disappeared, its server died) is reported by :meth:`DeviceStreams.check`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from rtvoice import _core
from rtvoice._core import Downlink, Uplink
from rtvoice.audio.sources import DeviceError

__all__ = [
    "DEVICE_RATE_HZ",
    "DeviceInfo",
    "DeviceStreams",
    "import_sounddevice",
    "list_devices",
    "resolve_device",
]

Kind = Literal["input", "output"]
# The rate a device is opened at when its own default rate is not one the native resampler
# converts (the Uplink's and Downlink's rate on WebRTC).
DEVICE_RATE_HZ = 48000
_NATIVE_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
# A stream that has delivered no block for this long is reported as gone; until it has delivered
# STARTED_AUDIO_S of blocks it has longer (a Bluetooth headset, or a busy sound server, can take
# seconds to start, and PulseAudio through ALSA primes a speaker with a few blocks, then holds it
# for up to two seconds while it starts the microphone).
STALL_S = 1.5
START_STALL_S = 5.0
STARTED_AUDIO_S = 0.5


def import_sounddevice() -> Any:
    """The sounddevice module, or a :class:`DeviceError` naming what to install."""
    try:
        import sounddevice  # type: ignore[import-untyped]
    except OSError as exc:  # the PortAudio library is missing
        raise DeviceError(
            f"sound devices need the PortAudio library ({exc}); on Debian/Ubuntu: "
            "apt-get install libportaudio2"
        ) from exc
    except ImportError as exc:
        raise DeviceError(
            "sound devices need the sounddevice package: pip install 'rtvoice[devices]'"
        ) from exc
    return sounddevice


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate_hz: float
    default_input: bool
    default_output: bool

    def has(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def rate_hz(self) -> int:
        """The rate rtvoice opens the device at: its default rate when the native resampler
        handles it, else :data:`DEVICE_RATE_HZ`."""
        rate = round(self.default_rate_hz)
        return rate if rate in _NATIVE_RATES_HZ else DEVICE_RATE_HZ


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, with its default rate and whether it is a default device."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        apis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except Exception as exc:  # PortAudio failed to enumerate
        raise DeviceError(f"cannot list sound devices: {exc}") from exc
    out = []
    for d in devices:
        out.append(
            DeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                host_api=str(apis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_rate_hz=float(d["default_samplerate"]),
                default_input=int(d["index"]) == default_in,
                default_output=int(d["index"]) == default_out,
            )
        )
    return out


def resolve_device(spec: str | int | None, kind: Kind) -> DeviceInfo:
    """The device ``spec`` names: an index, an exact name, or a unique part of a name (case
    insensitive); None is the default device. Raises :class:`DeviceError` listing the choices
    when nothing or more than one device matches."""
    devices = [d for d in list_devices() if d.has(kind)]
    if not devices:
        raise DeviceError(f"no {kind} device found (is a sound server or sound card present?)")
    choices = ", ".join(f"{d.index}: {d.name!r}" for d in devices)
    if spec is None:
        for d in devices:
            if d.default_input if kind == "input" else d.default_output:
                return d
        return devices[0]
    text = str(spec).strip()
    if text.isdigit():
        for d in devices:
            if d.index == int(text):
                return d
        raise DeviceError(f"no {kind} device with index {text}; {kind} devices: {choices}")
    exact = [d for d in devices if d.name.lower() == text.lower()]
    if exact:
        return exact[0]
    partial = [d for d in devices if text.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = ", ".join(repr(d.name) for d in partial)
        raise DeviceError(f"{kind} device {text!r} is ambiguous: {names}")
    raise DeviceError(f"no {kind} device matches {text!r}; {kind} devices: {choices}")


class DeviceStreams:
    """A microphone feeding ``uplink`` and a speaker played from ``downlink``, each at its own
    rate (:attr:`DeviceInfo.rate_hz`, or ``rate_hz`` for both) with ``block_ms`` blocks.

    ``latency`` is PortAudio's suggested latency (``"low"``, ``"high"`` or seconds).
    """

    def __init__(
        self,
        uplink: Uplink,
        downlink: Downlink,
        *,
        input_device: DeviceInfo | None,
        output_device: DeviceInfo | None,
        block_ms: int = 20,
        latency: str | float = "low",
        rate_hz: int | None = None,
        native_callbacks: bool | None = None,
    ) -> None:
        if block_ms not in (10, 20):
            raise ValueError(f"block_ms must be 10 or 20, not {block_ms}")
        if rate_hz is not None and rate_hz not in _NATIVE_RATES_HZ:
            rates = ", ".join(str(r) for r in _NATIVE_RATES_HZ)
            raise ValueError(f"rate_hz must be one of {rates}, not {rate_hz}")
        self.uplink = uplink
        self.downlink = downlink
        self.input_device = input_device
        self.output_device = output_device
        self.block_ms = block_ms
        self.latency = latency
        self.input_rate_hz = rate_hz or (input_device.rate_hz if input_device else DEVICE_RATE_HZ)
        self.output_rate_hz = rate_hz or (
            output_device.rate_hz if output_device else DEVICE_RATE_HZ
        )
        self._input: Any = None
        self._output: Any = None
        # None: native callbacks where the core has them (POSIX) and sounddevice's PortAudio
        # library can be reopened; True: native or an error; False: sounddevice's callbacks.
        self._native_wanted = native_callbacks
        #: Whether the streams' callbacks are native (no Python, no GIL) or sounddevice's.
        self.native_callbacks = False
        self._started_ns = 0
        self._last_blocks = {"input": 0, "output": 0}
        self._last_progress_ns = {"input": 0, "output": 0}

    def start(self) -> None:
        """Open and start both streams (speaker first, so the echo reference leads)."""
        sd = import_sounddevice()
        # Bound methods, looked up once: the callbacks below do nothing but call them.
        push = self.uplink.push_from_device
        pull = self.downlink.pull_into_device

        def on_input(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            # sounddevice keeps PortAudio's flags in CallbackFlags._flags (an int).
            push(indata, status._flags)

        def on_output(outdata: Any, frames: int, time_info: Any, status: Any) -> None:
            pull(outdata, status._flags)

        native = (
            self._native_wanted is not False
            and bool(_core.native_audio_streams)
            and isinstance(getattr(sd, "_libname", None), str)
        )
        if self._native_wanted and not native:
            raise DeviceError("native device callbacks are not available on this platform")
        self.native_callbacks = native
        try:
            if self.output_device is not None:
                self.downlink.set_device_rate(self.output_rate_hz)
                self._output = (
                    self._open_native(sd, "output", self.output_device, self.output_rate_hz)
                    if native
                    else self._open(
                        sd.OutputStream, self.output_device, on_output, self.output_rate_hz
                    )
                )
            if self.input_device is not None:
                self.uplink.set_device_rate(self.input_rate_hz)
                self._input = (
                    self._open_native(sd, "input", self.input_device, self.input_rate_hz)
                    if native
                    else self._open(sd.InputStream, self.input_device, on_input, self.input_rate_hz)
                )
            if self._output is not None:
                self._output.start()
            if self._input is not None:
                self._input.start()
        except DeviceError:
            self.stop()
            raise
        except Exception as exc:
            self.stop()
            raise DeviceError(f"cannot start the sound devices: {exc}") from exc
        now = time.monotonic_ns()
        self._started_ns = now
        self._last_progress_ns = {"input": now, "output": now}

    def _open(self, factory: Any, device: DeviceInfo, callback: Any, rate_hz: int) -> Any:
        what = "microphone" if factory.__name__ == "InputStream" else "speaker"
        try:
            return factory(
                samplerate=rate_hz,
                blocksize=rate_hz * self.block_ms // 1000,
                channels=1,
                dtype="float32",
                device=device.index,
                latency=self.latency,
                callback=callback,
            )
        except Exception as exc:
            raise DeviceError(
                f"cannot open the {what} {device.name!r} (index {device.index}) at "
                f"{rate_hz} Hz mono: {exc}"
            ) from exc

    def _open_native(self, sd: Any, kind: Kind, device: DeviceInfo, rate_hz: int) -> Any:
        """A PortAudio stream of sounddevice's own library whose callback is native: it calls
        the Uplink or Downlink on PortAudio's thread, never needing the GIL."""
        what = "microphone" if kind == "input" else "speaker"
        latency = self.latency
        try:
            if isinstance(latency, str):
                info = sd.query_devices(device.index)
                latency = float(info[f"default_{latency}_{kind}_latency"])
            target: Any = self.uplink if kind == "input" else self.downlink
            return _core.NativeAudioStream(
                sd._libname,
                kind,
                device.index,
                rate_hz,
                rate_hz * self.block_ms // 1000,
                float(latency),
                target,
            )
        except Exception as exc:
            raise DeviceError(
                f"cannot open the {what} {device.name!r} (index {device.index}) at "
                f"{rate_hz} Hz mono: {exc}"
            ) from exc

    @property
    def latency_s(self) -> tuple[float, float]:
        """PortAudio's reported (input, output) latency in seconds."""
        i = float(self._input.latency) if self._input is not None else 0.0
        o = float(self._output.latency) if self._output is not None else 0.0
        return i, o

    def check(self, now_ns: int | None = None) -> None:
        """Raise :class:`DeviceError` when a stream stopped or delivers no more blocks (its
        device disappeared or its sound server died). Call it every few hundred ms."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        for kind, stream, device, stats in (
            ("input", self._input, self.input_device, self.uplink.stats),
            ("output", self._output, self.output_device, self.downlink.stats),
        ):
            if stream is None or device is None:
                continue
            what = "microphone" if kind == "input" else "speaker"
            blocks = int(stats["device_blocks"])
            if blocks != self._last_blocks[kind]:
                self._last_blocks[kind] = blocks
                self._last_progress_ns[kind] = now
            stalled_s = (now - self._last_progress_ns[kind]) / 1e9
            started = blocks * self.block_ms >= STARTED_AUDIO_S * 1000
            limit_s = STALL_S if started else START_STALL_S
            if not stream.active or stalled_s > limit_s:
                reason = (
                    "its stream stopped"
                    if not stream.active
                    else (f"no audio block for {stalled_s:.1f} s")
                )
                raise DeviceError(
                    f"the {what} {device.name!r} (index {device.index}) disappeared during the "
                    f"call ({reason})"
                )

    def stop(self) -> None:
        """Stop and close both streams; idempotent. A device that is already gone is ignored."""
        for attr in ("_input", "_output"):
            stream = getattr(self, attr)
            setattr(self, attr, None)
            if stream is None:
                continue
            # A device that is gone fails both; closing is all that is left to do.
            with contextlib.suppress(Exception):
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()
