"""The simulator over real WebRTC on loopback, driven by a bare aiortc client (sim_client.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from rtvoice._core import OpusDecoder
from rtvoice.rtc import loopback
from rtvoice.simulator import Simulator
from rtvoice.simulator.audio import speechlike

from .sim_client import BareClient, best_correlation

FAST_VAD = {
    "type": "realtime",
    "audio": {
        "input": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
            "transcription": {"model": "gpt-4o-mini-transcribe"},
        }
    },
}


def run(
    fn: Callable[[Simulator, BareClient], Awaitable[Any]],
    *,
    session: dict[str, Any] | None = None,
    **sim_kwargs: Any,
) -> Any:
    async def main() -> Any:
        async with Simulator(**sim_kwargs) as sim:
            client = BareClient()
            try:
                await client.connect(sim.base_url, sim.mint_key(ttl_s=60, session=session))
                return await fn(sim, client)
            finally:
                await client.close()

    return asyncio.run(main())


def utterance(seconds: float = 0.6, seed: int = 0) -> npt.NDArray[np.int16]:
    return np.concatenate([speechlike(seconds, seed=seed), np.zeros(9600, dtype=np.int16)])


def decode(packets: list[tuple[int, int, bytes, int]]) -> npt.NDArray[np.int16]:
    dec = OpusDecoder(48000, 1)
    ordered = sorted(packets, key=lambda p: p[0])
    return np.concatenate([np.asarray(dec.decode(p[2], np.int16)) for p in ordered])


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling) until ``cond()`` holds; the assertion after it reports a failure."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def test_bare_client_connects_on_loopback_and_gets_session_created() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        first = await client.next_event("session.created")
        assert client.events[0]["type"] == "session.created"
        assert first["session"]["type"] == "realtime"
        assert first["event_id"]
        await client.next_event("conversation.created")
        call_id = client.headers["Location"].rsplit("/", 1)[-1]
        call = await sim.wait_for_call()
        assert call.id == call_id
        assert client.channel.label == "oai-events"
        loopback.assert_loopback_sdp(client.pc.localDescription.sdp)
        loopback.assert_loopback_sdp(client.answer)
        for pc in (client.pc, call.pc):
            pairs = loopback.nominated_pairs(pc)
            assert pairs
            assert all(local[0] == remote[0] == "127.0.0.1" for local, remote in pairs)

    run(go)


def test_session_update_validated_and_errors_carry_the_event_id() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.send({"type": "session.update", "event_id": "evt_a", "session": {"voice": "x"}})
        err = await client.next_event("error")
        assert err["error"]["event_id"] == "evt_a"
        assert err["error"]["code"] == "missing_required_parameter"
        assert err["error"]["param"] == "session.type"
        client.send(
            {
                "type": "session.update",
                "event_id": "evt_b",
                "session": {"type": "realtime", "modalities": ["audio"]},
            }
        )
        err = await client.next_event("error")
        assert err["error"]["event_id"] == "evt_b"
        assert err["error"]["code"] == "unknown_parameter"
        client.send(
            {
                "type": "session.update",
                "event_id": "evt_c",
                "session": {"type": "realtime", "audio": {"output": {"colour": "red"}}},
            }
        )
        err = await client.next_event("error")
        assert err["error"]["param"] == "session.audio.output.colour"
        client.send(
            {
                "type": "session.update",
                "event_id": "evt_d",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "audio": {"output": {"voice": "cedar"}},
                },
            }
        )
        updated = await client.next_event("session.updated")
        assert updated["session"]["instructions"] == "Be brief."
        assert updated["session"]["audio"]["output"]["voice"] == "cedar"
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        client.send({"event_id": "evt_e"})
        err = await client.next_event("error")
        assert err["error"]["code"] == "invalid_event"
        assert err["error"]["event_id"] == "evt_e"
        client.send({"type": "response.cancel", "event_id": "evt_f"})
        err = await client.next_event("error")
        assert err["error"]["code"] == "response_cancel_not_active"
        call = await sim.wait_for_call()
        assert [e.get("event_id") for e in call.client_events] == [
            "evt_a",
            "evt_b",
            "evt_c",
            "evt_d",
            "evt_e",
            "evt_f",
        ]

    run(go)


GA_TURN = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "output_audio_buffer.started",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
    "output_audio_buffer.stopped",
]


def _is_subsequence(needle: list[str], hay: list[str]) -> bool:
    it = iter(hay)
    return all(any(x == y for y in it) for x in needle)


def test_speech_turn_event_sequence_and_echoed_audio() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        speech = utterance(0.6, seed=4)
        client.mic.play(speech)
        stopped = await client.next_event("output_audio_buffer.stopped", timeout=15)
        types = client.types()
        assert _is_subsequence(GA_TURN, types), types
        assert "response.output_audio.delta" not in types  # WebRTC: audio on RTP only
        call = await sim.wait_for_call()
        started = next(e for e in client.events if e["type"] == "input_audio_buffer.speech_started")
        speech_stopped = next(
            e for e in client.events if e["type"] == "input_audio_buffer.speech_stopped"
        )
        # In audio time: up to 300 ms prefix padding (less if speech began earlier in the
        # stream) + 600 ms of speech + 300 ms of silence.
        assert 850 <= speech_stopped["audio_end_ms"] - started["audio_start_ms"] <= 1300
        done = next(e for e in client.events if e["type"] == "response.done")
        assert done["response"]["status"] == "completed"
        assert stopped["response_id"] == done["response"]["id"]
        deltas = "".join(
            e["delta"]
            for e in client.events
            if e["type"] == "response.output_audio_transcript.delta"
        )
        final = next(
            e for e in client.events if e["type"] == "response.output_audio_transcript.done"
        )
        assert deltas == final["transcript"]
        assert final["transcript"] == f"You said: {call.utterances[0].transcript}"
        # The reply is the user's utterance, and it arrives intact.
        played = call.played[done["response"]["id"]]
        assert played.size >= 0.5 * 48000
        assert best_correlation(speech[:24000], call.utterances[0].pcm) > 0.9
        sent = [p for p in call.pacer.sent if p.tag == done["response"]["id"]]
        seqs = {s.seq for s in sent}
        await until(lambda: len([p for p in client.rtp.packets if p[0] in seqs]) == len(sent))
        got = [p for p in client.rtp.packets if p[0] in seqs]
        assert len(got) == len(sent)
        assert sent[0].marker
        assert all(b.timestamp - a.timestamp == 960 for a, b in itertools.pairwise(sent))
        assert all(b.due_ns - a.due_ns == 20_000_000 for a, b in itertools.pairwise(sent))
        assert best_correlation(played[4800:33600], decode(got)) > 0.9

    run(go, session=FAST_VAD)


def test_barge_in_cancels_and_clears() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.mic.play(utterance(1.5, seed=1))
        started = await client.next_event("output_audio_buffer.started", timeout=15)
        await asyncio.sleep(0.3)
        client.mic.play(utterance(0.5, seed=2))
        done = await client.next_event("response.done", timeout=10)
        cleared = await client.next_event("output_audio_buffer.cleared", timeout=5)
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        assert cleared["response_id"] == started["response_id"] == done["response"]["id"]
        types = client.types()
        i = types.index("output_audio_buffer.started")
        assert "input_audio_buffer.speech_started" in types[i:]
        assert "output_audio_buffer.stopped" not in types[i : types.index("response.done")]
        call = await sim.wait_for_call()
        sent = [p for p in call.pacer.sent if p.tag == started["response_id"]]
        assert 0 < len(sent) < call.played[started["response_id"]].size // 960
        # The second turn then gets its own response.
        second = await client.next_event("response.created", timeout=10)
        assert second["response"]["id"] != started["response_id"]

    run(go, session=FAST_VAD)


TOOLS = {
    **FAST_VAD,
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        }
    ],
    "tool_choice": "auto",
}


def test_tool_call_then_output_then_reply() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.mic.play(utterance(0.5))
        args_done = await client.next_event("response.function_call_arguments.done", timeout=15)
        assert args_done["name"] == "get_weather"
        assert json.loads(args_done["arguments"]) == {"location": "San Francisco"}
        deltas = [
            e["delta"]
            for e in client.events
            if e["type"] == "response.function_call_arguments.delta"
        ]
        assert "".join(deltas) == args_done["arguments"]
        done = await client.next_event("response.done")
        assert done["response"]["output"][0]["type"] == "function_call"
        assert "output_audio_buffer.started" not in client.types()
        client.send(
            {
                "type": "conversation.item.create",
                "event_id": "bad",
                "item": {"type": "function_call_output", "call_id": "call_unknown", "output": "{}"},
            }
        )
        err = await client.next_event("error")
        assert err["error"]["event_id"] == "bad"
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": args_done["call_id"],
                    "output": '{"temp_c":21}',
                },
            }
        )
        await client.next_event("conversation.item.done")
        client.send({"type": "response.create"})
        await client.next_event("output_audio_buffer.started", timeout=10)
        final = await client.next_event("response.output_audio_transcript.done", timeout=10)
        assert "temp_c" in final["transcript"]

    run(go, session=TOOLS)


def test_text_input_and_text_response() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            }
        )
        added = await client.next_event("conversation.item.added")
        assert added["item"]["role"] == "user"
        client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        client.send({"type": "response.create", "event_id": "second"})
        err = await client.next_event("error")
        assert err["error"]["code"] == "conversation_already_has_active_response"
        assert err["error"]["event_id"] == "second"
        text = await client.next_event("response.output_text.done", timeout=10)
        assert text["text"] == "You said: hi"
        await client.next_event("response.done")
        assert not any(t.startswith("output_audio_buffer") for t in client.types())

    run(go)


def test_client_cancel_and_clear_during_playback() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.send({"type": "response.create"})
        started = await client.next_event("output_audio_buffer.started", timeout=10)
        client.send({"type": "response.cancel"})
        client.send({"type": "output_audio_buffer.clear"})
        done = await client.next_event("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        cleared = await client.next_event("output_audio_buffer.cleared")
        assert cleared["response_id"] == started["response_id"]

    run(go)


def test_impaired_downlink_loss_shows_as_sequence_gaps() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        client.send({"type": "response.create"})
        await client.next_event("output_audio_buffer.stopped", timeout=15)
        call = await sim.wait_for_call()
        sent = call.pacer.sent
        dropped = {p.seq for p in sent if p.dropped}
        expected = {p.seq for p in sent if not p.dropped}
        await until(lambda: {p[0] for p in client.rtp.packets} >= expected)
        received = {p[0] for p in client.rtp.packets}
        assert len(sent) >= 30
        assert dropped, "the seeded 25 % loss dropped nothing"
        assert received == {p.seq for p in sent if not p.dropped}
        assert call.pacer.impairer.dropped == len(dropped)

    run(go, loss=0.25, burst_length=2.0, seed=3)


def test_fault_injection_on_the_data_channel() -> None:
    async def go(sim: Simulator, client: BareClient) -> None:
        await client.next_event("session.created")
        await until(lambda: len([m for m in client.raw_messages if not m.startswith('{"')]) >= 2)
        malformed = [m for m in client.raw_messages if not m.startswith('{"')]
        assert len(malformed) == 2
        call = await sim.wait_for_call()
        call.send_error("server_error", "injected", type="server_error")
        err = await client.next_event("error")
        assert err["error"]["message"] == "injected"
        await call.expire_session(close_after_s=0.1)
        expired = await client.next_event("error")
        assert expired["error"]["code"] == "session_expired"
        for _ in range(100):
            if (
                client.pc.connectionState in ("closed", "failed")
                or client.channel.readyState == "closed"
            ):
                break
            await asyncio.sleep(0.05)
        assert client.channel.readyState == "closed"

    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.malformed_after_created = 2
            client = BareClient()
            try:
                await client.connect(sim.base_url, sim.api_key)
                await go(sim, client)
            finally:
                await client.close()

    asyncio.run(main())


def test_beta_call_speaks_beta_names() -> None:
    async def main() -> None:
        async with Simulator(beta=True) as sim:
            client = BareClient()
            try:
                key = sim.mint_key(ttl_s=60, beta=True)
                await client.connect(sim.base_url, key, path="/realtime?model=gpt-4o-realtime")
                created = await client.next_event("session.created")
                assert "modalities" in created["session"]
                assert "audio" not in created["session"]
                client.send(
                    {
                        "type": "session.update",
                        "session": {
                            "voice": "verse",
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                        },
                    }
                )
                updated = await client.next_event("session.updated")
                assert updated["session"]["voice"] == "verse"
                client.send({"type": "response.create"})
                await client.next_event("response.audio_transcript.done", timeout=10)
                assert "response.output_audio_transcript.delta" not in client.types()
                assert "response.audio_transcript.delta" in client.types()
            finally:
                await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("fault", ["ice_failure", "drop_channel"])
def test_connection_faults(fault: str) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            client = BareClient()
            try:
                if fault == "ice_failure":
                    sim.faults.ice_failure = True
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(client.connect(sim.base_url, sim.api_key), 3)
                    assert client.pc.connectionState != "connected"
                else:
                    sim.faults.drop_channel_after_s = 0.2
                    await client.connect(sim.base_url, sim.api_key)
                    await client.next_event("session.created")
                    for _ in range(60):
                        if client.channel.readyState == "closed":
                            break
                        await asyncio.sleep(0.05)
                    assert client.channel.readyState == "closed"
            finally:
                await client.close()

    asyncio.run(main())
