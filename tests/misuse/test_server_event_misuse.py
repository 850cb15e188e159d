"""Hostile server messages are counted as malformed events and never raise out of the codec."""

from __future__ import annotations

import asyncio
import json

import pytest

import rtvoice
from rtvoice import events as ev

DEEP = 100_000


@pytest.mark.parametrize(
    "raw",
    [
        "[" * DEEP,
        "{" + '"a":{' * DEEP,
        '{"type":"response.done","response":' + "[" * DEEP + "]" * DEEP + "}",
        ("[" * DEEP).encode(),
    ],
    ids=["brackets", "objects", "inside_a_valid_event", "bytes"],
)
def test_a_deeply_nested_server_event_is_counted_as_malformed_not_raised(
    raw: str | bytes,
) -> None:
    codec = ev.EventCodec()
    got = codec.decode(raw)
    assert isinstance(got, ev.MalformedEvent)
    assert got.type == ev.MALFORMED_EVENT
    assert got.reason == "nested too deeply to decode"
    assert len(got.raw) == 200
    assert (codec.received_count, codec.malformed_count) == (1, 1)
    after = codec.decode('{"type":"input_audio_buffer.speech_started","audio_start_ms":5}')
    assert isinstance(after, ev.SpeechStarted)
    assert after.audio_start_ms == 5
    assert codec.malformed_count == 1


def test_a_beta_session_too_deep_to_reshape_is_malformed_not_a_recursion_error() -> None:
    # json.loads accepts 900 levels, but reshaping the beta session deep-copies them.
    tools = "[" * 900 + "]" * 900
    raw = f'{{"type":"session.created","session":{{"voice":"marin","tools":{tools}}}}}'
    got = ev.EventCodec("beta").decode(raw)
    assert isinstance(got, ev.MalformedEvent)
    assert got.reason == "nested too deeply to decode"


def test_parse_server_event_reports_deep_nesting_without_raising() -> None:
    got = ev.parse_server_event("[" * DEEP)
    assert isinstance(got, ev.MalformedEvent)
    assert got.reason == "nested too deeply to decode"


def test_a_server_event_over_4_mib_by_default_is_counted_as_malformed_not_parsed() -> None:
    assert ev.DEFAULT_MAX_EVENT_BYTES == 4 * 1024 * 1024
    delta = "A" * (4 * 1024 * 1024)
    raw = json.dumps({"type": "response.output_audio.delta", "delta": delta})
    codec = ev.EventCodec()
    got = codec.decode(raw)
    assert isinstance(got, ev.MalformedEvent)
    assert "exceeds max_event_bytes=4194304" in got.reason
    assert got.raw == raw[:200]
    assert codec.malformed_count == 1
    big_bytes = codec.decode(raw.encode())
    assert isinstance(big_bytes, ev.MalformedEvent)
    assert codec.malformed_count == 2


def test_the_event_size_bound_is_configurable_and_counts_utf8_bytes() -> None:
    codec = ev.EventCodec(max_event_bytes=64)
    small = '{"type":"x","t":"' + "a" * 40 + '"}'  # 59 bytes
    assert len(small.encode()) <= 64
    assert not isinstance(codec.decode(small), ev.MalformedEvent)
    wide = '{"type":"x","t":"' + "é" * 20 + '"}'  # 39 characters, 59 bytes
    assert not isinstance(codec.decode(wide), ev.MalformedEvent)
    wider = '{"type":"x","t":"' + "€" * 20 + '"}'  # 39 characters, 79 bytes
    got = codec.decode(wider)
    assert isinstance(got, ev.MalformedEvent)
    assert got.reason == "event of at least 79 bytes exceeds max_event_bytes=64"
    assert codec.malformed_count == 1
    assert isinstance(ev.parse_server_event(wider, max_event_bytes=64), ev.MalformedEvent)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_a_bad_event_size_bound_raises_when_the_codec_is_made(
    value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="max_event_bytes must be"):
        ev.EventCodec(max_event_bytes=value)  # type: ignore[arg-type]


def test_a_deeply_nested_event_reaches_the_session_consumer_and_the_session_continues() -> None:
    from integration.answerer import MiniAnswerer

    async def main() -> None:
        answerer = MiniAnswerer()
        base_url = await answerer.start()
        try:
            async with rtvoice.connect(base_url=base_url, api_key="ek_test_key_1234") as session:
                channel = answerer.channels[0]
                channel.send("[" * 20_000)
                channel.send('{"type":"input_audio_buffer.speech_stopped","audio_end_ms":7}')
                seen: list[ev.ServerEvent] = []
                async with asyncio.timeout(10):
                    async for event in session:
                        seen.append(event)
                        if event.type == "input_audio_buffer.speech_stopped":
                            break
                malformed = [e for e in seen if isinstance(e, ev.MalformedEvent)]
                assert [e.reason for e in malformed] == ["nested too deeply to decode"]
                assert session.metrics.malformed_events == 1
                assert session.state == "connected"
        finally:
            await answerer.stop()

    asyncio.run(main())
