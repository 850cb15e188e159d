"""End to end against the local Realtime API simulator: real WebRTC on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import errors
from rtvoice.audio.sources import WavSource, read_wav
from rtvoice.cli import bundled_clip
from rtvoice.simulator import Simulator


def _best_correlation(played: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Max normalized cross-correlation of ``ref`` inside ``played`` (FFT) and its lag."""
    n = played.size + ref.size
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(played, size) * np.conj(np.fft.rfft(ref, size)), size)
    corr = corr[: played.size - ref.size + 1]
    cumulative = np.concatenate([[0.0], np.cumsum(played.astype(np.float64) ** 2)])
    energy = cumulative[ref.size :] - cumulative[: played.size - ref.size + 1]
    ref_energy = float(np.dot(ref, ref))
    norm = np.sqrt(np.maximum(energy, 1e-12) * ref_energy)
    # Near-silent windows would give meaningless ratios: they never match.
    score = np.where(energy > 0.01 * ref_energy, corr / norm, 0.0)
    lag = int(np.argmax(score))
    return float(score[lag]), lag


def _segment_similarity(played: np.ndarray, ref: np.ndarray, segment_s: float = 0.25) -> float:
    """Median, over the voiced 250 ms segments of ``ref``, of each segment's best normalized
    correlation anywhere near its place in ``played``: robust to a few samples inserted or
    dropped by clock adaptation, while any missing or garbled speech lowers it."""
    _, lag = _best_correlation(played, ref)
    seg = int(48000 * segment_s)
    scores = []
    for start in range(0, ref.size - seg, seg):
        piece = ref[start : start + seg]
        if np.sqrt(np.mean(piece**2)) < 0.01:
            continue
        lo = max(0, lag + start - 4800)
        window = played[lo : lag + start + seg + 4800]
        if window.size < seg:
            scores.append(0.0)
            continue
        scores.append(_best_correlation(window, piece)[0])
    return float(np.median(scores))


