"""Session lifecycle misuse: a session never closed, closed from another loop or thread, closed
while opening; a slow synchronous tool; events that never left counted as sent."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sys
import threading
import time
import warnings
from typing import Any

import pytest

import rtvoice
from rtvoice import errors, events
from rtvoice.simulator import Call, Simulator

TRANSPORTS = ["webrtc", "websocket"]
# Python threads a session starts (the RTC loop of either transport, the playout pump, aiortc's
# decoder); the native playout clock is counted through /proc/self/task.
SESSION_THREADS = ("rtvoice-rtc", "rtvoice-ws", "rtvoice-playout-pump", "audio-decoder")


def _session_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(SESSION_THREADS))


def _native_threads() -> set[int]:
    """Thread ids of this process that are no Python thread (the native playout clock, ...)."""
    python = {t.native_id for t in threading.enumerate()}
    return {int(tid) for tid in os.listdir("/proc/self/task")} - python


def _client_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of this loop running rtvoice code other than the simulator's (which shares it)."""
    found = set()
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        path = "" if code is None else code.co_filename
        if f"{os.sep}rtvoice{os.sep}" in path and f"{os.sep}simulator{os.sep}" not in path:
            found.add(task)
    return found


def _audio_received(call: Call | None) -> int:
    """Uplink audio the simulator received: RTP packets, or appends on WebSocket."""
    if call is None:
        return 0
    if call.websocket:
        return sum(1 for e in call.client_events if e.get("type") == "input_audio_buffer.append")
    return len(call.received_packets)


async def _until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _connect(sim: Simulator, transport: str, **kwargs: Any) -> rtvoice.RealtimeSession:
    return rtvoice.connect(
        base_url=sim.base_url, api_key=sim.api_key, transport=transport, **kwargs
    )


# ---------------------------------------------------------------------- never closed


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_unclosed_session_warns_when_collected_and_its_threads_and_packets_stop(
    transport: str,
) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            natives_before = _native_threads()

            def open_and_forget() -> None:
                # The session's own loop ends without close(): the session is dropped with it.
                async def run() -> None:
                    session = _connect(sim, transport)
                    await session.open()
                    await _until(lambda: _audio_received(sim.last_call) >= 10, "uplink audio")

                asyncio.run(run())

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                await asyncio.get_running_loop().run_in_executor(None, open_and_forget)
                gc.collect()
            resource = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
            # One warning, ours: no socket or transport of the session was left unclosed.
            assert len(resource) == 1, resource
            assert resource[0].startswith("unclosed RealtimeSession")
            assert f"transport {transport!r}" in resource[0]
            assert _session_threads() == []
            await _until(lambda: _native_threads() <= natives_before, "native threads to exit")
            call = sim.last_call
            await asyncio.sleep(0.1)  # what was already on the wire arrives
            received = _audio_received(call)
            await asyncio.sleep(0.3)  # 15 packets' worth of time
            assert _audio_received(call) == received

    asyncio.run(main())


# A program that exits with its session open: the session stays referenced by a global, so
# only the exit hook can stop it.
_EXIT_WITHOUT_CLOSE = """
import asyncio, sys
import rtvoice

async def main():
    global session
    session = rtvoice.connect(base_url=sys.argv[1], api_key=sys.argv[2], transport="webrtc")
    await session.open()
    await asyncio.sleep(0.5)

asyncio.run(main())
print("exiting", session.state)
"""


def test_a_session_still_open_at_interpreter_exit_is_hung_up_by_the_exit_hook() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _EXIT_WITHOUT_CLOSE,
                sim.base_url,
                sim.api_key,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            call = await sim.wait_for_call(timeout=30)
            out, err = await asyncio.wait_for(child.communicate(), 30)
            assert child.returncode == 0, err.decode()
            assert out.decode().split() == ["exiting", "connected"]
            assert b"Traceback" not in err
            assert _audio_received(call) > 0
            # The peer connection was closed at exit (DTLS close and SCTP abort), so the call
            # ends now; a process that just dies leaves it to ICE consent, 30 s later.
            await asyncio.wait_for(call.ended.wait(), 5)

    asyncio.run(main())


# ---------------------------------------------------------------------- closed elsewhere


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_from_another_thread_and_loop_closes_the_session_on_its_own_loop(
    transport: str,
) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            session = _connect(sim, transport)
            transitions: list[tuple[str, str, bool]] = []
            owner = threading.current_thread()
            session.on_state_change(
                lambda old, new: transitions.append((old, new, threading.current_thread() is owner))
            )
            await session.open()
            await _until(lambda: _audio_received(sim.last_call) >= 5, "uplink audio")

            def close_elsewhere() -> None:
                asyncio.run(session.close())

            await asyncio.get_running_loop().run_in_executor(None, close_elsewhere)
            assert session.state == "closed"
            # The change was made, and its listeners called, on the session's loop.
            assert transitions[-1] == ("connected", "closed", True)
            assert _session_threads() == []
            with pytest.raises(errors.SessionError, match="closed"):
                await session.send_text("anyone?")
            await session.close()  # still idempotent on its own loop

    asyncio.run(main())


