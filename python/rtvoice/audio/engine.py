"""The audio engine of a session: the native Uplink and Downlink, and what the app touches.

There is one audio path per direction, and it is native:

- :class:`rtvoice.Uplink` (C++): the capture ring, resampling to the transport rate, exact 20 ms
  frames, Opus with in-band FEC (WebRTC) or 24 kHz PCM16 (WebSocket), and the sample clock:
  the transport only calls ``pop_due(now_ns)``. Non-finite samples are replaced by 0 and counted
  there.
- :class:`rtvoice.Downlink` (C++): the packet queue (or PCM ring), the jitter buffer, resampling
  to the output rate. Without a device, the native :class:`rtvoice.PlayoutDriver` pulls it on a
  monotonic clock into a ring.

This module adds only the app-facing edges: :class:`AudioInput` checks the caller's array and
brings it to the uplink's rate (once, natively), and :class:`PlayoutPump` drains the driver's ring
on a small thread to call the user's sink and keep a bounded recording. The native clocks never
wait on the GIL or on user code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rtvoice import _checks
from rtvoice._core import AudioRing, Downlink, PlayoutDriver, Resampler, Uplink

__all__ = [
    "SUPPORTED_RATES_HZ",
    "AudioEngine",
    "AudioInput",
    "AudioOptions",
    "PlayoutPump",
    "VoiceProcessing",
    "apply_voice_processing",
    "recording_s",
    "stream_delay_for",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Mode = Literal["opus", "pcm16"]

# Rates the native resampler converts between (any pair).
SUPPORTED_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
FRAME_MS = 20
# Rates the voice processing (rtvoice.AudioProcessor) runs at.
PROCESSING_RATES_HZ = (8000, 16000, 32000, 48000)
# The transport rate of each uplink mode.
_TRANSPORT_RATE_HZ = {"opus": 48000, "pcm16": 24000}
# A sink that raises this many times in a row is reported through a session event.
SINK_FAILURES_REPORTED = 10
# Native buffer sizes of a session: realtime needs them to cover seconds, not minutes (each is
# allocated and zero-filled at construction, so it is resident for the whole call).
# The Downlink's network -> playout queue is drained into the jitter buffer at every 20 ms
# pull; it holds a burst after a network freeze, and the jitter buffer takes at most this many
# packets (its capacity_packets), so a larger queue would only keep packets it must discard.
DOWNLINK_QUEUE_PACKETS = 128
# WebSocket: the server sends a reply faster than real time, so the PCM16 ring must hold a
# reply's lead over playout, not a network jitter; 20 s (1 MiB at 24 kHz) as before. What does
# not fit is dropped (the ring counts it, but the Downlink's stats do not publish that yet).
PCM_RING_MS = 20000
# The PlayoutDriver's ring only has to cover the pump's wake-ups (a Python thread: GIL stalls);
# without a pump nobody reads it, and the smallest ring (two frames) is enough.
PLAYOUT_RING_MS = 500
PLAYOUT_RING_MS_UNREAD = 40
# The recording's bound when it is turned on without one.
RECORD_OUTPUT_S = 5.0


@dataclass(frozen=True)
class AudioOptions:
    """Audio settings of a session, validated at construction.

    ``input_buffer_s`` bounds the audio queued for sending (what does not fit is dropped and
    counted; default 2 s, a live microphone keeps about one frame queued);
    ``record_output_s`` bounds what :meth:`RealtimeSession.read_audio` can return (default 0:
    no recording and no pump thread; overflow is counted); ``start_delay_ms`` is the jitter
    buffer's initial target.
    """

    output_rate_hz: int = 48000
    start_delay_ms: int = 30
    opus_bitrate_bps: int = 32000
    input_buffer_s: float = 2.0
    record_output_s: float = 0.0
    headless_playout: bool = True
    ws_chunk_ms: int = 20
    # Echo cancellation and the rest on the capture path (None: off). Applied to every engine
    # whose uplink rate the processing supports (the 48 kHz WebRTC one, not the 24 kHz PCM one).
    voice_processing: VoiceProcessing | None = None

    def __post_init__(self) -> None:
        if self.output_rate_hz not in SUPPORTED_RATES_HZ or self.output_rate_hz % 1000:
            rates = ", ".join(str(r) for r in SUPPORTED_RATES_HZ if r % 1000 == 0)
            raise ValueError(f"output_rate_hz must be one of {rates} Hz, not {self.output_rate_hz}")
        if not 0 <= self.start_delay_ms <= 1000:
            raise ValueError(f"jitter_target_ms must be 0..1000, not {self.start_delay_ms}")
        if not 6000 <= self.opus_bitrate_bps <= 510000:
            raise ValueError(f"opus_bitrate_bps must be 6000..510000, not {self.opus_bitrate_bps}")
        if not 0.1 <= self.input_buffer_s <= 600:
            raise ValueError(f"input_buffer_s must be 0.1..600 s, not {self.input_buffer_s}")
        if not 0 <= self.record_output_s <= 3600:
            raise ValueError(f"record_output_s must be 0..3600 s, not {self.record_output_s}")
        if self.ws_chunk_ms % FRAME_MS or not FRAME_MS <= self.ws_chunk_ms <= 1000:
            raise ValueError(
                f"ws_chunk_ms must be a multiple of 20 between 20 and 1000, not {self.ws_chunk_ms}"
            )


def recording_s(record_output: bool | None, record_output_s: float | None) -> float:
    """The recording bound of :class:`AudioOptions` from a session's two arguments: recording is
    off unless ``record_output=True`` (bound :data:`RECORD_OUTPUT_S`) or ``record_output_s``
    is given (that bound; 0 is off)."""
    if record_output is not None and not isinstance(record_output, bool):
        raise TypeError(f"record_output must be a bool, not {type(record_output).__name__}")
    if record_output is False:
        if record_output_s:
            raise ValueError(f"record_output=False contradicts record_output_s={record_output_s!r}")
        return 0.0
    if record_output_s is None:
        return RECORD_OUTPUT_S if record_output else 0.0
    return float(record_output_s)


@dataclass(frozen=True)
class VoiceProcessing:
    """Capture-side processing in the native core, before the encoder: acoustic echo
    cancellation against what the downlink hands to the speaker, noise suppression, automatic
    gain control and a high-pass filter; each can be turned off.

    ``backend``: ``"webrtc"`` (WebRTC's audio processing module) or ``"speex"`` (SpeexDSP), None
    for the build's preferred one (:func:`rtvoice._core.voice_processing_backends`).
    ``reference_lead_ms`` is how far the far-end reference is kept ahead of the capture stream
    at first (it grows by a frame at each frame the speaker was late for, up to half of
    ``reference_lead_ms + REFERENCE_SLACK_MS``); ``stream_delay_ms`` the expected remaining echo
    delay (device latencies), which the WebRTC backend's delay estimator refines and the
    SpeexDSP backend delays its reference by (less 20 ms; its 200 ms filter covers the room from
    there): better too short than too long (:func:`stream_delay_for`). ``aec_suppression`` is
    the WebRTC canceller's suppression level (0 low, 1 moderate, 2 high: more residual echo
    removed, and more of the user's voice when both talk at once; with AEC3 it scales the
    suppressor's thresholds by 2, 1 or 1/2), fixed when processing starts.
    """

    aec: bool = True
    noise_suppression: bool = True
    agc: bool = True
    high_pass: bool = True
    backend: str | None = None
    reference_lead_ms: int = 20
    stream_delay_ms: int = 0
    aec_suppression: int = 1

    def __post_init__(self) -> None:
        if self.aec_suppression not in (0, 1, 2):
            raise ValueError(f"aec_suppression must be 0, 1 or 2, not {self.aec_suppression!r}")
        if self.backend is not None and self.backend not in ("webrtc", "speex"):
            raise ValueError(f"backend must be 'webrtc', 'speex' or None, not {self.backend!r}")
        if not 0 <= self.reference_lead_ms <= 500:
            raise ValueError(f"reference_lead_ms must be 0..500, not {self.reference_lead_ms}")
        if not 0 <= self.stream_delay_ms <= 1000:
            raise ValueError(f"stream_delay_ms must be 0..1000, not {self.stream_delay_ms}")


# How much further than reference_lead_ms the far-end reference may run ahead of the capture
# stream before it is re-aligned.
REFERENCE_SLACK_MS = 100


def stream_delay_for(vp: VoiceProcessing, input_latency_s: float, output_latency_s: float) -> int:
    """The echo delay to give the canceller for devices with these latencies: what the most
    lead the reference can have leaves of them. Too short is safe, the canceller's estimator
    finds the rest; too long puts the far end after its own echo, and with AEC3 a reply's first
    ~100 ms then came back as user speech (a 60 ms over-estimate did it on the benchmark's
    delays; 200 ms under did not)."""
    most_lead_ms = vp.reference_lead_ms + REFERENCE_SLACK_MS
    latency_ms = round((input_latency_s + output_latency_s) * 1000)
    return max(0, min(1000, latency_ms - most_lead_ms))


def apply_voice_processing(uplink: Uplink, downlink: Downlink, vp: VoiceProcessing) -> None:
    """Turn on (or switch) the uplink's voice processing, with the downlink's render stream as
    the echo reference. Any thread; the capture thread picks it up at its next 10 ms frame."""
    uplink.set_processing(
        backend=vp.backend,
        aec=vp.aec,
        noise_suppression=vp.noise_suppression,
        agc=vp.agc,
        high_pass=vp.high_pass,
        stream_delay_ms=vp.stream_delay_ms,
        aec_suppression=vp.aec_suppression,
    )
    try:
        uplink.set_echo_reference(
            downlink,
            lead_ms=vp.reference_lead_ms,
            max_lead_ms=vp.reference_lead_ms + REFERENCE_SLACK_MS,
        )
    except RuntimeError as exc:  # set before: only the stages changed
        if "already has an echo reference" not in str(exc):
            raise


class AudioInput:
    """The app-facing edge of the uplink: one producer thread calls :meth:`push`.

    Accepts float32 or int16, ``(frames,)`` or ``(frames, channels)`` (channels are averaged), at
    any of :data:`SUPPORTED_RATES_HZ`; audio at another rate than the uplink's is resampled once,
    by the native resampler, before it is queued.
    """

    def __init__(self, uplink: Uplink) -> None:
        self.uplink = uplink
        self.rate_hz = uplink.input_rate
        self._resamplers: dict[int, Resampler] = {}
        # Non-finite samples replaced here, before a resampler could spread them (the Uplink
        # replaces and counts those that reach it directly).
        self.nonfinite_samples = 0

    def push(self, pcm: Any, sample_rate: Any) -> int:
        """Queue audio; returns the frames queued at the uplink's rate (the rest, if the input
        buffer is full, is dropped and counted in ``stats["frames_dropped"]``)."""
        rate = _checks.sample_rate(sample_rate)
        _checks.pcm_layout(pcm)
        arr: npt.NDArray[Any] = pcm
        if arr.ndim == 2:
            if arr.shape[1] == 1:
                arr = arr[:, 0]
            else:
                floats = arr.astype(np.float32) / 32768.0 if arr.dtype == np.int16 else arr
                arr = floats.mean(axis=1, dtype=np.float32)
        if rate != self.rate_hz:
            if rate not in SUPPORTED_RATES_HZ:
                rates = ", ".join(str(r) for r in SUPPORTED_RATES_HZ)
                raise ValueError(
                    f"sample_rate {rate} Hz is not supported; use one of {rates} Hz "
                    "(resample with soxr or scipy first)"
                )
            resampler = self._resamplers.get(rate)
            if resampler is None:
                resampler = self._resamplers[rate] = Resampler(rate, self.rate_hz, 1)
            if arr.dtype == np.int16:
                arr = arr.astype(np.float32) / 32768.0
            else:
                bad = ~np.isfinite(arr)
                if bad.any():
                    self.nonfinite_samples += int(bad.sum())
                    arr = np.where(bad, np.float32(0.0), arr)
            arr = np.asarray(resampler.process(np.ascontiguousarray(arr))).reshape(-1)
            if arr.size == 0:
                return 0
        return int(self.uplink.push(np.ascontiguousarray(arr)))


class PlayoutPump:
    """Drains a :class:`rtvoice.PlayoutDriver`'s ring on its own thread: calls ``sink(pcm)`` and
    writes a bounded recording. The driver's clock never waits for this thread.

    A sink that raises is logged once and counted (``sink_errors``); playout goes on. After
    :data:`SINK_FAILURES_REPORTED` failures in a row ``on_sink_failing(count, exc)`` is called (on
    this thread) once per run of failures.
    """

    def __init__(
        self,
        driver: PlayoutDriver,
        *,
        sink: Callable[[FloatArray], None] | None,
        record: AudioRing | None,
        on_sink_failing: Callable[[int, BaseException], None] | None = None,
        period_s: float = 0.02,
        name: str = "rtvoice-playout-pump",
    ) -> None:
        self._driver = driver
        self._sink = sink
        self._record = record
        self._on_sink_failing = on_sink_failing
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.sink_errors = 0
        self.record_dropped_samples = 0
        self._consecutive = 0
        self._logged = False

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def _deliver(self, pcm: FloatArray) -> None:
        if self._record is not None:
            written = int(self._record.write(pcm))
            self.record_dropped_samples += int(pcm.shape[0]) - written
        if self._sink is None:
            return
        try:
            self._sink(pcm)
        except Exception as exc:  # user code: count it and keep playing
            self.sink_errors += 1
            self._consecutive += 1
            if not self._logged:
                self._logged = True
                logger.exception("audio_sink raised; playout continues (counted in metrics)")
            if self._consecutive == SINK_FAILURES_REPORTED and self._on_sink_failing is not None:
                self._on_sink_failing(self.sink_errors, exc)
        else:
            self._consecutive = 0

    def _drain(self) -> None:
        while True:
            pcm = np.asarray(self._driver.read(4800), dtype=np.float32).reshape(-1)
            if pcm.size == 0:
                return
            self._deliver(pcm)

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._drain()
        self._drain()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


# Native constants the sizes in AudioEngine.buffer_bytes follow (JitterBufferConfig defaults).
_MAX_PAYLOAD_BYTES = 1500
_JITTER_CAPACITY_PACKETS = 128


def _pow2(n: int) -> int:
    return 1 << (max(n, 2) - 1).bit_length()


class AudioEngine:
    """The native Uplink and Downlink of one transport mode, with the headless playout clock.

    ``mode="opus"`` for WebRTC (48 kHz Opus both ways), ``"pcm16"`` for WebSocket (24 kHz PCM16).
    """

    def __init__(
        self,
        mode: Mode,
        options: AudioOptions,
        *,
        sink: Callable[[FloatArray], None] | None = None,
        on_sink_failing: Callable[[int, BaseException], None] | None = None,
    ) -> None:
        self.mode = mode
        self.options = options
        rate = _TRANSPORT_RATE_HZ[mode]
        if options.voice_processing is not None and rate not in PROCESSING_RATES_HZ:
            # The canceller works at 8/16/32/48 kHz: the 24 kHz PCM16 uplink then takes its
            # input at 48 kHz (where the echo reference, the downlink's render stream, is too)
            # and converts natively after the processing.
            rate = 48000
        self.uplink = Uplink(
            rate,
            1,
            mode,
            bitrate=options.opus_bitrate_bps,
            ring_ms=int(options.input_buffer_s * 1000),
        )
        self.downlink = Downlink(
            options.output_rate_hz,
            1,
            mode,
            start_delay_ms=options.start_delay_ms,
            queue_packets=DOWNLINK_QUEUE_PACKETS,
            pcm_ring_ms=PCM_RING_MS,
        )
        self.input = AudioInput(self.uplink)
        vp = options.voice_processing
        if vp is not None:
            apply_voice_processing(self.uplink, self.downlink, vp)
        out_rate = options.output_rate_hz
        self._record: AudioRing | None = None
        if options.record_output_s > 0:
            frames = max(int(options.record_output_s * out_rate), 2)
            self._record = AudioRing(1 << (frames - 1).bit_length(), 1)  # a power of two
        self._sink = sink
        self._on_sink_failing = on_sink_failing
        # A pump thread drains the playout clock's ring only for a sink or a recording.
        self._pumped = sink is not None or self._record is not None
        self.driver: PlayoutDriver | None = None
        self.pump: PlayoutPump | None = None
        self._stopped_record_dropped = 0
        self._stopped_sink_errors = 0

    def start_playout(self) -> None:
        """Start the headless playout clock (and the pump when there is a sink or recording)."""
        if not self.options.headless_playout or self.driver is not None:
            return
        self.driver = PlayoutDriver(
            self.downlink, FRAME_MS, PLAYOUT_RING_MS if self._pumped else PLAYOUT_RING_MS_UNREAD
        )
        self.driver.start()
        if self._pumped:
            self.pump = PlayoutPump(
                self.driver,
                sink=self._sink,
                record=self._record,
                on_sink_failing=self._on_sink_failing,
            )
            self.pump.start()

    def stop_playout(self) -> None:
        """Stop the clock and the pump (joins both threads). Idempotent."""
        if self.driver is not None:
            self.driver.stop()
        if self.pump is not None:
            self.pump.stop()
            # Its counts outlive it (metrics after close).
            self._stopped_record_dropped += self.pump.record_dropped_samples
            self._stopped_sink_errors += self.pump.sink_errors
            self.pump = None
        self.driver = None

    def read_recording(self) -> FloatArray:
        """Everything recorded since the last call (consumer: one app thread)."""
        if self._record is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._record.read(self._record.available), np.float32).reshape(-1)

    def buffer_bytes(self) -> dict[str, int]:
        """What this engine's native buffers allocate, by buffer, in bytes (each is zero-filled
        at construction, so resident for the whole call). Rings hold a power of two of frames,
        as the native core rounds them; ``playout_ring`` is the one :meth:`start_playout`
        creates, ``output_block`` the Downlink's (a pull may ask for up to one second)."""
        opus = self.mode == "opus"
        input_ms = int(self.options.input_buffer_s * 1000)
        out_rate = self.options.output_rate_hz
        playout_ms = PLAYOUT_RING_MS if self._pumped else PLAYOUT_RING_MS_UNREAD
        playout_frames = max(out_rate * playout_ms // 1000, 2 * out_rate // 1000 * FRAME_MS)
        return {
            "input_ring": _pow2((self.uplink.input_rate // 1000 + 1) * input_ms) * 4,
            "record_ring": 0 if self._record is None else int(self._record.capacity) * 4,
            "playout_ring": _pow2(playout_frames) * 4 if self.options.headless_playout else 0,
            "packet_queue": _pow2(DOWNLINK_QUEUE_PACKETS) * _MAX_PAYLOAD_BYTES if opus else 2,
            "jitter_buffer": _JITTER_CAPACITY_PACKETS * _MAX_PAYLOAD_BYTES if opus else 0,
            "pcm_ring": 0 if opus else _pow2(24 * PCM_RING_MS) * 2,
            "output_block": out_rate * 4,
        }

    @property
    def record_dropped_samples(self) -> int:
        running = 0 if self.pump is None else self.pump.record_dropped_samples
        return self._stopped_record_dropped + running

    @property
    def sink_errors(self) -> int:
        return self._stopped_sink_errors + (0 if self.pump is None else self.pump.sink_errors)

    def stats(self) -> dict[str, Any]:
        """One vocabulary: the native field names, unchanged."""
        down = self.downlink.stats
        jitter = down.pop("jitter")
        playout: dict[str, Any] = {
            "record_dropped_samples": self.record_dropped_samples,
            "sink_errors": self.sink_errors,
        }
        if self.driver is not None:
            playout.update(
                ticks=self.driver.ticks,
                late_ticks=self.driver.late_ticks,
                overrun_frames=self.driver.overrun_frames,
            )
        uplink: dict[str, Any] = dict(self.uplink.stats)
        uplink["nonfinite_samples"] += self.input.nonfinite_samples
        processing = self.uplink.processing_stats
        if processing is not None:
            uplink["processing"] = processing
        return {
            "uplink": uplink,
            "downlink": dict(down),
            "jitter_buffer": jitter.as_dict(),
            "playout": playout,
        }
