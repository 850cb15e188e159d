"""One simulated Realtime call: the aiortc answerer's state, the scripted assistant, and what was
recorded. Everything here runs on the simulator's event loop."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rtvoice._core import OpusDecoder, OpusEncoder
from rtvoice.events import (
    GA_TO_BETA_SERVER_EVENTS,
    session_beta_to_ga,
    session_ga_to_beta,
)
from rtvoice.rtc.compat import InboundCounts, OutboundCounts, StunRequestCounts
from rtvoice.simulator.audio import (
    FRAME_SAMPLES,
    MAX_INPUT_FRAMES,
    MAX_PLAYED_REPLIES,
    MAX_RECORDED_EVENTS,
    EnergyVad,
    encode_opus_frames,
    speechlike,
)
from rtvoice.simulator.pacer import RtpPacer

if TYPE_CHECKING:
    from rtvoice.simulator.server import Simulator

__all__ = ["Call", "ReceivedPacket", "Utterance"]

logger = logging.getLogger("rtvoice.simulator")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


GA_SESSION_KEYS = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "tracing",
        "truncation",
        "prompt",
        "include",
        "reasoning",
        "parallel_tool_calls",
    }
)
READ_ONLY_SESSION_KEYS = frozenset({"id", "object", "expires_at"})
AUDIO_KEYS = {
    "audio": frozenset({"input", "output"}),
    "audio.input": frozenset({"format", "noise_reduction", "transcription", "turn_detection"}),
    "audio.output": frozenset({"format", "voice", "speed"}),
    "audio.input.turn_detection": frozenset(
        {
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "create_response",
            "interrupt_response",
            "idle_timeout_ms",
            "eagerness",
        }
    ),
}
BETA_SESSION_KEYS = frozenset(
    {
        "model",
        "instructions",
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "max_response_output_tokens",
        "temperature",
        "speed",
        "tools",
        "tool_choice",
        "tracing",
        "client_secret",
    }
)


def default_session(model: str, session_id: str, expires_at: int) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1,
            },
        },
        "include": None,
    }


def merge_session(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Only present fields change; nested ``audio`` objects merge; ``None`` clears."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key == "audio":
            for sub, subval in value.items():
                if isinstance(subval, dict) and isinstance(out[key].get(sub), dict):
                    out[key][sub].update(copy.deepcopy(subval))
                else:
                    out[key][sub] = copy.deepcopy(subval)
        else:
            out[key] = copy.deepcopy(value)
    return out


def session_errors(session: Any, *, beta: bool) -> tuple[str, str, str] | None:
    """``(code, param, message)`` for the first problem of a ``session.update`` body, or None."""
    if not isinstance(session, dict):
        return ("invalid_type", "session", "Invalid type for 'session': expected an object.")
    if beta:
        for key in session:
            if key not in BETA_SESSION_KEYS and key not in READ_ONLY_SESSION_KEYS:
                return (
                    "unknown_parameter",
                    f"session.{key}",
                    f"Unknown parameter: 'session.{key}'.",
                )
        return None
    if "type" not in session:
        return (
            "missing_required_parameter",
            "session.type",
            "Missing required parameter: 'session.type'.",
        )
    if session["type"] not in ("realtime", "transcription"):
        return (
            "invalid_value",
            "session.type",
            f"Invalid value: '{session['type']}'. Supported values are: 'realtime' and "
            "'transcription'.",
        )
    for key in session:
        if key not in GA_SESSION_KEYS and key not in READ_ONLY_SESSION_KEYS:
            return ("unknown_parameter", f"session.{key}", f"Unknown parameter: 'session.{key}'.")
    for path, allowed in AUDIO_KEYS.items():
        node: Any = session
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            for key in node:
                if key not in allowed:
                    p = f"session.{path}.{key}"
                    return ("unknown_parameter", p, f"Unknown parameter: '{p}'.")
    mods = session.get("output_modalities")
    if mods is not None and mods not in (["audio"], ["text"]):
        return (
            "invalid_value",
            "session.output_modalities",
            "Invalid value for 'session.output_modalities': use ['audio'] or ['text'].",
        )
    return None


@dataclass
class ReceivedPacket:
    seq: int
    timestamp: int
    payload: bytes
    arrival_ns: int


@dataclass
class Utterance:
    """One user turn found by the VAD. ``pcm`` is 48 kHz mono int16 from ``start_ms`` (speech
    start minus prefix padding) to the last speech frame plus 100 ms."""

    item_id: str
    start_ms: int
    end_ms: int
    pcm: npt.NDArray[np.int16]
    transcript: str = ""


@dataclass
class _Response:
    id: str
    item_id: str
    kind: str  # "audio", "text", "function_call"
    output_index: int = 0
    task: asyncio.Task[None] | None = None
    transcript_sent: str = ""
    done: bool = False
    playback: asyncio.Future[bool] | None = None


#: The bounded recorders of a Call (Call.recorded_dropped() counts what each let go).
RECORDERS = (
    "client_events",
    "server_events",
    "received_packets",
    "pcm_frames",
    "played",
    "appended",
)


@dataclass
class Call:
    """A call made through ``POST /v1/realtime/calls`` (or beta ``/v1/realtime``).

    Recorded (read these in tests): ``client_events`` (every data-channel message received, decoded
    JSON or ``{"type": "rtvoice.malformed_client_message", "raw": ...}``), ``server_events``
    (every event sent), ``received_packets`` (inbound RTP), ``utterances`` (VAD turns),
    ``pacer.sent`` (outbound RTP with impairment decisions), ``played`` (the PCM the assistant
    sent, per response id), ``stun`` (STUN requests the answerer passed or ignored, see
    ``Simulator(ice_lite=)`` and ``Faults.block_ice``). Bounded, the most recent kept: events at
    ``MAX_RECORDED_EVENTS`` each way, packets and decoded audio at ``MAX_INPUT_FRAMES`` (5
    minutes), ``played`` at ``MAX_PLAYED_REPLIES``; ``recorded_dropped()`` counts what went.
    """

    sim: Simulator
    id: str
    pc: Any
    session: dict[str, Any]
    beta: bool = False
    channel: Any = None
    created_ns: int = field(default_factory=time.monotonic_ns)
    #: time.monotonic_ns() when the call ended (0 while it runs).
    ended_ns: int = 0
    client_events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_RECORDED_EVENTS)
    )
    server_events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_RECORDED_EVENTS)
    )
    received_packets: collections.deque[ReceivedPacket] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_INPUT_FRAMES)
    )
    utterances: list[Utterance] = field(default_factory=list)
    played: dict[str, npt.NDArray[np.int16]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: bool = False
    hung_up: bool = False
    pacer: RtpPacer | None = None
    stun: StunRequestCounts = field(default_factory=StunRequestCounts)
    _decoder: OpusDecoder = field(default_factory=lambda: OpusDecoder(48000, 1))
    _encoder: OpusEncoder = field(
        default_factory=lambda: OpusEncoder(48000, 1, application="voip", fec=True)
    )
    _vad: EnergyVad = field(default_factory=EnergyVad)
    _pcm_frames: collections.deque[npt.NDArray[np.int16]] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_INPUT_FRAMES)
    )
    #: Samples of decoded input ever recorded, and of those the ones still kept.
    _pcm_fed: int = 0
    _pcm_kept: int = 0
    _dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORDERS, 0))
    _last_seq: int | None = None
    _speech_item: str | None = None
    _speech_start_ms: int = 0
    _appended: list[npt.NDArray[np.int16]] = field(default_factory=list)
    _appended_samples: int = 0
    _pcm_rest: npt.NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    ws_outbox: asyncio.Queue[str | bytes | None] | None = None
    #: The close code and reason the WebSocket ends with when the call ends.
    ws_close: tuple[int, str] = (1000, "")
    sidebands: list[asyncio.Queue[str | bytes | None]] = field(default_factory=list)
    _response: _Response | None = None
    _last_item_id: str | None = None
    _tool_output_pending: bool = False
    _waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = field(
        default_factory=list
    )
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: time.monotonic() until which this call sends nothing (see vanish() and freeze()).
    silent_until: float = 0.0
    outbound: OutboundCounts = field(default_factory=OutboundCounts)
    #: The client's RTP dropped on arrival by ``Simulator(uplink_loss=)`` (WebRTC).
    inbound: InboundCounts = field(default_factory=InboundCounts)

    def __repr__(self) -> str:
        kind = "websocket" if self.websocket else "webrtc"
        return (
            f"Call({self.id!r}, {kind}, beta={self.beta}, closed={self.closed}, "
            f"client_events={len(self.client_events)}, server_events={len(self.server_events)}, "
            f"rtp_in={len(self.received_packets)}, utterances={len(self.utterances)})"
        )

    # ----------------------------------------------------------------------------- sending

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Send one server event (GA-shaped; converted for beta calls). Adds ``event_id``."""
        ev = {"event_id": _id("event"), **event} if "event_id" not in event else dict(event)
        ev = dict(ev)
        if self.beta:
            t = ev["type"]
            if t in GA_TO_BETA_SERVER_EVENTS:
                ev["type"] = GA_TO_BETA_SERVER_EVENTS[t]
            if isinstance(ev.get("session"), dict):
                ev["session"] = session_ga_to_beta(ev["session"])
        self._record("server_events", self.server_events, ev)
        self._transmit(json.dumps(ev))
        return ev

    def send_raw(self, text: str | bytes) -> None:
        """Send a raw message (fault injection: malformed events)."""
        self._record("server_events", self.server_events, {"type": "rtvoice.raw", "raw": text})
        self._transmit(text)

    def _transmit(self, text: str | bytes) -> None:
        if self.ws_outbox is not None:
            self.ws_outbox.put_nowait(text)
        elif self.channel is not None and self.channel.readyState == "open":
            try:
                self.channel.send(text)
            except Exception:  # a closing channel: the event stays recorded
                logger.debug("simulator: could not send on the data channel")
        for outbox in self.sidebands:
            outbox.put_nowait(text)

    @property
    def websocket(self) -> bool:
        return self.ws_outbox is not None

    def announce(self) -> None:
        """``session.created`` then ``conversation.created`` (first events of every session)."""
        self.send_event({"type": "session.created", "session": self.session})
        self.send_event(
            {
                "type": "conversation.created",
                "conversation": {"id": _id("conv"), "object": "realtime.conversation"},
            }
        )

    def send_error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> dict[str, Any]:
        return self.send_event(
            {
                "type": "error",
                "error": {
                    "type": type,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": event_id,
                },
            }
        )

    # ----------------------------------------------------------------------------- lifecycle

    def on_channel(self, channel: Any) -> None:
        self.channel = channel

        @channel.on("message")  # type: ignore[untyped-decorator]
        def _on_message(message: str | bytes) -> None:
            self.handle_client_message(message)

        @channel.on("close")  # type: ignore[untyped-decorator]
        def _on_close() -> None:
            self.channel_open.clear()

        def _opened() -> None:
            self.channel_open.set()
            self.announce()

        if channel.readyState == "open":
            _opened()
        else:
            channel.on("open", _opened)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ended_ns = time.monotonic_ns()
        # A task of the call may be what closes it (an expiry): it is not cancelled.
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pacer is not None:
            await self.pacer.stop()
        if self.pc is not None:
            await self.pc.close()
        if self.ws_outbox is not None:
            self.ws_outbox.put_nowait(None)
        for outbox in self.sidebands:
            outbox.put_nowait(None)
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self.ended.set()

    # ----------------------------------------------------------------------------- faults

    @property
    def silent(self) -> bool:
        """Whether the call sends nothing now (its own vanish/freeze or the simulator's)."""
        return time.monotonic() < self.silent_until or self.sim.faults.silent

    def vanish(self) -> None:
        """Send nothing on this call from now on, and close nothing (a killed server process or
        a dropped network): no RTP, RTCP, STUN, SCTP, WebSocket frame or pong. UDP datagrams
        are dropped (``outbound.dropped`` counts them); WebSocket frames are held."""
        self.silent_until = math.inf

    def freeze(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now (as :meth:`vanish`), then carry on: held
        WebSocket frames go out, RTP and RTCP resume."""
        self.silent_until = max(self.silent_until, time.monotonic() + seconds)

    def resume(self) -> None:
        """End this call's vanish or freeze now."""
        self.silent_until = 0.0

    async def wait_until_audible(self) -> None:
        """Return once the call may send again (at once when it is not silent)."""
        while self.silent and not self.closed:
            await asyncio.sleep(0.02)

    def drop_data_channel(self) -> None:
        """Close the ``oai-events`` channel (the peer connection stays up), or the WebSocket."""
        if self.channel is not None:
            self.channel.close()
        if self.ws_outbox is not None:
            self.ws_outbox.put_nowait(None)

    async def expire_session(
        self, minutes: int = 60, *, close_after_s: float = 0.2, how: str = "auto"
    ) -> None:
        """End the call at the session's maximum duration as the real server does: on a
        WebSocket, close code 1001 with the reason "Your session hit the maximum duration of N
        minutes." (``how="auto"`` or ``"close"``); otherwise (or ``how="error"``, as older
        servers did) ``error`` ``session_expired``, then the call ends ``close_after_s`` later."""
        message = f"Your session hit the maximum duration of {minutes} minutes."
        if how not in ("auto", "close", "error"):
            raise ValueError("how must be 'auto', 'close' or 'error'")
        if how == "error" or (how == "auto" and not self.websocket):
            self.send_error("session_expired", message)
            await asyncio.sleep(close_after_s)
        else:
            self.ws_close = (1001, message)
        await self.close()

    async def hang_up(self) -> None:
        """The server ends the call (WebRTC: the peer connection closes; WebSocket: close code
        1000)."""
        await self.close()

    # ----------------------------------------------------------------------------- waiting

    async def wait_for_client_event(
        self, type_or_pred: str | Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first received client event of that type (or matching the predicate), including
        ones already received."""
        pred = (
            (lambda e: e.get("type") == type_or_pred)
            if isinstance(type_or_pred, str)
            else type_or_pred
        )
        for ev in self.client_events:
            if pred(ev):
                return ev
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        return await asyncio.wait_for(fut, timeout)

    async def wait_for_server_event(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first sent server event of that GA type (polls the record)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.server_events:
                if ev.get("type") == type_ or (
                    self.beta and ev.get("type") == GA_TO_BETA_SERVER_EVENTS.get(type_)
                ):
                    return ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {type_} sent within {timeout} s")
            await asyncio.sleep(0.01)

    def _notify(self, ev: dict[str, Any]) -> None:
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(ev):
                fut.set_result(ev)
        self._waiters = [(p, f) for p, f in self._waiters if not f.done()]

    # ----------------------------------------------------------------------------- audio in

    def push_rtp(self, seq: int, timestamp: int, payload: bytes, arrival_ns: int) -> None:
        """Inbound RTP (the RtpSink protocol of rtvoice.rtc.native_audio); loop thread."""
        if self.closed:
            return
        packet = ReceivedPacket(seq, timestamp, bytes(payload), arrival_ns)
        self._record("received_packets", self.received_packets, packet)
        frames: list[npt.NDArray[np.int16]] = []
        if self._last_seq is not None:
            gap = (seq - self._last_seq) & 0xFFFF
            if gap == 0 or gap > 0x8000:
                return  # duplicate or late: the VAD only needs a best-effort stream
            for _ in range(min(gap - 1, 10)):
                concealed = self._decoder.conceal(FRAME_SAMPLES, np.int16)
                frames.append(np.asarray(concealed, dtype=np.int16))
        self._last_seq = seq
        try:
            pcm = np.asarray(self._decoder.decode(payload, np.int16), dtype=np.int16)
        except Exception:
            logger.debug("simulator: undecodable Opus packet seq=%d", seq)
            return
        frames.append(pcm[:FRAME_SAMPLES] if pcm.size >= FRAME_SAMPLES else pcm)
        for frame in frames:
            self._record_pcm(frame)
            self._vad_frame(frame)

    def _ingest_pcm48(self, pcm: npt.NDArray[np.int16]) -> None:
        """Appended audio (WebSocket or data channel) into the VAD stream, in 20 ms frames."""
        data = np.concatenate([self._pcm_rest, pcm]) if self._pcm_rest.size else pcm
        n = data.size // FRAME_SAMPLES
        for i in range(n):
            frame = data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].copy()
            self._record_pcm(frame)
            self._vad_frame(frame)
        self._pcm_rest = data[n * FRAME_SAMPLES :].copy()

    def received_pcm(self) -> npt.NDArray[np.int16]:
        """What was decoded from the user (48 kHz mono int16): all of it, or the last
        ``MAX_INPUT_FRAMES`` frames (5 minutes) of a longer call."""
        if not self._pcm_frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._pcm_frames))

    def recorded_dropped(self) -> dict[str, int]:
        """What the bounded recorders let go, oldest first: events, packets, 20 ms frames of
        decoded input, replies' audio, and chunks of uncommitted appended audio."""
        return dict(self._dropped)

    def _record(self, name: str, log: collections.deque[Any], entry: Any) -> None:
        if len(log) == log.maxlen:
            self._dropped[name] += 1
        log.append(entry)

    def _record_pcm(self, frame: npt.NDArray[np.int16]) -> None:
        if len(self._pcm_frames) == self._pcm_frames.maxlen:
            self._pcm_kept -= self._pcm_frames[0].size
            self._dropped["pcm_frames"] += 1
        self._pcm_frames.append(frame)
        self._pcm_fed += frame.size
        self._pcm_kept += frame.size

    def _keep_played(self, response_id: str, pcm: npt.NDArray[np.int16]) -> None:
        self.played[response_id] = pcm
        while len(self.played) > MAX_PLAYED_REPLIES:
            del self.played[next(iter(self.played))]
            self._dropped["played"] += 1

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return td if isinstance(td, dict) else None

    def _vad_frame(self, frame: npt.NDArray[np.int16]) -> None:
        td = self._turn_detection()
        vad = self._vad
        if td is not None:
            vad.silence_duration_ms = int(td.get("silence_duration_ms") or 500)
            vad.prefix_padding_ms = int(td.get("prefix_padding_ms") or 300)
        vad.threshold_dbfs = self.sim.vad_threshold_dbfs
        event = vad.feed(frame)
        if td is None or event is None:
            return
        if event.kind == "start":
            self._speech_item = _id("item")
            self._speech_start_ms = event.audio_ms
            self.send_event(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": event.audio_ms,
                    "item_id": self._speech_item,
                }
            )
            if td.get("interrupt_response", True):
                self._barge_in()
        else:
            item_id = self._speech_item or _id("item")
            self._speech_item = None
            self.send_event(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": event.audio_ms,
                    "item_id": item_id,
                }
            )
            start = self._speech_start_ms
            end_keep_ms = min(event.audio_ms, vad.last_speech_end_ms + 100)
            # Sample positions from the call's start; the recorder may have let the oldest go.
            first = self._pcm_fed - self._pcm_kept
            lo = max(0, start * 48 - first)
            hi = max(lo, end_keep_ms * 48 - first)
            pcm = self.received_pcm()[lo:hi].copy()
            self._commit_user_audio(item_id, start, event.audio_ms, pcm)
            if td.get("create_response", True) and self.session.get("type") == "realtime":
                self.start_response()

    def _commit_user_audio(
        self, item_id: str, start_ms: int, end_ms: int, pcm: npt.NDArray[np.int16]
    ) -> None:
        transcript = self.sim.transcribe(pcm)
        utt = Utterance(item_id, start_ms, end_ms, pcm, transcript)
        self.utterances.append(utt)
        self._tool_output_pending = False
        self.send_event(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": self._last_item_id,
            }
        )
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item)
        if self.session.get("audio", {}).get("input", {}).get("transcription"):
            for word in _chunks(transcript):
                self.send_event(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": word,
                    }
                )
            self.send_event(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": {"type": "duration", "seconds": round(pcm.size / 48000, 3)},
                }
            )

    def _add_item(self, item: dict[str, Any]) -> None:
        prev = self._last_item_id
        self.items[item["id"]] = item
        self._last_item_id = item["id"]
        self.send_event({"type": "conversation.item.added", "previous_item_id": prev, "item": item})
        self.send_event({"type": "conversation.item.done", "previous_item_id": prev, "item": item})

    # ----------------------------------------------------------------------------- client events

    def handle_client_message(self, message: str | bytes) -> None:
        try:
            ev = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            raw = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
            malformed = {"type": "rtvoice.malformed_client_message", "raw": raw}
            self._record("client_events", self.client_events, malformed)
            self.send_error("invalid_json", "The event is not valid JSON.")
            return
        if not isinstance(ev, dict):
            malformed = {"type": "rtvoice.malformed_client_message", "raw": ev}
            self._record("client_events", self.client_events, malformed)
            self.send_error("invalid_event", "The event must be a JSON object.")
            return
        self._record("client_events", self.client_events, ev)
        self._notify(ev)
        event_id = ev.get("event_id") if isinstance(ev.get("event_id"), str) else None
        t = ev.get("type")
        if not isinstance(t, str):
            self.send_error("invalid_event", "The 'type' field is missing.", event_id=event_id)
            return
        handler = _HANDLERS.get(t)
        if handler is None or (t == "transcription_session.update" and not self.beta):
            self.send_error(
                "invalid_event", f"Invalid value: '{t}'.", param="type", event_id=event_id
            )
            return
        handler(self, ev, event_id)

    def _on_session_update(self, ev: dict[str, Any], event_id: str | None) -> None:
        session = ev.get("session")
        problem = session_errors(session, beta=self.beta)
        if problem is not None:
            code, param, message = problem
            self.send_error(code, message, param=param, event_id=event_id)
            return
        assert isinstance(session, dict)
        update = session_beta_to_ga(session) if self.beta else dict(session)
        if self.beta:
            update.pop("type", None)
        for key in READ_ONLY_SESSION_KEYS:
            update.pop(key, None)
        if "model" in update and update["model"] != self.session.get("model"):
            self.send_error(
                "invalid_value",
                "Cannot update a session's model.",
                param="session.model",
                event_id=event_id,
            )
            return
        self.session = merge_session(self.session, update)
        self.send_event({"type": "session.updated", "session": self.session})

    def _on_response_create(self, ev: dict[str, Any], event_id: str | None) -> None:
        if self._response is not None and not self._response.done:
            self.send_error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
                event_id=event_id,
            )
            return
        overrides = ev.get("response") if isinstance(ev.get("response"), dict) else {}
        self.start_response(overrides)

    def _on_response_cancel(self, ev: dict[str, Any], event_id: str | None) -> None:
        resp = self._response
        wanted = ev.get("response_id")
        if resp is None or resp.done or (wanted is not None and wanted != resp.id):
            self.send_error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                event_id=event_id,
            )
            return
        self._cancel_response("client_cancelled")

    def _on_output_audio_buffer_clear(self, ev: dict[str, Any], event_id: str | None) -> None:
        if self.websocket:
            self.send_error(
                "invalid_event",
                "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.",
                param="type",
                event_id=event_id,
            )
            return
        resp = self._response
        if self.pacer is not None:
            self.pacer.clear()
        self.send_event(
            {"type": "output_audio_buffer.cleared", "response_id": resp.id if resp else None}
        )

    def _on_item_create(self, ev: dict[str, Any], event_id: str | None) -> None:
        item = ev.get("item")
        if not isinstance(item, dict) or item.get("type") not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            self.send_error(
                "invalid_value", "Invalid conversation item.", param="item", event_id=event_id
            )
            return
        if item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            known = any(
                i.get("type") == "function_call" and i.get("call_id") == call_id
                for i in self.items.values()
            )
            if not known:
                self.send_error(
                    "invalid_value",
                    f"Tool call ID '{call_id}' not found in conversation.",
                    param="item.call_id",
                    event_id=event_id,
                )
                return
            self._tool_output_pending = True
        stored = {"id": item.get("id") or _id("item"), "object": "realtime.item", **item}
        stored.setdefault("status", "completed")
        self._add_item(stored)

    def _on_item_truncate(self, ev: dict[str, Any], event_id: str | None) -> None:
        item_id = ev.get("item_id")
        audio_end_ms = ev.get("audio_end_ms")
        played = self.played.get(str(self._response_of_item(item_id)))
        if item_id not in self.items:
            self.send_error(
                "item_not_found", f"Item '{item_id}' not found.", param="item_id", event_id=event_id
            )
            return
        limit_ms = (played.size // 48) if played is not None else None
        if not isinstance(audio_end_ms, int) or (limit_ms is not None and audio_end_ms > limit_ms):
            self.send_error(
                "invalid_value",
                "audio_end_ms must be an integer no larger than the audio.",
                param="audio_end_ms",
                event_id=event_id,
            )
            return
        self.send_event(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": ev.get("content_index", 0),
                "audio_end_ms": audio_end_ms,
            }
        )

    def _response_of_item(self, item_id: Any) -> str | None:
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        return item.get("_response_id") if item else None

    def _on_item_delete(self, ev: dict[str, Any], event_id: str | None) -> None:
        item_id = ev.get("item_id")
        if item_id not in self.items:
            self.send_error(
                "item_not_found", f"Item '{item_id}' not found.", param="item_id", event_id=event_id
            )
            return
        del self.items[item_id]
        self.send_event({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_item_retrieve(self, ev: dict[str, Any], event_id: str | None) -> None:
        item_id = ev.get("item_id")
        if item_id not in self.items:
            self.send_error(
                "item_not_found", f"Item '{item_id}' not found.", param="item_id", event_id=event_id
            )
            return
        self.send_event({"type": "conversation.item.retrieved", "item": self.items[item_id]})

    def _on_append(self, ev: dict[str, Any], event_id: str | None) -> None:
        import binascii

        audio = ev.get("audio")
        try:
            pcm24 = np.frombuffer(base64.b64decode(str(audio), validate=True), dtype="<i2")
        except (binascii.Error, ValueError):
            self.send_error(
                "invalid_value", "audio must be base64 PCM16.", param="audio", event_id=event_id
            )
            return
        # 24 kHz -> 48 kHz by sample repetition: good enough for the VAD and the echo.
        pcm48 = np.repeat(pcm24.astype(np.int16), 2).astype(np.int16)
        if self._turn_detection() is not None:
            self._ingest_pcm48(pcm48)
        else:
            # Uncommitted audio is bounded like the recordings: the oldest goes, counted.
            self._appended.append(pcm48)
            self._appended_samples += pcm48.size
            while self._appended_samples > MAX_INPUT_FRAMES * FRAME_SAMPLES:
                self._appended_samples -= self._appended.pop(0).size
                self._dropped["appended"] += 1

    def _on_commit(self, ev: dict[str, Any], event_id: str | None) -> None:
        appended = self._appended
        pcm = np.concatenate(appended) if appended else np.zeros(0, dtype=np.int16)
        if pcm.size < 48 * 100:
            ms = pcm.size / 48
            self.send_error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
                event_id=event_id,
            )
            return
        self._appended = []
        self._appended_samples = 0
        self._commit_user_audio(_id("item"), 0, pcm.size // 48, pcm)

    def _on_clear(self, ev: dict[str, Any], event_id: str | None) -> None:
        self._appended = []
        self._appended_samples = 0
        self.send_event({"type": "input_audio_buffer.cleared"})

    # ----------------------------------------------------------------------------- responses

    def _tools(self, overrides: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
        tools = overrides.get("tools", self.session.get("tools") or [])
        choice = overrides.get("tool_choice", self.session.get("tool_choice", "auto"))
        return [t for t in tools if isinstance(t, dict) and t.get("type") == "function"], choice

    def start_response(self, overrides: dict[str, Any] | None = None) -> None:
        overrides = overrides or {}
        if self._response is not None and not self._response.done:
            return  # VAD-created responses never overlap
        tools, choice = self._tools(overrides)
        mods = overrides.get("output_modalities", self.session.get("output_modalities", ["audio"]))
        if tools and choice != "none" and not self._tool_output_pending:
            kind = "function_call"
        else:
            kind = "text" if mods == ["text"] else "audio"
        resp = _Response(id=_id("resp"), item_id=_id("item"), kind=kind)
        self._response = resp
        resp.task = self._spawn(self._run_response(resp, overrides, tools, choice))

    def _response_obj(self, resp: _Response, status: str, output: list[Any], **extra: Any) -> Any:
        obj = {
            "object": "realtime.response",
            "id": resp.id,
            "status": status,
            "status_details": extra.get("status_details"),
            "output": output,
            "conversation_id": "conv_sim",
            "output_modalities": ["text"] if resp.kind == "text" else ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"}},
            "usage": {
                "total_tokens": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 0, "audio_tokens": 0},
            },
            "metadata": None,
        }
        return obj

    async def _run_response(
        self, resp: _Response, overrides: dict[str, Any], tools: list[dict[str, Any]], choice: Any
    ) -> None:
        self.send_event(
            {"type": "response.created", "response": self._response_obj(resp, "in_progress", [])}
        )
        self.send_event(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60},
                    {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60},
                ],
            }
        )
        if resp.kind == "function_call":
            await self._run_function_call(resp, tools, choice)
        else:
            await self._run_message(resp)

    async def _run_function_call(
        self, resp: _Response, tools: list[dict[str, Any]], choice: Any
    ) -> None:
        tool = tools[0]
        if isinstance(choice, dict) and choice.get("name"):
            tool = next((t for t in tools if t.get("name") == choice["name"]), tool)
        name = str(tool.get("name", "tool"))
        args = json.dumps(self.sim.tool_arguments(tool))
        call_id = _id("call")
        base = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0}
        item = {
            "id": resp.item_id,
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        self.send_event(
            {
                "type": "response.output_item.added",
                "response_id": resp.id,
                "output_index": 0,
                "item": item,
            }
        )
        self.send_event(
            {
                "type": "conversation.item.added",
                "previous_item_id": self._last_item_id,
                "item": item,
            }
        )
        for i in range(0, len(args), 8):
            await asyncio.sleep(0.005)
            self.send_event(
                {
                    "type": "response.function_call_arguments.delta",
                    **base,
                    "call_id": call_id,
                    "delta": args[i : i + 8],
                }
            )
        self.send_event(
            {
                "type": "response.function_call_arguments.done",
                **base,
                "call_id": call_id,
                "name": name,
                "arguments": args,
            }
        )
        done_item = {**item, "status": "completed", "arguments": args}
        self.items[resp.item_id] = done_item
        prev = self._last_item_id
        self._last_item_id = resp.item_id
        self.send_event(
            {
                "type": "response.output_item.done",
                "response_id": resp.id,
                "output_index": 0,
                "item": done_item,
            }
        )
        self.send_event(
            {"type": "conversation.item.done", "previous_item_id": prev, "item": done_item}
        )
        resp.done = True
        self.send_event(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "completed", [done_item]),
            }
        )

    def _reply_text_and_audio(self, resp: _Response) -> tuple[str, npt.NDArray[np.int16]]:
        last_user = self.utterances[-1] if self.utterances else None
        last_item = self.items.get(self._last_item_id or "")
        if last_item is not None and last_item.get("type") == "function_call_output":
            text = f"The tool returned {last_item.get('output', '')}."
            return text, speechlike(min(3.0, 0.6 + 0.04 * len(text)), seed=len(text))
        if (
            last_item is not None
            and last_item.get("type") == "message"
            and last_item.get("role") == "user"
            and last_user is not None
            and last_item["id"] == last_user.item_id
        ):
            text = self.sim.reply_text(last_user.transcript)
            if self.sim.reply_audio == "echo" and last_user.pcm.size:
                return text, last_user.pcm
            return text, speechlike(max(0.5, last_user.pcm.size / 48000), seed=1)
        if last_item is not None and last_item.get("type") == "message":
            parts = last_item.get("content") or []
            said = " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
            text = self.sim.reply_text(said)
        else:
            text = self.sim.reply_text("")
        return text, speechlike(min(3.0, 0.6 + 0.04 * len(text)), seed=len(text))

    async def _run_message(self, resp: _Response) -> None:
        text, pcm = self._reply_text_and_audio(resp)
        audio = resp.kind == "audio"
        part_type = "audio" if audio else "text"
        base = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0}
        item = {
            "id": resp.item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
            "_response_id": resp.id,
        }
        wire_item = {k: v for k, v in item.items() if not k.startswith("_")}
        self.items[resp.item_id] = item
        prev = self._last_item_id
        self._last_item_id = resp.item_id
        self.send_event(
            {
                "type": "response.output_item.added",
                "response_id": resp.id,
                "output_index": 0,
                "item": wire_item,
            }
        )
        self.send_event(
            {"type": "conversation.item.added", "previous_item_id": prev, "item": wire_item}
        )
        self.send_event(
            {
                "type": "response.content_part.added",
                **base,
                "content_index": 0,
                "part": {"type": part_type, "transcript" if audio else "text": ""},
            }
        )
        words = _chunks(text)
        duration_s = pcm.size / 48000 if audio else 0.05 * len(words)
        start = time.monotonic()
        if audio and self.websocket:
            # WebSocket: base64 PCM16 24 kHz deltas, generated faster than real time.
            self._keep_played(resp.id, pcm)
            pcm24 = ((pcm[0::2].astype(np.int32) + pcm[1::2].astype(np.int32)) // 2).astype("<i2")
            for i in range(0, pcm24.size, 4800):
                chunk = base64.b64encode(pcm24[i : i + 4800].tobytes()).decode("ascii")
                self.send_event(
                    {
                        "type": "response.output_audio.delta",
                        **base,
                        "content_index": 0,
                        "delta": chunk,
                    }
                )
            duration_s = 0.05 * len(words)
        elif audio:
            frames = encode_opus_frames(pcm, self._encoder)
            self._keep_played(resp.id, pcm)
            self.send_event({"type": "output_audio_buffer.started", "response_id": resp.id})
            if self.pacer is not None:
                resp.playback = self.pacer.play(frames, tag=resp.id)
        delta_type = (
            "response.output_audio_transcript.delta" if audio else "response.output_text.delta"
        )
        for i, word in enumerate(words):
            # Deltas spread over the audio, on deadlines from one start time.
            deadline = start + duration_s * (i + 1) / (len(words) + 1)
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            resp.transcript_sent += word
            self.send_event({"type": delta_type, **base, "content_index": 0, "delta": word})
        played_all = True
        if audio and resp.playback is not None:
            played_all = await asyncio.shield(resp.playback)
        else:
            await asyncio.sleep(max(0.0, start + duration_s - time.monotonic()))
        self._finish_message(resp, "completed", drained=played_all)

    def _finish_message(
        self, resp: _Response, status: str, reason: str | None = None, *, drained: bool = True
    ) -> None:
        if resp.done:
            return
        resp.done = True
        audio = resp.kind == "audio"
        text = resp.transcript_sent
        base = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0}
        if audio and self.websocket:
            self.send_event({"type": "response.output_audio.done", **base, "content_index": 0})
        if audio:
            self.send_event(
                {
                    "type": "response.output_audio_transcript.done",
                    **base,
                    "content_index": 0,
                    "transcript": text,
                }
            )
            part = {"type": "audio", "transcript": text}
            content = {"type": "output_audio", "transcript": text}
        else:
            self.send_event(
                {"type": "response.output_text.done", **base, "content_index": 0, "text": text}
            )
            part = {"type": "text", "text": text}
            content = {"type": "output_text", "text": text}
        self.send_event(
            {"type": "response.content_part.done", **base, "content_index": 0, "part": part}
        )
        item_status = "completed" if status == "completed" else "incomplete"
        item = {
            "id": resp.item_id,
            "type": "message",
            "object": "realtime.item",
            "status": item_status,
            "role": "assistant",
            "content": [content],
        }
        self.items[resp.item_id] = {**item, "_response_id": resp.id}
        self.send_event(
            {
                "type": "response.output_item.done",
                "response_id": resp.id,
                "output_index": 0,
                "item": item,
            }
        )
        self.send_event({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        details = None if reason is None else {"type": status, "reason": reason}
        self.send_event(
            {
                "type": "response.done",
                "response": self._response_obj(resp, status, [item], status_details=details),
            }
        )
        if audio and status == "completed" and drained and not self.websocket:
            self.send_event({"type": "output_audio_buffer.stopped", "response_id": resp.id})

    def _cancel_response(self, reason: str) -> None:
        resp = self._response
        if resp is None or resp.done:
            return
        if resp.task is not None and resp.task is not asyncio.current_task():
            resp.task.cancel()
        cleared = resp.kind == "audio" and self.pacer is not None and self.pacer.playing
        if self.pacer is not None:
            self.pacer.clear()
        if resp.kind == "function_call":
            resp.done = True
            self.send_event(
                {
                    "type": "response.done",
                    "response": self._response_obj(
                        resp,
                        "cancelled",
                        [],
                        status_details={"type": "cancelled", "reason": reason},
                    ),
                }
            )
            return
        self._finish_message(resp, "cancelled", reason)
        if cleared:
            self.send_event({"type": "output_audio_buffer.cleared", "response_id": resp.id})

    def _barge_in(self) -> None:
        resp = self._response
        if resp is not None and not resp.done:
            self._cancel_response("turn_detected")
        elif self.pacer is not None and self.pacer.playing:
            self.pacer.clear()
            self.send_event(
                {"type": "output_audio_buffer.cleared", "response_id": resp.id if resp else None}
            )


def _chunks(text: str) -> list[str]:
    """Split text into word-sized deltas that concatenate back to ``text``."""
    if not text:
        return []
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


_HANDLERS: dict[str, Callable[[Call, dict[str, Any], str | None], None]] = {
    "session.update": Call._on_session_update,
    "transcription_session.update": Call._on_session_update,
    "response.create": Call._on_response_create,
    "response.cancel": Call._on_response_cancel,
    "output_audio_buffer.clear": Call._on_output_audio_buffer_clear,
    "conversation.item.create": Call._on_item_create,
    "conversation.item.truncate": Call._on_item_truncate,
    "conversation.item.delete": Call._on_item_delete,
    "conversation.item.retrieve": Call._on_item_retrieve,
    "input_audio_buffer.append": Call._on_append,
    "input_audio_buffer.commit": Call._on_commit,
    "input_audio_buffer.clear": Call._on_clear,
}
