"""Received WebSocket audio the downlink's PCM ring has no room for is counted, not dropped
silently; a closed media gate counts its own drops instead."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np

import rtvoice
from rtvoice.transports.base import MediaGate
from rtvoice.transports.websocket import WebSocketTransport


def _delta(samples: int) -> str:
    pcm = (np.arange(samples) % 100).astype("<i2").tobytes()
    return json.dumps(
        {
            "type": "response.output_audio.delta",
            "item_id": "item_1",
            "delta": base64.b64encode(pcm).decode(),
        }
    )


def test_a_full_pcm_ring_counts_what_it_could_not_take() -> None:
    # A ring of 100 ms at 24 kHz (rounded up to a power of two by the native ring).
    downlink = rtvoice.Downlink(48000, 1, "pcm16", pcm_ring_ms=100)
    gate = MediaGate(downlink)
    transport = WebSocketTransport(base_url="http://127.0.0.1:1/v1", model="m", downlink=gate)
    assert transport._on_audio_delta(_delta(2400))  # 100 ms: fits
    assert transport.audio_samples_dropped == 0
    for _ in range(10):  # 1 s more than the ring holds, nothing played meanwhile
        transport._on_audio_delta(_delta(2400))
    received = transport.audio_samples_received
    assert received == 11 * 2400
    dropped = transport.audio_samples_dropped
    # The ring kept at least the first 100 ms and at most a power-of-two rounding of it
    # (4096 samples); the rest was counted.
    assert received - 4096 <= dropped <= received - 2400
    stats = asyncio.run(transport.get_stats())
    assert stats["pcm_dropped_samples"] == dropped
    # A closed gate counts its own: the transport adds nothing for it.
    gate.is_open = False
    transport._on_audio_delta(_delta(2400))
    assert transport.audio_samples_dropped == dropped
    assert gate.dropped == 1
