"""An echo peer in its own process for the latency benchmarks: it sends the client's audio
straight back, on both transports, with no turn-taking.

- WebRTC: ``POST /v1/realtime/calls`` (application/sdp) answered by an aiortc peer whose RTP tap
  sends every received Opus packet back at once with its own sequence number and timestamp
  (through the simulator's :class:`~rtvoice.rtc.raw_rtp.RawRtpSender`, so a dropped packet leaves
  a sequence gap as real loss does); ``session.created`` on ``oai-events`` when it opens.
  ``--loss F`` drops a seeded fraction F of the echoed packets (the server -> client leg only, as
  the simulator's impairment does).
- WebSocket: ``GET /v1/realtime`` sends ``session.created``, then answers every
  ``input_audio_buffer.append`` with a ``response.output_audio.delta`` carrying the same PCM16.
- ``GET /v1/debug/arrivals?first=K&since_ns=A&until_ns=B``: per WebRTC call from call number K
  on (numbered from 0 in the order the offers came), the arrival times (CLOCK_MONOTONIC ns, the
  same clock as the client's on this host) of its RTP packets within [A, B], and this process's
  event-loop lag over the same window (a 10 ms timer's lateness), which says whether a gap was
  the client's or the peer's own. Each call keeps its first :data:`ARRIVALS_PER_CALL` arrivals
  and the peer its last :data:`CALLS_KEPT` calls; what is beyond is counted, not kept.

Being a separate process, it costs the client process no CPU and its timing is not affected by
what the client does to its own event loop or GIL. Run as a script it prints its base URL and
serves until killed; :func:`spawn` starts it.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import random
import re
import subprocess
import sys
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from rtvoice.rtc.loopback import restrict_to_loopback
from rtvoice.rtc.native_audio import attach_rtp_sink
from rtvoice.rtc.raw_rtp import IdleAudioTrack, RawRtpSender

ROOT = Path(__file__).resolve().parents[2]
KEY = "ek_test_key_1234"
ARRIVALS_PER_CALL = 90_000  # 30 minutes at 50 packets/s
CALLS_KEPT = 1000
LAG_TICK_NS = 10_000_000
LAG_SAMPLES_KEPT = 60_000  # 10 minutes of ticks


class Echo:
    """The RTP tap's sink on the peer's loop: each received packet goes back on the sender's SSRC
    with the client's sequence number and timestamp, in arrival order, unless ``loss`` drops it."""

    def __init__(
        self, pc: RTCPeerConnection, sender: Any, loss: float, seed: int, index: int = 0
    ) -> None:
        self.pc = pc
        self.index = index
        self.sender = sender
        self.loss = loss
        self.random = random.Random(seed)
        self.raw: RawRtpSender | None = None
        self.queue: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._send())
        self.received = 0
        self.dropped = 0
        # Monotonic ns at the RTP tap (after SRTP), the first ARRIVALS_PER_CALL packets.
        self.arrival_ns = array("q")

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> bool:
        self.received += 1
        if len(self.arrival_ns) < ARRIVALS_PER_CALL:
            self.arrival_ns.append(arrival_ns)
        if self.loss and self.random.random() < self.loss:
            self.dropped += 1
        else:
            self.queue.put_nowait((seq, timestamp, bytes(payload)))
        return True

    async def _send(self) -> None:
        while True:
            seq, timestamp, payload = await self.queue.get()
            if self.raw is None:
                self.raw = RawRtpSender(self.sender, _opus_pt(self.pc.localDescription.sdp))
            try:
                await self.raw.send(seq, timestamp, payload)
            except ConnectionError:
                return


def _opus_pt(sdp: str) -> int:
    m = re.search(r"^a=rtpmap:(\d+) opus/48000", sdp, re.M | re.I)
    assert m is not None, "the answer has no Opus payload type"
    return int(m.group(1))


