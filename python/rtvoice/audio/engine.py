"""The audio engine: uplink (PCM in → Opus packets) and downlink (RTP in → PCM out).

Both sides are clocked by sample counts and a monotonic clock, never by the asyncio loop:

- :class:`Uplink` is a :class:`~rtvoice.rtc.native_audio.PacketSource`. The application pushes
  PCM at any rate from any one thread; packet *n* is released at ``start + n * 20 ms`` and carries
  RTP timestamp ``n * 960``. When the application has supplied nothing, the frame is silence (a
  microphone never stops), counted in ``stats``.
- :class:`Downlink` is an :class:`~rtvoice.rtc.native_audio.RtpSink`. The network thread only
  appends packets to a queue; the playout side (:meth:`Downlink.pull`, called by a device callback
  or by :class:`PlayoutThread`) owns the jitter buffer and the decoder.
- :class:`PlayoutThread` pulls 20 ms every 20 ms against absolute monotonic deadlines and hands
  the audio to a sink.

The codec is the native :class:`rtvoice.OpusEncoder` / :class:`rtvoice.OpusDecoder`; the jitter
buffer is the native :class:`rtvoice.JitterBuffer` when the build has it, else
:class:`FecJitterBuffer` below.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import rtvoice._core as _core

__all__ = [
    "Downlink",
    "DownlinkStats",
    "FecJitterBuffer",
    "PlayoutThread",
    "StreamResampler",
    "Uplink",
    "UplinkStats",
]

OPUS_RATE_HZ = 48000
FRAME_MS = 20
FRAME_SAMPLES = OPUS_RATE_HZ * FRAME_MS // 1000
FloatArray = npt.NDArray[np.float32]


def _require(name: str) -> Any:
    cls = getattr(_core, name, None)
    if cls is None:
        raise RuntimeError(f"this rtvoice build has no native {name}; rebuild rtvoice")
    return cls


def _as_mono_float32(pcm: Any) -> FloatArray:
    """float32 or int16 audio, ``(frames,)`` or ``(frames, channels)`` (channels are averaged),
    as mono float32. Other dtypes are refused rather than cast silently."""
    if not isinstance(pcm, np.ndarray):
        raise TypeError(f"audio must be a numpy array, not {type(pcm).__name__}")
    arr = pcm
    if arr.dtype == np.int16:
        arr = arr.astype(np.float32) / 32768.0
    elif arr.dtype != np.float32:
        raise TypeError(
            f"audio must be float32 or int16, not {arr.dtype} (convert with .astype(np.float32))"
        )
    if arr.ndim == 2:
        arr = arr.mean(axis=1, dtype=np.float32) if arr.shape[1] > 1 else arr[:, 0]
    elif arr.ndim != 1:
        raise ValueError(f"audio must have shape (frames,) or (frames, channels), not {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class StreamResampler:
    """Streaming mono float32 resampler (the native Resampler when built, else soxr)."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} and {out_rate_hz}")
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._native: Any = None
        self._soxr: Any = None
        if in_rate_hz == out_rate_hz:
            return
        native = getattr(_core, "Resampler", None)
        if native is not None:
            try:
                self._native = native(in_rate_hz, out_rate_hz, 1)
            except ValueError:  # a rate pair the native resampler does not support
                self._native = None
        if self._native is None:
            import soxr  # type: ignore[import-untyped]

            self._soxr = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32")

    def process(self, pcm: FloatArray, last: bool = False) -> FloatArray:
        if self.in_rate_hz == self.out_rate_hz:
            return pcm
        if self._native is not None:
            out = self._native.process(pcm)
            return np.asarray(out, dtype=np.float32).reshape(-1)
        return np.asarray(self._soxr.resample_chunk(pcm, last=last), dtype=np.float32).reshape(-1)


@dataclass
class UplinkStats:
    packets: int = 0
    bytes: int = 0
    frames_from_input: int = 0
    silent_frames: int = 0
    input_samples: int = 0
    dropped_input_samples: int = 0


