"""The fault catalogue: one test per fault, each asserting the outcome, its time bound, and that
no thread, asyncio task or file descriptor outlives the session.

Time bounds are the policy's own (the sum of its backoff delays, the dead-peer timeout + 1 s)
with :data:`SLACK_S` for a loaded two-core machine running both ends of every call.
The ICE-lite consent row is ``tests/integration/test_simulator_ice.py`` (a call held 45 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

import rtvoice
from rtvoice import errors
from rtvoice.resilience import ReconnectPolicy
from rtvoice.session import RealtimeSession
from rtvoice.simulator import Call, Simulator

SLACK_S = 2.0
DEAD_PEER_S = 2.0
TRANSCRIBED = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
TRANSPORTS = ["webrtc", "websocket"]


# ----------------------------------------------------------------------------- leak checks


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _fds() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


@contextlib.contextmanager
def no_leaks() -> Iterator[None]:
    """Threads and file descriptors after the block are those before it (waiting up to 5 s for
    threads that are stopping)."""
    threads, fds = _threads(), _fds()
    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not (_threads() - threads) and not (_fds() - fds):
            return
        time.sleep(0.05)
    assert not (_threads() - threads), f"threads left behind: {_threads() - threads}"
    assert not (_fds() - fds), f"file descriptors left behind: {_fds() - fds}"


def run(main: Callable[[], Awaitable[None]], timeout_s: float = 60.0) -> None:
    """Run ``main`` in a fresh loop; no task of it may outlive it, nor any thread or fd."""

    async def checked() -> None:
        before = asyncio.all_tasks()
        await asyncio.wait_for(main(), timeout_s)
        me = asyncio.current_task()
        deadline = time.monotonic() + 3.0
        while True:  # tasks that were cancelled or told to stop get a moment to finish
            left = {t for t in asyncio.all_tasks() - before if not t.done() and t is not me}
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert not left, f"tasks left behind: {left}"

    with no_leaks():
        asyncio.run(checked())


# ----------------------------------------------------------------------------- helpers


class Recorder:
    """Every event of a session, with the monotonic time it was taken from the iterator."""

    def __init__(self, session: RealtimeSession) -> None:
        self.session = session
        self.events: list[tuple[float, Any]] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for event in self.session:
            self.events.append((time.monotonic(), event))

    def of(self, kind: str) -> list[Any]:
        return [e for _, e in self.events if e.type == kind]

    def states(self) -> list[str]:
        return [e.get("state") for e in self.of("rtvoice.state_changed")]

    def time_of(self, kind: str, **match: Any) -> float:
        for t, e in self.events:
            if e.type == kind and all(e.get(k) == v for k, v in match.items()):
                return t
        raise AssertionError(f"no {kind} {match} among {[e.type for _, e in self.events]}")

    async def wait_for(self, kind: str, timeout_s: float = 20.0, **match: Any) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, e in self.events:
                if e.type == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"no {kind} {match} within {timeout_s} s; got {[e.type for _, e in self.events]}"
        )

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def session_for(sim: Simulator, transport: str, **kw: Any) -> RealtimeSession:
    kw.setdefault("dead_peer_timeout_s", DEAD_PEER_S)
    kw.setdefault("session", TRANSCRIBED)
    return rtvoice.connect(base_url=sim.base_url, api_key=sim.api_key, transport=transport, **kw)


def requests_to(sim: Simulator, suffix: str) -> list[Any]:
    return [r for r in sim.requests if r.path.endswith(suffix)]


async def converse(session: RealtimeSession, rec: Recorder, text: str) -> None:
    """One text turn answered by the simulator (its reply lands in the history)."""
    before = len(rec.of("response.done"))
    await session.send_text(text)
    deadline = time.monotonic() + 15
    while len(rec.of("response.done")) <= before:
        assert time.monotonic() < deadline, "no response.done"
        await asyncio.sleep(0.02)


def replayed_items(call: Call) -> list[dict[str, Any]]:
    return [e["item"] for e in call.client_events if e.get("type") == "conversation.item.create"]


def item_texts(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        for part in item.get("content") or []:
            text = part.get("text") or part.get("transcript")
            if text:
                out.append((item.get("role", ""), text))
    return out


# ----------------------------------------------------------------------------- HTTP faults


def test_a_refused_ephemeral_key_is_reminted_once_then_the_call_connects() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.fail_next(
                "/realtime/calls",
                401,
                {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}},
            )
            async with session_for(sim, "webrtc") as session:
                assert session.state == "connected"
                assert session.metrics.resilience["reminted_keys"] == 1
            assert len(requests_to(sim, "/client_secrets")) == 2
            assert [r.status for r in requests_to(sim, "/realtime/calls")] == [401, 201]

    run(main)


def test_a_key_refused_twice_fails_with_authentication_error() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.fail_next("/realtime/calls", 401, {"error": {"message": "no"}}, times=2)
            session = session_for(sim, "webrtc")
            with pytest.raises(errors.AuthenticationError):
                await session.open()
            assert session.state == "failed"
            assert len(requests_to(sim, "/client_secrets")) == 2
            await session.close()

    run(main)


def test_429_with_retry_after_is_retried_once_after_the_wait() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.fail_next(
                "/realtime/calls",
                429,
                {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                headers={"Retry-After": "1"},
            )
            start = time.monotonic()
            async with session_for(sim, "webrtc") as session:
                elapsed = time.monotonic() - start
                assert session.state == "connected"
                assert session.metrics.resilience["failed_attempts"] == 1
            assert elapsed >= 1.0
            assert [r.status for r in requests_to(sim, "/realtime/calls")] == [429, 201]

    run(main)


def test_500_then_503_then_the_third_try_connects() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.fail_next("/realtime/calls", 500, {"error": {"message": "boom"}})
            sim.faults.fail_next("/realtime/calls", 503, "unavailable")
            async with session_for(sim, "webrtc") as session:
                assert session.state == "connected"
                assert session.metrics.resilience["failed_attempts"] == 2
            assert [r.status for r in requests_to(sim, "/realtime/calls")] == [500, 503, 201]

    run(main)


def test_other_4xx_is_fatal_at_once() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.fail_next("/realtime/calls", 403, {"error": {"message": "forbidden"}})
            session = session_for(sim, "webrtc")
            with pytest.raises(errors.PermissionDeniedError):
                await session.open()
            assert len(requests_to(sim, "/realtime/calls")) == 1
            await session.close()

    run(main)


def test_a_bad_sdp_answer_is_a_protocol_error_without_retry() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            sim.faults.bad_answer = True
            session = session_for(sim, "auto")
            with pytest.raises(errors.ProtocolError):
                await session.open()
            assert len(requests_to(sim, "/realtime/calls")) == 1
            await session.close()

    run(main)


# ----------------------------------------------------------------------------- lost calls


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_vanished_server_reconnects_within_the_timeout_and_restores_the_history(
    transport: str,
) -> None:
    async def main() -> None:
        async with (
            Simulator(transcribe=lambda pcm: "what time is it") as sim,
            session_for(sim, transport) as session,
        ):
            rec = Recorder(session)
            await session.update(instructions="Answer in French.")
            await converse(session, rec, "first question")
            await converse(session, rec, "second question")
            old = sim.last_call
            assert old is not None
            history = [(r, t) for r, t in item_texts(list(old.items.values()))]
            old.vanish()
            gone = time.monotonic()
            await rec.wait_for("rtvoice.reconnected")
            down = rec.time_of("rtvoice.state_changed", state="reconnecting")
            assert down - gone <= DEAD_PEER_S + 1.0 + SLACK_S
            assert rec.states()[-2:] == ["reconnecting", "connected"]
            new = sim.last_call
            assert new is not None
            assert new is not old
            assert new.session["id"] != old.session["id"]
            # The configuration as updated, then the conversation in order, roles kept.
            assert new.session["instructions"] == "Answer in French."
            assert item_texts(replayed_items(new)) == history
            assert len(history) == 4
            event = rec.of("rtvoice.reconnected")[0]
            assert event.get("items_restored") == 4
            assert event.get("attempts") == 1
            replayed = {str(item["id"]) for item in replayed_items(new)}
            assert len(replayed) == 4
            # The conversation goes on in the new call.
            await converse(session, rec, "third question")
            assert session.metrics.resilience["reconnects"] == 1
            # The server's acknowledgements of the replayed items (added and done for each)
            # stayed in the session: the app saw each of those items once, from the old call.
            assert session.metrics.resilience["replay_echoes"] == 8
            for kind in ("conversation.item.added", "conversation.item.done"):
                seen = [str((e.get("item") or {}).get("id")) for e in rec.of(kind)]
                assert all(seen.count(i) == 1 for i in replayed), (kind, seen)
            await rec.stop()

    run(main)


def test_an_expired_key_at_reconnect_is_reminted() -> None:
    async def main() -> None:
        async with Simulator() as sim, session_for(sim, "webrtc") as session:
            rec = Recorder(session)
            old = sim.last_call
            assert old is not None
            sim.expire_keys()  # the cached key looks valid here but the server refuses it
            old.vanish()
            await rec.wait_for("rtvoice.reconnected")
            assert session.metrics.resilience["reminted_keys"] == 1
            assert [r.status for r in requests_to(sim, "/realtime/calls")] == [201, 401, 201]
            await rec.stop()

    run(main)


def test_a_closed_data_channel_reconnects_with_the_history() -> None:
    async def main() -> None:
        async with Simulator() as sim, session_for(sim, "webrtc") as session:
            rec = Recorder(session)
            await converse(session, rec, "remember the number 42")
            old = sim.last_call
            assert old is not None
            old.drop_data_channel()
            await rec.wait_for("rtvoice.reconnected")
            new = sim.last_call
            assert new is not old
            assert ("user", "remember the number 42") in item_texts(replayed_items(new))
            await rec.stop()

    run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_hangup_reconnects(transport: str) -> None:
    async def main() -> None:
        async with Simulator() as sim, session_for(sim, transport) as session:
            rec = Recorder(session)
            await converse(session, rec, "hello")
            old = sim.last_call
            assert old is not None
            await old.hang_up()
            await rec.wait_for("rtvoice.reconnected")
            assert sim.last_call is not old
            await rec.stop()

    run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_hangup_without_reconnect_closes_with_the_reason(transport: str) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            session = session_for(sim, transport, reconnect=False)
            async with session:
                rec = Recorder(session)
                call = sim.last_call
                assert call is not None
                await call.hang_up()
                await asyncio.wait_for(rec.task, 15)
                closed = rec.of("rtvoice.state_changed")[-1]
                assert closed.get("state") == "closed"
                assert closed.get("reason")
                assert "reconnecting" not in rec.states()

    run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_3s_freeze_is_ridden_out_without_a_reconnect(transport: str) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            session_for(sim, transport, dead_peer_timeout_s=5.0) as session,
        ):
            rec = Recorder(session)
            call = sim.last_call
            assert call is not None
            call.freeze(3.0)
            await asyncio.sleep(3.5)
            await converse(session, rec, "still there?")
            assert session.state == "connected"
            assert "reconnecting" not in rec.states()
            assert session.metrics.resilience["reconnects"] == 0
            assert sim.last_call is call
            played = session.downlink.media_samples_played
            assert played > 0  # the reply after the freeze was heard
            await rec.stop()

    run(main)


def test_a_response_cut_by_the_loss_is_reported_and_not_rerun() -> None:
    async def main() -> None:
        long_reply = "this is a long answer " * 20
        async with (
            Simulator(reply_audio="synth", reply_text=lambda heard: long_reply) as sim,
            session_for(sim, "websocket") as session,
        ):
            rec = Recorder(session)
            await session.send_text("tell me a story")
            await rec.wait_for("response.created")
            old = sim.last_call
            assert old is not None
            old.vanish()
            interrupted = await rec.wait_for("rtvoice.response_interrupted")
            assert interrupted.get("response_id")
            await rec.wait_for("rtvoice.reconnected")
            new = sim.last_call
            assert new is not old
            await asyncio.sleep(0.5)
            assert not [e for e in new.client_events if e.get("type") == "response.create"]
            assert session.metrics.resilience["responses_interrupted"] == 1
            await rec.stop()

    run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_events_and_audio_sent_while_reconnecting_arrive_after_the_restore(
    transport: str,
) -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            session_for(sim, transport) as session,
        ):
            # A slow calls endpoint keeps the session reconnecting for a while.
            rec = Recorder(session)
            await converse(session, rec, "before")
            old = sim.last_call
            assert old is not None
            sim.faults.answer_delay_s = 1.5
            old.vanish() if transport == "webrtc" else await old.hang_up()
            await rec.wait_for("rtvoice.state_changed", state="reconnecting")
            ids = []
            for i in range(5):
                ids.append(await session.send_text(f"while down {i}", respond=False))
            # 2 s of a tone while no call is up: only the last 0.5 s may be sent.
            tone = (0.3 * np.sin(np.arange(96000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
            session.push_audio(tone, 48000)
            await rec.wait_for("rtvoice.reconnected", timeout_s=30)
            new = sim.last_call
            assert new is not old
            await asyncio.sleep(1.5)
            sent_ids = [e.get("event_id") for e in new.client_events]
            assert [i for i in sent_ids if i in ids] == ids  # all of them, in order
            texts = [t for _, t in item_texts(replayed_items(new))]
            assert texts[-5:] == [f"while down {i}" for i in range(5)]
            event = rec.of("rtvoice.reconnected")[0]
            assert event.get("audio_dropped_ms") == pytest.approx(1500, abs=60)
            await rec.stop()

    run(main)


def test_reconnection_that_keeps_failing_ends_in_failed_and_queued_sends_raise() -> None:
    policy = ReconnectPolicy(attempts=3, initial_delay_s=0.2, max_delay_s=0.5)

    async def main() -> None:
        async with Simulator() as sim:
            session = session_for(sim, "webrtc", reconnect=policy)
            async with session:
                rec = Recorder(session)
                old = sim.last_call
                assert old is not None
                sim.faults.fail_next("/realtime/calls", 503, "down", times=100)
                old.vanish()
                await rec.wait_for("rtvoice.state_changed", state="reconnecting")
                down = time.monotonic()
                queued = await session.send_text("are you there", respond=False)
                failed = await rec.wait_for("rtvoice.state_changed", state="failed", timeout_s=30)
                took = time.monotonic() - down
                assert took <= policy.max_wait_s() + SLACK_S
                assert failed.get("unsent_event_ids") == [queued]
                assert len(requests_to(sim, "/realtime/calls")) == 1 + policy.attempts
                with pytest.raises(errors.ReconnectFailedError) as raised:
                    await session.send_text("and now?")
                assert raised.value.unsent_event_ids == (queued,)
                with pytest.raises(errors.ReconnectFailedError):
                    session.push_audio(np.zeros(480, np.float32), 48000)
            assert session.state == "closed"

    run(main)


def test_a_full_send_queue_raises_instead_of_dropping() -> None:
    async def main() -> None:
        async with Simulator() as sim:
            session = session_for(sim, "websocket", reconnect_queue_bytes=600)
            async with session:
                rec = Recorder(session)
                sim.faults.fail_next("/realtime", 503, "down", times=3)
                call = sim.last_call
                assert call is not None
                await call.hang_up()
                await rec.wait_for("rtvoice.state_changed", state="reconnecting")
                accepted = 0
                refused: errors.SendQueueFullError | None = None
                for i in range(50):
                    try:
                        await session.send_text(f"message {i}", respond=False)
                    except errors.SendQueueFullError as exc:
                        refused = exc
                        break
                    accepted += 1
                assert refused is not None
                assert 1 <= accepted < 50
                await rec.wait_for("rtvoice.reconnected", timeout_s=30)
                new = sim.last_call
                await asyncio.sleep(0.5)
                assert new is not None
                texts = [t for _, t in item_texts(replayed_items(new))]
                assert texts[-accepted:] == [f"message {i}" for i in range(accepted)]
                await rec.stop()

    run(main)


# ----------------------------------------------------------------------------- recycling


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_session_is_recycled_before_its_limit_at_a_turn_boundary(transport: str) -> None:
    async def main() -> None:
        reply = "Here is a short answer for you."
        async with Simulator(session_max_s=10.0, reply_text=lambda heard: reply) as sim:
            session = session_for(sim, transport, recycle_before_s=4.0)
            async with session:
                rec = Recorder(session)
                first = sim.last_call
                assert first is not None
                await converse(session, rec, "hello")
                # Recycling is due 4 s before expires_at (lead = min(4, 10/2)); a response
                # started just before then is still going: the switch waits for its end.
                due = float(session.session_info["expires_at"]) - 4.0
                await asyncio.sleep(max(0.0, due - 0.3 - time.time()))
                await session.send_text("a question just before recycling is due")
                sent: list[str] = []
                for i in range(40):  # events keep coming across the switch
                    sent.append(await session.send_text(f"note {i}", respond=False))
                    await asyncio.sleep(0.05)
                recycled = await rec.wait_for("rtvoice.recycled", timeout_s=10)
                assert recycled.get("make_before_break") is True
                assert "reconnecting" not in rec.states()
                assert len(rec.of("rtvoice.recycled")) == 1
                second = sim.calls[sim._call_order[1]]
                assert second is not first
                assert len(sim.calls) == 2
                # Make-before-break: the old call ended after the new one existed.
                assert first.closed
                assert second.created_ns < first.ended_ns
                assert rec.time_of("rtvoice.recycled") >= rec.time_of("response.done")
                assert not rec.of("rtvoice.response_interrupted")
                await asyncio.sleep(0.5)
                # No event lost: each note reached one of the two calls, once, in order.
                got = [
                    e.get("event_id")
                    for c in (first, second)
                    for e in c.client_events
                    if e.get("event_id") in sent
                ]
                assert got == sent
                # The new call holds the whole conversation, the notes included.
                texts = [t for _, t in item_texts(list(second.items.values()))]
                assert texts[:1] == ["hello"]
                assert [t for t in texts if t.startswith("note ")] == [
                    f"note {i}" for i in range(40)
                ]
                assert not rec.of("error")
                # The new call's acknowledgements of what was replayed into it, the notes sent
                # just before the switch included, did not reach the app a second time.
                replayed = {str(item["id"]) for item in replayed_items(second)}
                assert replayed
                assert session.metrics.resilience["replay_echoes"] > 0
                for kind in ("conversation.item.added", "conversation.item.done"):
                    seen = [str((e.get("item") or {}).get("id")) for e in rec.of(kind)]
                    assert all(seen.count(i) == 1 for i in replayed), (kind, seen)
                await rec.stop()

    run(main, timeout_s=60)


def test_a_session_expired_error_recycles_at_once_even_mid_response() -> None:
    async def main() -> None:
        long_reply = "this answer goes on and on " * 20
        async with (
            Simulator(reply_audio="synth", reply_text=lambda heard: long_reply) as sim,
            session_for(sim, "webrtc") as session,
        ):
            rec = Recorder(session)
            await converse(session, rec, "hello")
            old = sim.last_call
            assert old is not None
            await session.send_text("tell me a long story")
            await rec.wait_for("response.created", timeout_s=10)
            # The server ends the call 1.5 s after session_expired: no waiting for the reply
            # to end, the next call takes over before.
            expiry = asyncio.ensure_future(old.expire_session(how="error", close_after_s=1.5))
            recycled = await rec.wait_for("rtvoice.recycled")
            await expiry
            assert recycled.get("make_before_break") is True
            assert "reconnecting" not in rec.states()
            assert sim.last_call is not old
            assert rec.of("rtvoice.response_interrupted")
            assert recycled.get("items_restored") >= 2
            await rec.stop()

    run(main)


def test_a_websocket_closed_at_the_maximum_duration_recycles() -> None:
    async def main() -> None:
        async with (
            Simulator() as sim,
            session_for(sim, "websocket", reconnect=False) as session,
        ):
            rec = Recorder(session)
            await converse(session, rec, "hello")
            old = sim.last_call
            assert old is not None
            await old.expire_session(how="close")
            recycled = await rec.wait_for("rtvoice.recycled")
            assert recycled.get("make_before_break") is False
            assert "maximum duration" in str(recycled.get("reason"))
            assert sim.last_call is not old
            await rec.stop()

    run(main)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_and_oversized_server_events_are_counted_and_the_session_goes_on(
    transport: str,
) -> None:
    async def main() -> None:
        async with Simulator() as sim, session_for(sim, transport) as session:
            rec = Recorder(session)
            call = sim.last_call
            assert call is not None
            call.send_raw("{not json")
            call.send_raw('["no", "type"]')
            call.send_raw('{"type": "x", "deep": ' + "[" * 5000 + "]" * 5000 + "}")
            expected = 3
            if transport == "websocket":  # larger than the 4 MiB bound on one event
                call.send_raw('{"type": "x", "pad": "' + "a" * (5 << 20) + '"}')
                expected += 1
            await converse(session, rec, "still fine?")
            assert session.metrics.malformed_events == expected
            assert session.state == "connected"
            await rec.stop()

    run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_close_while_reconnecting_ends_at_once_and_leaves_nothing(transport: str) -> None:
    async def main() -> None:
        async with Simulator() as sim:
            session = session_for(sim, transport)
            await session.open()
            rec = Recorder(session)
            call = sim.last_call
            assert call is not None
            # Every attempt is refused, slowly enough that close() comes mid-attempt.
            sim.faults.fail_next("/realtime/calls", 503, "down", times=100)
            sim.faults.fail_next("/realtime", 503, "down", times=100)
            await call.hang_up()
            await rec.wait_for("rtvoice.state_changed", state="reconnecting")
            queued = await session.send_text("never sent", respond=False)
            assert queued
            start = time.monotonic()
            await session.close()
            assert time.monotonic() - start < 5.0
            assert session.state == "closed"
            await asyncio.wait_for(rec.task, 5)
            assert rec.states()[-1] == "closed"

    run(main)


def test_a_recycle_restores_within_the_budget_and_adds_only_what_came_after() -> None:
    async def main() -> None:
        async with (
            Simulator(session_max_s=8.0, reply_text=lambda heard: "Noted, thank you.") as sim,
            session_for(sim, "websocket", recycle_before_s=2.0, restore_max_items=3) as session,
        ):
            rec = Recorder(session)
            for i in range(3):
                await converse(session, rec, f"question {i}")
            recycled = await rec.wait_for("rtvoice.recycled", timeout_s=15)
            second = sim.calls[sim._call_order[1]]
            ids = [item["id"] for item in replayed_items(second)]
            assert len(ids) == len(set(ids))  # nothing replayed twice
            texts = [t for _, t in item_texts(replayed_items(second))]
            # The 3 most recent, in order.
            assert texts == ["Noted, thank you.", "question 2", "Noted, thank you."]
            assert recycled.get("items_restored") == 3
            assert recycled.get("items_not_restored") == 3
            await rec.stop()

    run(main)