class EchoPeer:
    def __init__(self, loss: float = 0.0, seed: int = 1) -> None:
        self.loss = loss
        self.seed = seed
        self.pcs: list[RTCPeerConnection] = []
        self.base_url = ""
        self.calls: collections.deque[Echo] = collections.deque(maxlen=CALLS_KEPT)
        self.calls_total = 0
        # (tick start ns, lateness ns) of the loop-lag timer.
        self.lag: collections.deque[tuple[int, int]] = collections.deque(maxlen=LAG_SAMPLES_KEPT)
        self._lag_task: asyncio.Future[None] | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self._calls)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self._hangup)
        app.router.add_get("/v1/realtime", self._websocket)
        app.router.add_get("/v1/debug/arrivals", self._arrivals)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._lag_task = asyncio.ensure_future(self._watch_lag())
        return self.base_url

    async def _watch_lag(self) -> None:
        while True:
            start = time.monotonic_ns()
            await asyncio.sleep(LAG_TICK_NS / 1e9)
            self.lag.append((start, time.monotonic_ns() - start - LAG_TICK_NS))

    async def _arrivals(self, request: web.Request) -> web.Response:
        first = int(request.query.get("first", "0"))
        since_ns = int(request.query.get("since_ns", "0"))
        until_ns = int(request.query.get("until_ns", str(2**63 - 1)))
        calls = []
        for echo in self.calls:
            if echo.index < first:
                continue
            # Arrivals are appended in clock order.
            lo = bisect.bisect_left(echo.arrival_ns, since_ns)
            hi = bisect.bisect_right(echo.arrival_ns, until_ns)
            kept = echo.arrival_ns[lo:hi].tolist()
            calls.append({"index": echo.index, "received": echo.received, "arrival_ns": kept})
        lag_ns = [late for start, late in self.lag if since_ns <= start <= until_ns]
        body = {
            "calls_total": self.calls_total,
            "calls": calls,
            "loop_lag_ns": lag_ns,
        }
        text = json.dumps(body, separators=(",", ":"))
        return web.Response(text=text, content_type="application/json")

    async def _hangup(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _calls(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        offer = await request.text()
        pc = restrict_to_loopback(RTCPeerConnection(RTCConfiguration(iceServers=[])))
        self.pcs.append(pc)

        @pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            def created() -> None:
                event = {
                    "type": "session.created",
                    "event_id": "event_1",
                    "session": {"type": "realtime", "id": "sess_echo"},
                }
                channel.send(json.dumps(event))

            if channel.readyState == "open":
                created()
            else:
                channel.on("open", created)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed") and pc in self.pcs:
                self.pcs.remove(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.direction = "sendrecv"
                transceiver.sender.replaceTrack(IdleAudioTrack())
                echo = Echo(
                    pc, transceiver.sender, self.loss, self.seed + len(self.pcs), self.calls_total
                )
                self.calls.append(echo)
                self.calls_total += 1
                attach_rtp_sink(transceiver.receiver, echo)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/v1/realtime/calls/rtc_{uuid.uuid4().hex}"},
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, compress=False)
        await ws.prepare(request)
        await ws.send_str(
            json.dumps(
                {
                    "type": "session.created",
                    "event_id": "event_1",
                    "session": {"type": "realtime", "id": "sess_echo"},
                }
            )
        )
        n = 0
        async for msg in ws:
            if msg.type != web.WSMsgType.TEXT or '"input_audio_buffer.append"' not in msg.data:
                continue
            event = json.loads(msg.data)
            if event.get("type") != "input_audio_buffer.append":
                continue
            n += 1
            delta = {
                "type": "response.output_audio.delta",
                "event_id": f"event_{n}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": event["audio"],
            }
            await ws.send_str(json.dumps(delta, separators=(",", ":")))
        return ws


async def _serve(loss: float, seed: int) -> None:
    peer = EchoPeer(loss, seed)
    print(await peer.start(), flush=True)
    await asyncio.Event().wait()


def spawn(loss: float = 0.0, seed: int = 1) -> tuple[subprocess.Popen[str], str]:
    """Start the echo peer process; returns (process, base_url)."""
    args = [sys.executable, __file__, "--loss", str(loss), "--seed", str(seed)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError("echo peer did not start")
    return proc, url


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    a = parser.parse_args()
    asyncio.run(_serve(a.loss, a.seed))
