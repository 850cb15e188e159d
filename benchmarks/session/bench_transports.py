"""Mouth-to-ear latency and client CPU per audio-minute: rtvoice on WebRTC and on WebSocket
(``ws_chunk_ms`` 20, 40, 100), with stock aiortc as the reference, in one run.

The far end is an echo peer in its own process (``_echo_peer.py``) that sends the client's audio
straight back: every RTP packet on WebRTC, every ``input_audio_buffer.append`` as a
``response.output_audio.delta`` on WebSocket. The simulator's assistant is not used on purpose:
it replies only after its VAD has seen the end of an utterance, so its latency would be mostly
scripted turn-taking. The echo peer measures the client's own path, the same on both transports:

    push_audio -> Uplink ring -> (WebRTC) Opus + RTP / (WebSocket) 24 kHz PCM16 + base64 JSON
    -> loopback -> echo -> Downlink (jitter buffer / PCM prebuffer) -> PlayoutDriver clock

Clocks (all CLOCK_MONOTONIC of this process):
- mouth: a thread pushes 20 ms chunks of 48 kHz float32 with ``session.push_audio``; every 500 ms
  the chunk starts with a 5 ms 1 kHz burst. Pushes are locked to the uplink's own sample clock
  (``session.uplink.next_due_ns``) and land 10 ms before the packet they fill is due, the mean
  phase of a free-running microphone; "mouth" is the time of the push. "release" is that due
  time (when the transport's sender may take the packet), so mouth-to-release is 10 ms by design
  plus the resampler's delay on WebSocket.
- ear: the session's native ``PlayoutDriver`` pulls frame j at start + j * 20 ms, so sample k
  plays at start + k / 48 kHz. ``audio_sink`` sees every sample in order (a running count), but
  on a pump thread that wakes every ~20 ms; start is estimated as min over sink calls of
  (call time - time of the last frame delivered). That estimate is never early, and is late by
  the smallest observed pump lag, bounded by the printed "pump lag" figure (the lag sweeps the
  whole 20 ms period when the two threads drift against each other, which they do).
  The click is "heard" at its first sample above 0.2. A device's own output latency is not
  included (no device).
- CPU: ``time.process_time()`` of this process over the streaming window divided by the
  window's minutes (duplex: one minute of audio each way); it includes the push thread and the
  sink, not the echo peer.

aiortc (reference): its own encoder fed by an ``AudioStreamTrack``-style source paced with
asyncio.sleep, the same echo peer, aiortc's ``JitterBuffer(capacity=16, prefetch=4)`` and
decoder, ``track.recv()`` consumed by a 20 ms playout loop; mouth is the source's ``recv()``
(aiortc encodes and sends at once, so that is also its release), ear is the playout loop's tick.

``--loss F`` adds WebRTC runs with the echo peer dropping a seeded fraction F of the echoed
packets (TCP does not lose packets, so WebSocket has no lossy row).

Run: python benchmarks/session/bench_transports.py [--seconds 20] [--loss 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiortc
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

import rtvoice
from rtvoice.rtc.loopback import restrict_to_loopback

try:
    from . import _echo_peer
except ImportError:
    import _echo_peer  # type: ignore[no-redef]

KEY = _echo_peer.KEY
RATE = 48000
FRAME = 960
FRAME_NS = 20_000_000
CLICK_EVERY_FRAMES = 25  # 500 ms
LEAD_NS = 10_000_000  # a push lands this long before the packet it fills is due
MATCH_WINDOW_NS = 480_000_000


def click_frame() -> np.ndarray:
    frame = np.zeros(FRAME, dtype=np.float32)
    t = np.arange(240) / RATE
    frame[:240] = 0.8 * np.sin(2 * np.pi * 1000 * t) * np.hanning(240)
    return frame


def find_clicks(samples: np.ndarray) -> list[int]:
    """Sample index of the start of each click: first sample above 0.2 after 250 ms quiet."""
    out = []
    last = -RATE
    for i in np.flatnonzero(np.abs(samples) > 0.2):
        if i - last > RATE // 4:
            out.append(int(i))
        last = i
    return out


def match(mouth_ns: list[int], ear_ns: list[int]) -> list[tuple[int, int]]:
    """(mouth, ear) pairs: each click to the first one heard after it, within the window."""
    pairs = []
    ears = np.asarray(ear_ns, dtype=np.int64)
    for m in mouth_ns:
        j = int(np.searchsorted(ears, m, side="right"))
        if j < ears.size and ears[j] - m < MATCH_WINDOW_NS:
            pairs.append((m, int(ears[j])))
    return pairs


@dataclass
class Result:
    name: str
    mouth_to_ear_ms: list[float] = field(default_factory=list)
    release_to_ear_ms: list[float] = field(default_factory=list)
    clicks_sent: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    pump_lag_ms: tuple[float, float] = (0.0, 0.0)
    notes: str = ""

    @property
    def cpu_per_audio_min(self) -> float:
        return self.cpu_s / (self.wall_s / 60.0) if self.wall_s else float("nan")


async def run_rtvoice(
    name: str, base_url: str, transport: str, seconds: float, ws_chunk_ms: int = 20
) -> Result:
    sink_calls: list[tuple[int, np.ndarray]] = []

    def sink(pcm: np.ndarray) -> None:
        sink_calls.append((time.monotonic_ns(), pcm))

    res = Result(name)
    mouth: list[int] = []
    release: list[int] = []
    async with rtvoice.connect(
        base_url=base_url,
        api_key=KEY,
        transport=transport,
        ws_chunk_ms=ws_chunk_ms,
        audio_sink=sink,
        record_output=False,
    ) as s:
        stop = threading.Event()
        # The sender's clock is running once the session is connected.
        for _ in range(100):
            if s.uplink.next_due_ns is not None:
                break
            await asyncio.sleep(0.01)
        anchor = s.uplink.next_due_ns
        assert anchor is not None, "the uplink's clock never started"

        def capture() -> None:
            k = 0
            first_due = anchor + 5 * FRAME_NS
            while not stop.is_set():
                due = first_due + k * FRAME_NS
                delay = (due - LEAD_NS - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                is_click = k % CLICK_EVERY_FRAMES == 5
                frame = click_frame() if is_click else np.zeros(FRAME, np.float32)
                now = time.monotonic_ns()
                s.push_audio(frame, RATE)
                if is_click:
                    mouth.append(now)
                    release.append(due)
                k += 1

        thread = threading.Thread(target=capture, name="bench-capture")
        cpu0, wall0 = time.process_time(), time.monotonic()
        thread.start()
        await asyncio.sleep(seconds)
        stop.set()
        thread.join()
        await asyncio.sleep(0.5)  # let the last clicks come back
        res.cpu_s = time.process_time() - cpu0
        res.wall_s = time.monotonic() - wall0
        m = s.metrics
        up, down, jb, play = m.uplink, m.downlink, m.jitter_buffer, m.playout
    if play.get("overrun_frames") or not sink_calls:
        res.notes = f"playout ring overran ({play.get('overrun_frames')} frames): ear clock invalid"
        return res
    # The ear clock: sample k plays at start + k / RATE.
    counts = np.cumsum([c.size for _, c in sink_calls])
    call_ns = np.asarray([t for t, _ in sink_calls], dtype=np.int64)
    last_frame_ns = ((counts - FRAME) * 1e9 / RATE).astype(np.int64)
    start = int(np.min(call_ns - last_frame_ns))
    lag = (call_ns - last_frame_ns - start) / 1e6
    res.pump_lag_ms = (float(np.percentile(lag, 50)), float(lag.max()))
    samples = np.concatenate([c for _, c in sink_calls])
    ear = [start + int(i * 1e9 / RATE) for i in find_clicks(samples)]
    by_mouth = dict(zip(mouth, release, strict=True))
    # Only clicks pushed after the first 0.5 s count (the jitter buffer settles).
    settled = [t for t in mouth if t - mouth[0] >= 500_000_000] if mouth else []
    res.clicks_sent = len(settled)
    for mo, e in match(settled, ear):
        res.mouth_to_ear_ms.append((e - mo) / 1e6)
        res.release_to_ear_ms.append((e - by_mouth[mo]) / 1e6)
    bits = [f"late ticks {play.get('late_ticks', 0)}"]
    if transport == "webrtc":
        bits.append(
            f"jb delay {jb['current_delay_ms']:.0f}/{jb['target_delay_ms']:.0f} ms, "
            f"lost {jb['packets_lost']}, FEC {jb['fec_recovered_frames']}, "
            f"concealed {jb['concealed_samples'] / RATE * 1000:.0f} ms"
        )
    else:
        bits.append(f"pcm underruns {down['pcm_underruns']}")
    if up.get("clock_resets") or up.get("frames_dropped"):
        bits.append(f"uplink resets {up['clock_resets']} dropped {up['frames_dropped']}")
    res.notes = "; ".join(bits)
    return res


class ClickTrack(MediaStreamTrack):
    """aiortc-style source: 20 ms s16 frames paced with asyncio.sleep against a start time."""

    kind = "audio"

    def __init__(self, mouth: list[int]) -> None:
        super().__init__()
        self.mouth = mouth
        self.k = 0
        self.start: float | None = None

    async def recv(self) -> Any:
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.k * 0.02 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        is_click = self.k % CLICK_EVERY_FRAMES == 5
        pcm = click_frame() if is_click else np.zeros(FRAME, np.float32)
        if is_click:
            self.mouth.append(time.monotonic_ns())
        frame = av.AudioFrame.from_ndarray(
            (pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self.k * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.k += 1
        return frame


async def run_aiortc(name: str, base_url: str, seconds: float) -> Result:
    res = Result(name)
    mouth: list[int] = []
    pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    pc.addTransceiver(ClickTrack(mouth), direction="sendrecv")
    channel = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    channel.on("open", opened.set)
    remote: list[MediaStreamTrack] = []
    pc.on("track", remote.append)
    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url}/realtime/calls",
            data=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"},
        ) as resp,
    ):
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(opened.wait(), 15)
    track = remote[0]
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def reader() -> None:
        while True:
            queue.put_nowait(await track.recv())

    reader_task = asyncio.ensure_future(reader())
    played: list[tuple[int, np.ndarray]] = []
    cpu0, wall0 = time.process_time(), time.monotonic()
    start = time.monotonic_ns()
    k = 0
    pending = np.zeros(0, np.float32)
    while time.monotonic_ns() - start < (seconds + 0.5) * 1e9:
        due = start + k * FRAME_NS
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        while not queue.empty() and pending.size < FRAME:
            frame = queue.get_nowait()
            data = frame.to_ndarray().astype(np.float32) / 32768.0
            mono = data.reshape(-1, len(frame.layout.channels))[:, 0]
            pending = np.concatenate([pending, mono])
        if pending.size >= FRAME:
            out, pending = pending[:FRAME], pending[FRAME:]
        else:
            out = np.zeros(FRAME, np.float32)
        played.append((time.monotonic_ns(), out))
        k += 1
    res.cpu_s = time.process_time() - cpu0
    res.wall_s = time.monotonic() - wall0
    reader_task.cancel()
    await pc.close()
    samples = np.concatenate([c for _, c in played])
    times = np.concatenate([t + np.arange(c.size) * (1e9 / RATE) for t, c in played])
    ear = [int(times[i]) for i in find_clicks(samples)]
    settled = [t for t in mouth if t - mouth[0] >= 500_000_000] if mouth else []
    res.clicks_sent = len(settled)
    for mo, e in match(settled, ear):
        res.mouth_to_ear_ms.append((e - mo) / 1e6)
        res.release_to_ear_ms.append((e - mo) / 1e6)
    res.notes = "mouth = release (aiortc encodes as its source returns)"
    return res


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def table(results: list[Result]) -> None:
    head = (
        "| | clicks heard | mouth-to-ear p50 ms | p95 ms | max ms | release-to-ear p50 ms |"
        " CPU s / audio-min |"
    )
    print(head)
    print("|---|---|---|---|---|---|---|")
    for r in results:
        m = r.mouth_to_ear_ms
        print(
            f"| {r.name} | {len(m)}/{r.clicks_sent} | {pct(m, 50):.1f} | {pct(m, 95):.1f} |"
            f" {max(m) if m else float('nan'):.1f} | {pct(r.release_to_ear_ms, 50):.1f} |"
            f" {r.cpu_per_audio_min:.2f} |"
        )
    print()
    for r in results:
        lag = (
            f"pump lag p50/max {r.pump_lag_ms[0]:.1f}/{r.pump_lag_ms[1]:.1f} ms; "
            if (r.pump_lag_ms[1])
            else ""
        )
        print(f"  {r.name}: {lag}{r.notes}")


async def main(seconds: float, loss: float, seed: int) -> list[Result]:
    clean_proc, clean_url = _echo_peer.spawn()
    lossy = _echo_peer.spawn(loss, seed) if loss > 0 else None
    results: list[Result] = []
    try:
        results.append(await run_rtvoice("rtvoice WebRTC", clean_url, "webrtc", seconds))
        for chunk in (20, 40, 100):
            results.append(
                await run_rtvoice(
                    f"rtvoice WebSocket, ws_chunk_ms={chunk}",
                    clean_url,
                    "websocket",
                    seconds,
                    ws_chunk_ms=chunk,
                )
            )
        results.append(await run_aiortc("aiortc WebRTC (reference)", clean_url, seconds))
        if lossy is not None:
            pct_loss = f"{loss * 100:g} % loss"
            results.append(
                await run_rtvoice(f"rtvoice WebRTC, {pct_loss}", lossy[1], "webrtc", seconds)
            )
            results.append(await run_aiortc(f"aiortc WebRTC, {pct_loss}", lossy[1], seconds))
    finally:
        _echo_peer.stop(clean_proc)
        if lossy is not None:
            _echo_peer.stop(lossy[0])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="streaming time per row")
    parser.add_argument("--loss", type=float, default=0.0, help="also run WebRTC with this loss")
    parser.add_argument("--seed", type=int, default=1, help="loss seed")
    args = parser.parse_args()
    print(
        f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, aiohttp "
        f"{aiohttp.__version__}, av {av.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"echo peer on 127.0.0.1 in its own process; {args.seconds:g} s per row, a click every "
        "500 ms; mouth = push (10 ms before its packet is due), ear = native playout clock"
    )
    t0 = time.monotonic()
    out = asyncio.run(main(args.seconds, args.loss, args.seed))
    table(out)
    print(f"  total {time.monotonic() - t0:.0f} s")