class Uplink:
    """PCM from the application → 20 ms Opus packets released on the sample clock.

    ``push()`` is called from one producer thread (the application or a device callback);
    ``pop_packet()`` and ``next_due_ns()`` from the network thread. Between them sits the native
    lock-free :class:`rtvoice.AudioRing`, so neither side blocks the other.
    """

    def __init__(
        self,
        *,
        bitrate_bps: int = 32000,
        fec: bool = True,
        packet_loss_perc: int = 10,
        buffer_s: float = 30.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        encoder_cls = _require("OpusEncoder")
        self._encoder = encoder_cls(
            sample_rate=OPUS_RATE_HZ,
            channels=1,
            bitrate=bitrate_bps,
            fec=fec,
            packet_loss_perc=packet_loss_perc,
        )
        capacity = 1 << max(1, int(buffer_s * OPUS_RATE_HZ) - 1).bit_length()  # power of two
        self._ring = _core.AudioRing(capacity, 1, np.float32)
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        self._resamplers: dict[int, StreamResampler] = {}
        self._clock_ns = clock_ns
        self.partial_wait_ns = 20_000_000
        self._start_ns: int | None = None
        self._index = 0
        self.stats = UplinkStats()
        # Monotonic time of the first push (for latency measurements).
        self.first_input_ns: int | None = None

    def start(self, start_ns: int | None = None) -> None:
        """Anchor the sample clock; packet n is due at start + n * 20 ms. By default the first
        ``pop_packet()`` anchors it, i.e. the moment the network starts sending."""
        self._start_ns = self._clock_ns() if start_ns is None else start_ns
        self._index = 0

    def push(self, pcm: Any, sample_rate: int) -> int:
        """Queue audio (float32 or int16, mono or (frames, channels)) at ``sample_rate`` Hz.

        Returns the number of 48 kHz samples queued; audio beyond the buffer is dropped and
        counted (``stats.dropped_input_samples``).
        """
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, not {sample_rate!r}")
        mono = _as_mono_float32(pcm)
        resampler = self._resamplers.get(sample_rate)
        if resampler is None:
            resampler = self._resamplers[sample_rate] = StreamResampler(sample_rate, OPUS_RATE_HZ)
        data = resampler.process(mono)
        if data.size == 0:
            return 0
        written = int(self._ring.write(np.ascontiguousarray(data, dtype=np.float32)))
        self.stats.input_samples += written
        self.stats.dropped_input_samples += int(data.size) - written
        if self.first_input_ns is None:
            self.first_input_ns = self._clock_ns()
        return written

    @property
    def queued_samples(self) -> int:
        """48 kHz samples waiting to be encoded (the uplink's buffering delay)."""
        return int(self._ring.available)

    def next_due_ns(self) -> int | None:
        if self._start_ns is None:
            return None  # not started: the first pop_packet() anchors the clock
        return self._start_ns + self._index * FRAME_MS * 1_000_000

    def pop_packet(self) -> tuple[bytes, int, int] | None:
        if self._start_ns is None:
            self.start()
        due = self.next_due_ns()
        assert due is not None
        now = self._clock_ns()
        if now < due:
            return None
        available = int(self._ring.available)
        if 0 < available < FRAME_SAMPLES and now - due < self.partial_wait_ns:
            # The producer is mid-frame: a short wait beats splitting speech with zeros.
            return None
        got = int(self._ring.read_into(self._frame))
        if got < FRAME_SAMPLES:
            self._frame[got:] = 0.0
        if got == 0:
            self.stats.silent_frames += 1
        else:
            self.stats.frames_from_input += 1
        payload = self._encoder.encode(self._frame)
        index = self._index
        self._index += 1
        self.stats.packets += 1
        self.stats.bytes += len(payload)
        return payload, (index * FRAME_SAMPLES) & 0xFFFFFFFF, index & 0xFFFF

    def set_packet_loss_perc(self, percent: int) -> None:
        """Expected-loss hint for the encoder's FEC (from measured loss). Network thread only."""
        self._encoder.set_packet_loss_perc(int(min(max(percent, 0), 100)))


@dataclass
class DownlinkStats:
    packets_received: int = 0
    packets_late: int = 0
    packets_duplicate: int = 0
    frames_decoded: int = 0
    fec_recovered: int = 0
    concealed_frames: int = 0
    concealment_events: int = 0
    silent_frames: int = 0
    frames_dropped: int = 0
    flushes: int = 0
    playing: bool = False
    packets_lost: int = 0
    accelerated_samples: int = 0
    expanded_samples: int = 0
    jitter_ms: float = 0.0
    samples_played: int = 0
    samples_flushed: int = 0
    buffer_delay_ms: float = 0.0
    target_delay_ms: float = 0.0


class FecJitterBuffer:
    """A fixed-delay Opus jitter buffer with FEC recovery and PLC, owned by the playout thread.

    Holds packets keyed by unwrapped sequence number; playout starts when ``target_frames``
    are buffered. Each pull: the expected packet is decoded; if it is missing but the next one is
    here, the frame is recovered from the next packet's in-band FEC; otherwise it is concealed.
    After ``idle_frames`` of nothing to play the stream counts as idle (the server stopped
    sending): silence, not concealment, until packets arrive again.
    """

    def __init__(
        self, *, target_frames: int = 3, max_frames: int = 50, idle_frames: int = 5
    ) -> None:
        decoder_cls = _require("OpusDecoder")
        self._decoder = decoder_cls(OPUS_RATE_HZ, 1)
        self._has_fec = getattr(decoder_cls, "packet_has_fec", None)
        self.target_frames = target_frames
        self.max_frames = max_frames
        self.idle_frames = idle_frames
        self.excess_frames = 2
        self.max_excess_frames = 10
        self.quiet_rms = 0.01
        self._packets: dict[int, bytes] = {}
        self._next: int | None = None
        self._last_seq_ext: int | None = None
        self._playing = False
        self._misses = 0
        self._in_concealment = False
        self._last_arrival_ns = 0
        # Frames concealed since the buffer ran empty (reclassified if the stream just ended).
        self._tail_concealed = 0
        self._tail_opened_event = False
        self.stats = DownlinkStats()

    def _unwrap(self, seq: int) -> int:
        if self._last_seq_ext is None:
            self._last_seq_ext = seq
            return seq
        last = self._last_seq_ext
        delta = (seq - last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        ext = last + delta
        if ext > last:
            self._last_seq_ext = ext
        return ext

    def insert(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        del timestamp  # fixed 20 ms frames: the sequence number orders them
        ext = self._unwrap(seq)
        self._last_arrival_ns = arrival_ns
        # The stream goes on, so any frames concealed meanwhile did cover a real gap.
        self._tail_concealed = 0
        self._tail_opened_event = False
        self.stats.packets_received += 1
        if self._next is not None and ext < self._next:
            if ext < self._next - 1000:  # a restarted stream: start over
                self._packets.clear()
                self._next = None
                self._playing = False
            else:
                self.stats.packets_late += 1
                return
        if ext in self._packets:
            self.stats.packets_duplicate += 1
            return
        self._packets[ext] = payload
        if len(self._packets) > self.max_frames:
            oldest = min(self._packets)
            del self._packets[oldest]
            if self._next is not None and oldest >= self._next:
                self._next = oldest + 1

    @property
    def buffered_frames(self) -> int:
        return len(self._packets)

    @property
    def playing(self) -> bool:
        """True while a talkspurt is being played out (not idle)."""
        return self._playing

    def pull(self, now_ns: int) -> FloatArray:
        """Return exactly 20 ms (960 samples, 48 kHz mono float32)."""
        if not self._playing:
            waited_ns = now_ns - self._last_arrival_ns
            if self._packets and (
                len(self._packets) >= self.target_frames
                or waited_ns >= self.target_frames * FRAME_MS * 1_000_000
            ):
                self._playing = True
                self._next = min(self._packets)
                self._in_concealment = False
                self._misses = 0
            else:
                self.stats.silent_frames += 1
                return np.zeros(FRAME_SAMPLES, dtype=np.float32)
        assert self._next is not None
        # A burst left more than the target queued: skip quiet frames (decoded, so the decoder
        # state stays continuous) until back near the target; a fixed-delay buffer that never
        # drains only adds latency. Speech is skipped only when the backlog is far too long.
        while len(self._packets) > self.target_frames + self.excess_frames:
            newest = max(self._packets)
            if newest - self._next + 1 <= self.target_frames + 1:
                break
            payload = self._packets.pop(self._next, None)
            self._next += 1
            if payload is None:
                continue
            pcm = self._fit(self._decoder.decode(payload))
            quiet = float(np.sqrt(np.mean(pcm * pcm))) < self.quiet_rms
            if not quiet and len(self._packets) <= self.target_frames + self.max_excess_frames:
                self._misses = 0
                self._in_concealment = False
                self.stats.frames_decoded += 1
                return pcm
            self.stats.frames_dropped += 1
        current = self._next
        self._next += 1
        payload = self._packets.pop(current, None)
        if payload is not None:
            self._misses = 0
            self._in_concealment = False
            out = self._decoder.decode(payload)
            self.stats.frames_decoded += 1
            return self._fit(out)
        following = self._packets.get(current + 1)
        if following is not None and (self._has_fec is None or self._has_fec(following)):
            self._misses = 0
            self.stats.fec_recovered += 1
            return self._fit(self._decoder.decode_fec(following, FRAME_SAMPLES))
        if not self._packets:
            self._misses += 1
            if self._misses > self.idle_frames:
                # Nothing sent for a while: the talkspurt ended, nothing was lost. The frames
                # concealed while that was not yet known were its fade-out, not concealment.
                self._playing = False
                self._next = None
                self.stats.concealed_frames -= self._tail_concealed
                self.stats.silent_frames += self._tail_concealed + 1
                if self._tail_opened_event:
                    self.stats.concealment_events -= 1
                self._tail_concealed = 0
                self._tail_opened_event = False
                return np.zeros(FRAME_SAMPLES, dtype=np.float32)
        if not self._in_concealment:
            self.stats.concealment_events += 1
            self._in_concealment = True
            self._tail_opened_event = not self._packets
        if self._packets:
            self._tail_concealed = 0
            self._tail_opened_event = False
        else:
            self._tail_concealed += 1
        self.stats.concealed_frames += 1
        return self._fit(self._decoder.conceal(FRAME_SAMPLES))

    @staticmethod
    def _fit(pcm: Any) -> FloatArray:
        out = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if out.size == FRAME_SAMPLES:
            return out
        fitted = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        fitted[: min(out.size, FRAME_SAMPLES)] = out[:FRAME_SAMPLES]
        return fitted

    def flush(self) -> int:
        dropped = len(self._packets)
        self._packets.clear()
        self._playing = False
        self._next = None
        return dropped


class NativeJitterBuffer:
    """Adapts the native :class:`rtvoice.JitterBuffer` (adaptive delay, FEC, PLC, DTX, time
    stretching) to the interface of :class:`FecJitterBuffer`. Owned by the playout thread."""

    def __init__(self, *, target_delay_ms: int = 60) -> None:
        native = _require("JitterBuffer")
        self._jb = native(OPUS_RATE_HZ, 1, start_delay_ms=target_delay_ms)
        self.stats = DownlinkStats()
        self.playing = False
        self._last_action = "silence"
        # Concealment while nothing is buffered is the fade-out of a talkspurt when the stream
        # then goes silent; it is moved out of the concealment figures at that point.
        self._tail_frames = 0
        self._tail_started_event = False
        self._tail_reclassified_frames = 0
        self._tail_reclassified_events = 0

    def insert(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self._jb.insert(seq, timestamp, payload, arrival_ns)
        self._tail_frames = 0
        self._tail_started_event = False

    def pull(self, now_ns: int) -> FloatArray:
        pcm, action = self._jb.pull(now_ns)
        if action == "conceal":
            if self._jb.stats.buffered_packets == 0:
                if self._tail_frames == 0:
                    self._tail_started_event = self._last_action != "conceal"
                self._tail_frames += 1
            else:
                self._tail_frames = 0
        elif action in ("silence", "comfort_noise"):
            if self._tail_frames:
                self._tail_reclassified_frames += self._tail_frames
                self._tail_reclassified_events += int(self._tail_started_event)
            self._tail_frames = 0
            self.playing = False
        else:
            self._tail_frames = 0
            self.playing = True
        self._last_action = str(action)
        return np.asarray(pcm, dtype=np.float32).reshape(-1)

    def flush(self) -> int:
        # The native buffer holds decoded audio as well as packets: count both, in frames.
        buffered_ms = float(self._jb.stats.buffered_ms)
        self._jb.flush()
        return int(np.ceil(buffered_ms / FRAME_MS))

    @property
    def buffered_frames(self) -> int:
        return int(self._jb.stats.buffered_packets)

    @property
    def target_frames(self) -> int:
        return max(1, int(self._jb.target_delay_ms) // FRAME_MS)

    def refresh_stats(self) -> DownlinkStats:
        n = self._jb.stats
        s = self.stats
        s.packets_received = int(n.packets_received)
        s.packets_late = int(n.packets_late)
        s.packets_duplicate = int(n.packets_duplicated)
        s.fec_recovered = int(n.fec_recovered_frames)
        tail = self._tail_reclassified_frames
        s.concealed_frames = int(n.concealed_samples) // FRAME_SAMPLES - tail
        s.concealment_events = int(n.concealment_events) - self._tail_reclassified_events
        s.silent_frames = int(n.silence_samples + n.comfort_noise_samples) // FRAME_SAMPLES + tail
        s.playing = self.playing
        s.frames_decoded = max(
            0,
            int(
                n.samples_played
                - n.concealed_samples
                - n.fec_recovered_samples
                - n.silence_samples
                - n.comfort_noise_samples
            )
            // FRAME_SAMPLES,
        )
        s.frames_dropped = int(n.packets_discarded)
        s.packets_lost = int(n.packets_lost)
        s.accelerated_samples = int(n.accelerated_samples)
        s.expanded_samples = int(n.expanded_samples)
        s.buffer_delay_ms = float(n.current_delay_ms)
        s.target_delay_ms = float(n.target_delay_ms)
        s.jitter_ms = float(n.jitter_ms)
        return s


class _NativeDownlink:
    """The native :class:`rtvoice.Downlink` (lock-free packet queue, adaptive jitter buffer,
    resampling, all in C++), with its statistics mapped onto :class:`DownlinkStats`.

    ``push_rtp`` on the network thread, ``pull`` on the playout thread, ``flush`` anywhere.
    """

    def __init__(self, output_rate_hz: int, target_delay_ms: int) -> None:
        native = _require("Downlink")
        self._dl = native(output_rate_hz, 1, start_delay_ms=target_delay_ms)
        self.stats = DownlinkStats()
        self.playing = False
        # Per-pull deltas of the jitter statistics (playout thread only) to tell a talkspurt's
        # fade-out from concealment of lost audio (see NativeJitterBuffer).
        self._prev = (0, 0, 0)  # concealed, media played, silence+comfort noise
        self._tail_samples = 0
        self._tail_started_event = False
        self._reclassified_samples = 0
        self._reclassified_events = 0

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self._dl.push_rtp(seq, timestamp, payload, arrival_ns)

    def flush(self) -> None:
        self._dl.flush()

    @property
    def media_samples_played(self) -> int:
        return int(self._dl.media_samples_played)

    def pull(self, n_samples: int, now_ns: int) -> FloatArray:
        out = np.asarray(self._dl.pull(n_samples, now_ns), dtype=np.float32).reshape(-1)
        st = self._dl.stats
        j = st["jitter"]
        concealed = int(j.concealed_samples)
        media = int(st["media_samples_played"])
        quiet = int(j.silence_samples + j.comfort_noise_samples)
        d_conceal = concealed - self._prev[0]
        d_media = media - self._prev[1]
        d_quiet = quiet - self._prev[2]
        if d_conceal > 0 and int(j.buffered_packets) == 0:
            if self._tail_samples == 0:
                self._tail_started_event = self._prev_conceal_delta == 0
            self._tail_samples += d_conceal
        elif d_quiet > 0 and d_conceal == 0:
            if self._tail_samples:
                self._reclassified_samples += self._tail_samples
                self._reclassified_events += int(self._tail_started_event)
            self._tail_samples = 0
        elif d_conceal == 0:
            self._tail_samples = 0
        self._prev_conceal_delta = d_conceal
        self.playing = d_media > 0 or (d_conceal > 0 and self.playing)
        self._prev = (concealed, media, quiet)
        return out

    _prev_conceal_delta = 0

    def refresh_stats(self) -> DownlinkStats:
        st = self._dl.stats
        n = st["jitter"]
        s = self.stats
        tail = self._reclassified_samples
        s.packets_received = int(n.packets_received)
        s.packets_late = int(n.packets_late)
        s.packets_duplicate = int(n.packets_duplicated)
        s.packets_lost = int(n.packets_lost)
        s.fec_recovered = int(n.fec_recovered_frames)
        s.concealed_frames = (int(n.concealed_samples) - tail) // FRAME_SAMPLES
        s.concealment_events = int(n.concealment_events) - self._reclassified_events
        s.silent_frames = (int(n.silence_samples + n.comfort_noise_samples) + tail) // FRAME_SAMPLES
        s.frames_decoded = max(
            0,
            int(
                n.samples_played
                - n.concealed_samples
                - n.fec_recovered_samples
                - n.silence_samples
                - n.comfort_noise_samples
            )
            // FRAME_SAMPLES,
        )
        s.frames_dropped = int(n.packets_discarded) + int(st["packets_dropped_queue_full"])
        s.accelerated_samples = int(n.accelerated_samples)
        s.expanded_samples = int(n.expanded_samples)
        s.buffer_delay_ms = float(n.current_delay_ms)
        s.target_delay_ms = float(n.target_delay_ms)
        s.jitter_ms = float(n.jitter_ms)
        s.playing = self.playing
        return s


class Downlink:
    """Inbound Opus RTP → PCM at ``output_rate_hz``.

    ``push_rtp()`` runs on the network thread and only appends to a queue (a deque: append and
    popleft are atomic). Everything else (``pull``, ``flush``) belongs to the playout thread.
    """

    def __init__(
        self,
        output_rate_hz: int = OPUS_RATE_HZ,
        *,
        target_delay_ms: int = 60,
        jitter_buffer: str = "native",
    ) -> None:
        if output_rate_hz <= 0:
            raise ValueError(f"output_rate_hz must be positive, not {output_rate_hz}")
        self.output_rate_hz = output_rate_hz
        self._queue: collections.deque[tuple[int, int, bytes, int]] = collections.deque()
        self._native: _NativeDownlink | None = None
        if getattr(_core, "Downlink", None) is not None and jitter_buffer == "native":
            with contextlib.suppress(ValueError):  # an output rate the native one lacks
                self._native = _NativeDownlink(output_rate_hz, target_delay_ms)
        self._jitter: FecJitterBuffer | NativeJitterBuffer
        if getattr(_core, "JitterBuffer", None) is not None and jitter_buffer != "simple":
            self._jitter = NativeJitterBuffer(target_delay_ms=target_delay_ms)
        else:
            self._jitter = FecJitterBuffer(target_frames=max(1, target_delay_ms // FRAME_MS))
        self.jitter_buffer_kind = (
            "NativeDownlink" if self._native is not None else type(self._jitter).__name__
        )
        self._resampler = StreamResampler(OPUS_RATE_HZ, output_rate_hz)
        self._pending = np.zeros(0, dtype=np.float32)
        self._flush_requested = threading.Event()
        self.packets_in = 0
        self.flushes = 0
        self.last_arrival_ns = 0
        # (monotonic ns, samples played so far) of the last pull, for played-position queries.
        self.samples_played = 0

    # network thread -----------------------------------------------------------------------
    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        if self._native is not None:
            self._native.push_rtp(seq, timestamp, payload, arrival_ns)
        else:
            self._queue.append((seq, timestamp, payload, arrival_ns))
        self.packets_in += 1
        self.last_arrival_ns = arrival_ns

    # any thread -----------------------------------------------------------------------------
    def request_flush(self) -> None:
        """Ask the playout side to drop everything queued (barge-in); takes effect next pull."""
        if self._native is not None:
            self._native.flush()
            self.flushes += 1
            return
        self._flush_requested.set()

    @property
    def media_samples_played(self) -> int:
        """Output-rate samples of received audio played so far (silence not counted by the
        native pipeline; the Python one counts every pulled sample)."""
        if self._native is not None:
            return self._native.media_samples_played
        return self.samples_played

    @property
    def stats(self) -> DownlinkStats:
        if self._native is not None:
            s = self._native.refresh_stats()
        elif isinstance(self._jitter, NativeJitterBuffer):
            s = self._jitter.refresh_stats()
        else:
            s = self._jitter.stats
            s.playing = self._jitter.playing
            s.buffer_delay_ms = float(self._jitter.buffered_frames * FRAME_MS)
            s.target_delay_ms = float(self._jitter.target_frames * FRAME_MS)
        s.samples_played = self.samples_played
        s.flushes = self.flushes
        return s

    # playout thread --------------------------------------------------------------------------
    def pull(self, n_samples: int, now_ns: int | None = None) -> FloatArray:
        """Return exactly ``n_samples`` of mono float32 audio at ``output_rate_hz``."""
        if now_ns is None:
            now_ns = time.monotonic_ns()
        if n_samples < 0:
            raise ValueError("n_samples must be >= 0")
        if self._native is not None:
            self.samples_played += n_samples
            return self._native.pull(n_samples, now_ns)
        if self._flush_requested.is_set():
            self._flush_requested.clear()
            self.flushes += 1
            self._queue.clear()
            dropped = self._jitter.flush()
            self._jitter.stats.samples_flushed += dropped * FRAME_SAMPLES + int(self._pending.size)
            self._pending = np.zeros(0, dtype=np.float32)
        while self._queue:
            seq, timestamp, payload, arrival_ns = self._queue.popleft()
            self._jitter.insert(seq, timestamp, payload, arrival_ns)
        parts = [self._pending]
        have = int(self._pending.size)
        while have < n_samples:
            frame = self._resampler.process(self._jitter.pull(now_ns))
            parts.append(frame)
            have += int(frame.size)
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        out = joined[:n_samples]
        self._pending = joined[n_samples:].copy()
        self.samples_played += n_samples
        return np.ascontiguousarray(out)


class PlayoutThread:
    """Headless playout clock: pulls ``frame_ms`` of audio from a Downlink at absolute monotonic
    deadlines and passes it to ``sink(pcm)`` on this thread. Never touches the event loop."""

    def __init__(
        self,
        downlink: Downlink,
        sink: Callable[[FloatArray], None],
        *,
        frame_ms: int = FRAME_MS,
        name: str = "rtvoice-playout",
    ) -> None:
        self._downlink = downlink
        self._sink = sink
        self._frame_ms = frame_ms
        self._n = downlink.output_rate_hz * frame_ms // 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.late_pulls = 0
        self.max_lateness_ms = 0.0
        self.start_ns: int | None = None

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period_ns = self._frame_ms * 1_000_000
        start = time.monotonic_ns()
        self.start_ns = start
        k = 0
        while not self._stop.is_set():
            due = start + k * period_ns
            now = time.monotonic_ns()
            if now < due:
                if self._stop.wait((due - now) / 1e9):
                    break
                now = time.monotonic_ns()
            lateness_ms = (now - due) / 1e6
            if lateness_ms > self._frame_ms:
                self.late_pulls += 1
            self.max_lateness_ms = max(self.max_lateness_ms, lateness_ms)
            self._sink(self._downlink.pull(self._n, now))
            k += 1

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