def _clip_48k() -> tuple[np.ndarray, float]:
    pcm, rate = read_wav(bundled_clip())
    padded = np.concatenate([pcm, np.zeros(rate // 10, np.float32)])
    out = np.asarray(rtvoice.Resampler(rate, 48000, 1).process(padded)).reshape(-1)
    return out, pcm.size / rate


TRANSPORTS = ["webrtc", "websocket"]


async def _talk_once(sim: Simulator, **connect: Any) -> dict[str, Any]:
    """Plays the bundled clip as the microphone and waits for the echoed reply to be played."""
    session = rtvoice.connect(
        base_url=sim.base_url, api_key=sim.api_key, record_output_s=30.0, **connect
    )
    types: list[str] = []
    async with session:
        source = WavSource(bundled_clip(), lead_s=0.3, tail_s=1.0)
        session.attach_source(source)

        async def wait_reply() -> None:
            async for event in session:
                types.append(event.type)
                if event.type == "response.done":
                    return

        await asyncio.wait_for(wait_reply(), 20)
        call = await sim.wait_for_call()
        reply = np.concatenate(list(call.played.values()))
        # The reply has been played once the downlink's media count covers it (WebSocket
        # delivers it faster than real time, so response.done comes before the audio ends).
        rate = session.output_rate_hz
        for _ in range(200):
            if session.downlink.media_samples_played >= reply.size * rate // 48000:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the tail of the reply leaves the jitter buffer
        metrics = await session.refresh_metrics()
    return {
        "played": session.read_audio(),
        "metrics": metrics,
        "types": types,
        "call": call,
        "session": session,
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_audio_round_trip_is_intact(transport: str) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            out = await _talk_once(sim, transport=transport)
            ref, _ = _clip_48k()
            # Uplink: the simulator decoded what we sent; it must contain the clip.
            received = out["call"].received_pcm().astype(np.float32) / 32768.0
            r_up = _segment_similarity(received, ref)
            # Downlink: what the simulator sent back was played by our playout...
            sent = np.concatenate(list(out["call"].played.values())).astype(np.float32) / 32768.0
            r_down = _segment_similarity(out["played"], sent)
            paths = [r.path for r in sim.requests]
        print(f"{transport}: similarity uplink {r_up:.3f}, downlink {r_down:.3f}")
        assert r_up > 0.8
        assert r_down > 0.8
        types = out["types"]
        for t in (
            "session.created",
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "response.created",
            "response.done",
        ):
            assert t in types, t
        m = out["metrics"]
        assert m.transport == transport
        assert m.rtt_ms is not None
        assert m.connect["total_ms"] is not None
        assert m.connect["session_created_ms"] is not None
        # The native clocks kept time: no playout tick woke a frame late, nothing was dropped.
        assert m.playout["late_ticks"] == 0
        assert m.uplink["frames_dropped"] == 0
        assert m.media_errors == 0  # no media callback failed
        assert m.uplink["input_frames_sent"] > 100
        assert m.events_sent >= 0
        assert m.events_received > 5
        if transport == "webrtc":
            assert "/v1/realtime/client_secrets" in paths
            assert "/v1/realtime/calls" in paths
            assert "output_audio_buffer.started" in types
            assert m.connect["key_ms"] is not None
        else:
            assert "/v1/realtime" in paths
            # The end of the reply drains the PCM buffer: one underrun, counted.
            assert m.downlink["pcm_underruns"] >= 1
            # The ring had room for the whole reply: nothing received was dropped.
            assert m.downlink["pcm_dropped_samples"] == 0

    asyncio.run(main())


async def _next_of(session: Any, type_: str, timeout_s: float = 10.0) -> Any:
    async def find() -> Any:
        async for event in session:
            if event.type == type_:
                return event
        raise AssertionError(f"session ended before {type_}")

    return await asyncio.wait_for(find(), timeout_s)


def test_ten_percent_loss_is_recovered_by_fec_and_playout_never_stalls() -> None:
    async def main() -> None:
        async with Simulator(loss=0.1, seed=3) as sim:
            out = await _talk_once(sim, transport="webrtc")
            sent = out["call"].pacer.sent
        jb = out["metrics"].jitter_buffer
        dropped = sum(1 for p in sent if getattr(p, "dropped", False))
        print(f"simulator dropped {dropped}/{len(sent)}; jitter buffer {jb}")
        assert dropped > 0
        assert jb["fec_recovered_frames"] > 0
        # Every sequence number the simulator dropped shows as lost (RTP's definition), except
        # drops at the very end that no later packet reveals.
        assert 0 < jb["packets_lost"] <= dropped
        assert out["metrics"].playout["late_ticks"] == 0  # the playout clock never stalled
        played_s = out["played"].size / 48000
        assert played_s > 3.0

    asyncio.run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tool_call_through_the_simulator(transport: str) -> None:
    calls: list[str] = []

    def get_weather(location: str) -> dict[str, Any]:
        """Current weather."""
        calls.append(location)
        return {"temp_c": 20}

    async def main() -> None:
        async with (
            Simulator() as sim,
            rtvoice.connect(
                base_url=sim.base_url, api_key=sim.api_key, tools=[get_weather], transport=transport
            ) as session,
        ):
            await session.send_text("weather?")
            call = await sim.wait_for_call()
            output = await call.wait_for_client_event("conversation.item.create", timeout=10)
            assert output["item"]["type"] in ("message", "function_call_output")
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.05)
        assert len(calls) == 1

    asyncio.run(main())


def test_failures_are_clear_errors() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            with pytest.raises(errors.AuthenticationError):
                await rtvoice.connect(base_url=sim.base_url, api_key="sk-wrong-key-000000").open()
            sim.faults.bad_answer = True
            with pytest.raises(errors.ProtocolError):
                await rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key).open()
            sim.faults.bad_answer = False
            async with rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key) as session:
                big = {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "x" * 300_000}],
                    },
                }
                with pytest.raises(errors.TransportError, match="maximum message size"):
                    await session.send(big)
                await session.send_text("still usable", respond=False)

    asyncio.run(main())


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_leaves_no_thread_task_or_fd_behind(transport: str) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            threads = {t.ident for t in threading.enumerate()}
            tasks = set(asyncio.all_tasks())
            fds = _open_fds()
            async with rtvoice.connect(
                base_url=sim.base_url,
                api_key=sim.api_key,
                transport=transport,
                audio_sink=lambda pcm: None,
            ) as session:
                session.attach_source(WavSource(bundled_clip(), lead_s=0.0, tail_s=0.0))
                await session.send_text("hello")
                await asyncio.sleep(0.5)
                assert session.metrics.playout["ticks"] > 0
            await asyncio.sleep(0.1)
            left = [
                t.name
                for t in threading.enumerate()
                if t.ident not in threads and not t.name.startswith("asyncio_")
            ]
            assert left == []
            assert set(asyncio.all_tasks()) - tasks == set()
            # Sockets of the simulator's side of the call close with it; ours must be gone.
            await asyncio.sleep(0.2)
            assert _open_fds() - fds == set()

    asyncio.run(main())


def test_losing_the_data_channel_mid_session_fails_the_session_without_reconnect() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.drop_channel_after_s = 0.5
            session = rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key, reconnect=False)
            states: list[str] = []
            async with session:
                async for event in session:  # ends by itself once the session has failed
                    if event.type == "rtvoice.state_changed":
                        states.append(event.get("state"))
                assert session.state == "failed"
                with pytest.raises(errors.SessionError):
                    await session.send_text("anyone?")
            assert states == ["connecting", "connected", "failed"]
            assert session.state == "closed"

    asyncio.run(asyncio.wait_for(main(), 20))
