"""A bare aiortc client for the simulator's tests (not rtvoice's own transport): one sendrecv audio
transceiver fed by a paced PCM track, the ``oai-events`` channel, raw inbound RTP recorded."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from rtvoice.rtc.loopback import loopback_configuration, restrict_to_loopback
from rtvoice.rtc.native_audio import attach_rtp_sink


class PcmTrack(MediaStreamTrack):
    """48 kHz mono int16 PCM in 20 ms frames on deadlines from the first recv; silence after."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pcm = np.zeros(0, dtype=np.int16)
        self._pos = 0
        self._index = 0
        self._t0: float | None = None

    def play(self, pcm: npt.NDArray[np.int16]) -> None:
        self._pcm = np.concatenate([self._pcm[self._pos :], pcm])
        self._pos = 0

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        await asyncio.sleep(max(0.0, self._t0 + self._index * 0.02 - time.monotonic()))
        chunk = self._pcm[self._pos : self._pos + 960]
        self._pos += chunk.size
        if chunk.size < 960:
            chunk = np.concatenate([chunk, np.zeros(960 - chunk.size, dtype=np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self._index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._index += 1
        return frame


class RtpLog:
    def __init__(self) -> None:
        self.packets: list[tuple[int, int, bytes, int]] = []

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        self.packets.append((seq, timestamp, bytes(payload), arrival_ns))


class BareClient:
    def __init__(self) -> None:
        self.pc = restrict_to_loopback(RTCPeerConnection(loopback_configuration()))
        self.mic = PcmTrack()
        self.pc.addTrack(self.mic)
        transceiver = self.pc.getTransceivers()[0]
        self.rtp = RtpLog()
        attach_rtp_sink(transceiver.receiver, self.rtp)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.raw_messages: list[str] = []
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.answer = ""

    def _on_message(self, message: str) -> None:
        self.raw_messages.append(message)
        try:
            ev = json.loads(message)
        except ValueError:
            return
        if isinstance(ev, dict):
            self.events.append(ev)
            self._queue.put_nowait(ev)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def connect(
        self,
        base_url: str,
        key: str,
        *,
        session: dict[str, Any] | None = None,
        path: str = "/realtime/calls",
    ) -> None:
        sdp = await self.offer()
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {key}"}
            if session is None:
                headers["Content-Type"] = "application/sdp"
                data: Any = sdp
            else:
                data = aiohttp.FormData()
                data.add_field("sdp", sdp, content_type="application/sdp")
                data.add_field("session", json.dumps(session), content_type="application/json")
            async with http.post(base_url + path, data=data, headers=headers) as resp:
                self.status = resp.status
                self.headers = dict(resp.headers)
                self.answer = await resp.text()
        if self.status != 201:
            raise RuntimeError(f"SDP POST failed: {self.status} {self.answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer, "answer"))
        await asyncio.wait_for(self.opened.wait(), 10)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def next_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of that type not yet consumed by this method (others are skipped)."""

        async def find() -> dict[str, Any]:
            while True:
                ev = await self._queue.get()
                if ev.get("type") == type_:
                    return ev

        return await asyncio.wait_for(find(), timeout)

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    async def close(self) -> None:
        await self.pc.close()


def best_correlation(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> float:
    """Max normalized correlation of ``a`` against every window of ``b`` of the same length."""
    x = a.astype(np.float64)
    y = b.astype(np.float64)
    n = x.size
    if y.size < n or n == 0:
        return 0.0
    size = 1 << int(np.ceil(np.log2(y.size + n)))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)[
        : y.size - n + 1
    ]
    energy = np.concatenate([[0.0], np.cumsum(y * y)])
    window = energy[n:] - energy[:-n]
    denom = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(x, x)))
    return float(np.max(corr / denom))
