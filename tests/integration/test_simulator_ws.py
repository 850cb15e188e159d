"""The simulator's WebSocket endpoint (protocol.md §3, §6 item 5)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from rtvoice.simulator import Simulator
from rtvoice.simulator.audio import speechlike

from .sim_client import BareClient, best_correlation


def run(fn: Callable[[Simulator, aiohttp.ClientSession], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        async with Simulator(**kw) as sim, aiohttp.ClientSession() as http:
            return await fn(sim, http)

    return asyncio.run(main())


def ws_url(sim: Simulator, query: str = "model=gpt-realtime") -> str:
    return f"ws://127.0.0.1:{sim.port}/v1/realtime?{query}"


async def next_event(ws: aiohttp.ClientWebSocketResponse, type_: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        while True:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended before {type_}: {msg.type} {msg.extra}")
            ev = json.loads(msg.data)
            if ev.get("type") == type_:
                return dict(ev)

    return await asyncio.wait_for(find(), 15)


def test_connect_with_bearer_and_subprotocol_auth() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        ek = sim.mint_key(ttl_s=60)
        async with http.ws_connect(
            ws_url(sim), headers={"Authorization": f"Bearer {ek}"}, protocols=("realtime",)
        ) as ws:
            assert ws.protocol == "realtime"
            first = json.loads((await ws.receive()).data)
            assert first["type"] == "session.created"
            await next_event(ws, "conversation.created")
        async with http.ws_connect(
            ws_url(sim), protocols=("realtime", f"openai-insecure-api-key.{sim.api_key}")
        ) as ws:
            assert (await next_event(ws, "session.created"))["session"]["type"] == "realtime"

    run(go)


@pytest.mark.parametrize(
    ("headers", "code", "close_code"),
    [
        ({"Authorization": "Bearer sk-wrong-key-123"}, "invalid_api_key", 3000),
        ({"OpenAI-Beta": "realtime=v1"}, "beta_api_shape_disabled", 4000),
    ],
)
def test_refusals_close_with_the_documented_codes(
    headers: dict[str, str], code: str, close_code: int
) -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        h = {"Authorization": f"Bearer {sim.api_key}", **headers}
        async with http.ws_connect(ws_url(sim), headers=h) as ws:
            err = await next_event(ws, "error")
            assert err["error"]["code"] == code
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == close_code

    run(go)


def test_appended_audio_turn_returns_pcm_deltas() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(
            ws_url(sim), headers={"Authorization": f"Bearer {sim.api_key}"}
        ) as ws:
            await next_event(ws, "session.created")
            await ws.send_str(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {
                                "input": {
                                    "turn_detection": {
                                        "type": "server_vad",
                                        "silence_duration_ms": 200,
                                    }
                                }
                            },
                        },
                    }
                )
            )
            await next_event(ws, "session.updated")
            speech48 = np.concatenate([speechlike(0.5, seed=5), np.zeros(24000, np.int16)])
            pcm24 = speech48[::2].astype("<i2")
            for i in range(0, pcm24.size, 2400):  # 100 ms appends
                chunk = base64.b64encode(pcm24[i : i + 2400].tobytes()).decode()
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            events: list[dict[str, Any]] = []
            while not events or events[-1]["type"] != "response.done":
                msg = await asyncio.wait_for(ws.receive(), 15)
                events.append(json.loads(msg.data))
            types = [e["type"] for e in events]
            assert "input_audio_buffer.speech_started" in types
            assert "input_audio_buffer.committed" in types
            assert not any(t.startswith("output_audio_buffer") for t in types)
            assert types.index("response.output_audio.done") < types.index(
                "response.output_audio_transcript.done"
            )
            audio = b"".join(
                base64.b64decode(e["delta"])
                for e in events
                if e["type"] == "response.output_audio.delta"
            )
            reply = np.frombuffer(audio, dtype="<i2")
            assert reply.size > 0.4 * 24000
            # The echo contains the speech (24 kHz, lined up to within a few samples).
            assert best_correlation(pcm24[:12000], reply) > 0.9

    run(go)


def test_output_audio_buffer_clear_is_webrtc_only_and_commit_needs_100ms() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(
            ws_url(sim), headers={"Authorization": f"Bearer {sim.api_key}"}
        ) as ws:
            await next_event(ws, "session.created")
            await ws.send_str(json.dumps({"type": "output_audio_buffer.clear", "event_id": "c1"}))
            err = await next_event(ws, "error")
            assert err["error"]["event_id"] == "c1"
            await ws.send_str(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"turn_detection": None}},
                        },
                    }
                )
            )
            await next_event(ws, "session.updated")
            tiny = base64.b64encode(np.zeros(480, "<i2").tobytes()).decode()
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": tiny}))
            await ws.send_str(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
            err = await next_event(ws, "error")
            assert err["error"]["code"] == "input_audio_buffer_commit_empty"
            assert err["error"]["event_id"] == "c2"

    run(go)


def test_sideband_joins_a_webrtc_call() -> None:
    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        client = BareClient()
        try:
            await client.connect(sim.base_url, sim.mint_key(ttl_s=60))
            await client.next_event("session.created")
            call_id = client.headers["Location"].rsplit("/", 1)[-1]
            async with http.ws_connect(
                ws_url(sim, f"call_id={call_id}"),
                headers={"Authorization": f"Bearer {sim.api_key}"},
            ) as ws:
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "session.update",
                            "session": {"type": "realtime", "instructions": "from the server"},
                        }
                    )
                )
                seen_by_sideband = await next_event(ws, "session.updated")
                seen_by_client = await client.next_event("session.updated")
                assert seen_by_sideband == seen_by_client
                assert seen_by_client["session"]["instructions"] == "from the server"
            async with http.ws_connect(
                ws_url(sim, "call_id=rtc_missing"),
                headers={"Authorization": f"Bearer {sim.api_key}"},
            ) as ws:
                assert (await next_event(ws, "error"))["error"]["code"] == "call_not_found"
        finally:
            await client.close()

    run(go)


def test_a_long_call_keeps_bounded_recordings_and_still_finds_the_user_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The recorders at a tiny size (2 s of audio, 30 events each way): after 3 s of silence the
    # oldest audio and events are gone, counted, and the turn that follows (inside the kept 2 s)
    # is still cut out of what is kept at exactly the right samples.
    import rtvoice.simulator.call as call_module

    monkeypatch.setattr(call_module, "MAX_INPUT_FRAMES", 100)
    monkeypatch.setattr(call_module, "MAX_RECORDED_EVENTS", 30)

    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(
            ws_url(sim), headers={"Authorization": f"Bearer {sim.api_key}"}
        ) as ws:
            await next_event(ws, "session.created")
            speech48 = speechlike(0.6, seed=5)
            pcm48 = np.concatenate(
                [np.zeros(3 * 48000, np.int16), speech48, np.zeros(48000, np.int16)]
            )
            pcm24 = pcm48[::2].astype("<i2")
            for i in range(0, pcm24.size, 480):  # 20 ms appends: many events
                chunk = base64.b64encode(pcm24[i : i + 480].tobytes()).decode()
                await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await next_event(ws, "input_audio_buffer.committed")
            call = sim.last_call
            assert call is not None
            dropped = call.recorded_dropped()
            assert dropped["pcm_frames"] > 0
            assert dropped["client_events"] > 0
            assert len(call.client_events) == 30
            assert call.received_pcm().size <= 100 * 960
            (utt,) = call.utterances
            assert 2.0 < utt.start_ms / 1000 < 3.0  # after what the recorder let go
            assert 0.5 <= utt.pcm.size / 48000 <= 1.2
            # The simulator takes 24 kHz to 48 kHz by repeating samples: the turn is exactly the
            # input from its start.
            heard = np.repeat(pcm24.astype(np.int16), 2)
            start = utt.start_ms * 48
            assert np.array_equal(utt.pcm, heard[start : start + utt.pcm.size])

    run(go)


def test_ended_calls_beyond_the_limit_are_let_go_oldest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import rtvoice.simulator.server as server_module

    monkeypatch.setattr(server_module, "MAX_CLOSED_CALLS", 2)

    async def go(sim: Simulator, http: aiohttp.ClientSession) -> None:
        ids = []
        for _ in range(4):
            async with http.ws_connect(
                ws_url(sim), headers={"Authorization": f"Bearer {sim.api_key}"}
            ) as ws:
                await next_event(ws, "session.created")
                call = sim.last_call
                assert call is not None
                ids.append(call.id)
            for _ in range(200):
                if call.closed:
                    break
                await asyncio.sleep(0.01)
            assert call.closed
        # At the fourth call three had ended: the first went.
        assert sim.calls_evicted == 1
        assert list(sim.calls) == ids[1:]

    run(go)
