"""Per-turn latency: scripted turns against the simulator, rtvoice and a plain aiortc client in
one run; and the jitter buffer on a clean link.

    python benchmarks/session/bench_turn_latency.py [--turns 8] [--clean-seconds 30]

Turns: the simulator (``rtvoice serve-sim``, in its own process, so the client process is
measured alone) answers each utterance after its server VAD's 500 ms of silence by playing the
utterance back (its scripted assistant: fixed server response time, the reply starting with the
VAD's 300 ms prefix padding). Each client sends the same script: 1.2 s of a voice-like signal
every ``--period`` seconds, silence between, as 20 ms frames on its own clock. Latency is from the
end of the user's speech as sent (the last frame at or above -45 dBFS leaving the client) to the
first audible sample of the reply as played (the first 5 ms at or above -45 dBFS after 250 ms
without), for both clients by the same rule:

- rtvoice: a real ``rtvoice.connect(transport="webrtc")`` session; the times are its native
  clocks' (the uplink's send time of the frame, the playout clock's time of the sample), read
  from ``session.metrics.turns``.
- aiortc: a stock ``RTCPeerConnection``, its ``AudioStreamTrack``-style source paced on the
  application's loop (the time its ``recv()`` returns the frame is its send time), the remote
  track read by a 20 ms playout loop as in ``bench_transports.py`` (aiortc's own jitter buffer,
  capacity 16, prefetch 4), the sample's time is the loop tick that plays it.

Clean link: a 30 s rtvoice call against the echo peer (``_echo_peer.py``, own process, no
impairment), speech pushed continuously; the jitter buffer's ``current_delay_ms`` every 50 ms:
median, p5-p95 and max-min, including the start-up and from 2 s on, and its concealment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiortc
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

import rtvoice
from rtvoice.audio.sources import read_wav
from rtvoice.cli import bundled_clip
from rtvoice.rtc.loopback import restrict_to_loopback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _echo_peer

RATE = 48000
FRAME = 960
FRAME_NS = 20_000_000
VOICE_DBFS = -45.0
ONSET_GAP_NS = 250_000_000
WINDOW = RATE // 200  # 5 ms


def voice_like(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    pcm = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))
    return np.asarray(pcm, np.float32)


def script(turns: int, period_s: float, utterance_s: float) -> np.ndarray:
    """1 s of silence, then each turn: the utterance and silence up to the period."""
    speech = voice_like(utterance_s)
    period = np.zeros(int(period_s * RATE), np.float32)
    period[: speech.size] = speech
    return np.concatenate([np.zeros(RATE, np.float32), np.tile(period, turns)])


def voiced(frame: np.ndarray) -> bool:
    power = float(np.mean(frame.astype(np.float64) ** 2))
    return power >= 10 ** (VOICE_DBFS / 10)


@dataclass
class Run:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    speech_stopped_ms: list[float] = field(default_factory=list)
    notes: str = ""


# --------------------------------------------------------------------------------- rtvoice


async def run_rtvoice(base_url: str, key: str, pcm: np.ndarray, turns: int) -> Run:
    run = Run("rtvoice WebRTC")
    async with rtvoice.connect(
        base_url=base_url, api_key=key, transport="webrtc", record_output=False
    ) as s:
        stop = threading.Event()

        def microphone() -> None:
            t0 = time.monotonic()
            for k in range(pcm.size // FRAME):
                if stop.is_set():
                    return
                delay = t0 + k * 0.02 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                s.push_audio(pcm[k * FRAME : (k + 1) * FRAME], RATE)

        thread = threading.Thread(target=microphone, name="bench-microphone")
        thread.start()
        await asyncio.to_thread(thread.join)
        for _ in range(40):  # the last reply
            if len(s.metrics.turns) >= turns:
                break
            await asyncio.sleep(0.1)
        stop.set()
        m = s.metrics
    for t in m.turns:
        run.latencies_ms.append(float(t["latency_ms"]))
        if t["speech_stopped_ms"] is not None:
            run.speech_stopped_ms.append(float(t["speech_stopped_ms"]))
    jb = m.jitter_buffer
    run.notes = (
        f"parts p50: server {pct([t['server_ms'] for t in m.turns], 50):.0f}, network "
        f"{pct([t['network_ms'] or 0 for t in m.turns], 50):.1f}, jitter buffer "
        f"{pct([t['jitter_buffer_ms'] or 0 for t in m.turns], 50):.0f}, playout "
        f"{pct([t['playout_ms'] for t in m.turns], 50):.1f} ms; jb target "
        f"{jb['target_delay_ms']:.0f} ms"
    )
    return run


# --------------------------------------------------------------------------------- aiortc


class ScriptTrack(MediaStreamTrack):
    """aiortc-style source: 20 ms s16 frames of the script, paced with asyncio.sleep."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray, sent_voiced: list[int]) -> None:
        super().__init__()
        self._pcm = pcm
        self._k = 0
        self._start: float | None = None
        self._sent_voiced = sent_voiced

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._k * 0.02
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        i = self._k * FRAME
        chunk = self._pcm[i : i + FRAME]
        if chunk.size < FRAME:
            chunk = np.zeros(FRAME, np.float32)
        if voiced(chunk):
            self._sent_voiced.append(time.monotonic_ns())
        s16 = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
        frame = AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._k * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self._k += 1
        return frame


