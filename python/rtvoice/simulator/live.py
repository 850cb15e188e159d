"""One simulated Live session (protocol-live.md §2-§6): its configuration, the scripted model on
one millisecond timeline, delegation, usage, close and faults, and what was recorded.

Everything here runs on the simulator's event loop. The transport (the ``oai-events`` data
channel of a WebRTC call, or a primary WebSocket) is set by :mod:`rtvoice.simulator.live_server`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rtvoice._core import OpusDecoder, OpusEncoder
from rtvoice.rtc.compat import OutboundCounts, StunRequestCounts
from rtvoice.simulator.audio import (
    FRAME_SAMPLES,
    MAX_INPUT_FRAMES,
    MAX_RECORDED_EVENTS,
    EnergyVad,
    encode_opus_frames,
    speechlike,
)
from rtvoice.simulator.live_config import (
    MAX_APPEND_TOKENS,
    approx_tokens,
    check_session_update,
    merge_update,
)
from rtvoice.simulator.pacer import RtpPacer

if TYPE_CHECKING:
    from rtvoice.simulator.server import Simulator

__all__ = ["LiveDelegation", "LiveReply", "LiveSession", "LiveUtterance"]

logger = logging.getLogger("rtvoice.simulator")

FRAME_MS = 20
#: WebSocket output: audio deltas of 100 ms, the first 200 ms sent at once (a playout lead).
WS_CHUNK_MS = 100
WS_LEAD_MS = 200
CLOSE_REASONS = ("close_requested", "expired", "content", "remote_hangup", "connection_lost")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class LiveUtterance:
    """One user utterance found by the energy VAD. ``pcm``: 48 kHz mono int16 as the model heard
    it (zeros while muted), from ``start_ms`` to the last speech frame plus 100 ms."""

    start_ms: int
    end_ms: int
    pcm: npt.NDArray[np.int16]
    transcript: str


@dataclass
class LiveReply:
    """One spoken reply. ``source``: ``"utterance"``, ``"commentary"``, ``"tool_output"`` or
    ``"text"``; ``transcript_sent`` is what went out in ``session.output_transcript.delta``
    (shorter than ``text`` when a barge-in stopped it, then ``interrupted`` is true)."""

    id: str
    text: str
    source: str
    pcm: npt.NDArray[np.int16]
    start_ms: int = 0
    end_ms: int = 0
    transcript_sent: str = ""
    interrupted: bool = False
    done: bool = False


@dataclass
class LiveDelegation:
    """A delegation announced with ``session.delegation.created``. For Responses: the function
    call (``call_id``, ``name``, ``arguments``), the ``output`` the client sent, ``completed``
    once ``response.completed`` went out. For client delegation: ``commentary`` received."""

    id: str
    target: str
    offset_ms: int
    transcript: str
    response_id: str | None = None
    item_id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    completed: bool = False
    commentary: list[str] = field(default_factory=list)


# Allowed top-level keys of each client event (strict, as the real server).
_CLIENT_KEYS: dict[str, frozenset[str]] = {
    "session.start": frozenset({"type", "event_id", "session"}),
    "session.update": frozenset({"type", "event_id", "session"}),
    "session.close": frozenset({"type", "event_id"}),
    "session.input_audio.append": frozenset({"type", "event_id", "audio"}),
    "session.input_audio.mute": frozenset({"type", "event_id"}),
    "session.input_audio.unmute": frozenset({"type", "event_id"}),
    "session.instructions.append": frozenset({"type", "event_id", "content", "delegation_id"}),
    "session.thinking.append": frozenset({"type", "event_id", "content", "delegation_id"}),
    "session.commentary.append": frozenset({"type", "event_id", "content", "delegation_id"}),
    "response.item.create": frozenset({"type", "event_id", "item"}),
    "response.create": frozenset({"type", "event_id"}),
}
_UNSUPPORTED = frozenset(
    {
        "session.output_audio.fixture.play",
        "decision.create",
        "decision.item.create",
        "decision.item.delete",
        "transport.dtmf.send",
    }
)


def _chunks(text: str) -> list[str]:
    if not text:
        return []
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class LiveSession:
    """A Live session on the simulator (``sim.live_sessions[id]``).

    Recorded (test recorders; events bounded at ``MAX_RECORDED_EVENTS``, input audio at the
    last five minutes): ``client_events`` (decoded JSON, or
    ``{"type": "rtvoice.malformed_client_message", "raw": ...}``), ``server_events`` (every
    event sent, audio deltas included), ``received_pcm()``
    (what the model heard, 48 kHz, zeros while muted), ``utterances``, ``replies``, ``played``
    (PCM per reply id), ``delegations`` (by id), ``conversation`` (``{"role", "text", "start_ms",
    "end_ms"}`` heard and said in this session), ``inherited`` (``{"role", "text"}`` the session
    began with: its ``input``, or for a fork the stored session's whole transcript),
    ``forked_from``, ``closed_reason``; ``pacer.sent`` (WebRTC RTP), ``stun``, ``outbound``.
    """

    def __init__(
        self,
        sim: Simulator,
        session_id: str,
        resource: dict[str, Any],
        *,
        transport: str,
        forked_from: str | None = None,
        inherited: list[dict[str, Any]] | None = None,
    ) -> None:
        self.sim = sim
        self.id = session_id
        self.session = resource
        self.transport = transport  # "webrtc" or "websocket"
        self.forked_from = forked_from
        self.inherited: list[dict[str, Any]] = (
            inherited
            if inherited is not None
            else [
                {"role": str(item.get("role")), "text": _text_of(item.get("content"))}
                for item in resource.get("input") or []
            ]
        )
        self.start_ns = time.monotonic_ns()
        self.client_events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_RECORDED_EVENTS
        )
        self.server_events: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_RECORDED_EVENTS
        )
        self.utterances: list[LiveUtterance] = []
        self.replies: list[LiveReply] = []
        self.played: dict[str, npt.NDArray[np.int16]] = {}
        self.delegations: dict[str, LiveDelegation] = {}
        self.conversation: list[dict[str, Any]] = []
        self.instructions_appended: list[str] = []
        self.thinking_appended: list[str] = []
        self.muted = False
        self.started = False
        self.closing = False
        self.closed = False
        self.closed_reason: str | None = None
        self.closed_at: float | None = None  # time.monotonic()
        self.pc: Any = None
        self.channel: Any = None
        self.pacer: RtpPacer | None = None
        self.ws_outbox: asyncio.Queue[str | None] | None = None
        #: How the WebSocket ends: "close" (code 1000) or "abort" (TCP reset, no close frame).
        self.ws_end = "close"
        self.stun = StunRequestCounts()
        self.outbound = OutboundCounts()
        self.silent_until = 0.0
        self.connected = asyncio.Event()
        self.ready = asyncio.Event()  # session.started sent
        self.ended = asyncio.Event()
        self._dc_pending: list[str] = []
        self._decoder = OpusDecoder(48000, 1)
        self._encoder = OpusEncoder(48000, 1, application="voip", fec=True)
        self._last_seq: int | None = None
        # No prefix padding: transcripts and the echo start where the speech starts.
        self._vad = EnergyVad(threshold_dbfs=sim.vad_threshold_dbfs, prefix_padding_ms=0)
        self._frames: collections.deque[npt.NDArray[np.int16]] = collections.deque(
            maxlen=MAX_INPUT_FRAMES
        )
        self._frames_fed = 0
        self._rest = np.zeros(0, dtype=np.int16)
        self._speech_start_ms = 0
        self._queue: collections.deque[LiveReply] = collections.deque()
        self._current: LiveReply | None = None
        self._runner: asyncio.Task[None] | None = None
        self._output_end_ms = 0
        self._typed: list[str] = []
        self._seq = 0  # sequence_number of the wrapped Responses stream events
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return (
            f"LiveSession({self.id!r}, {self.transport}, closed={self.closed}, "
            f"reason={self.closed_reason}, utterances={len(self.utterances)}, "
            f"replies={len(self.replies)})"
        )

    # ----------------------------------------------------------------------------- time

    def elapsed_ms(self) -> int:
        return (time.monotonic_ns() - self.start_ns) // 1_000_000

    @property
    def input_ms(self) -> int:
        """Milliseconds of input audio the model has read (its input timeline)."""
        return self._frames_fed * FRAME_MS

    def timeline_ms(self) -> int:
        """Now on the session's timeline: the later of the input audio read and the time since
        the session started (a WebSocket client may send audio faster than real time)."""
        return max(self.elapsed_ms(), self.input_ms)

    def usage_seconds(self) -> float:
        end = self.closed_at if self.closed_at is not None else time.monotonic()
        return round(max(0.0, end - self.start_ns / 1e9), 3)

    def usage(self) -> dict[str, Any]:
        return {"seconds": self.usage_seconds()}

    # ----------------------------------------------------------------------------- sending

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send_event(
        self, event: dict[str, Any], client_event_id: str | None = None
    ) -> dict[str, Any]:
        """Send one server event; adds ``event_id`` (and ``client_event_id`` when given)."""
        ev: dict[str, Any] = {"type": event["type"], "event_id": _id("event")}
        ev.update(event)
        if client_event_id is not None:
            ev["client_event_id"] = client_event_id
        self._record_and_send(ev)
        return ev

    def _record_and_send(self, ev: dict[str, Any]) -> None:
        self.server_events.append(ev)
        text = json.dumps(ev)
        if self.ws_outbox is not None:
            self.ws_outbox.put_nowait(text)
        elif self.channel is not None and self.channel.readyState == "open":
            try:
                self.channel.send(text)
            except Exception:  # a closing channel: the event stays recorded
                logger.debug("simulator: could not send on the data channel")
        elif self.channel is None and self.pc is not None:
            self._dc_pending.append(text)

    def send_error(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> dict[str, Any]:
        error: dict[str, Any] = {"type": type, "code": code, "message": message, "param": param}
        if client_event_id is not None:
            error["client_event_id"] = client_event_id
        return self.send_event({"type": "error", "error": error}, client_event_id)

    def announce(self, client_event_id: str | None = None) -> None:
        """``session.started`` with the resolved resource; then usage and expiry timers run."""
        if self.started:
            return
        self.started = True
        self.send_event({"type": "session.started", "session": self.session}, client_event_id)
        self.ready.set()
        self._spawn(self._usage_loop())
        self._spawn(self._expire_later())

    def on_channel(self, channel: Any) -> None:
        """The ``oai-events`` channel of a WebRTC session opened (or is opening)."""
        self.channel = channel

        @channel.on("message")  # type: ignore[untyped-decorator]
        def _on_message(message: str | bytes) -> None:
            self.handle_client_message(message, data_channel=True)

        def _opened() -> None:
            for text in self._dc_pending:
                with contextlib.suppress(Exception):
                    channel.send(text)
            self._dc_pending.clear()
            self.announce()

        if channel.readyState == "open":
            _opened()
        else:
            channel.on("open", _opened)

    # ----------------------------------------------------------------------------- faults

    @property
    def silent(self) -> bool:
        """Whether the session sends nothing now (its own vanish/freeze or the simulator's)."""
        return time.monotonic() < self.silent_until or self.sim.faults.silent

    def vanish(self) -> None:
        """Send nothing from now on and close nothing: no RTP, RTCP, STUN, SCTP, WebSocket frame
        or pong (UDP datagrams dropped, WebSocket frames held)."""
        self.silent_until = math.inf

    def freeze(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now, then carry on (held frames go out)."""
        self.silent_until = max(self.silent_until, time.monotonic() + seconds)

    def resume(self) -> None:
        self.silent_until = 0.0

    async def wait_until_audible(self) -> None:
        while self.silent and not self.closed:
            await asyncio.sleep(0.02)

    async def close_with(self, reason: str) -> None:
        """End the session server-side with ``reason`` (one of ``session.closed``'s reasons).

        ``connection_lost`` drops the primary without a word (WebRTC: the peer connection
        closes; WebSocket: the TCP connection is reset, no close frame): the session is then
        closed on the server with that reason. Every other reason sends ``session.closed``
        ``{reason, session, usage}`` first, then closes (WebSocket close 1000)."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"reason must be one of {CLOSE_REASONS}")
        if self.closed or self.closing:
            return
        self.closing = True
        if reason == "connection_lost":
            self.ws_end = "abort"
        else:
            self.send_event(
                {
                    "type": "session.closed",
                    "reason": reason,
                    "session": self.session,
                    "usage": self.usage(),
                }
            )
        await self._shutdown(reason)

    async def _shutdown(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.closing = True
        self.closed_reason = reason
        self.closed_at = time.monotonic()
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        if self._runner is not None and self._runner is not me:
            others.append(self._runner)
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pacer is not None:
            await self.pacer.stop()
        if self.pc is not None:
            if reason != "connection_lost" and self.channel is not None:
                # Let session.closed leave the SCTP buffer before the association goes.
                for _ in range(50):
                    if self.channel.readyState != "open" or not self.channel.bufferedAmount:
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.05)
            await self.pc.close()
        if self.ws_outbox is not None:
            self.ws_outbox.put_nowait(None)
        self.ended.set()

    def primary_gone(self) -> None:
        """The client's transport ended without ``session.close``: closed as
        ``connection_lost`` (nothing can be sent any more)."""
        if not self.closed:
            self._spawn_detached(self._shutdown("connection_lost"))

    def _spawn_detached(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.sim.live._background.add(task)
        task.add_done_callback(self.sim.live._background.discard)

    async def _usage_loop(self) -> None:
        interval = self.sim.live_usage_interval_s
        if interval is None or interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            said = sum(approx_tokens(m["text"]) for m in self.transcript())
            self.send_event(
                {
                    "type": "session.usage.updated",
                    "usage": self.usage(),
                    "context_window": {"usage_ratio": round(min(1.0, said / 32000), 6)},
                }
            )

    async def _expire_later(self) -> None:
        remaining = float(self.session["expires_at"]) - self.sim.now()
        await asyncio.sleep(max(0.0, remaining))
        await self.close_with("expired")

    # ----------------------------------------------------------------------------- forks

    def transcript(self) -> list[dict[str, Any]]:
        """``{"role", "text"}`` of everything the session began with and said and heard."""
        return [dict(m) for m in self.inherited] + [
            {"role": m["role"], "text": m["text"]} for m in self.conversation
        ]

    @property
    def finalized(self) -> bool:
        """Closed and past ``Simulator(fork_ready_after_s=)``: a stored session is forkable."""
        return (
            self.closed
            and self.closed_at is not None
            and time.monotonic() >= self.closed_at + self.sim.fork_ready_after_s
        )

    # ----------------------------------------------------------------------------- audio in

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        """Inbound RTP (the RtpSink protocol of rtvoice.rtc.native_audio); loop thread."""
        if self.closed:
            return
        frames: list[npt.NDArray[np.int16]] = []
        if self._last_seq is not None:
            gap = (seq - self._last_seq) & 0xFFFF
            if gap == 0 or gap > 0x8000:
                return
            for _ in range(min(gap - 1, 10)):
                frames.append(
                    np.asarray(self._decoder.conceal(FRAME_SAMPLES, np.int16), dtype=np.int16)
                )
        self._last_seq = seq
        try:
            pcm = np.asarray(self._decoder.decode(payload, np.int16), dtype=np.int16)
        except Exception:
            logger.debug("simulator: undecodable Opus packet seq=%d", seq)
            return
        frames.append(pcm[:FRAME_SAMPLES] if pcm.size >= FRAME_SAMPLES else pcm)
        for frame in frames:
            self._on_frame(frame)

    def _feed48(self, pcm: npt.NDArray[np.int16]) -> None:
        data = np.concatenate([self._rest, pcm]) if self._rest.size else pcm
        n = data.size // FRAME_SAMPLES
        for i in range(n):
            self._on_frame(data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].copy())
        self._rest = data[n * FRAME_SAMPLES :].copy()

    def received_pcm(self) -> npt.NDArray[np.int16]:
        """What the model heard (48 kHz mono int16; zeros while muted), the last five minutes."""
        if not self._frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._frames))

    def _on_frame(self, frame: npt.NDArray[np.int16]) -> None:
        if frame.size != FRAME_SAMPLES:
            frame = np.resize(frame, FRAME_SAMPLES).astype(np.int16)
        if self.muted:
            frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._frames.append(frame)
        self._frames_fed += 1
        event = self._vad.feed(frame)
        if event is None:
            return
        if event.kind == "start":
            self._speech_start_ms = event.audio_ms
            self._barge_in()
            return
        end_ms = min(event.audio_ms, self._vad.last_speech_end_ms + 100)
        first = self._frames_fed - len(self._frames)
        lo = max(0, self._speech_start_ms // FRAME_MS - first)
        hi = max(lo, end_ms // FRAME_MS - first)
        frames = list(self._frames)[lo:hi]
        pcm = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
        self._on_utterance(self._speech_start_ms, self._vad.last_speech_end_ms, pcm)

    # ----------------------------------------------------------------------------- script

    def _on_utterance(self, start_ms: int, end_ms: int, pcm: npt.NDArray[np.int16]) -> None:
        if self.closing:
            return
        transcript = self.sim.transcribe(pcm)
        utt = LiveUtterance(start_ms, end_ms, pcm, transcript)
        self.utterances.append(utt)
        words = _chunks(transcript)
        span = max(0, end_ms - start_ms)
        for i, word in enumerate(words):
            self.send_event(
                {
                    "type": "session.input_transcript.delta",
                    "delta": word,
                    "start_ms": start_ms + span * i // len(words),
                    "end_ms": start_ms + span * (i + 1) // len(words),
                }
            )
        self.conversation.append(
            {"role": "user", "text": transcript, "start_ms": start_ms, "end_ms": end_ms}
        )
        delegation = self.session.get("delegation") or {"type": "client"}
        tools = self._function_tools()
        hook = self.sim.live_delegate
        if delegation.get("type") == "responses":
            wants = bool(tools) if hook is None else bool(tools) and hook(transcript)
            if wants and not self._awaiting_output():
                self._delegate_to_responses(utt, tools)
                return
        elif hook is not None and hook(transcript):
            self._delegate_to_client(utt)
            return
        text = self.sim.reply_text(transcript)
        if self.sim.reply_audio == "echo" and pcm.size:
            audio = pcm
        else:
            audio = speechlike(max(0.5, pcm.size / 48000), seed=1)
        self.speak(text, "utterance", audio)

    def _function_tools(self) -> list[dict[str, Any]]:
        delegation = self.session.get("delegation") or {}
        tools = (delegation.get("responses") or {}).get("tools") or []
        return [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]

    def _awaiting_output(self) -> list[LiveDelegation]:
        return [
            d
            for d in self.delegations.values()
            if d.target == "responses" and d.call_id is not None and not d.completed
        ]

    def _delegate_to_client(self, utt: LiveUtterance) -> None:
        d = LiveDelegation(_id("dlg"), "client", utt.end_ms, utt.transcript)
        self.delegations[d.id] = d
        self.send_event(
            {
                "type": "session.delegation.created",
                "delegation": {"id": d.id, "type": "delegation", "target": "client"},
                "offset_ms": d.offset_ms,
            }
        )

    def _response_obj(
        self, response_id: str, status: str, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        responses = (self.session.get("delegation") or {}).get("responses") or {}
        tools = [
            {
                "type": "function",
                "name": t["name"],
                "parameters": t.get("parameters"),
                "strict": t.get("strict"),
            }
            for t in self._function_tools()
        ]
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(self.sim.now()),
            "model": str(responses.get("model") or "gpt-5"),
            "status": status,
            "output": output,
            "parallel_tool_calls": bool(responses.get("parallel_tool_calls", True)),
            "tool_choice": responses.get("tool_choice") or "auto",
            "tools": tools,
        }

    def _response_event(self, event: dict[str, Any], delegation_id: str | None) -> None:
        wrapped = {**event, "sequence_number": self._seq}
        self._seq += 1
        out: dict[str, Any] = {"type": "response.event", "event": wrapped}
        if delegation_id is not None:
            out["delegation_id"] = delegation_id
        self.send_event(out)

    def _delegate_to_responses(self, utt: LiveUtterance, tools: list[dict[str, Any]]) -> None:
        choice = ((self.session.get("delegation") or {}).get("responses") or {}).get("tool_choice")
        tool = tools[0]
        if isinstance(choice, dict) and choice.get("name"):
            tool = next((t for t in tools if t.get("name") == choice["name"]), tool)
        d = LiveDelegation(
            _id("dlg"),
            "responses",
            utt.end_ms,
            utt.transcript,
            response_id=_id("resp"),
            item_id=_id("fc"),
            call_id=_id("call"),
            name=str(tool["name"]),
            arguments=json.dumps(self.sim.tool_arguments(tool)),
        )
        self.delegations[d.id] = d
        arguments = d.arguments or ""
        response_id = d.response_id or ""
        self.send_event(
            {
                "type": "session.delegation.created",
                "delegation": {
                    "id": d.id,
                    "type": "delegation",
                    "target": "responses",
                    "response_id": d.response_id,
                },
                "offset_ms": d.offset_ms,
            }
        )
        self._response_event(
            {
                "type": "response.created",
                "response": self._response_obj(response_id, "in_progress", []),
            },
            d.id,
        )
        item = {
            "type": "function_call",
            "id": d.item_id,
            "call_id": d.call_id,
            "name": d.name,
            "arguments": "",
            "status": "in_progress",
        }
        self._response_event(
            {"type": "response.output_item.added", "output_index": 0, "item": item}, d.id
        )
        for i in range(0, len(arguments), 16):
            self._response_event(
                {
                    "type": "response.function_call_arguments.delta",
                    "item_id": d.item_id,
                    "output_index": 0,
                    "delta": arguments[i : i + 16],
                },
                d.id,
            )
        self._response_event(
            {
                "type": "response.function_call_arguments.done",
                "item_id": d.item_id,
                "output_index": 0,
                "arguments": arguments,
            },
            d.id,
        )
        self._response_event(
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": {**item, "arguments": arguments, "status": "completed"},
            },
            d.id,
        )

    def _complete_delegation(self, d: LiveDelegation) -> None:
        assert d.response_id is not None
        text = f"The result is {d.output}."
        output = [
            {
                "type": "function_call",
                "id": d.item_id,
                "call_id": d.call_id,
                "name": d.name,
                "arguments": d.arguments,
                "status": "completed",
            },
            self._message_item(text),
        ]
        d.completed = True
        self._response_event(
            {
                "type": "response.completed",
                "response": self._response_obj(d.response_id, "completed", output),
            },
            d.id,
        )
        self.speak(text, "tool_output")

    @staticmethod
    def _message_item(text: str) -> dict[str, Any]:
        return {
            "type": "message",
            "id": _id("msg"),
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }

    def _respond_to_text(self) -> None:
        heard = " ".join(self._typed)
        self._typed = []
        response_id = _id("resp")
        text = self.sim.reply_text(heard)
        self._response_event(
            {
                "type": "response.created",
                "response": self._response_obj(response_id, "in_progress", []),
            },
            None,
        )
        item = self._message_item(text)
        self._response_event(
            {"type": "response.output_item.done", "output_index": 0, "item": item}, None
        )
        self._response_event(
            {
                "type": "response.completed",
                "response": self._response_obj(response_id, "completed", [item]),
            },
            None,
        )
        self.speak(text, "text")

    # ----------------------------------------------------------------------------- speaking

    def speak(self, text: str, source: str, pcm: npt.NDArray[np.int16] | None = None) -> LiveReply:
        """Queue a spoken reply (after any reply still playing)."""
        audio = (
            pcm if pcm is not None else speechlike(min(3.0, 0.6 + 0.04 * len(text)), seed=len(text))
        )
        reply = LiveReply(_id("reply"), text, source, audio)
        self._queue.append(reply)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run_replies())
        return reply

    async def _run_replies(self) -> None:
        while self._queue and not self.closing:
            reply = self._queue.popleft()
            self._current = reply
            try:
                await self._play(reply)
            finally:
                self._finish(reply)
                self._current = None

    def _finish(self, reply: LiveReply) -> None:
        if reply.done:
            return
        reply.done = True
        if reply.transcript_sent:
            self.conversation.append(
                {
                    "role": "assistant",
                    "text": reply.transcript_sent.strip(),
                    "start_ms": reply.start_ms,
                    "end_ms": reply.end_ms,
                }
            )

    async def _play(self, reply: LiveReply) -> None:
        pcm = reply.pcm
        duration_ms = pcm.size // 48
        reply.start_ms = max(self.timeline_ms(), self._output_end_ms)
        reply.end_ms = reply.start_ms + duration_ms
        self._output_end_ms = reply.end_ms
        self.replies.append(reply)
        self.played[reply.id] = pcm
        words = _chunks(reply.text)
        # One schedule on one start time: (offset_ms, order, kind, index).
        plan: list[tuple[int, int, str, int]] = []
        for i in range(len(words)):
            plan.append((duration_ms * i // len(words), 1, "text", i))
        playback: asyncio.Future[bool] | None = None
        pcm_out = np.zeros(0, dtype="<i2")
        if self.ws_outbox is not None:
            rate = int(self.session["audio"]["format"].get("rate", 24000))
            factor = 48000 // rate
            n = pcm.size // factor * factor
            pcm_out = pcm[:n].astype(np.int32).reshape(-1, factor).mean(axis=1).astype("<i2")
            chunk = rate * WS_CHUNK_MS // 1000
            for j, at in enumerate(range(0, pcm_out.size, chunk)):
                plan.append((max(0, j * WS_CHUNK_MS - WS_LEAD_MS), 0, "audio", at))
        elif self.pacer is not None:
            playback = self.pacer.play(encode_opus_frames(pcm, self._encoder), tag=reply.id)
        plan.sort()
        t0 = time.monotonic()
        for offset_ms, _, kind, index in plan:
            await asyncio.sleep(max(0.0, t0 + offset_ms / 1000 - time.monotonic()))
            if kind == "audio":
                chunk = (
                    int(self.session["audio"]["format"].get("rate", 24000)) * WS_CHUNK_MS // 1000
                )
                data = pcm_out[index : index + chunk].tobytes()
                ev = {
                    "type": "session.output_audio.delta",
                    "delta": base64.b64encode(data).decode("ascii"),
                }
                self._record_and_send(ev)
            else:
                i = index
                reply.transcript_sent += words[i]
                self.send_event(
                    {
                        "type": "session.output_transcript.delta",
                        "delta": words[i],
                        "start_ms": reply.start_ms + duration_ms * i // len(words),
                        "end_ms": reply.start_ms + duration_ms * (i + 1) // len(words),
                    }
                )
        if playback is not None:
            await asyncio.shield(playback)
        else:
            await asyncio.sleep(max(0.0, t0 + duration_ms / 1000 - time.monotonic()))

    def _barge_in(self) -> None:
        """User speech during a reply: the model stops itself (audio and transcript)."""
        reply = self._current
        if reply is None or reply.done:
            return
        reply.interrupted = True
        now = self.timeline_ms()
        reply.end_ms = max(reply.start_ms, min(reply.end_ms, now))
        self._output_end_ms = reply.end_ms
        self._queue.clear()
        if self.pacer is not None:
            self.pacer.clear()
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
        self._finish(reply)
        self._current = None

    # ----------------------------------------------------------------------------- client events

    def handle_client_message(self, message: str | bytes, *, data_channel: bool = False) -> None:
        try:
            ev = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            raw = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            self.client_events.append({"type": "rtvoice.malformed_client_message", "raw": raw})
            self.send_error("invalid_json", "The event is not valid JSON.")
            return
        if not isinstance(ev, dict):
            self.client_events.append({"type": "rtvoice.malformed_client_message", "raw": ev})
            self.send_error("invalid_event", "The event must be a JSON object.")
            return
        self.client_events.append(ev)
        raw_id = ev.get("event_id")
        eid = raw_id if isinstance(raw_id, str) else None
        t = ev.get("type")
        if not isinstance(t, str):
            self.send_error(
                "missing_required_parameter", "Missing 'type'.", param="type", client_event_id=eid
            )
            return
        if raw_id is not None and not isinstance(raw_id, str):
            self.send_error("invalid_type", "'event_id' must be a string.", param="event_id")
            return
        if self.closing:
            self.send_error("session_closed", "The session is closing.", client_event_id=eid)
            return
        if t in _UNSUPPORTED:
            self.send_error(
                "unsupported_by_simulator",
                f"The simulator does not implement '{t}'.",
                param="type",
                client_event_id=eid,
            )
            return
        keys = _CLIENT_KEYS.get(t)
        if keys is None:
            self.send_error(
                "invalid_event_type", f"Invalid value: '{t}'.", param="type", client_event_id=eid
            )
            return
        for key in ev:
            if key not in keys:
                self.send_error(
                    "unknown_parameter",
                    f"Unknown parameter: '{key}'.",
                    param=key,
                    client_event_id=eid,
                )
                return
        if t == "session.start":
            self.send_error(
                "session_already_started",
                "The session has already started"
                + (" (WebRTC creation starts it)." if data_channel else "."),
                client_event_id=eid,
            )
            return
        if t == "session.input_audio.append" and data_channel:
            self.send_error(
                "invalid_event_type",
                "session.input_audio.append is for primary WebSockets; WebRTC sends audio on "
                "its track.",
                param="type",
                client_event_id=eid,
            )
            return
        handler = getattr(self, "_on_" + t.replace(".", "_"))
        try:
            handler(ev, eid)
        except Exception:  # a simulator bug must not end the session silently
            logger.exception("simulator: Live %s failed", t)
            self.send_error(
                "server_error",
                f"The simulator failed to handle '{t}'.",
                client_event_id=eid,
                type="server_error",
            )

    def _on_session_update(self, ev: dict[str, Any], eid: str | None) -> None:
        update = ev.get("session")
        problem = check_session_update(update, self.session)
        if problem is not None:
            self.send_error(problem.code, problem.message, param=problem.param, client_event_id=eid)
            return
        assert isinstance(update, dict)
        self.session = merge_update(self.session, update)
        self.send_event({"type": "session.updated", "session": self.session}, eid)

    def _on_session_close(self, ev: dict[str, Any], eid: str | None) -> None:
        self.closing = True
        self.send_event(
            {
                "type": "session.closed",
                "reason": "close_requested",
                "session": self.session,
                "usage": self.usage(),
            },
            eid,
        )
        self._spawn_detached(self._shutdown("close_requested"))

    def _on_session_input_audio_append(self, ev: dict[str, Any], eid: str | None) -> None:
        audio = ev.get("audio")
        try:
            data = base64.b64decode(audio if isinstance(audio, str) else "", validate=True)
        except (binascii.Error, ValueError):
            self.send_error(
                "invalid_audio", "'audio' must be base64.", param="audio", client_event_id=eid
            )
            return
        if not isinstance(audio, str) or len(data) % 2:
            self.send_error(
                "invalid_audio",
                "'audio' must be base64 PCM16 (an even number of bytes) in the session's format.",
                param="audio",
                client_event_id=eid,
            )
            return
        rate = int(self.session["audio"]["format"].get("rate", 24000))
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        self._feed48(np.repeat(pcm, 48000 // rate).astype(np.int16))

    def _on_session_input_audio_mute(self, ev: dict[str, Any], eid: str | None) -> None:
        self.muted = True
        self.send_event({"type": "session.input_audio.muted"}, eid)

    def _on_session_input_audio_unmute(self, ev: dict[str, Any], eid: str | None) -> None:
        self.muted = False
        self.send_event({"type": "session.input_audio.unmuted"}, eid)

    def _check_append(self, ev: dict[str, Any], eid: str | None) -> str | None:
        """The content of a valid ``*.append``, or None after an error."""
        content = ev.get("content")
        if "delegation_id" not in ev:
            self.send_error(
                "missing_required_parameter",
                "Missing required parameter: 'delegation_id' (null for none).",
                param="delegation_id",
                client_event_id=eid,
            )
            return None
        if not isinstance(content, str):
            self.send_error(
                "invalid_type", "'content' must be a string.", param="content", client_event_id=eid
            )
            return None
        if approx_tokens(content) > MAX_APPEND_TOKENS:
            self.send_error(
                "token_limit_exceeded",
                f"'content' exceeds {MAX_APPEND_TOKENS} tokens.",
                param="content",
                client_event_id=eid,
            )
            return None
        did = ev.get("delegation_id")
        if did is not None:
            responses = (self.session.get("delegation") or {}).get("type") == "responses"
            known = self.delegations.get(did) if isinstance(did, str) else None
            if responses or known is None or known.target != "client":
                self.send_error(
                    "invalid_value",
                    f"'delegation_id' {did!r} does not name a client delegation of this session"
                    + (" (Responses delegation takes no delegation_id)." if responses else "."),
                    param="delegation_id",
                    client_event_id=eid,
                )
                return None
        return content

    def _ack_append(self, kind: str, eid: str | None) -> None:
        now = self.timeline_ms()
        self.send_event({"type": f"session.{kind}.appended", "start_ms": now, "end_ms": now}, eid)

    def _on_session_instructions_append(self, ev: dict[str, Any], eid: str | None) -> None:
        content = self._check_append(ev, eid)
        if content is not None:
            self.instructions_appended.append(content)
            self._ack_append("instructions", eid)

    def _on_session_thinking_append(self, ev: dict[str, Any], eid: str | None) -> None:
        content = self._check_append(ev, eid)
        if content is not None:
            self.thinking_appended.append(content)
            self._ack_append("thinking", eid)

    def _on_session_commentary_append(self, ev: dict[str, Any], eid: str | None) -> None:
        content = self._check_append(ev, eid)
        if content is None:
            return
        did = ev.get("delegation_id")
        if isinstance(did, str):
            self.delegations[did].commentary.append(content)
        self._ack_append("commentary", eid)
        self.speak(content, "commentary")

    def _requires_responses(self, eid: str | None) -> bool:
        if (self.session.get("delegation") or {}).get("type") == "responses":
            return True
        self.send_error(
            "responses_delegation_required",
            "This event requires Responses delegation (session.delegation.type 'responses').",
            param="type",
            client_event_id=eid,
        )
        return False

    def _on_response_item_create(self, ev: dict[str, Any], eid: str | None) -> None:
        if not self._requires_responses(eid):
            return
        item = ev.get("item")
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if not isinstance(item, dict) or kind not in ("message", "function_call_output"):
            self.send_error(
                "invalid_value",
                "'item' must be a message or a function_call_output.",
                param="item",
                client_event_id=eid,
            )
            return
        if kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            d = next(
                (x for x in self.delegations.values() if x.call_id == call_id and call_id), None
            )
            if d is None:
                self.send_error(
                    "invalid_value",
                    f"No function call with call_id {call_id!r} in this session.",
                    param="item.call_id",
                    client_event_id=eid,
                )
                return
            if not isinstance(output, (str, list)):
                self.send_error(
                    "invalid_type",
                    "'item.output' must be a string.",
                    param="item.output",
                    client_event_id=eid,
                )
                return
            d.output = output if isinstance(output, str) else _text_of(output)
            return
        role = item.get("role")
        if role not in ("user", "developer", "system", "assistant"):
            self.send_error(
                "invalid_value", "Invalid 'item.role'.", param="item.role", client_event_id=eid
            )
            return
        text = _text_of(item.get("content"))
        if role == "user":
            self._typed.append(text)
            now = self.timeline_ms()
            self.conversation.append({"role": "user", "text": text, "start_ms": now, "end_ms": now})

    def _on_response_create(self, ev: dict[str, Any], eid: str | None) -> None:
        if not self._requires_responses(eid):
            return
        waiting = self._awaiting_output()
        missing = [d for d in waiting if d.output is None]
        if missing:
            self.send_error(
                "tool_output_missing",
                f"The delegated response {missing[0].response_id} is waiting for the output of "
                f"function call {missing[0].call_id}; send response.item.create with a "
                "function_call_output first.",
                client_event_id=eid,
            )
            return
        if waiting:
            for d in waiting:
                self._complete_delegation(d)
            return
        self._respond_to_text()
