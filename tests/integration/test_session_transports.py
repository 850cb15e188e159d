"""The session on both transports against the simulator: fallback, non-finite input, barge-in
truncation exact to a frame."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import errors
from rtvoice.audio.sources import WavSource, read_wav
from rtvoice.cli import bundled_clip
from rtvoice.simulator import Simulator

TRANSPORTS = ["webrtc", "websocket"]


async def _events_until(session: Any, type_: str, seen: list[str], timeout_s: float = 20) -> Any:
    async def find() -> Any:
        async for event in session:
            seen.append(event.type)
            if event.type == type_:
                return event
        raise AssertionError(f"session ended before {type_}: {seen}")

    return await asyncio.wait_for(find(), timeout_s)


def test_auto_falls_back_to_websocket_when_ice_cannot_connect() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.block_ice = True
            session = rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key, ice_timeout_s=1.0)
            # Audio pushed while WebRTC is being tried is carried over to WebSocket.
            clip, rate = read_wav(bundled_clip())
            opened = asyncio.ensure_future(session.open())
            await asyncio.sleep(0.2)
            session.push_audio(clip[: rate // 2], rate)
            await opened
            seen: list[str] = []
            fallback = await _events_until(session, "rtvoice.transport_fallback", seen)
            assert fallback["to"] == "websocket"
            assert "ICE" in fallback["reason"]
            m = session.metrics
            assert m.transport == "websocket"
            assert m.transport_fallback is not None
            assert session.uplink.mode == "pcm16"
            # The 0.5 s pushed during the WebRTC attempt was handed over (24 kHz now).
            assert m.uplink["frames_pushed"] == 12000
            call = await sim.wait_for_call()
            assert call.websocket
            # The session works on the new transport: text in, reply out.
            await session.send_text("hello")
            await _events_until(session, "response.done", seen)
            for _ in range(100):
                if session.metrics.uplink["pending_input_frames"] == 0:
                    break
                await asyncio.sleep(0.02)
            assert session.metrics.uplink["input_frames_sent"] >= 25  # the carried 0.5 s was sent
            await session.close()

    asyncio.run(main())


def test_webrtc_only_does_not_fall_back() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.block_ice = True
            session = rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, transport="webrtc", ice_timeout_s=0.5
            )
            with pytest.raises(errors.WebRTCUnavailableError, match="ICE"):
                await session.open()
            assert session.state == "failed"

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nan_samples_are_replaced_counted_and_the_uplink_keeps_sending(transport: str) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, transport=transport
            ) as session,
        ):
            bad = np.full(4800, np.nan, np.float32)
            session.push_audio(bad, 48000)
            # Speech after the NaNs still reaches the server's VAD.
            session.attach_source(WavSource(bundled_clip(), lead_s=0.2, tail_s=1.0))
            seen: list[str] = []
            await _events_until(session, "input_audio_buffer.speech_stopped", seen)
            m = session.metrics
            assert m.uplink["nonfinite_samples"] == 4800  # counted as pushed
            assert session.state == "connected"
            call = await sim.wait_for_call()
            assert len(call.utterances) >= 1 or "input_audio_buffer.committed" in seen

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_barge_in_truncates_at_the_audio_played_exact_to_a_frame(transport: str) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, transport=transport
            ) as session,
        ):
            session.attach_source(WavSource(bundled_clip(), lead_s=0.2, tail_s=0.5))
            seen: list[str] = []
            added = await _events_until(session, "response.output_item.added", seen)
            item_id = added["item"]["id"]
            # Let about a second of the reply play, then talk over it.
            start = session.downlink.media_samples_played
            for _ in range(300):
                if session.downlink.media_samples_played - start >= 48000:
                    break
                await asyncio.sleep(0.02)
            session.attach_source(WavSource(bundled_clip(), lead_s=0.0, tail_s=0.5))
            call = await sim.wait_for_call()
            truncate = await call.wait_for_client_event("conversation.item.truncate", 20)
            # Once the flush has been applied, no more of the item plays.
            await asyncio.sleep(0.2)
            played_ms = (session.downlink.media_samples_played - start) / 48.0
            assert truncate["item_id"] == item_id
            assert session.metrics.barge_ins == 1
            end_ms = truncate["audio_end_ms"]
            assert end_ms >= 900
            # Exact to one 20 ms frame: what played of the item is what was reported.
            assert 0 <= played_ms - end_ms <= 20.0 + 1.0

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_text_turn_and_session_update_on_both_transports(transport: str) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, transport=transport
            ) as session,
        ):
            seen: list[str] = []
            await session.update(instructions="Be brief.")
            # (On WebSocket a standard key's session config goes first as session.update.)
            for _ in range(2):
                updated = await _events_until(session, "session.updated", seen)
                if updated["session"].get("instructions"):
                    break
            assert updated["session"]["instructions"] == "Be brief."
            await session.send_text("hello")
            done = await _events_until(session, "response.done", seen)
            assert done.type == "response.done"
            assert session.metrics.events_sent == 3  # update, item, response.create
            assert session.metrics.transport == transport

    asyncio.run(main())


def test_beta_interface_over_websocket() -> None:
    async def main() -> None:
        async with Simulator(beta=True) as sim:
            async with rtvoice.connect(
                base_url=sim.base_url,
                api_key=sim.api_key,
                api_version="beta",
                transport="websocket",
            ) as session:
                seen: list[str] = []
                await session.send_text("hello")
                await _events_until(session, "response.done", seen)
            call = await sim.wait_for_call()
            assert call.websocket
            assert call.beta  # selected by the OpenAI-Beta header

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_vanished_server_fails_the_session_with_the_reason(transport: str) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            rtvoice.connect(
                base_url=sim.base_url,
                api_key=sim.api_key,
                transport=transport,
                dead_peer_timeout_s=2.0,
                reconnect=False,
            ) as session,
        ):
            await asyncio.sleep(0.5)
            sim.faults.vanish()
            reasons: list[str] = []

            async def wait_failed() -> None:
                async for event in session:
                    if event.type == "rtvoice.state_changed" and event["state"] == "failed":
                        reasons.append(str(event.get("reason")))
                        return

            # Bound with slack: the 2 s timeout, the watchdog's 0.5 s period, a loaded host.
            await asyncio.wait_for(wait_failed(), 10)
            assert session.state == "failed"
            assert "from the server for 2 s" in reasons[0]

    asyncio.run(main())


def test_dead_peer_timeout_must_be_positive_or_none() -> None:
    with pytest.raises(ValueError, match="dead_peer_timeout_s"):
        rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-x", dead_peer_timeout_s=0)
    rtvoice.connect(base_url="http://127.0.0.1:9/v1", api_key="sk-x", dead_peer_timeout_s=None)
