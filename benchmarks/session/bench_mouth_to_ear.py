"""Mouth-to-ear latency on loopback: rtvoice's audio path vs the same path built from stock aiortc
components (its Opus encoder, its receive jitter buffer and decoder).

The peer (own process) sends every RTP packet straight back. Each client "captures" a click
every 500 ms on a 20 ms capture clock and "plays" received audio on a 20 ms playout clock; the
latency of a click is the time it is played minus the time it was captured (both on this
process's monotonic clock). Both clients use 48 kHz mono.

- rtvoice: Uplink (native Opus, sample clock, transport thread) → echo → RTP tap → Downlink
  (jitter buffer, native Opus decode) pulled by its playout thread.
- aiortc: an AudioStreamTrack-style source paced with asyncio.sleep → aiortc's encoder →
  echo → aiortc's JitterBuffer(capacity=16, prefetch=4) and decoder → track.recv() consumed
  by a 20 ms playout loop (silence when nothing is ready).

Run: python benchmarks/session/bench_mouth_to_ear.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import threading
import time
from typing import Any

import aiohttp
import aiortc
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

import rtvoice
from rtvoice.rtc.loopback import restrict_to_loopback
from rtvoice.session import connect

try:
    from . import _peer
except ImportError:
    import _peer  # type: ignore[no-redef]

KEY = "ek_test_key_1234"
RATE = 48000
FRAME = 960
CLICK_EVERY_FRAMES = 25  # 500 ms


def click_frame() -> np.ndarray:
    frame = np.zeros(FRAME, dtype=np.float32)
    t = np.arange(240) / RATE
    frame[:240] = 0.8 * np.sin(2 * np.pi * 1000 * t) * np.hanning(240)
    return frame


def find_clicks(samples: np.ndarray, times_ns: np.ndarray) -> list[int]:
    """Play time (ns) of the start of each click: first sample above threshold after silence."""
    env = np.abs(samples) > 0.2
    out = []
    last = -RATE
    for i in np.flatnonzero(env):
        if i - last > RATE // 4:
            out.append(int(times_ns[i]))
        last = i
    return out


def latencies(captured: list[int], played: list[int]) -> list[float]:
    res = []
    for c in captured:
        later = [p for p in played if p > c]
        if later and later[0] - c < 400_000_000:
            res.append((later[0] - c) / 1e6)
    return res


async def run_rtvoice(base_url: str, seconds: float) -> list[float]:
    out_chunks: list[tuple[int, np.ndarray]] = []

    def sink(pcm: np.ndarray) -> None:
        out_chunks.append((time.monotonic_ns(), pcm))

    captured: list[int] = []
    async with connect(base_url=base_url, api_key=KEY, audio_sink=sink, record_output=False) as s:
        stop = threading.Event()

        def capture() -> None:
            start = time.monotonic_ns()
            k = 0
            while not stop.is_set():
                due = start + k * 20_000_000
                delay = (due - time.monotonic_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                is_click = k % CLICK_EVERY_FRAMES == 5
                frame = click_frame() if is_click else np.zeros(FRAME, np.float32)
                if is_click:
                    captured.append(time.monotonic_ns())
                s.push_audio(frame, RATE)
                k += 1

        thread = threading.Thread(target=capture)
        thread.start()
        await asyncio.sleep(seconds)
        stop.set()
        thread.join()
    samples = np.concatenate([c for _, c in out_chunks])
    # A chunk handed to the sink at time t starts playing at t (the device would play it next).
    times = np.concatenate([t + np.arange(c.size) * (1e9 / RATE) for t, c in out_chunks]).astype(
        np.int64
    )
    return latencies(captured, find_clicks(samples, times))


class ClickTrack(MediaStreamTrack):
    """aiortc-style source: 20 ms s16 frames paced with asyncio.sleep against a start time."""

    kind = "audio"

    def __init__(self, captured: list[int]) -> None:
        super().__init__()
        self.captured = captured
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
            self.captured.append(time.monotonic_ns())
        frame = av.AudioFrame.from_ndarray(
            (pcm * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self.k * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.k += 1
        return frame


async def run_aiortc(base_url: str, seconds: float) -> list[float]:
    captured: list[int] = []
    pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    pc.addTransceiver(ClickTrack(captured), direction="sendrecv")
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
    start = time.monotonic_ns()
    k = 0
    pending = np.zeros(0, np.float32)
    while time.monotonic_ns() - start < seconds * 1e9:
        due = start + k * 20_000_000
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        while not queue.empty() and pending.size < FRAME:
            frame = queue.get_nowait()
            data = frame.to_ndarray().astype(np.float32) / 32768.0
            mono = data.reshape(-1, len(frame.layout.channels))[:, 0] if data.ndim else data
            pending = np.concatenate([pending, mono])
        if pending.size >= FRAME:
            out, pending = pending[:FRAME], pending[FRAME:]
        else:
            out = np.zeros(FRAME, np.float32)
        played.append((time.monotonic_ns(), out))
        k += 1
    reader_task.cancel()
    await pc.close()
    samples = np.concatenate([c for _, c in played])
    times = np.concatenate([t + np.arange(c.size) * (1e9 / RATE) for t, c in played]).astype(
        np.int64
    )
    return latencies(captured, find_clicks(samples, times))


def describe(xs: list[float]) -> str:
    if not xs:
        return "no clicks found"
    a = np.asarray(xs)
    p50, p95 = np.percentile(a, 50), np.percentile(a, 95)
    return f"n={a.size:3d}  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {a.max():6.1f} ms"


async def main(seconds: float) -> tuple[list[float], list[float]]:
    proc, base_url, _ = _peer.spawn(echo=True)
    try:
        ours = await run_rtvoice(base_url, seconds)
        stock = await run_aiortc(base_url, seconds)
    finally:
        _peer.stop(proc)
    return ours, stock


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, av {av.__version__}")
    ours, stock = asyncio.run(main(args.seconds))
    print("mouth-to-ear on loopback through an echo peer (capture clock -> playout clock)")
    print(f"  rtvoice  {describe(ours)}")
    print(f"  aiortc   {describe(stock)}")
    if ours and stock:
        print(f"  p50 ratio rtvoice/aiortc: {np.median(ours) / np.median(stock):.2f}")
