"""Many full-duplex calls in one process (issue 11): N rtvoice calls, then N plain aiortc calls,
against one echo peer in a third process.

    python benchmarks/session/bench_concurrency.py --n 10 --seconds 15 [--json]
        [--only rtvoice|aiortc] [--media-path auto|native|python] [--aiortc-n 10]

The peer (``_echo_peer.py``, started once for the run, 127.0.0.1 only) answers each call with an
aiortc peer that sends every Opus packet it receives straight back, and logs the arrival time of
each packet per call (CLOCK_MONOTONIC, shared with the client processes on this host). Each stack
runs in a fresh child process, so its CPU and RSS are its own:

- rtvoice: N ``rtvoice.connect(transport="webrtc", record_output=False, input_buffer_s=1)``
  sessions opened ``--batch`` at a time; one application thread pushes the next 20 ms of a voiced
  signal (48 kHz float32) into every session every 20 ms (a microphone per call); each session's
  headless playout clock plays the echo.
- aiortc: N ``RTCPeerConnection`` s opened the same way, each sending through aiortc's own Opus
  encoder an ``AudioStreamTrack`` whose ``recv()`` yields the same signal as 20 ms 48 kHz s16
  frames (paced as aiortc's own ``AudioStreamTrack`` paces), and reading the echo with a
  ``track.recv()`` loop through aiortc's jitter buffer and decoder.

Once all calls are open and their audio has run ``--warmup`` seconds, a window of ``--seconds``
is measured:

- calls opened: connected within ``--open-timeout`` (failures are listed with their error);
- CPU s per audio-minute: ``time.process_time()`` of the child (all its threads) over the window
  / (calls x window / 60 s); one audio-minute is one minute of a call, both directions;
- RSS per call: (VmRSS at the end of the window - VmRSS before the first call) / calls; the
  baseline is taken after the imports, the event loop and one warm-up call opened and closed;
- send gaps: the intervals between consecutive RTP arrivals of each call at the peer within the
  window, pooled over the calls: p50, p99 and the share above 40 ms;
- audio played per call: rtvoice, the growth of ``session.downlink.media_samples_played`` (samples
  of the stream's audio, not concealment) over the window / (window x output rate); aiortc, the
  samples of the decoded frames its ``recv()`` returned over the window / (window x their rate).
  Mean over the calls, and the worst call.

Also printed: per row, the media path each call reports in ``session.metrics`` (a key named
``media_path`` anywhere in ``metrics.as_dict()``, "n/r" when there is none; ``--json`` adds the
``media_path_reason`` values), the peer's CPU and event-loop lag in the window (its gaps are the
peer's own when its loop lags), and the machine's total CPU use from ``/proc/stat`` (another
process on the machine shows there; it is sampled at the kernel tick, so it can undercount many
short wake-ups and read below the child's and the peer's own precise figures).

Targets (issue 11, on a 2-core machine): at N = 50 all calls open, < 1 % of gaps > 40 ms, ≥ 99 %
of audio played, CPU per audio-minute ≤ 0.5x aiortc's at N = 10 (``--aiortc-n 10``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fractions
import gc
import inspect
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _echo_peer

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
FRAME_S = 0.02
GAP_LIMIT_MS = 40.0
TARGET_GAPS_PCT = 1.0
TARGET_PLAYED_PCT = 99.0
TARGET_CPU_RATIO = 0.5


def voiced_frames(seconds: float = 1.0) -> np.ndarray:
    """``seconds`` of a voice-like signal (f0 150 ± 30 Hz, 7 harmonics, -17 dBFS) as rows of
    20 ms at 48 kHz, float32; looped by the senders."""
    t = np.arange(int(RATE * seconds)) / RATE
    f0 = 150 + 30 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    pcm = 0.2 * sum(np.sin(k * phase) / k for k in range(1, 8))
    return np.asarray(pcm, np.float32).reshape(-1, FRAME)


# --------------------------------------------------------------------------------- /proc


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over its cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    total = sum(values[:8])  # guest time is already inside user time
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


class Window:
    """CPU clocks read at the start and the end of the measured window."""

    def __init__(self, peer_pid: int) -> None:
        self.peer_pid = peer_pid

    def start(self) -> None:
        self.t0_ns = time.monotonic_ns()
        self.cpu0 = time.process_time()
        self.peer0 = process_cpu_s(self.peer_pid)
        self.machine0 = machine_cpu_s()

    def stop(self) -> dict[str, Any]:
        t1_ns = time.monotonic_ns()
        cpu = time.process_time() - self.cpu0
        peer = process_cpu_s(self.peer_pid) - self.peer0
        busy1, total1 = machine_cpu_s()
        seconds = (t1_ns - self.t0_ns) / 1e9
        return {
            "window_t0_ns": self.t0_ns,
            "window_t1_ns": t1_ns,
            "window_s": seconds,
            "cpu_s": cpu,
            "peer_cpu_s": peer,
            "machine_busy_cores": (busy1 - self.machine0[0]) / seconds,
            "machine_cores": (total1 - self.machine0[1]) / seconds,
        }


# --------------------------------------------------------------------------------- rtvoice


def values_of(obj: Any, name: str) -> list[str]:
    """Every value of a key ``name`` in a metrics dict, at any depth."""
    found: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == name:
                found.append(str(value))
            else:
                found.extend(values_of(value, name))
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            found.extend(values_of(value, name))
    return found


def accepts_media_path() -> bool:
    """Whether the installed rtvoice.connect takes ``media_path`` (connect forwards **kwargs to
    RealtimeSession, so its signature is the one that says)."""
    import rtvoice
    from rtvoice.session import RealtimeSession

    for fn in (rtvoice.connect, RealtimeSession.__init__):
        if "media_path" in inspect.signature(fn).parameters:
            return True
    return False


def microphone(
    sessions: list[Any], frames: np.ndarray, stop: threading.Event, failed: list[int]
) -> None:
    """The application's capture thread: 20 ms into every session every 20 ms, on the monotonic
    clock (a late tick pushes at once, as a buffered microphone would deliver). Pushes refused
    by a call that failed meanwhile are counted in ``failed[0]``."""
    t0 = time.monotonic()
    for s in sessions:  # one frame of lead, so the uplinks do not wait on the first push
        s.push_audio(frames[0], RATE)
    k = 1
    while not stop.is_set():
        delay = t0 + k * FRAME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk = frames[k % len(frames)]
        for s in sessions:
            try:
                s.push_audio(chunk, RATE)
            except Exception:
                failed[0] += 1
        k += 1


async def rtvoice_phase(args: argparse.Namespace) -> dict[str, Any]:
    import rtvoice

    kwargs: dict[str, Any] = {
        "base_url": args.base_url,
        "api_key": _echo_peer.KEY,
        "transport": "webrtc",
        "record_output": False,
        "input_buffer_s": 1.0,
        "connect_timeout_s": args.open_timeout,
    }
    if accepts_media_path():
        kwargs["media_path"] = args.media_path
    frames = voiced_frames()

    async with rtvoice.connect(**kwargs):  # warm-up: lazy imports and one-time allocations
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    gc.collect()
    base_kb = _status_kb("VmRSS")
    base_os_threads = _os_threads()

    sessions = [rtvoice.connect(**kwargs) for _ in range(args.n)]
    errors: list[str] = []

    async def open_one(s: Any) -> bool:
        try:
            await s.open()
            return True
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            return False

    t_open = time.monotonic()
    opened: list[Any] = []
    for i in range(0, args.n, args.batch):
        batch = sessions[i : i + args.batch]
        for s, ok in zip(batch, await asyncio.gather(*(open_one(s) for s in batch)), strict=True):
            if ok:
                opened.append(s)
    open_s = time.monotonic() - t_open

    stop = threading.Event()
    push_failed = [0]
    mic = threading.Thread(
        target=microphone, args=(opened, frames, stop, push_failed), name="bench-mic"
    )
    mic.start()
    await asyncio.sleep(args.warmup)
    live = [s for s in opened if s.state == "connected"]
    window = Window(args.peer_pid)
    played0 = [s.downlink.media_samples_played for s in live]
    window.start()
    await asyncio.sleep(args.seconds)
    out = window.stop()
    played1 = [s.downlink.media_samples_played for s in live]
    rss_kb = _status_kb("VmRSS")
    os_threads = _os_threads()
    still = [s.state == "connected" for s in live]
    stop.set()
    await asyncio.to_thread(mic.join)

    metrics = [s.metrics for s in live]
    as_dicts = [m.as_dict() for m in metrics]
    paths = collections.Counter(v for d in as_dicts for v in set(values_of(d, "media_path")))
    reasons = collections.Counter(
        v for d in as_dicts for v in set(values_of(d, "media_path_reason"))
    )
    uplink = [m.uplink for m in metrics]
    played_pct = [
        100.0 * (b - a) / (out["window_s"] * s.output_rate_hz)
        for s, a, b in zip(live, played0, played1, strict=True)
    ]
    for i in range(0, len(sessions), args.batch):
        await asyncio.gather(*(s.close() for s in sessions[i : i + args.batch]))
    out.update(
        {
            "stack": "rtvoice",
            "n": args.n,
            "opened": len(opened),
            "open_s": open_s,
            "errors": errors,
            "connected_through_window": sum(still),
            "calls_measured": len(live),
            "base_kb": base_kb,
            "rss_kb": rss_kb,
            "threads_per_call": (os_threads - base_os_threads) / max(len(live), 1),
            "played_pct": played_pct,
            "media_path_requested": kwargs.get("media_path"),
            "media_paths": dict(paths),
            "media_path_reasons": dict(reasons),
            "metrics_fields": sorted(as_dicts[0]) if as_dicts else [],
            "uplink_padded_frames": sum(int(u.get("padded_frames", 0)) for u in uplink),
            "uplink_silent_frames": sum(int(u.get("silent_frames", 0)) for u in uplink),
            "push_failed": push_failed[0],
            "uplink_clock_resets": sum(int(u.get("clock_resets", 0)) for u in uplink),
        }
    )
    return out


def _os_threads() -> int:
    return _status_kb("Threads")


# --------------------------------------------------------------------------------- aiortc


async def aiortc_phase(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
    from av import AudioFrame

    from rtvoice.rtc.loopback import restrict_to_loopback

    s16 = [(np.clip(f, -1, 1) * 32767).astype(np.int16).tobytes() for f in voiced_frames()]
    time_base = fractions.Fraction(1, RATE)

    class VoiceTrack(AudioStreamTrack):
        """aiortc's AudioStreamTrack pacing (time.time and asyncio.sleep), 20 ms of the voiced
        signal at 48 kHz per frame instead of 8 kHz silence."""

        async def recv(self) -> AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            if hasattr(self, "_timestamp"):
                self._timestamp += FRAME
                wait = self._start + (self._timestamp / RATE) - time.time()
                await asyncio.sleep(wait)
            else:
                self._start = time.time()
                self._timestamp = 0
            frame = AudioFrame(format="s16", layout="mono", samples=FRAME)
            frame.planes[0].update(s16[(self._timestamp // FRAME) % len(s16)])
            frame.pts = self._timestamp
            frame.sample_rate = RATE
            frame.time_base = time_base
            return frame

    class Call:
        def __init__(self) -> None:
            self.pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
            self.received_s = 0.0
            self.reader: asyncio.Future[None] | None = None
            self.pc.on("track", self._on_track)

        def _on_track(self, track: Any) -> None:
            self.reader = asyncio.ensure_future(self._read(track))

        async def _read(self, track: Any) -> None:
            try:
                while True:
                    frame = await track.recv()
                    self.received_s += frame.samples / frame.sample_rate
            except MediaStreamError:
                return

        async def open(self, http: aiohttp.ClientSession) -> None:
            self.pc.addTransceiver(VoiceTrack(), direction="sendrecv")
            channel = self.pc.createDataChannel("oai-events")
            ready = asyncio.Event()
            channel.on("open", ready.set)
            await self.pc.setLocalDescription(await self.pc.createOffer())
            async with http.post(
                f"{args.base_url}/realtime/calls",
                data=self.pc.localDescription.sdp,
                headers={
                    "Authorization": f"Bearer {_echo_peer.KEY}",
                    "Content-Type": "application/sdp",
                },
            ) as resp:
                answer = await resp.text()
                if resp.status != 201:
                    raise RuntimeError(f"POST /realtime/calls: HTTP {resp.status}: {answer[:100]}")
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await ready.wait()

        async def close(self) -> None:
            await self.pc.close()
            if self.reader is not None:
                self.reader.cancel()

    async with aiohttp.ClientSession() as http:
        warm = Call()  # warm-up: lazy imports and one-time allocations
        await asyncio.wait_for(warm.open(http), args.open_timeout)
        await asyncio.sleep(0.2)
        await warm.close()
        del warm
        await asyncio.sleep(0.5)
        gc.collect()
        base_kb = _status_kb("VmRSS")
        base_os_threads = _os_threads()

        calls = [Call() for _ in range(args.n)]
        errors: list[str] = []

        async def open_one(c: Call) -> bool:
            try:
                await asyncio.wait_for(c.open(http), args.open_timeout)
                return True
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                return False

        t_open = time.monotonic()
        opened: list[Call] = []
        for i in range(0, args.n, args.batch):
            batch = calls[i : i + args.batch]
            results = await asyncio.gather(*(open_one(c) for c in batch))
            opened.extend(c for c, ok in zip(batch, results, strict=True) if ok)
        open_s = time.monotonic() - t_open

        await asyncio.sleep(args.warmup)
        live = [c for c in opened if c.pc.connectionState == "connected"]
        window = Window(args.peer_pid)
        received0 = [c.received_s for c in live]
        window.start()
        await asyncio.sleep(args.seconds)
        out = window.stop()
        received1 = [c.received_s for c in live]
        rss_kb = _status_kb("VmRSS")
        os_threads = _os_threads()
        still = [c.pc.connectionState == "connected" for c in live]
        for i in range(0, len(calls), args.batch):
            await asyncio.gather(*(c.close() for c in calls[i : i + args.batch]))
    played_pct = [
        100.0 * (b - a) / out["window_s"] for a, b in zip(received0, received1, strict=True)
    ]
    out.update(
        {
            "stack": "aiortc",
            "n": args.n,
            "opened": len(opened),
            "open_s": open_s,
            "errors": errors,
            "connected_through_window": sum(still),
            "calls_measured": len(live),
            "base_kb": base_kb,
            "rss_kb": rss_kb,
            "threads_per_call": (os_threads - base_os_threads) / max(len(live), 1),
            "played_pct": played_pct,
            "media_paths": {},
        }
    )
    return out


def child(args: argparse.Namespace) -> None:
    phase = rtvoice_phase if args.child == "rtvoice" else aiortc_phase
    result = asyncio.run(phase(args))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------- parent


def peer_arrivals(base_url: str, first: int, since_ns: int, until_ns: int) -> dict[str, Any]:
    url = f"{base_url}/debug/arrivals?first={first}&since_ns={since_ns}&until_ns={until_ns}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def gap_stats(calls: list[dict[str, Any]]) -> dict[str, Any]:
    per_call = [np.diff(np.asarray(c["arrival_ns"], np.float64)) / 1e6 for c in calls]
    gaps = np.concatenate(per_call) if per_call else np.zeros(0, np.float64)
    if gaps.size == 0:
        return {"gaps": 0}
    over = [float(np.mean(g > GAP_LIMIT_MS) * 100) for g in per_call if g.size]
    return {
        "gaps": int(gaps.size),
        "calls_seen": sum(1 for g in per_call if g.size),
        "p50_ms": float(np.percentile(gaps, 50)),
        "p99_ms": float(np.percentile(gaps, 99)),
        "max_ms": float(gaps.max()),
        "over_40ms_pct": float(np.mean(gaps > GAP_LIMIT_MS) * 100),
        "worst_call_over_40ms_pct": max(over) if over else float("nan"),
    }


def run_child(stack: str, n: int, args: argparse.Namespace, base_url: str, peer_pid: int) -> Any:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        stack,
        "--n",
        str(n),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--batch",
        str(args.batch),
        "--open-timeout",
        str(args.open_timeout),
        "--media-path",
        args.media_path,
        "--base-url",
        base_url,
        "--peer-pid",
        str(peer_pid),
    ]
    timeout = 60 + args.warmup + args.seconds + n * args.open_timeout / args.batch
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{stack} child failed ({done.returncode}): {done.stderr[-3000:]}")


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    stacks = ["rtvoice", "aiortc"] if args.only is None else [args.only]
    proc, base_url = _echo_peer.spawn()
    rows = []
    try:
        for stack in stacks:
            n = args.aiortc_n if stack == "aiortc" and args.aiortc_n else args.n
            first = peer_arrivals(base_url, 2**62, 0, 0)["calls_total"]
            row = run_child(stack, n, args, base_url, proc.pid)
            peer = peer_arrivals(base_url, first, row["window_t0_ns"], row["window_t1_ns"])
            row["send"] = gap_stats(peer["calls"])
            lag = np.asarray(peer["loop_lag_ns"], np.int64) / 1e6
            row["peer_loop_lag_p99_ms"] = float(np.percentile(lag, 99)) if lag.size else None
            row["peer_loop_lag_max_ms"] = float(lag.max()) if lag.size else None
            rows.append(row)
    finally:
        _echo_peer.stop(proc)
    for row in rows:
        calls = max(row["calls_measured"], 1)
        row["cpu_s_per_audio_min"] = row["cpu_s"] / (calls * row["window_s"] / 60.0)
        row["rss_mb_per_call"] = (row["rss_kb"] - row["base_kb"]) / 1024 / calls
        played = row["played_pct"]
        row["played_mean_pct"] = float(np.mean(played)) if played else 0.0
        row["played_min_pct"] = float(np.min(played)) if played else 0.0
    return rows


def versions() -> str:
    import aiohttp
    import aiortc
    import av

    import rtvoice

    return (
        f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, av {av.__version__}, "
        f"aiohttp {aiohttp.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} cores"
    )


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"{args.seconds:g} s measured per stack after {args.warmup:g} s of audio; send gaps are "
        "RTP inter-arrival intervals at the echo peer (own process)"
    )
    header = (
        "stack",
        "media path",
        "calls opened",
        "CPU s/audio-min",
        "RSS MB/call",
        "gap p50 ms",
        "gap p99 ms",
        "gaps >40ms",
        "played/call",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        s = r["send"]
        paths = ", ".join(f"{k} {v}" for k, v in sorted(r["media_paths"].items()))
        if r["stack"] == "aiortc":
            paths = "aiortc"
        elif not paths:
            paths = "n/r"
        gaps = (
            f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['over_40ms_pct']:.2f} %"
            if s["gaps"]
            else "- | - | -"
        )
        print(
            f"| {r['stack']} | {paths} | {r['opened']}/{r['n']} | "
            f"{r['cpu_s_per_audio_min']:.3f} | {r['rss_mb_per_call']:.2f} | {gaps} | "
            f"{r['played_mean_pct']:.1f} % (min {r['played_min_pct']:.1f} %) |"
        )
    for r in rows:
        lag = r["peer_loop_lag_p99_ms"]
        lag_text = "-" if lag is None else f"{lag:.1f} ms (max {r['peer_loop_lag_max_ms']:.1f})"
        print(
            f"  {r['stack']}: opened in {r['open_s']:.1f} s, "
            f"{r['connected_through_window']}/{r['calls_measured']} connected through the window, "
            f"{r['threads_per_call']:.1f} threads/call, CPU {r['cpu_s'] / r['window_s']:.2f} "
            f"cores; peer CPU {r['peer_cpu_s'] / r['window_s']:.2f} cores, peer loop lag p99 "
            f"{lag_text}; machine {r['machine_busy_cores']:.2f}/{r['machine_cores']:.1f} cores busy"
        )
        if r["stack"] == "rtvoice":
            print(
                f"    uplink: {r['uplink_padded_frames']} padded, {r['uplink_silent_frames']} "
                f"silent frames, {r['uplink_clock_resets']} clock resets, "
                f"{r['push_failed']} pushes refused; media_path requested: "
                f"{r['media_path_requested'] or 'not passed (rtvoice.connect has no media_path)'}"
            )
            if not r["media_paths"]:
                print(
                    "    session.metrics has no media_path key; its fields: "
                    + ", ".join(r["metrics_fields"])
                )
        for text, count in collections.Counter(r["errors"]).most_common(5):
            print(f"    {count} failed: {text}")
    by = {r["stack"]: r for r in rows}
    if "rtvoice" in by and "aiortc" in by:
        a, b = by["rtvoice"], by["aiortc"]
        ratio = a["cpu_s_per_audio_min"] / b["cpu_s_per_audio_min"]
        print(
            f"CPU per audio-minute rtvoice/aiortc: {ratio:.2f} "
            f"(rtvoice at N = {a['n']}, aiortc at N = {b['n']})"
        )
        s = a["send"]
        checks = [
            ("all calls open", a["opened"] == a["n"] and a["connected_through_window"] == a["n"]),
            (
                f"gaps > 40 ms < {TARGET_GAPS_PCT:g} %",
                bool(s["gaps"]) and s["over_40ms_pct"] < TARGET_GAPS_PCT,
            ),
            (f"played ≥ {TARGET_PLAYED_PCT:g} %", a["played_min_pct"] >= TARGET_PLAYED_PCT),
            (f"CPU ≤ {TARGET_CPU_RATIO:g}x aiortc", ratio <= TARGET_CPU_RATIO),
        ]
        print(
            f"issue 11 targets (set for rtvoice at N = 50, aiortc at N = 10), rtvoice at "
            f"N = {a['n']}: " + ", ".join(f"{t} {'PASS' if ok else 'FAIL'}" for t, ok in checks)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="calls per stack")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="audio before the window")
    parser.add_argument("--batch", type=int, default=10, help="calls opened at once")
    parser.add_argument("--open-timeout", type=float, default=15.0)
    parser.add_argument("--only", choices=("rtvoice", "aiortc"))
    parser.add_argument("--media-path", choices=("auto", "native", "python"), default="auto")
    parser.add_argument("--aiortc-n", type=int, help="calls for the aiortc stack (default --n)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--child", choices=("rtvoice", "aiortc"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--peer-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.media_path != "auto" and not accepts_media_path():
        parser.error("the installed rtvoice.connect does not accept media_path")
    rows = measure(args)
    if args.json:
        print(json.dumps({"versions": versions(), "args": vars(args), "rows": rows}, indent=1))
        return
    print(versions())
    print_table(rows, args)


if __name__ == "__main__":
    main()
