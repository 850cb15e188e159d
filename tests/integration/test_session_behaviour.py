"""Session behaviour against a scripted peer: tool dispatch, barge-in, errors, state events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import errors

from .answerer import MiniAnswerer

Send = Callable[[dict[str, Any]], None]


def test_a_registered_tool_is_called_and_its_result_sent_back() -> None:
    calls: list[dict[str, Any]] = []

    def get_weather(location: str) -> dict[str, Any]:
        """Current weather for a city."""
        calls.append({"location": location})
        return {"temp_c": 21, "location": location}

    def script(event: dict[str, Any], send: Send) -> None:
        if event["type"] == "response.create" and "response" in event:
            send(
                {
                    "type": "response.function_call_arguments.done",
                    "event_id": "event_7",
                    "response_id": "resp_1",
                    "item_id": "fc_1",
                    "output_index": 0,
                    "call_id": "call_001",
                    "name": "get_weather",
                    "arguments": json.dumps({"location": "Paris"}),
                }
            )

    async def main() -> None:
        answerer = MiniAnswerer(on_event=script)
        base_url = await answerer.start()
        async with rtvoice.connect(
            base_url=base_url, api_key="ek_test_key_1234", tools=[get_weather]
        ) as session:
            assert session.tools[0]["name"] == "get_weather"
            assert session.tools[0]["parameters"]["required"] == ["location"]
            await session.create_response(instructions="use the tool")
            for _ in range(100):
                if len(answerer.received) >= 3:
                    break
                await asyncio.sleep(0.02)
            assert session.metrics.tool_calls == 1
        assert calls == [{"location": "Paris"}]
        output, follow_up = answerer.received[1], answerer.received[2]
        assert output["type"] == "conversation.item.create"
        assert output["item"]["type"] == "function_call_output"
        assert output["item"]["call_id"] == "call_001"
        assert json.loads(output["item"]["output"]) == {"temp_c": 21, "location": "Paris"}
        assert follow_up["type"] == "response.create"
        await answerer.stop()

    asyncio.run(main())


def _tone_packets(n: int) -> list[bytes]:
    enc = rtvoice.OpusEncoder(48000, 1)
    t = np.arange(960 * n) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    return [enc.encode(tone[i * 960 : (i + 1) * 960]) for i in range(n)]


class PacedSource:
    def __init__(self, payloads: list[bytes]) -> None:
        import time

        self.payloads = payloads
        self.index = 0
        self.start_ns = time.monotonic_ns()

    @property
    def next_due_ns(self) -> int:
        return self.start_ns + self.index * 20_000_000

    def pop_due(self, now_ns: int) -> tuple[bytes, int, int] | None:
        if self.index >= len(self.payloads):
            return None
        if now_ns < self.next_due_ns:
            return None
        self.index += 1
        return self.payloads[self.index - 1], (self.index - 1) * 960, self.index - 1


def test_barge_in_flushes_playout_and_truncates_at_the_played_position() -> None:
    async def main() -> None:
        answerer = MiniAnswerer(packet_source_factory=lambda: PacedSource(_tone_packets(150)))
        base_url = await answerer.start()
        async with rtvoice.connect(base_url=base_url, api_key="ek_test_key_1234") as session:
            channel = answerer.channels[0]
            # The item's position counts from when its first event arrives (the tone may have
            # started playing a frame or two before): at most this much.
            item_start = session.downlink.media_samples_played
            channel.send(
                json.dumps(
                    {
                        "type": "response.output_item.added",
                        "event_id": "e1",
                        "response_id": "resp_1",
                        "output_index": 0,
                        "item": {"id": "item_42", "type": "message", "role": "assistant"},
                    }
                )
            )
            channel.send(
                json.dumps(
                    {
                        "type": "output_audio_buffer.started",
                        "event_id": "e2",
                        "response_id": "resp_1",
                    }
                )
            )
            # About a second of the item plays (counted by the native playout, not wall time).
            for _ in range(300):
                if session.downlink.media_samples_played >= 48000:
                    break
                await asyncio.sleep(0.02)
            played_before = session.downlink.media_samples_played
            channel.send(
                json.dumps(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "event_id": "e3",
                        "audio_start_ms": 900,
                        "item_id": "item_user",
                    }
                )
            )
            for _ in range(100):
                if answerer.received:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            flushed = session.downlink.stats["flushes"]
            assert session.metrics.barge_ins == 1
        truncate = answerer.received[0]
        assert truncate["type"] == "conversation.item.truncate"
        assert truncate["item_id"] == "item_42"
        assert truncate["content_index"] == 0
        # The position reported is what the playout clock played, not what arrived: at least
        # what had played when speech started, at most one more 20 ms pull and the event's trip.
        played_ms = (played_before - item_start) / 48
        # (One 20 ms pull may separate this test's reading of the start from the session's.)
        assert played_ms <= truncate["audio_end_ms"] + 21
        assert truncate["audio_end_ms"] - played_ms < 500
        assert truncate["audio_end_ms"] >= (48000 - item_start) / 48 - 21
        assert flushed > 0
        await answerer.stop()

    asyncio.run(main())


def test_state_events_and_malformed_server_messages() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        session = rtvoice.connect(base_url=base_url, api_key="ek_test_key_1234")
        assert session.state == "idle"
        async with session:
            answerer.channels[0].send("{not json")
            seen: list[str] = []
            async for event in session:
                seen.append(event.get("state") or event.type)
                if event.type == "rtvoice.malformed_event":
                    break
        # Ready means session.created has arrived: it precedes the "connected" state event.
        assert seen == ["connecting", "session.created", "connected", "rtvoice.malformed_event"]
        assert session.metrics.malformed_events == 1
        assert session.state == "closed"
        await answerer.stop()

    asyncio.run(main())


def test_wrong_key_fails_the_session_with_an_authentication_error() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        session = rtvoice.connect(base_url=base_url, api_key="ek_not_a_known_key")
        with pytest.raises(errors.AuthenticationError):
            await session.open()
        assert session.state == "failed"
        with pytest.raises(errors.SessionError):
            await session.send({"type": "response.create"})
        await answerer.stop()

    asyncio.run(main())


def test_standard_key_mints_an_ephemeral_key_carrying_the_session_config() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        async with rtvoice.connect(
            base_url=base_url,
            api_key="sk-test-standard-key",
            instructions="Be brief.",
            voice="marin",
        ) as session:
            timings = session.metrics.connect
        assert answerer.minted[0]["session"]["instructions"] == "Be brief."
        assert answerer.minted[0]["session"]["audio"]["output"]["voice"] == "marin"
        assert answerer.requests[0]["content_type"] == "application/sdp"
        assert timings["key_ms"] is not None
        assert timings["key_ms"] > 0
        # The call is hung up with the standard key on close.
        assert answerer.hangups == [session.transport.call_id]
        await answerer.stop()

    asyncio.run(main())


def test_standard_key_without_ephemeral_sends_a_multipart_offer() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        async with rtvoice.connect(
            base_url=base_url, api_key="sk-test-standard-key", ephemeral=False, model="m1"
        ):
            pass
        assert answerer.minted == []
        assert answerer.requests[0]["content_type"] == "multipart/form-data"
        assert answerer.requests[0]["session"]["model"] == "m1"
        assert answerer.requests[0]["session"]["type"] == "realtime"
        await answerer.stop()

    asyncio.run(main())


def test_secrets_do_not_leak_into_reprs_or_errors() -> None:
    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        session = rtvoice.connect(base_url=base_url, api_key="sk-wrong-secret-value-123456")
        with pytest.raises(errors.AuthenticationError) as info:
            await session.open()
        assert "sk-wrong-secret-value-123456" not in str(info.value)
        assert "sk-wrong-secret-value-123456" not in repr(session.__dict__)
        # A connected session keeps the standard key (for hangup) only as a Secret.
        async with rtvoice.connect(base_url=base_url, api_key="sk-test-standard-key") as ok:
            assert "sk-test-standard-key" not in repr(ok.__dict__)
            assert "sk-test-standard-key" not in repr(ok.transport.__dict__)
        await answerer.stop()

    asyncio.run(main())