def test_close_on_a_new_loop_after_the_sessions_loop_ended_releases_it_without_a_warning() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            natives_before = _native_threads()

            def open_in_a_loop_that_ends() -> rtvoice.RealtimeSession:
                async def run() -> rtvoice.RealtimeSession:
                    session = _connect(sim, "webrtc")
                    await session.open()
                    await _until(lambda: _audio_received(sim.last_call) >= 5, "uplink audio")
                    return session

                return asyncio.run(run())

            loop = asyncio.get_running_loop()
            held = [await loop.run_in_executor(None, open_in_a_loop_that_ends)]
            assert held[0].state == "connected"
            await loop.run_in_executor(None, lambda: asyncio.run(held[0].close()))
            assert held[0].state == "closed"
            assert _session_threads() == []
            await _until(lambda: _native_threads() <= natives_before, "native threads to exit")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                held.clear()
                gc.collect()
            assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []

    asyncio.run(main())


# ---------------------------------------------------------------------- closed while opening


@pytest.mark.parametrize("fault", ["block_ice", "answer_delay_s"])
def test_close_while_open_is_running_makes_open_raise_session_error_and_ends_closed(
    fault: str,
) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            if fault == "block_ice":
                sim.faults.block_ice = True  # the answer comes, ICE never connects
            else:
                sim.faults.answer_delay_s = 30.0  # the SDP POST waits for its answer
            tasks_before = _client_tasks()
            session = _connect(sim, "webrtc", ice_timeout_s=30.0, connect_timeout_s=60.0)
            transitions: list[tuple[str, str]] = []
            session.on_state_change(lambda old, new: transitions.append((old, new)))
            opening = asyncio.ensure_future(session.open())
            await asyncio.sleep(0.3)
            assert session.state == "connecting"
            await session.close()
            with pytest.raises(errors.SessionError, match="closed while opening"):
                await opening
            assert session.state == "closed"
            assert transitions == [("idle", "connecting"), ("connecting", "closed")]
            assert _session_threads() == []
            assert _client_tasks() - tasks_before == set()
            with pytest.raises(errors.SessionError):
                await session.open()

    asyncio.run(main())


# ---------------------------------------------------------------------- tools and counters


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slow_synchronous_tool_does_not_block_the_event_loop(transport: str) -> None:
    started = threading.Event()
    finished = threading.Event()

    def get_weather(location: str) -> dict[str, Any]:
        """Current weather."""
        started.set()
        time.sleep(1.0)
        finished.set()
        return {"temp_c": 20}

    async def main() -> None:
        ticks_during_tool = 0

        async def heartbeat() -> None:
            nonlocal ticks_during_tool
            while True:
                await asyncio.sleep(0.05)
                if started.is_set() and not finished.is_set():
                    ticks_during_tool += 1

        async with Simulator() as sim, _connect(sim, transport, tools=[get_weather]) as session:
            beating = asyncio.ensure_future(heartbeat())
            await session.send_text("weather?")
            call = await sim.wait_for_call()
            output = await call.wait_for_client_event(
                lambda e: e.get("item", {}).get("type") == "function_call_output", timeout=20
            )
            beating.cancel()
            assert finished.is_set()
            assert json.loads(output["item"]["output"]) == {"temp_c": 20}
            # 1 s in 50 ms ticks is 20: the loop kept running while the tool slept.
            assert ticks_during_tool >= 10

    asyncio.run(main())


def test_events_sent_counts_neither_an_unserializable_nor_an_oversized_event() -> None:
    async def main() -> None:
        # A peer that accepts data-channel messages of up to 64 KiB (the RFC 8841 default).
        async with (
            Simulator(max_message_size=64 * 1024) as sim,
            _connect(sim, "webrtc") as session,
        ):
            sent = session.metrics.events_sent
            with pytest.raises(ValueError, match="finite number"):
                await session.send(events.session_update(speed=math.nan))
            assert session.metrics.events_sent == sent
            too_big = events.conversation_item_create_text("x" * (64 * 1024))
            with pytest.raises(errors.TransportError, match="maximum message size"):
                await session.send(too_big)
            assert session.metrics.events_sent == sent
            await session.send_text("fits", respond=False)
            assert session.metrics.events_sent == sent + 1

    asyncio.run(main())
