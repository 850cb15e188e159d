"""Send-interval regularity while the application blocks its event loop 15 ms every 100 ms.

Both clients send 20 ms Opus packets to the same peer, which runs in its own process and logs
arrival times; the figure is the distribution of intervals between consecutive arrivals (ideal:
20 ms each).

- rtvoice: a real ``rtvoice.connect(..., transport="webrtc")`` session: the native
  ``rtvoice.Uplink`` (Opus, sample clock) drained with ``pop_due`` by the transport on its own
  thread and loop; the app queues the whole tone up front with ``session.push_audio``.
- aiortc: a stock RTCPeerConnection on the application's loop with aiortc's own AudioStreamTrack
  (paced with asyncio.sleep) and aiortc's Opus encoder.

The blocker holds the loop either with a busy CPU loop (keeps the GIL) or with time.sleep
(releases it). Mode ``spin`` instead runs an application thread in a pure-Python loop for the
whole call: it holds the GIL and gives it up only at the switch interval
(``sys.getswitchinterval()``, 5 ms), so every other thread's Python runs in its gaps.

Target (issue 11): the rtvoice send p99 stays <= 25 ms while the application runs a GIL-holding
busy loop (modes ``busy`` and ``spin``).

Run: python benchmarks/session/bench_send_regularity.py [--seconds 6] [--modes none,busy,sleep,spin]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import threading
import time
from typing import Any

import aiohttp
import aiortc
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

import rtvoice
from rtvoice.rtc.loopback import restrict_to_loopback

try:
    from . import _peer
except ImportError:
    import _peer  # type: ignore[no-redef]

KEY = "ek_test_key_1234"
TARGET_P99_MS = 25.0
GIL_MODES = ("busy", "spin")


def spin(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(10000):  # pure Python: holds the GIL between switch intervals
            x += 1


async def blocker(mode: str, stop: asyncio.Event) -> None:
    if mode == "spin":
        done = threading.Event()
        thread = threading.Thread(target=spin, args=(done,), name="bench-spin", daemon=True)
        thread.start()
        await stop.wait()
        done.set()
        await asyncio.to_thread(thread.join)
        return
    while not stop.is_set():
        await asyncio.sleep(0.085)
        if mode == "busy":
            end = time.perf_counter() + 0.015
            while time.perf_counter() < end:
                pass
        elif mode == "sleep":
            time.sleep(0.015)


async def run_rtvoice(base_url: str, seconds: float, mode: str) -> dict[str, Any]:
    tone = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(48000 * seconds)) / 48000)).astype(
        np.float32
    )
    async with rtvoice.connect(
        base_url=base_url,
        api_key=KEY,
        transport="webrtc",
        record_output=False,
        input_buffer_s=max(10.0, seconds + 2.0),
    ) as session:
        session.push_audio(tone, 48000)
        stop = asyncio.Event()
        task = asyncio.ensure_future(blocker(mode, stop))
        await asyncio.sleep(seconds)
        stop.set()
        await task
        return dict(session.metrics.uplink)


async def run_aiortc(base_url: str, seconds: float, mode: str) -> None:
    pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    pc.addTransceiver(AudioStreamTrack(), direction="sendrecv")
    channel = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    channel.on("open", opened.set)
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
    stop = asyncio.Event()
    task = asyncio.ensure_future(blocker(mode, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    await pc.close()


async def arrivals(debug_url: str, index: int) -> list[int]:
    async with aiohttp.ClientSession() as http, http.get(f"{debug_url}/arrivals/{index}") as r:
        return list(json.loads(await r.text()))


def intervals_ms(arrival_ns: list[int]) -> np.ndarray:
    a = np.asarray(arrival_ns, dtype=np.int64)
    a = a[10:]  # skip the start-up burst
    return np.diff(a) / 1e6


def describe(iv: np.ndarray) -> dict[str, float]:
    return {
        "packets": float(iv.size + 1),
        "p50_ms": float(np.percentile(iv, 50)),
        "p99_ms": float(np.percentile(iv, 99)),
        "max_ms": float(iv.max()),
        "over_30ms_pct": float(np.mean(iv > 30.0) * 100),
    }


async def main(seconds: float, modes: list[str]) -> dict[str, Any]:
    proc, base_url, debug_url = _peer.spawn()
    results: dict[str, Any] = {}
    index = 0
    try:
        for mode in modes:
            up = await run_rtvoice(base_url, seconds, mode)
            results[f"rtvoice/{mode}"] = describe(intervals_ms(await arrivals(debug_url, index)))
            results[f"rtvoice/{mode}"]["clock_resets"] = float(up["clock_resets"])
            index += 1
            await run_aiortc(base_url, seconds, mode)
            results[f"aiortc/{mode}"] = describe(intervals_ms(await arrivals(debug_url, index)))
            index += 1
    finally:
        _peer.stop(proc)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--modes", default="none,busy,sleep,spin")
    args = parser.parse_args()
    print(
        f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, aiohttp "
        f"{aiohttp.__version__}, numpy {np.__version__}, Python {platform.python_version()}"
    )
    print("RTP inter-arrival intervals at the peer; the app blocks its loop 15 ms every 100 ms")
    if "spin" in args.modes.split(","):
        print(
            "  spin: an app thread spins in pure Python all call long (switch interval "
            f"{sys.getswitchinterval() * 1000:g} ms)"
        )
    res = asyncio.run(main(args.seconds, args.modes.split(",")))
    header = ("client/blocking", "pkts", "p50 ms", "p99 ms", "max ms", ">30ms %", "resets")
    print("  {:18} {:>5} {:>7} {:>7} {:>7} {:>8} {:>7}".format(*header))
    for name, s in res.items():
        print(
            f"  {name:18} {s['packets']:5.0f} {s['p50_ms']:7.1f} {s['p99_ms']:7.1f}"
            f" {s['max_ms']:7.1f} {s['over_30ms_pct']:8.1f}"
            f" {s.get('clock_resets', '-'):>7}"
        )
    for mode in args.modes.split(","):
        a, b = res[f"rtvoice/{mode}"], res[f"aiortc/{mode}"]
        print(f"  p99 ratio rtvoice/aiortc ({mode}): {a['p99_ms'] / b['p99_ms']:.2f}")
    gil = [m for m in args.modes.split(",") if m in GIL_MODES]
    if gil:
        p99 = {m: res[f"rtvoice/{m}"]["p99_ms"] for m in gil}
        ok = all(v <= TARGET_P99_MS for v in p99.values())
        print(
            "  rtvoice send p99 under a GIL-holding busy loop: "
            + ", ".join(f"{m} {v:.1f} ms" for m, v in p99.items())
            + f" (target <= {TARGET_P99_MS:g} ms): {'PASS' if ok else 'FAIL'}"
        )