def onsets(samples: np.ndarray, times_ns: np.ndarray) -> list[int]:
    """Play times of voice onsets: 5 ms windows at the threshold after 250 ms without."""
    out: list[int] = []
    last: int | None = None
    for pos in range(0, samples.size - WINDOW + 1, WINDOW):
        if not voiced(samples[pos : pos + WINDOW]):
            continue
        t = int(times_ns[pos])
        if last is None or t - last >= ONSET_GAP_NS:
            out.append(t)
        last = t + WINDOW * 1_000_000_000 // RATE
    return out


def match_turns(voiced_ns: list[int], onset_ns: list[int]) -> list[float]:
    """For each utterance (a run of voiced sends), the first onset after its last voiced send."""
    ends: list[int] = []
    for t in voiced_ns:
        if ends and t - ends[-1] < 300_000_000:
            ends[-1] = t
        else:
            ends.append(t)
    latencies = []
    for end in ends:
        later = [o for o in onset_ns if o > end]
        if later:
            latencies.append((later[0] - end) / 1e6)
    return latencies


async def run_aiortc(base_url: str, key: str, pcm: np.ndarray) -> Run:
    run = Run(f"aiortc {aiortc.__version__} WebRTC")
    sent_voiced: list[int] = []
    stopped: list[int] = []
    pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    pc.addTransceiver(ScriptTrack(pcm, sent_voiced), direction="sendrecv")
    channel = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    channel.on("open", opened.set)

    @channel.on("message")
    def on_message(message: Any) -> None:
        if isinstance(message, str) and '"input_audio_buffer.speech_stopped"' in message:
            stopped.append(time.monotonic_ns())

    remote: list[MediaStreamTrack] = []
    pc.on("track", remote.append)
    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url}/realtime/calls",
            data=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
        ) as resp,
    ):
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(opened.wait(), 15)
    track = remote[0]
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def reader() -> None:
        with contextlib.suppress(Exception):
            while True:
                queue.put_nowait(await track.recv())

    reader_task = asyncio.ensure_future(reader())
    played: list[tuple[int, np.ndarray]] = []
    start = time.monotonic_ns()
    seconds = pcm.size / RATE + 3.0
    k = 0
    pending = np.zeros(0, np.float32)
    while time.monotonic_ns() - start < seconds * 1e9:
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
    reader_task.cancel()
    await pc.close()
    samples = np.concatenate([c for _, c in played])
    times = np.concatenate([t + np.arange(c.size) * (1e9 / RATE) for t, c in played])
    run.latencies_ms = match_turns(sent_voiced, onsets(samples, times))
    ends = match_turns(sent_voiced, stopped)
    run.speech_stopped_ms = ends
    run.notes = "send = recv() return; play = the 20 ms playout loop's tick"
    return run


# --------------------------------------------------------------------------------- clean link


