"""Connect time on loopback: rtvoice's WebRTCTransport vs a plain aiortc client doing the same
exchange (sendrecv audio + oai-events channel, complete offer, POST /realtime/calls, answer,
ready = connected + channel open + session.created). Both use 127.0.0.1-only ICE candidates and
no STUN server, against the same peer in its own process.

Run: python benchmarks/session/bench_connect.py [--n 25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import aiortc
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

import rtvoice
from rtvoice.rtc.loopback import restrict_to_loopback
from rtvoice.transports.webrtc import WebRTCTransport

try:
    from . import _peer
except ImportError:
    import _peer  # type: ignore[no-redef]

KEY = "ek_test_key_1234"


async def connect_rtvoice(base_url: str) -> float:
    t0 = time.perf_counter()
    transport = WebRTCTransport(base_url=base_url)
    await transport.connect(key=KEY)
    elapsed = time.perf_counter() - t0
    await transport.close()
    return elapsed


async def connect_plain(base_url: str) -> float:
    t0 = time.perf_counter()
    pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
    pc.addTransceiver("audio", direction="sendrecv")
    channel = pc.createDataChannel("oai-events")
    connected = asyncio.Event()
    opened = asyncio.Event()
    created = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    channel.on("open", opened.set)

    @channel.on("message")
    def _message(message: str) -> None:
        if json.loads(message).get("type") == "session.created":
            created.set()

    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base_url}/realtime/calls",
            data=pc.localDescription.sdp,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/sdp"},
        ) as resp,
    ):
        assert resp.status == 201
        answer = await resp.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(
        asyncio.gather(connected.wait(), opened.wait(), created.wait()), timeout=15
    )
    elapsed = time.perf_counter() - t0
    await pc.close()
    return elapsed


def _summary(xs: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in xs)
    return {
        "p50_ms": statistics.median(ms),
        "p90_ms": ms[int(0.9 * (len(ms) - 1))],
        "min_ms": ms[0],
    }


async def main(n: int) -> dict[str, Any]:
    proc, base_url, _debug = _peer.spawn()
    try:
        # Warm up both paths once (imports, first DTLS certificate).
        await connect_rtvoice(base_url)
        await connect_plain(base_url)
        ours: list[float] = []
        plain: list[float] = []
        for _ in range(n):  # interleaved so both see the same machine load
            ours.append(await connect_rtvoice(base_url))
            plain.append(await connect_plain(base_url))
    finally:
        _peer.stop(proc)
    return {"rtvoice": _summary(ours), "aiortc": _summary(plain), "n": n}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=25)
    args = parser.parse_args()
    print(f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}")
    result = asyncio.run(main(args.n))
    r, p = result["rtvoice"], result["aiortc"]
    print(f"connect to ready over loopback, n={result['n']} each")
    print(f"  {'':8} {'p50 ms':>8} {'p90 ms':>8} {'min ms':>8}")
    for name, s in (("rtvoice", r), ("aiortc", p)):
        print(f"  {name:8} {s['p50_ms']:8.1f} {s['p90_ms']:8.1f} {s['min_ms']:8.1f}")
    print(f"  p50 ratio rtvoice/aiortc: {r['p50_ms'] / p['p50_ms']:.2f}")