async def clean_link(seconds: float) -> dict[str, float]:
    proc, url = _echo_peer.spawn()
    try:
        speech, rate = read_wav(bundled_clip())
        loop_pcm = np.tile(speech, int(seconds / (speech.size / rate)) + 2)
        async with rtvoice.connect(
            base_url=url, api_key=_echo_peer.KEY, transport="webrtc", record_output=False
        ) as s:
            stop = threading.Event()

            def feed() -> None:
                n = rate // 50
                t0 = time.monotonic()
                for k in range(loop_pcm.size // n):
                    if stop.is_set():
                        return
                    delay = t0 + k * 0.02 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    s.push_audio(loop_pcm[k * n : (k + 1) * n], rate)

            thread = threading.Thread(target=feed, name="bench-feed")
            thread.start()
            samples: list[tuple[float, float]] = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                jb = s.downlink.stats["jitter"]
                if jb.current_delay_ms:
                    samples.append((time.monotonic() - t0, float(jb.current_delay_ms)))
                await asyncio.sleep(0.05)
            stop.set()
            thread.join()
            jb_final = s.metrics.jitter_buffer
    finally:
        _echo_peer.stop(proc)
    every = np.array([d for _, d in samples])
    settled = np.array([d for t, d in samples if t >= 2.0])
    return {
        "median": float(np.median(every)),
        "p5": float(np.percentile(every, 5)),
        "p95": float(np.percentile(every, 95)),
        "wander_all": float(every.max() - every.min()),
        "wander_settled": float(settled.max() - settled.min()),
        "median_settled": float(np.median(settled)),
        "concealed_ms": jb_final["concealed_samples"] / 48.0,
        "target": float(jb_final["target_delay_ms"]),
    }


# --------------------------------------------------------------------------------- main


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def spawn_simulator() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvoice.cli", "serve-sim"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = re.search(r"base_url=(\S+)", proc.stdout.readline())
    key = re.search(r"standard key: (\S+)", proc.stdout.readline())
    if url is None or key is None:
        proc.kill()
        raise RuntimeError("the simulator did not start")
    return proc, url.group(1), key.group(1)


async def main(turns: int, period_s: float, clean_seconds: float) -> int:
    print(f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, numpy {np.__version__}")
    pcm = script(turns, period_s, 1.2)
    runs: list[Run] = []
    proc, url, key = spawn_simulator()
    try:
        runs.append(await run_rtvoice(url, key, pcm, turns))
        runs.append(await run_aiortc(url, key, pcm))
    finally:
        proc.terminate()
        proc.wait(5)
    print(
        f"\nturn latency, {turns} scripted turns (end of speech as sent -> reply heard as played)"
    )
    print("| client | turns | p50 ms | p95 ms | min ms | to speech_stopped p50 ms | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        lat = r.latencies_ms
        print(
            f"| {r.name} | {len(lat)}/{turns} | {pct(lat, 50):.1f} | {pct(lat, 95):.1f} | "
            f"{min(lat) if lat else float('nan'):.1f} | {pct(r.speech_stopped_ms, 50):.1f} | "
            f"{r.notes} |"
        )
    if runs[0].latencies_ms and runs[1].latencies_ms:
        ratio = pct(runs[0].latencies_ms, 50) / pct(runs[1].latencies_ms, 50)
        print(f"rtvoice / aiortc p50: {ratio:.2f}")
    if clean_seconds > 0:
        c = await clean_link(clean_seconds)
        print(f"\nclean link, {clean_seconds:.0f} s against the echo peer: jitter-buffer delay")
        print(
            f"median {c['median']:.1f} ms (from 2 s: {c['median_settled']:.1f}), "
            f"p5-p95 {c['p5']:.1f}-{c['p95']:.1f} ms, max-min {c['wander_all']:.1f} ms "
            f"(from 2 s: {c['wander_settled']:.1f} ms), target {c['target']:.1f} ms, "
            f"concealed {c['concealed_ms']:.0f} ms"
        )
        ok = c["median"] <= 30.0 and c["wander_settled"] <= 10.0
        print(f"target median <= 30 ms and wander <= 10 ms: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--period", type=float, default=4.5, help="seconds per scripted turn")
    parser.add_argument("--clean-seconds", type=float, default=30.0, help="0: skip")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.turns, args.period, args.clean_seconds)))
