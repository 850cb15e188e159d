"""RealtimeSession: the public API for one live voice conversation.

    async with rtvoice.connect(model="gpt-realtime", instructions="Be brief.") as session:
        await session.send_audio(pcm, 16000)
        async for event in session:
            ...

The session owns one transport (WebRTC or WebSocket, behind :class:`~rtvoice.transports.base.
Transport`) and one audio engine: the native :class:`rtvoice.Uplink` and :class:`rtvoice.Downlink`.
Audio never passes through the event loop on its way to the wire or the speaker: the uplink
releases packets on its sample clock on the transport's own thread, and the downlink is pulled by
the native playout clock (or a device callback). The loop handles events, tools, barge-in and
metrics. Nothing here is specific to either transport.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import json
import logging
import math
import secrets
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt

from rtvoice import _checks, auth, errors, events, live, qoe, resilience
from rtvoice._core import Downlink, Uplink
from rtvoice.audio.engine import AudioEngine, AudioOptions, VoiceProcessing, recording_s
from rtvoice.resilience import ReconnectPolicy
from rtvoice.transports.base import ConnectTimings, MediaGate, Transport
from rtvoice.transports.webrtc import WebRTCTransport
from rtvoice.transports.websocket import WebSocketTransport

__all__ = [
    "FALLBACK_EVENT",
    "INTERRUPTED_EVENT",
    "RECONNECTED_EVENT",
    "RECYCLED_EVENT",
    "SINK_EVENT",
    "STATE_EVENT",
    "TURN_EVENT",
    "AudioSource",
    "RealtimeSession",
    "ReconnectPolicy",
    "SessionMetrics",
    "SessionState",
    "Tool",
    "connect",
]

logger = logging.getLogger(__name__)

SessionState = Literal["idle", "connecting", "connected", "reconnecting", "closed", "failed"]
STATE_EVENT = "rtvoice.state_changed"
FALLBACK_EVENT = "rtvoice.transport_fallback"
SINK_EVENT = "rtvoice.audio_sink_failing"
# Live over WebSocket: the audio format of both directions (24 kHz PCM16, the downlink's).
LIVE_WS_FORMAT = {"type": "audio/pcm", "rate": 24000}
# What says which session a call carries (Realtime: created/updated; Live: started/updated).
SESSION_EVENTS = frozenset({"session.created", "session.updated", "session.started"})
# The server's acknowledgements of a conversation.item.create (GA: added then done; beta: created).
REPLAY_ECHO_EVENTS = frozenset(
    {"conversation.item.added", "conversation.item.done", "conversation.item.created"}
)
REPLAY_ECHO_MEMORY = 2048  # acknowledgements remembered: the history's 500 items, with room
# Live over WebSocket: how often the barge-in rule looks at the playout buffer.
LIVE_WATCH_S = 0.05
# Input dropped after a reconnect is taken out of the uplink this many frames at a time.
DROP_CHUNK_FRAMES = 2400
# Live: refusals of a fork before a new session is started with the conversation instead.
LIVE_FORK_TRIES = 3
RECONNECTED_EVENT = "rtvoice.reconnected"
RECYCLED_EVENT = "rtvoice.recycled"
INTERRUPTED_EVENT = "rtvoice.response_interrupted"
TURN_EVENT = qoe.TURN_EVENT
TransportChoice = Literal["webrtc", "websocket", "auto"]
FloatArray = npt.NDArray[np.float32]


class AudioSource(Protocol):
    """Something that produces microphone audio: ``start(push)`` begins calling
    ``push(pcm, sample_rate)`` from its own thread; ``stop()`` ends it."""

    def start(self, push: Callable[[Any, int], Any]) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Tool:
    """A Python function the model may call. ``parameters`` is a JSON schema."""

    name: str
    function: Callable[..., Any]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


@dataclass
class SessionMetrics:
    """A snapshot of connection and audio statistics.

    ``uplink``, ``downlink`` and ``jitter_buffer`` carry the native statistics under their
    native names (:class:`rtvoice.Uplink`, :class:`rtvoice.Downlink`,
    :class:`rtvoice.JitterBufferStats`); ``playout`` the headless playout clock's. Every field
    has the same name on both transports.
    """

    state: str
    connect: dict[str, float | None]
    transport: str = "webrtc"
    transport_fallback: str | None = None
    rtt_ms: float | None = None
    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    loss_fraction: float = 0.0
    jitter_ms: float | None = None
    remote_packets_lost: int | None = None
    jitter_buffer: dict[str, Any] = field(default_factory=dict)
    downlink: dict[str, Any] = field(default_factory=dict)
    uplink: dict[str, Any] = field(default_factory=dict)
    playout: dict[str, Any] = field(default_factory=dict)
    events_received: int = 0
    events_sent: int = 0
    malformed_events: int = 0
    dropped_events: int = 0
    # Media callbacks that failed and were counted instead of raised (track, tap, audio deltas).
    media_errors: int = 0
    # WebRTC: "native" (RTP/RTCP/SRTP on the native media thread) or "python" (aiortc's path),
    # why not native when it is not, and the native path's counters (SRTP failures, RTCP, the
    # datagrams handed to the ICE agent, ...); None / {} on WebSocket.
    media_path: str | None = None
    media_path_reason: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    tool_calls: int = 0
    barge_ins: int = 0
    # Calls lost and replaced: reconnects, recycles, attempts, downtime, what was restored,
    # queued and dropped (see RealtimeSession).
    resilience: dict[str, Any] = field(default_factory=dict)
    # Live API: the server's usage (seconds, context window), delegations, forks and new
    # sessions that continued the conversation, the last session.closed reason.
    live: dict[str, Any] = field(default_factory=dict)
    # Per-turn latency, the last turns of the call (rtvoice.qoe.Turn as dicts).
    turns: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weak_method(method: Callable[..., Any], default: Any = None) -> Callable[..., Any]:
    """``method`` without a strong reference to its object: threads and transports that hold
    a session's callbacks must not keep a forgotten session alive. Once the object is gone the
    call returns ``default``."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return default if bound is None else bound(*args)

    return call


class _NativeParts:
    """What a session must stop even without its event loop: the attached sources, the playout
    threads (driver and pump) and the transport's RTC thread with its sockets.

    It holds no reference to the session, so a session that was never closed can be collected,
    and then stopped by its finalizer; :func:`_stop_at_exit` stops those still alive when the
    interpreter exits. :meth:`stop` works from any thread except the playout driver's.
    """

    def __init__(self, engine: AudioEngine, transport: Transport) -> None:
        self.engine = engine
        self.transport = transport
        # Calls being opened or closed besides the current one (reconnecting, recycling).
        self.others: set[Transport] = set()
        self.sources: list[AudioSource] = []
        # True from open() until every part was released.
        self.live = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            if not self.live:
                return
            self.live = False
            sources, self.sources = self.sources, []
        for source in sources:
            with contextlib.suppress(Exception):
                source.stop()
        with contextlib.suppress(Exception):
            self.engine.stop_playout()
        for transport in [self.transport, *self.others]:
            with contextlib.suppress(Exception):
                transport.close_now()


# The native parts of every session between open() and release, weakly: an interpreter that
# exits with sessions still open stops their threads first.
_LIVE_PARTS: weakref.WeakSet[_NativeParts] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for parts in list(_LIVE_PARTS):
        parts.stop()


def _tool_from(obj: Any) -> Tool:
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        doc = inspect.getdoc(obj) or ""
        props: dict[str, Any] = {}
        required = []
        for name, param in inspect.signature(obj).parameters.items():
            kind = {int: "integer", float: "number", bool: "boolean"}.get(
                param.annotation, "string"
            )
            props[name] = {"type": kind}
            if param.default is inspect.Parameter.empty:
                required.append(name)
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        return Tool(obj.__name__, obj, doc.split("\n\n")[0], schema)
    raise TypeError(f"tools must be rtvoice.Tool objects or callables, not {type(obj).__name__}")


class RealtimeSession:
    """One conversation with a Realtime API server over WebRTC or WebSocket.

    Created by :func:`connect`; use it as an async context manager. All methods are called from
    the event loop that opened the session, except that audio may be pushed from any one thread
    with :meth:`push_audio`.

    ``transport``: ``"webrtc"``, ``"websocket"`` or ``"auto"`` (WebRTC first; when the calls
    endpoint answers but ICE does not connect within ``ice_timeout_s``, ICE fails or the answer
    is unusable, the session falls back to WebSocket on its own and says so with a
    ``rtvoice.transport_fallback`` event and ``metrics.transport_fallback``).

    Audio: ``output_rate_hz`` (8 to 48 kHz in whole kHz), ``audio_sink`` (called with float32 mono
    chunks on a pump thread, never on the playout clock), ``record_output`` /
    ``record_output_s`` (off by default: ``record_output=True`` records for :meth:`read_audio`
    up to 5 s between two reads, ``record_output_s`` sets that bound and turns recording on;
    overflow is counted in ``metrics.playout["record_dropped_samples"]``), ``input_buffer_s``
    (default 2 s: the bound of audio queued for sending; overflow counted in
    ``metrics.uplink["frames_dropped"]``).

    ``media_path`` (WebRTC): who carries each call's RTP, RTCP and SRTP. ``"auto"`` (the
    default) uses the native media thread (C++, no GIL, one thread for every call in the
    process) when the call allows it and aiortc's RTP path otherwise (a relayed ICE pair, an
    SRTP profile the core lacks), saying which and why in ``metrics.media_path`` and
    ``metrics.media_path_reason``; ``"native"`` fails the call instead of falling back;
    ``"python"`` always uses aiortc's path.

    ``dead_peer_timeout_s`` (default 5 s; None turns it off): a call from which nothing arrives
    for that long (no RTP and no RTCP on WebRTC, no message and no pong on WebSocket) fails with
    that reason in the state event; a shorter freeze is ridden out.

    Calls that survive (``reconnect``, default on; ``False`` or a :class:`ReconnectPolicy`):
    a lost call (dead peer, data channel or peer connection closed, ICE/DTLS failure, a
    retryable WebSocket close) turns the state to ``reconnecting`` and a new call is opened
    with the policy's backoff (0.5 s doubling to 8 s, with jitter, 5 attempts; 429 and 5xx
    retried, ``Retry-After`` honoured; a refused ephemeral key is re-minted once; other 4xx
    end it). The new call gets the session configuration (as updated since) and the
    conversation so far replayed as items: the most recent ``restore_max_items`` /
    ``restore_max_chars``; user audio turns need input transcription to be replayed. A
    response cut off by the loss is reported as ``rtvoice.response_interrupted`` and not re-run;
    ``rtvoice.reconnected`` follows the restore. Events sent while reconnecting are queued
    (``reconnect_queue_bytes``, 1 MiB) and sent after the restore; a full queue raises
    :class:`errors.SendQueueFullError`, and when reconnection gives up the session fails and
    ``send()`` raises :class:`errors.ReconnectFailedError` (the state event lists the queued
    events that were never sent). Of the audio pushed meanwhile, the last
    ``reconnect_audio_s`` is sent after the restore; the rest is dropped and counted.

    ``voice_processing`` (a :class:`rtvoice.audio.engine.VoiceProcessing`): echo cancellation,
    noise suppression, gain control and a high-pass filter on the capture path, in the native
    core, against what the downlink hands to the speaker (for sound devices).

    Recycling (``recycle``, default on): before the server ends the session (its
    ``expires_at``, else ``max_session_s`` after it started), ``recycle_before_s`` ahead, at a
    turn boundary, a second call is opened and restored, the audio switched to it, and only then
    the old one closed (``rtvoice.recycled``). A ``session_expired`` error or a WebSocket close
    for the maximum duration takes the same path.
    """

    def __init__(
        self,
        *,
        model: str = "gpt-realtime",
        instructions: str | None = None,
        voice: str | None = None,
        tools: Iterable[Any] | None = None,
        session: Mapping[str, Any] | None = None,
        transport: TransportChoice = "auto",
        base_url: str | None = None,
        api_key: str | auth.Secret | None = None,
        api_version: Literal["ga", "beta"] = "ga",
        ephemeral: bool = True,
        key_ttl_s: int = 600,
        ice_servers: list[Any] | None = None,
        loopback_only: bool | None = None,
        output_rate_hz: int = 48000,
        audio_sink: Callable[[FloatArray], None] | None = None,
        record_output: bool | None = None,
        record_output_s: float | None = None,
        input_buffer_s: float = 2.0,
        headless_playout: bool = True,
        jitter_target_ms: int = 30,
        opus_bitrate_bps: int = 32000,
        ws_chunk_ms: int = 20,
        barge_in: bool = True,
        connect_timeout_s: float = 15.0,
        ice_timeout_s: float = 5.0,
        dead_peer_timeout_s: float | None = 5.0,
        media_path: str = "auto",
        http_timeout_s: float = 10.0,
        stats_interval_s: float = 1.0,
        max_queued_events: int = 10000,
        reconnect: bool | ReconnectPolicy = True,
        reconnect_queue_bytes: int = 1 << 20,
        reconnect_audio_s: float = 0.5,
        restore_max_items: int = 100,
        restore_max_chars: int = 32000,
        recycle: bool = True,
        max_session_s: float = 3600.0,
        recycle_before_s: float = 120.0,
        api: Literal["realtime", "live"] | None = None,
        store: bool = False,
        delegation_model: str = "gpt-5-mini",
        on_delegation: Callable[[dict[str, Any]], Any] | None = None,
        voice_processing: VoiceProcessing | None = None,
    ) -> None:
        if transport not in ("webrtc", "websocket", "auto"):
            raise ValueError(
                f"transport must be 'webrtc', 'websocket' or 'auto', not {transport!r}"
            )
        if api_version not in ("ga", "beta"):
            raise ValueError(f"api_version must be 'ga' or 'beta', not {api_version!r}")
        if ice_servers is not None and (not isinstance(ice_servers, (list, tuple))):
            raise TypeError(
                "ice_servers must be a list of aiortc.RTCIceServer, e.g. "
                "[RTCIceServer(urls='stun:stun.example.org')], not "
                f"{type(ice_servers).__name__}"
            )
        if session is not None:
            _checks.mapping(session, "session")
        if audio_sink is not None and not callable(audio_sink):
            raise TypeError(f"audio_sink must be callable, not {type(audio_sink).__name__}")
        self._http_timeout_s = _checks.positive_timeout(http_timeout_s, "http_timeout_s")
        self._connect_timeout_s = _checks.positive_timeout(connect_timeout_s, "connect_timeout_s")
        self._ice_timeout_s = _checks.positive_timeout(ice_timeout_s, "ice_timeout_s")
        self._dead_peer_timeout_s = _checks.positive_timeout(
            dead_peer_timeout_s, "dead_peer_timeout_s", allow_none=True
        )
        self._stats_interval_s = _checks.positive_interval(stats_interval_s, "stats_interval_s")
        if media_path not in ("auto", "native", "python"):
            raise ValueError(f"media_path must be 'auto', 'native' or 'python', not {media_path!r}")
        self._media_path: Any = media_path
        if not isinstance(max_queued_events, int) or max_queued_events < 1:
            raise ValueError(f"max_queued_events must be a positive int, not {max_queued_events!r}")
        if isinstance(reconnect, bool):
            self._policy: ReconnectPolicy | None = ReconnectPolicy() if reconnect else None
        elif isinstance(reconnect, ReconnectPolicy):
            self._policy = reconnect
        else:
            raise TypeError(
                "reconnect must be True, False or a rtvoice.ReconnectPolicy, not "
                f"{type(reconnect).__name__}"
            )
        self._reconnect_audio_s = _checks.non_negative(reconnect_audio_s, "reconnect_audio_s")
        self._restore_max_items = _checks.count(restore_max_items, "restore_max_items")
        self._restore_max_chars = _checks.count(restore_max_chars, "restore_max_chars")
        queue_bytes = _checks.count(reconnect_queue_bytes, "reconnect_queue_bytes")
        if not isinstance(recycle, bool):
            raise TypeError(f"recycle must be a bool, not {type(recycle).__name__}")
        self._recycle = recycle
        self._max_session_s = _checks.positive_timeout(max_session_s, "max_session_s")
        self._recycle_before_s = _checks.non_negative(recycle_before_s, "recycle_before_s")
        self._audio_options = AudioOptions(
            output_rate_hz=output_rate_hz,
            start_delay_ms=jitter_target_ms,
            opus_bitrate_bps=opus_bitrate_bps,
            input_buffer_s=input_buffer_s,
            record_output_s=recording_s(record_output, record_output_s),
            headless_playout=headless_playout,
            ws_chunk_ms=ws_chunk_ms,
            voice_processing=voice_processing,
        )
        self.model = model
        self.api_version = api_version
        self.base_url = auth.resolve_base_url(base_url)
        self._secret = auth.resolve_api_key(api_key)
        self._minter: auth.KeyMinter | None = None
        self._ephemeral = ephemeral
        self._key_ttl_s = key_ttl_s
        self._tools: dict[str, Tool] = {}
        for t in tools or ():
            tool = _tool_from(t)
            self._tools[tool.name] = tool
        if api is None:
            api = "live" if live.is_live_model(model) else "realtime"
        if api not in ("realtime", "live"):
            raise ValueError(
                f"api must be 'realtime', 'live' or None (from the model), not {api!r}"
            )
        self.api: Literal["realtime", "live"] = api
        if not isinstance(store, bool):
            raise TypeError(f"store must be a bool, not {type(store).__name__}")
        if on_delegation is not None and not callable(on_delegation):
            raise TypeError(f"on_delegation must be callable, not {type(on_delegation).__name__}")
        self._store = store
        self._on_delegation = on_delegation
        if api == "live":
            if api_version != "ga":
                raise ValueError("the Live API has no beta interface: use api_version='ga'")
            if self._secret.get_secret_value().startswith("ek_"):
                raise errors.ConfigurationError(
                    "the Live API has no ephemeral keys: sessions are created with the project "
                    "(standard) key, on a server"
                )
            self._ephemeral = False
            tools_schema = [
                live.function_tool(t.name, t.description, t.parameters)
                for t in self._tools.values()
            ]
            self._session_config = live.session_config(
                model=model,
                instructions=instructions,
                voice=voice,
                tools=tools_schema,
                delegation_model=delegation_model,
                store=store,
                overrides=session,
            )
        else:
            self._session_config = self._build_session_config(session, instructions, voice)
        self._codec = events.EventCodec(api_version)
        self._transport_choice: TransportChoice = transport
        self._ice_servers = list(ice_servers) if ice_servers is not None else None
        self._loopback_only = loopback_only
        self._audio_sink = audio_sink
        self._engine = self._make_engine("pcm16" if transport == "websocket" else "opus")
        # Live: the session the next call forks (continuation of a stored session), the
        # transcript that rebuilds a new session's input otherwise, and what the server reports.
        self._fork_from: str | None = None
        self._fork_refused = 0
        self._forked = False
        self._live_transcript = live.LiveTranscript()
        self._live: dict[str, Any] = {
            "usage": {},
            "delegations": 0,
            "delegation_errors": 0,
            "forks": 0,
            "rebuilt_sessions": 0,
            "closed_reason": None,
        }
        self._live_tool_tasks: dict[str, int] = {}
        # Live: whether the call being opened continues the session (its input is rebuilt), and
        # (items, left out) of the last rebuild.
        self._continuing = False
        # Live over WebSocket: (transport, what was pending when playout was last flushed).
        self._flush_basis: tuple[Any, float] = (None, 0.0)
        self._live_rebuilt: tuple[int, int] = (0, 0)
        # Every call gets a generation number; callbacks of calls that are no longer current
        # (or not yet) are told apart by it.
        self._generation = 0
        self._live_generation = 1
        self._restoring_generation: int | None = None
        self._gates: dict[int, tuple[MediaGate, MediaGate]] = {}
        # One consumer at a time for the native uplink, whichever call's thread asks.
        self._uplink_lock = threading.Lock()
        self._transport: Transport = self._make_transport(self._next_generation(), is_open=True)
        self._fallback_reason: str | None = None
        self._barge_in = barge_in
        self._max_queued = max_queued_events

        self.state: SessionState = "idle"
        self.session_id: str | None = None
        self.session_info: dict[str, Any] = {}
        self.dropped_events = 0
        self._queue: asyncio.Queue[events.ServerEvent | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stats: dict[str, Any] = {}
        self._tool_calls = 0
        self._barge_ins = 0
        self._state_listeners: list[Callable[[str, str], None]] = []
        # Barge-in bookkeeping: the assistant audio item now playing, the downlink's played
        # media count when it started, and whether a response is being generated.
        self._audio_item_id: str | None = None
        self._audio_item_start_samples = 0
        self._audio_playing = False
        self._response_active = False
        self._key_ms: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._native = _NativeParts(self._engine, self._transport)
        # The task running open()'s steps; close() cancels it while it is still connecting.
        self._opening: asyncio.Task[None] | None = None
        self._open_cancellable = False
        self._close_requested = False
        self._closing: asyncio.Future[None] | None = None
        # Reconnection and recycling.
        self._history = resilience.ConversationHistory()
        self._send_queue = resilience.SendQueue(queue_bytes)
        # QoE: per-turn latency and the call's time series (rtvoice.qoe).
        self._qoe = qoe.CallRecorder(self)
        # Why the session failed, raised by send() and push_audio() from then on.
        self._reconnect_error: errors.SessionError | None = None
        self._replacing: asyncio.Task[None] | None = None
        self._recycle_timer: asyncio.Task[None] | None = None
        self._switching = False
        self._old_call_lost = False
        self._user_speaking = False
        self._response_id: str | None = None
        self._config_changed = False
        self._session_started = 0.0  # time.time() of session.created of the current call
        self._expires_at: float | None = None
        # The session.created / session.updated of a call being restored, and when they came.
        self._next_session: list[tuple[events.ServerEvent, float]] = []
        self._restore_snapshot: list[str] = []
        self._closers: set[asyncio.Task[None]] = set()
        self._resilience: dict[str, Any] = {
            "reconnects": 0,
            "recycles": 0,
            "attempts": 0,
            "failed_attempts": 0,
            "reminted_keys": 0,
            "last_downtime_ms": None,
            "total_downtime_ms": 0.0,
            "items_restored": 0,
            "items_not_restored": 0,
            "events_queued": 0,
            "events_flushed": 0,
            "audio_dropped_ms": 0.0,
            "responses_interrupted": 0,
            "stale_events": 0,
            "replay_echoes": 0,
        }
        # Acknowledgements of items (conversation.item.added / done) the app was given, by
        # (type, item id), the most recent REPLAY_ECHO_MEMORY. The call items were last replayed
        # into, their ids, and the acknowledgements of them held back: the new call sends them
        # again, and the app is not given one it already has.
        self._acks_delivered: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._replay_generation: int | None = None
        self._replay_ids: set[str] = set()
        self._replay_held: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ configuration

    def _build_session_config(
        self, session: Mapping[str, Any] | None, instructions: str | None, voice: str | None
    ) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": "realtime", "model": self.model}
        if instructions is not None:
            cfg["instructions"] = instructions
        if voice is not None:
            cfg.setdefault("audio", {}).setdefault("output", {})["voice"] = voice
        if self._tools:
            cfg["tools"] = [t.schema() for t in self._tools.values()]
        if session:
            for key, value in session.items():
                cfg[key] = value
        return cfg

    def _make_engine(self, mode: Literal["opus", "pcm16"]) -> AudioEngine:
        return AudioEngine(
            mode,
            self._audio_options,
            sink=self._audio_sink,
            on_sink_failing=_weak_method(self._sink_failing),
        )

    def _next_generation(self) -> int:
        self._generation += 1
        return self._generation

    def _make_transport(self, generation: int, *, is_open: bool) -> Transport:
        """A transport for call ``generation`` on the current engine, behind media gates
        (open: it carries the audio at once; closed: until :meth:`_switch_to`)."""
        engine = self._engine
        up, down = (
            MediaGate(engine.uplink, is_open=is_open, lock=self._uplink_lock),
            MediaGate(engine.downlink, is_open=is_open),
        )
        self._gates[generation] = (up, down)
        on_message = functools.partial(_weak_method(self._on_message), generation)
        on_state = functools.partial(_weak_method(self._on_transport_state), generation)
        if engine.mode == "opus":
            return WebRTCTransport(
                base_url=self.base_url,
                api_version=self.api_version,
                model=self.model,
                ice_servers=self._ice_servers,
                loopback_only=self._loopback_only,
                uplink=up,
                downlink=down,
                http_timeout_s=self._http_timeout_s,
                connect_timeout_s=self._connect_timeout_s,
                ice_timeout_s=self._ice_timeout_s,
                dead_peer_timeout_s=self._dead_peer_timeout_s,
                on_message=on_message,
                on_state=on_state,
                api=self.api,
                fork_of=self._fork_from,
                media_path=self._media_path,
            )
        return WebSocketTransport(
            base_url=self.base_url,
            api_version=self.api_version,
            model=self.model,
            uplink=up,
            downlink=down,
            chunk_ms=self._audio_options.ws_chunk_ms,
            http_timeout_s=self._http_timeout_s,
            connect_timeout_s=self._connect_timeout_s,
            dead_peer_timeout_s=self._dead_peer_timeout_s,
            on_message=on_message,
            on_state=on_state,
            api=self.api,
            fork_of=self._fork_from,
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _set_state(self, state: SessionState, reason: str | None = None, **extra: Any) -> None:
        previous = self.state
        if previous == state or previous == "closed":
            return
        if previous == "failed" and state != "closed":
            return
        self.state = state
        data: dict[str, Any] = {"type": STATE_EVENT, "state": state, "previous": previous}
        if reason is not None:
            data["reason"] = reason
        data.update(extra)
        self._enqueue(events.ServerEvent(type=STATE_EVENT, event_id=None, data=data))
        self._qoe.on_state(state)
        for listener in list(self._state_listeners):
            listener(previous, state)
        if state == "failed":
            self._queue.put_nowait(None)  # iteration ends after the state event

    def on_state_change(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(previous, new)`` on every state change (on the session's loop)."""
        self._state_listeners.append(listener)

    async def open(self) -> None:
        """Connect; raises :class:`rtvoice.errors.SessionError` if :meth:`close` is called
        meanwhile (the session is then closed)."""
        if self.state != "idle":
            raise errors.SessionError(f"open() on a session in state {self.state!r}")
        self._loop = asyncio.get_running_loop()
        self._native.live = True
        _LIVE_PARTS.add(self._native)
        self._set_state("connecting")
        # The steps run in their own task so that close() cancels them, not the caller's task.
        steps = asyncio.ensure_future(self._open_steps())
        self._opening = steps
        try:
            await steps
        finally:
            self._opening = None

    async def _open_steps(self) -> None:
        started = time.perf_counter()
        self._open_cancellable = True
        try:
            await self._open_first_call()
        except BaseException as exc:
            self._open_cancellable = False  # the release below must run to its end
            if self._close_requested:
                await self._release()
                self._set_state("closed", "closed while opening")
                self._queue.put_nowait(None)
                raise errors.SessionError("the session was closed while opening") from None
            self._set_state("failed", errors.redact(str(exc)) or type(exc).__name__)
            await self._release()
            raise
        # From here on nothing awaits: a close() now finds the session connected.
        self._open_cancellable = False
        timings = self._transport.timings
        timings.key_ms = self._key_ms
        timings.total_ms = (time.perf_counter() - started) * 1000.0
        self._engine.start_playout()
        self._spawn(self._poll_stats())
        if self.api == "live":
            self._spawn(self._live_playout_watch())
        self._set_state("connected")
        self._schedule_recycle()

    def _can_remint(self) -> bool:
        return self._minter is not None

    async def _open_first_call(self) -> None:
        """The first call: on 429 and 5xx from the key or calls endpoint it is tried again with
        the reconnection policy's backoff (when reconnecting is on); a refused ephemeral key is
        re-minted once; with ``transport="auto"`` an unusable WebRTC falls back to WebSocket."""
        reminted = False
        attempt = 1
        while True:
            try:
                key, multipart_session, hangup_key = await self._credentials()
                try:
                    await self._connect_transport(
                        self._transport, key, multipart_session, hangup_key
                    )
                except errors.WebRTCUnavailableError as exc:
                    if self._transport_choice != "auto":
                        raise
                    await self._fall_back(str(exc))
                    await self._connect_transport(
                        self._transport, key, multipart_session, hangup_key
                    )
                return
            except errors.APIStatusError as exc:
                decision = resilience.attempt_decision(
                    exc, reminted=reminted, can_remint=self._can_remint()
                )
                policy = self._policy
                if decision == "remint":
                    reminted = True
                    self._remint()
                elif decision == "retry" and policy is not None and attempt < policy.attempts:
                    delay = policy.delay_s(attempt, retry_after_s=exc.retry_after_s)
                    logger.info(
                        "connect attempt %d failed (%s); retrying in %.2f s", attempt, exc, delay
                    )
                    attempt += 1
                    self._resilience["failed_attempts"] += 1
                    await asyncio.sleep(delay)
                else:
                    raise
            # A transport that failed to connect is spent: the next attempt gets a new one.
            self._transport = self._make_transport(self._next_generation(), is_open=True)
            self._live_generation = self._generation
            self._native.transport = self._transport

    def _remint(self) -> None:
        assert self._minter is not None
        self._minter.invalidate()
        self._resilience["reminted_keys"] += 1

    async def _connect_transport(
        self,
        transport: Transport,
        key: str,
        multipart_session: dict[str, Any] | None,
        hangup_key: str | None,
    ) -> None:
        if self.api == "live":
            await transport.connect(key=key, session=self._live_start_config(transport))
            return
        if transport.session_delivery == "session.update":
            # A standard key carries no session: it goes as session.update after session.created.
            standard = not key.startswith("ek_")
            session = self._session_config if standard else None
            if session is not None and self.api_version == "beta":
                session = self._codec.prepare(events.session_update(session))["session"]
            await transport.connect(key=key, session=session)
            return
        await transport.connect(
            key=key,
            session=multipart_session,
            multipart=multipart_session is not None,
            hangup_key=hangup_key,
        )

    async def _fall_back(self, reason: str) -> None:
        """WebRTC could not connect: continue on WebSocket with what was queued for sending."""
        logger.warning("WebRTC unavailable (%s); falling back to WebSocket", reason)
        await self._transport.close()
        old = self._engine
        waiting = old.uplink.take_input(old.uplink.stats["pending_input_frames"])
        self._engine = self._make_engine("pcm16")
        if waiting.size:
            self._engine.input.push(waiting.reshape(-1), old.uplink.input_rate)
        self._transport = self._make_transport(self._next_generation(), is_open=True)
        self._live_generation = self._generation
        self._native.engine, self._native.transport = self._engine, self._transport
        self._fallback_reason = reason
        data = {"type": FALLBACK_EVENT, "from": "webrtc", "to": "websocket", "reason": reason}
        self._enqueue(events.ServerEvent(type=FALLBACK_EVENT, event_id=None, data=data))

    async def close(self) -> None:
        """Hang up and release every thread, task and socket. Idempotent.

        Works from any event loop or thread: from another loop than the session's it runs on
        the session's loop while that loop runs, and without it once it has stopped. During
        :meth:`open`, it cancels the connect and ``open()`` raises :class:`SessionError`.
        """
        owner = self._loop
        if owner is not None and owner is not asyncio.get_running_loop():
            if owner.is_running():  # on another thread
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.close(), owner))
            else:
                await self._close_without_owner_loop()
            return
        if self.state == "closed":
            return
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_once())
        await asyncio.shield(self._closing)

    async def _close_once(self, reason: str | None = None) -> None:
        opening = self._opening
        if opening is not None and not opening.done():
            self._close_requested = True
            if self._open_cancellable:
                opening.cancel()  # open() releases, ends in "closed" and raises SessionError
            await asyncio.wait({opening})
        if self.state != "closed":
            await self._release()
            self._set_state("closed", reason)
            self._queue.put_nowait(None)

    async def _close_without_owner_loop(self) -> None:
        """close() after the session's loop stopped: its tasks can be neither awaited nor, once
        the loop is closed, cancelled (asyncio.run has cancelled them already)."""
        if self.state == "closed":
            return
        for task in self._tasks:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                task.cancel()
        self._tasks.clear()
        await self._release()
        self._set_state("closed")
        self._queue.put_nowait(None)

    async def _release(self) -> None:
        sources, self._native.sources = self._native.sources, []
        for source in sources:
            with contextlib.suppress(Exception):
                source.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._engine.stop_playout)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for other in list(self._native.others):
            await other.close()
        await self._transport.close()
        # Calls retired by a reconnect or a recycle finish closing (they are not cancelled: a
        # half-closed call would leave its thread and sockets behind).
        if self._closers:
            await asyncio.gather(*list(self._closers), return_exceptions=True)
        self._native.live = False
        _LIVE_PARTS.discard(self._native)

    def __del__(self) -> None:
        # Like asyncio's transports: a session opened and never closed says so when collected,
        # and its threads stop without its (possibly closed) event loop.
        native: _NativeParts | None = self.__dict__.get("_native")  # None: __init__ raised
        if native is None or not native.live:
            return
        try:
            warnings.warn(
                f"unclosed RealtimeSession (state {self.state!r}, transport "
                f"{self._transport.kind!r}); use 'async with rtvoice.connect(...)' or "
                "'await session.close()'",
                ResourceWarning,
                stacklevel=1,  # a finalizer has no caller to point at
                source=self,
            )
        finally:  # also when warnings are errors
            native.stop()

    async def _credentials(self) -> tuple[str, dict[str, Any] | None, str | None]:
        """(key for the SDP POST or the WebSocket, session for a multipart offer, standard key
        for hangup)."""
        key = self._secret.get_secret_value()
        if key.startswith("ek_") or (not self._ephemeral and self.api_version == "beta"):
            return key, None, None
        if self._transport_choice == "websocket":
            return key, None, None  # a standard key opens the socket; the session follows
        if not self._ephemeral:
            return key, self._session_config, key
        start = time.perf_counter()
        ephemeral = await self._mint_key(key)
        self._key_ms = (time.perf_counter() - start) * 1000.0
        return ephemeral, None, key

    async def _mint_key(self, standard_key: str) -> str:
        if self._minter is None:
            self._minter = auth.KeyMinter(
                standard_key,
                self.base_url,
                session=self._session_config,
                ttl_s=self._key_ttl_s,
                api_version=self.api_version,
                timeout_s=self._http_timeout_s,
            )
        try:
            key = await self._minter.get()
        finally:
            await self._minter.aclose()
        return key.value

    # ------------------------------------------------------------------ sending

    def _require_connected(self) -> None:
        if self.state == "failed" and self._reconnect_error is not None:
            raise self._reconnect_error
        if self.state != "connected":
            raise errors.SessionError(f"the session is {self.state}, not connected")

    async def send(self, event: Mapping[str, Any]) -> str:
        """Send a GA-shaped client event (converted to beta when api_version="beta").

        Returns its ``event_id`` (generated if absent), which an ``error`` event will quote.
        While the session is reconnecting the event is queued and sent, in order, after the
        conversation was restored; :class:`errors.SendQueueFullError` when the queue is full.
        """
        if self.state != "reconnecting" and not self._switching:
            self._require_connected()
        event = self._with_item_id(event)
        wire = self._codec.prepare(event)
        text = json.dumps(wire, separators=(",", ":"), allow_nan=False)
        event_id = str(wire["event_id"])
        if self.state == "reconnecting" or self._switching:
            # Noted (history, configuration) once it is sent: a restore replays only what
            # went out, and the queue follows it.
            self._send_queue.put(text, event_id, event)
            self._resilience["events_queued"] += 1
            return event_id
        # Noted before it goes: a restore that starts while it is on its way replays it.
        self._note_client_event(event)
        await self._transport.send_text(text)
        self._codec.note_sent()
        return event_id

    @staticmethod
    def _with_item_id(event: Mapping[str, Any]) -> Mapping[str, Any]:
        """A conversation.item.create gets an item id when it has none, so that the history
        holds it even if the call is lost before the server confirms it."""
        if not isinstance(event, Mapping) or event.get("type") != "conversation.item.create":
            return event
        item = event.get("item")
        if not isinstance(item, Mapping) or item.get("id") is not None:
            return event
        return {**event, "item": {"id": "item_" + secrets.token_hex(12), **item}}

    def _note_client_event(self, event: Mapping[str, Any]) -> None:
        """What a replacement call must know of an event the client sent."""
        kind = event.get("type")
        if kind == "session.update":
            update = event.get("session")
            if isinstance(update, Mapping):
                _merge_config(self._session_config, update)
                self._config_changed = True
        elif kind == "conversation.item.create":
            item = event.get("item")
            if isinstance(item, Mapping):
                self._history.add_local(item)

    async def update(self, session: Mapping[str, Any] | None = None, **fields: Any) -> str:
        """``session.update`` with only the given fields (``voice=``, ``instructions=``, ...).

        Live: only ``delegation`` (of the same type) and ``triggers`` can change after the
        start; anything else is refused here with a ``ValueError``."""
        if self.api == "live":
            update = {**dict(session or {}), **fields}
            fixed = sorted(set(update) - live.UPDATABLE_FIELDS)
            if fixed:
                raise ValueError(
                    f"a Live session cannot change {', '.join(fixed)} after it started; "
                    "session.update takes only delegation and triggers"
                )
            return await self.send({"type": "session.update", "session": update})
        return await self.send(events.session_update(session, **fields))

    async def create_response(self, **kwargs: Any) -> str:
        """``response.create`` (keywords as :func:`rtvoice.events.response_create`)."""
        self._require_realtime(
            "response.create for speech",
            "the model decides when to speak (steer it with append_instructions())",
        )
        return await self.send(events.response_create(**kwargs))

    async def send_text(self, text: str, *, respond: bool = True) -> str:
        """Add a user text message; with ``respond`` also ask for a response.

        Live: typed text goes to the delegated Responses model (``response.item.create`` +
        ``response.create``), so it needs ``tools`` (Responses delegation); otherwise use
        :meth:`append_instructions`."""
        if self.api == "live":
            if not self._live_delegates_to_responses():
                raise errors.UnsupportedError(
                    "the Live API takes typed text only through Responses delegation (give the "
                    "session tools); use append_instructions() to add context instead"
                )
            if not isinstance(text, str) or not text:
                raise ValueError("text must be a non-empty string")
            event_id = await self.send(live.response_item_create(live.user_text_item(text)))
            if respond:
                await self.send(live.response_create())
            return event_id
        event_id = await self.send(events.conversation_item_create_text(text))
        if respond:
            await self.create_response()
        return event_id

    async def send_audio(self, pcm: Any, sample_rate: int) -> int:
        """Queue microphone audio (numpy float32/int16, any supported rate). It is sent in real
        time on the uplink's sample clock, after anything queued before it."""
        return self.push_audio(pcm, sample_rate)

    def push_audio(self, pcm: Any, sample_rate: int) -> int:
        """From any one producer thread: queue microphone audio without awaiting.

        Returns the frames queued at the uplink's rate; audio beyond ``input_buffer_s`` is dropped
        and counted in ``metrics.uplink["frames_dropped"]``.
        """
        if self.state in ("closed", "failed"):
            if self._reconnect_error is not None:
                raise self._reconnect_error
            raise errors.SessionError(f"the session is {self.state}")
        return self._engine.input.push(pcm, sample_rate)

    def attach_source(self, source: AudioSource) -> None:
        """Start ``source``; it pushes audio from its own thread until the session closes."""
        self._native.sources.append(source)
        # Weakly: a source's thread must not keep a forgotten session alive.
        source.start(_weak_method(self.push_audio, 0))

    # ------------------------------------------------------------------ audio out

    def _sink_failing(self, count: int, exc: BaseException) -> None:
        # Pump thread: the report goes to the session's loop.
        loop = self._loop
        data = {
            "type": SINK_EVENT,
            "errors": count,
            "error": f"{type(exc).__name__}: {errors.redact(str(exc))}",
        }
        event = events.ServerEvent(type=SINK_EVENT, event_id=None, data=data)
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._enqueue, event)

    def read_audio(self) -> FloatArray:
        """Played audio since the last call (mono float32 at ``output_rate_hz``): the first
        ``record_output_s`` of it; what played after the recording was full is dropped and
        counted in ``metrics.playout["record_dropped_samples"]``.

        Needs the recording (``record_output=True`` or ``record_output_s``; it is off by
        default): without it, raises :class:`errors.ConfigurationError`."""
        if self._audio_options.record_output_s <= 0:
            raise errors.ConfigurationError(
                "read_audio() needs the output recording, which is off by default: "
                "connect(..., record_output=True) (or record_output_s=seconds)"
            )
        return self._engine.read_recording()

    @property
    def downlink(self) -> Downlink:
        """The native Downlink in use (after a fallback, the WebSocket one)."""
        return self._engine.downlink

    @property
    def uplink(self) -> Uplink:
        """The native Uplink in use (after a fallback, the WebSocket one)."""
        return self._engine.uplink

    @property
    def output_rate_hz(self) -> int:
        return self._audio_options.output_rate_hz

    @property
    def transport(self) -> Transport:
        return self._transport

    # ------------------------------------------------------------------ receiving

    def __aiter__(self) -> AsyncIterator[events.ServerEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[events.ServerEvent]:
        while True:
            if self.state in ("closed", "failed") and self._queue.empty():
                return
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def next_event(self, timeout_s: float | None = None) -> events.ServerEvent | None:
        """The next event, or None when the session has closed."""
        return await asyncio.wait_for(self._queue.get(), timeout_s)

    def _enqueue(self, event: events.ServerEvent) -> None:
        if self._queue.qsize() >= self._max_queued:
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped_events += 1
        self._queue.put_nowait(event)

    def _on_transport_state(self, generation: int, state: str, reason: str | None = None) -> None:
        if generation != self._live_generation or state != "failed":
            return  # a call being opened reports through connect(); a retired one not at all
        if self.state in ("connected", "reconnecting"):
            self._call_lost(reason or "the call was lost")

    def _on_message(self, generation: int, text: str) -> None:
        restoring = generation == self._restoring_generation
        if generation != self._live_generation and not restoring:
            self._resilience["stale_events"] += 1
            return
        event = self._codec.decode(text)
        try:
            self._handle(event, live=not restoring)
        except Exception:  # a bug in a handler must not kill the transport callback
            logger.exception("handling %s failed", event.type)
        # What a call being restored says (session.created, the replayed items coming back) is
        # the session's business; only its errors reach the application. Acknowledgements of
        # replayed items that arrive after the switch are held back too.
        key = self._ack_key(event)
        if (
            key is not None
            and generation == self._replay_generation
            and key[1] in self._replay_ids
            and key in self._acks_delivered
            and key not in self._replay_held
        ):
            self._replay_held.add(key)
            self._resilience["replay_echoes"] += 1
        elif not restoring or event.type == "error":
            if key is not None:
                self._acks_delivered[key] = None
                if len(self._acks_delivered) > REPLAY_ECHO_MEMORY:
                    self._acks_delivered.popitem(last=False)
            self._enqueue(event)

    @staticmethod
    def _ack_key(event: events.ServerEvent) -> tuple[str, str] | None:
        """(type, item id) of an item acknowledgement; None for any other event."""
        if event.type not in REPLAY_ECHO_EVENTS:
            return None
        item = event.get("item")
        item_id = item.get("id") if isinstance(item, dict) else None
        return (event.type, item_id) if isinstance(item_id, str) else None

    def _handle(self, event: events.ServerEvent, *, live: bool = True) -> None:
        """Bookkeeping for one server event. ``live``: from the call carrying the session (not
        from one being restored, which only adds to the history and the session's identity)."""
        t = event.type
        self._history.observe(t, event.data)
        if live:
            self._qoe.on_event(event)
        if not live:
            if t in SESSION_EVENTS:  # the new call's, from the switch on
                self._next_session.append((event, time.time()))
            elif self.api == "live":
                self._live_transcript.observe(t, event.data)
            return
        if t in SESSION_EVENTS:
            self._apply_session_event(event, time.time())
            if self.api == "realtime":
                return
        if self.api == "live":
            self._handle_live(event)
            return
        if t == "response.created":
            self._response_active = True
            response = event.get("response") or {}
            self._response_id = response.get("id") if isinstance(response, dict) else None
        elif t == "response.done":
            self._response_active = False
            self._response_id = None
        elif t == "input_audio_buffer.speech_stopped":
            self._user_speaking = False
        elif t == "error":
            err = event.get("error") or {}
            if isinstance(err, dict) and err.get("code") == "session_expired":
                self._session_expired(str(err.get("message") or "session_expired"))
        elif t == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "message" and item.get("role") == "assistant":
                self._audio_item_id = item.get("id")
                self._audio_item_start_samples = self._engine.downlink.media_samples_played
        elif t == "output_audio_buffer.started":
            self._audio_playing = True
        elif t in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._audio_playing = False
        elif isinstance(event, events.SpeechStarted):
            self._user_speaking = True
            if self._barge_in and self._audio_item_id and self._assistant_audible():
                self._interrupt()
        elif isinstance(event, events.FunctionCallArgumentsDone):
            tool = self._tools.get(event.name)
            if tool is not None:
                self._spawn(self._run_tool(tool, event))

    def _played_ms(self) -> float:
        played = self._engine.downlink.media_samples_played - self._audio_item_start_samples
        return max(0, played) * 1000.0 / self._audio_options.output_rate_hz

    def _assistant_audible(self) -> bool:
        if self._transport.server_output_buffer:
            return self._audio_playing
        # No server-side output buffer: audio is audible while a response is being generated or
        # while received audio has not all been played yet.
        assert self._audio_item_id is not None
        received = self._transport.audio_received_ms(self._audio_item_id) or 0.0
        return self._response_active or self._played_ms() + 20.0 < received

    def _interrupt(self) -> None:
        """Barge-in: stop playout now and tell the server how much of the item was heard."""
        played_ms = self._played_ms()
        item_id = self._audio_item_id
        assert item_id is not None
        received = self._transport.audio_received_ms(item_id)
        if received is not None:
            played_ms = min(played_ms, received)  # never more than was received
        self._history.note_audio_ms(item_id, received)
        self._engine.downlink.flush()
        self._barge_ins += 1
        self._audio_playing = False
        self._audio_item_id = None
        if not self._transport.server_output_buffer and self._response_active:
            # Nothing on the server stops the response: the client does.
            self._spawn(self._send_quietly(events.response_cancel()))
        truncate = events.conversation_item_truncate(item_id, int(played_ms))
        self._spawn(self._send_quietly(truncate))

    async def _send_quietly(self, event: Mapping[str, Any]) -> None:
        try:
            await self.send(event)
        except errors.RtvoiceError as exc:
            logger.warning("could not send %s: %s", event.get("type"), exc)

    async def _run_tool(self, tool: Tool, call: events.FunctionCallArgumentsDone) -> None:
        result = await self._tool_result(tool, call)
        await self._send_quietly(events.function_call_output(call.call_id, result))
        await self._send_quietly(events.response_create())

    async def _tool_result(self, tool: Tool, call: events.FunctionCallArgumentsDone) -> Any:
        """Run ``tool`` for ``call``; a failure becomes the output the model gets."""
        self._tool_calls += 1
        try:
            arguments = call.parsed_arguments()
            function = tool.function
            if inspect.iscoroutinefunction(function):
                result = (
                    function(**arguments) if isinstance(arguments, dict) else function(arguments)
                )
            else:
                # A synchronous tool runs in a worker thread: the loop never blocks on it.
                def invoke() -> Any:
                    if isinstance(arguments, dict):
                        return function(**arguments)
                    return function(arguments)

                result = await asyncio.get_running_loop().run_in_executor(None, invoke)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # the model gets the failure as the tool's output
            logger.warning("tool %s raised %r", tool.name, exc)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        return result

    def register_tool(
        self,
        function: Callable[..., Any | Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Tool:
        """Register a function for dispatch (call :meth:`update` with ``tools=`` to announce
        tools added after connecting)."""
        tool = _tool_from(function)
        if name:
            tool.name = name
        if description is not None:
            tool.description = description
        if parameters is not None:
            tool.parameters = parameters
        self._tools[tool.name] = tool
        return tool

    @property
    def tools(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()]

    # ------------------------------------------------------------------ the Live API

    def _live_start_config(self, transport: Transport) -> dict[str, Any]:
        """What a Live call starts with: the configuration (WebSocket: with its audio format),
        plus, continuing without a fork, the conversation so far as ``input``; a fork inherits
        everything and sends (almost) nothing."""
        if self._fork_from is not None:
            return (
                {"audio": {"format": dict(LIVE_WS_FORMAT)}} if transport.kind == "websocket" else {}
            )
        cfg: dict[str, Any] = json.loads(json.dumps(self._session_config))
        if transport.kind == "websocket":
            cfg.setdefault("audio", {})["format"] = dict(LIVE_WS_FORMAT)
        if self._continuing and len(self._live_transcript):
            items, left_out = self._live_transcript.as_input()
            cfg["input"] = list(cfg.get("input") or []) + items
            self._live_rebuilt = (len(items), left_out)
        return cfg

    def _require_live(self, what: str) -> None:
        if self.api != "live":
            raise errors.UnsupportedError(f"{what} is a Live API feature (model='gpt-live-1')")

    def _require_realtime(self, what: str, instead: str) -> None:
        if self.api == "live":
            raise errors.UnsupportedError(f"the Live API has no {what}; {instead}")

    async def mute(self) -> str:
        """Live: the server hears silence from now on (``session.input_audio.mute``); the input
        keeps flowing, so the model's timeline stays continuous."""
        self._require_live("mute()")
        return await self.send(live.mute())

    async def unmute(self) -> str:
        self._require_live("unmute()")
        return await self.send(live.unmute())

    async def append_instructions(self, content: str, *, delegation_id: str | None = None) -> str:
        """Live: ``session.instructions.append`` (at most 500 tokens)."""
        self._require_live("append_instructions()")
        return await self.send(live.instructions_append(content, delegation_id))

    async def append_thinking(self, content: str, *, delegation_id: str | None = None) -> str:
        """Live: ``session.thinking.append`` (silent context, e.g. progress of a delegation)."""
        self._require_live("append_thinking()")
        return await self.send(live.thinking_append(content, delegation_id))

    async def append_commentary(self, content: str, *, delegation_id: str | None = None) -> str:
        """Live: ``session.commentary.append`` (speakable; the answer to a client delegation)."""
        self._require_live("append_commentary()")
        return await self.send(live.commentary_append(content, delegation_id))

    def _live_delegates_to_responses(self) -> bool:
        delegation = self._session_config.get("delegation")
        return isinstance(delegation, dict) and delegation.get("type") == "responses"

    def _handle_live(self, event: events.ServerEvent) -> None:
        t = event.type
        self._live_transcript.observe(t, event.data)
        if t == "session.usage.updated":
            usage = event.get("usage")
            if isinstance(usage, dict):
                self._live["usage"] = usage
        elif t == "session.closed":
            self._live_session_closed(str(event.get("reason") or ""))
        elif t == "session.output_transcript.delta":
            self._response_active = True
        elif t == "session.delegation.created":
            self._live["delegations"] += 1
            delegation = event.get("delegation") or {}
            if isinstance(delegation, dict) and delegation.get("target") == "client":
                self._spawn(self._run_client_delegation(dict(event.data)))
        elif t == "response.event":
            nested = event.get("event") or {}
            if isinstance(nested, dict) and nested.get("type") == "response.output_item.done":
                item = nested.get("item") or {}
                if isinstance(item, dict) and item.get("type") == "function_call":
                    self._start_live_tool(item, event.get("delegation_id"))

    async def _live_playout_watch(self) -> None:
        """Live over WebSocket, which has no server-side playout: the model stops itself when
        the user barges in, but what it sent before still waits here for the speaker. Every
        ``LIVE_WATCH_S`` the rule of :func:`rtvoice.live.should_flush_playout` decides whether
        to flush it."""
        while True:
            await asyncio.sleep(LIVE_WATCH_S)
            transport = self._transport
            if self.state != "connected" or transport.server_output_buffer:
                continue
            received = int(getattr(transport, "audio_samples_received", 0))
            played = self._engine.downlink.media_samples_played
            pending_ms = received / 24.0 - played * 1000.0 / self._audio_options.output_rate_hz
            if transport is not self._flush_basis[0]:
                self._flush_basis = (transport, pending_ms)
            buffered_ms = pending_ms - self._flush_basis[1]
            if live.should_flush_playout(
                now_ns=time.monotonic_ns(),
                last_output_ns=int(getattr(transport, "last_audio_delta_ns", 0)),
                buffered_ms=buffered_ms,
                last_voiced_ns=int(self._engine.uplink.stats["last_voiced_ns"]),
            ):
                self._engine.downlink.flush()
                self._flush_basis = (transport, pending_ms)
                self._barge_ins += 1

    def _live_session_closed(self, reason: str) -> None:
        self._live["closed_reason"] = reason
        if self._close_requested or self._closing is not None:
            return
        outcome = live.CLOSE_OUTCOMES.get(reason, "continue")
        if outcome == "closed":
            self._closing = asyncio.ensure_future(self._close_once(f"session closed: {reason}"))
        elif outcome == "failed":
            self._reconnect_error = errors.LiveSessionClosedError(
                f"the Live session was closed by the server: {reason}", reason=reason
            )
            self._set_state("failed", f"session closed: {reason}")
        elif self.state == "connected":
            self._call_lost(f"session closed: {reason}")

    def _start_live_tool(self, item: dict[str, Any], delegation_id: Any) -> None:
        tool = self._tools.get(str(item.get("name")))
        call_id = item.get("call_id")
        if tool is None or not isinstance(call_id, str):
            logger.warning("delegated call to an unknown tool %r", item.get("name"))
            return
        key = str(delegation_id or "")
        self._live_tool_tasks[key] = self._live_tool_tasks.get(key, 0) + 1
        self._spawn(self._run_live_tool(tool, call_id, str(item.get("arguments") or "{}"), key))

    async def _run_live_tool(self, tool: Tool, call_id: str, arguments: str, key: str) -> None:
        """A function call of a delegated response: run it, send its output, and once no other
        call of that delegation is running, continue the response."""
        call = events.FunctionCallArgumentsDone(
            type="response.function_call_arguments.done",
            event_id=None,
            data={"call_id": call_id, "name": tool.name, "arguments": arguments},
            call_id=call_id,
            name=tool.name,
            arguments=arguments,
        )
        result = await self._tool_result(tool, call)
        output = result if isinstance(result, str) else json.dumps(result)
        try:
            item = live.function_call_output_item(call_id, output)
            await self._send_quietly(live.response_item_create(item))
        finally:
            self._live_tool_tasks[key] -= 1
            if self._live_tool_tasks[key] == 0:
                del self._live_tool_tasks[key]
                await self._send_quietly(live.response_create())

    async def _run_client_delegation(self, data: dict[str, Any]) -> None:
        callback = self._on_delegation
        delegation = data.get("delegation") or {}
        delegation_id = delegation.get("id") if isinstance(delegation, dict) else None
        if callback is None or not isinstance(delegation_id, str):
            return
        notice = {**data, "transcript": self._live_transcript.messages()}
        try:
            answer = callback(notice)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # the app's callback: counted, logged once, the session goes on
            self._live["delegation_errors"] += 1
            if self._live["delegation_errors"] == 1:
                logger.warning("on_delegation raised %r (further failures are only counted)", exc)
            return
        if isinstance(answer, str) and answer:
            await self._send_quietly(live.commentary_append(answer, delegation_id))

    # ------------------------------------------------------------------ surviving a lost call

    def _loss_kind(self, transport: Transport, reason: str) -> resilience.LossKind:
        if transport.kind == "websocket":
            code = getattr(transport, "close_code", None)
            if code is not None or "closed the WebSocket" in reason:
                return resilience.classify_close(code, getattr(transport, "close_reason", None))
            return "retry"
        if reason.startswith("peer connection closed"):
            return "hangup"
        return "retry"

    def _call_lost(self, reason: str) -> None:
        """The live call is gone (on the session's loop)."""
        if self._replacing is not None and not self._replacing.done():
            # It ended while its successor is being prepared (recycling, or a reconnect that
            # had switched to a call that failed at once): the replacement carries on.
            self._old_call_lost = True
            self._call_down(reason)
            return
        kind = self._loss_kind(self._transport, reason)
        replace = kind in ("retry", "hangup") and self._policy is not None
        recycle = kind == "recycle" and (self._recycle or self._policy is not None)
        if not (replace or recycle):
            if kind == "hangup":
                if self._closing is None:
                    self._closing = asyncio.ensure_future(self._close_once(reason))
            else:
                self._set_state("failed", reason)
            return
        self._call_down(reason)
        self._start_replacing(reason, recycle=recycle, make_before_break=False)

    def _start_replacing(
        self, reason: str, *, recycle: bool, make_before_break: bool, urgent: bool = False
    ) -> None:
        task = asyncio.ensure_future(
            self._replace(
                reason, recycle=recycle, make_before_break=make_before_break, urgent=urgent
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_weak_method(self._forget_replacing))
        self._replacing = task

    def _forget_replacing(self, task: asyncio.Task[None]) -> None:
        if self._replacing is task:
            self._replacing = None

    def _call_down(self, reason: str) -> None:
        """No call carries the session: reconnecting from now on."""
        if self.api == "live":
            # A stored session continues as a fork of itself; otherwise a new session starts
            # with the conversation so far as its input.
            self._continuing = True
            self._fork_from = self.session_id if self._store else None
            self._fork_refused = 0
        if self.state != "reconnecting":
            self._down_since = time.monotonic()
            self._dropped_at_loss = int(self._engine.uplink.stats["frames_dropped"])
        self._set_state("reconnecting", reason)
        self._interrupt_response(reason)
        self._retire(self._transport)

    def _interrupt_response(self, reason: str) -> None:
        """The call carrying a response is going: report it (it is not re-run) and stop its
        audio."""
        if self._response_active or self._audio_playing:
            data = {
                "type": INTERRUPTED_EVENT,
                "response_id": self._response_id,
                "item_id": self._audio_item_id,
                "reason": reason,
            }
            self._resilience["responses_interrupted"] += 1
            self._enqueue(events.ServerEvent(type=INTERRUPTED_EVENT, event_id=None, data=data))
        self._response_active = self._audio_playing = self._user_speaking = False
        self._audio_item_id = self._response_id = None
        with contextlib.suppress(Exception):
            self._engine.downlink.flush()

    def _retire(self, transport: Transport) -> None:
        """Stop ``transport`` carrying the session (gates closed, callbacks ignored) and close it
        in the background; :meth:`_release` waits for that."""
        generation = self._live_generation
        gates = self._gates.pop(generation, None)
        if gates is not None:
            gates[0].is_open = gates[1].is_open = False
        if generation == self._live_generation:
            self._live_generation = 0
        self._native.others.add(transport)

        async def close() -> None:
            try:
                await transport.close()
            finally:
                self._native.others.discard(transport)

        closer = asyncio.ensure_future(close())
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    async def _new_call(self) -> tuple[Transport, int]:
        """Open one more call on the current engine with closed media gates; raises what the
        attempt raised (the call is then closed)."""
        generation = self._next_generation()
        transport = self._make_transport(generation, is_open=False)
        self._native.others.add(transport)
        try:
            key, multipart_session, hangup_key = await self._credentials()
            self._restoring_generation = generation
            await self._connect_transport(transport, key, multipart_session, hangup_key)
        except BaseException:
            self._forget_call(transport, generation)
            await transport.close()
            raise
        return transport, generation

    def _forget_call(self, transport: Transport, generation: int) -> None:
        self._next_session.clear()
        self._native.others.discard(transport)
        self._gates.pop(generation, None)
        if self._restoring_generation == generation:
            self._restoring_generation = None

    async def _send_direct(self, transport: Transport, event: Mapping[str, Any]) -> None:
        wire = self._codec.prepare(event)
        await transport.send_text(json.dumps(wire, separators=(",", ":"), allow_nan=False))
        self._codec.note_sent()

    async def _restore(
        self, transport: Transport, generation: int, skip: list[str] | None = None
    ) -> tuple[list[str], int]:
        """Replay the configuration (when it changed since the start) and the conversation into
        a new call; the ids of the items replayed and how many were left out."""
        if self.api == "live":
            # A fork holds the conversation; a new session got it as its input at the start.
            return [], 0
        if skip is None and self._config_changed:
            config = {k: v for k, v in self._session_config.items() if k != "model"}
            await self._send_direct(transport, events.session_update(config))
        items, left_out = self._history.replay(
            max_items=self._restore_max_items, max_chars=self._restore_max_chars, skip=skip or ()
        )
        texts = [
            json.dumps(
                self._codec.prepare({"type": "conversation.item.create", "item": item}),
                separators=(",", ":"),
                allow_nan=False,
            )
            for item in items
        ]
        ids = [str(item["id"]) for item in items]
        if generation != self._replay_generation:  # a new call: earlier replays are done with
            self._replay_generation = generation
            self._replay_ids = set()
            self._replay_held = set()
        self._replay_ids.update(ids)
        if texts:
            await transport.send_texts(texts)
            for _ in texts:
                self._codec.note_sent()
        return ids, left_out

    async def _open_restored(
        self, *, immediate: bool
    ) -> tuple[Transport, int, int, list[str], int]:
        """Attempts per the policy until a new call is open and restored: (transport, generation,
        attempts, ids restored, items left out). Raises the last error when they run out."""
        policy = self._policy or ReconnectPolicy(attempts=1)
        reminted = False
        retry_after: float | None = None
        last: BaseException | None = None
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1 or not immediate:
                await asyncio.sleep(policy.delay_s(attempt, retry_after_s=retry_after))
            retry_after = None
            while True:
                self._resilience["attempts"] += 1
                transport: Transport | None = None
                try:
                    transport, generation = await self._new_call()
                    # What the history held at the restore: a recycle later adds only what came
                    # after it (older items the budget left out stay out).
                    self._restore_snapshot = self._history.ids
                    restored, left_out = await self._restore(transport, generation)
                    return transport, generation, attempt, restored, left_out
                except errors.RtvoiceError as exc:
                    last = exc
                    self._resilience["failed_attempts"] += 1
                    if transport is not None:  # opened, then the restore failed
                        self._forget_call(transport, generation)
                        await transport.close()
                    decision = resilience.attempt_decision(
                        exc, reminted=reminted, can_remint=self._can_remint()
                    )
                    if self._fork_refused_now(exc):
                        decision = "retry"
                    logger.info("reconnect attempt %d failed (%s): %s", attempt, decision, exc)
                    if decision == "remint":
                        reminted = True
                        self._remint()
                        continue  # a fresh key at once, in the same attempt
                    if decision == "fatal":
                        raise
                    if isinstance(exc, errors.APIStatusError):
                        retry_after = exc.retry_after_s
                    break
        assert last is not None
        raise last

    async def _replace(
        self, reason: str, *, recycle: bool, make_before_break: bool, urgent: bool = False
    ) -> None:
        """Open a new call, restore the conversation into it and switch the session to it.

        Reconnecting (the old call is gone): with the policy's backoff. Recycling
        (``make_before_break``: the old call still works): the new call is opened and restored
        first, the switch waits for a turn boundary, and only then is the old call closed.
        """
        self._old_call_lost = not make_before_break
        try:
            while True:
                try:
                    transport, generation, attempts, restored, left_out = await self._open_restored(
                        immediate=make_before_break and not self._old_call_lost
                    )
                except errors.RtvoiceError as exc:
                    if not self._old_call_lost:
                        # The old call goes on; if it ends, that loss reconnects.
                        logger.warning("could not open the next call to recycle into: %s", exc)
                        return
                    self._give_up(reason, exc)
                    return
                if not self._old_call_lost:
                    if not urgent:
                        await self._wait_for_turn_boundary()
                    logger.info("switching to the new call (%s)", reason)
                    self._switching = True  # from here sends wait for the new call
                    try:
                        more, _ = await self._restore(
                            transport, generation, skip=self._restore_snapshot
                        )
                    except errors.RtvoiceError:
                        self._forget_call(transport, generation)
                        await transport.close()
                        self._switching = False
                        continue
                    restored = restored + more
                    if not self._old_call_lost:
                        self._interrupt_response(reason)
                        self._retire(self._transport)
                if await self._switch_to(transport, generation):
                    break
                # The new call failed while the queued events were flushed: go again.
                self._old_call_lost = True
            self._report_replaced(reason, recycle, attempts, restored, left_out)
        finally:
            self._switching = False
            self._replacing = None

    async def _wait_for_turn_boundary(self) -> None:
        _, deadline = self._recycle_window()
        while not self._old_call_lost and time.time() < deadline:
            audible = self._audio_item_id is not None and self._assistant_audible()
            if not (self._response_active or self._user_speaking or audible):
                return
            await asyncio.sleep(0.05)

    def _fork_refused_now(self, exc: BaseException) -> bool:
        """Live: the fork was refused (the old session is not closed and finalized yet, or
        cannot be forked): try again, and after ``LIVE_FORK_TRIES`` refusals start a new session
        with the conversation as its input instead."""
        if self.api != "live" or self._fork_from is None:
            return False
        if not isinstance(exc, errors.APIStatusError) or exc.status in (401, 429):
            return False
        if exc.status >= 500:
            return False
        self._fork_refused += 1
        if self._fork_refused >= LIVE_FORK_TRIES:
            logger.warning("the Live session cannot be forked (%s); starting a new one", exc)
            self._fork_from = None
        return True

    def _trim_queued_audio(self) -> None:
        """Of the input that waited for the new call, keep the last ``reconnect_audio_s``."""
        uplink = self._engine.uplink
        stats = uplink.stats
        dropped = int(stats["frames_dropped"]) - getattr(self, "_dropped_at_loss", 0)
        pending = int(stats["pending_input_frames"])
        excess = pending - int(self._reconnect_audio_s * uplink.input_rate)
        while excess > 0:
            # In small pieces: a few seconds taken at once would be one large temporary array,
            # and glibc answers a freed large block by raising its mmap threshold, after which
            # such arrays come from the heap and fragment it (the process's RSS grows).
            taken = int(uplink.take_input(min(excess, DROP_CHUNK_FRAMES)).shape[0])
            if taken == 0:
                break
            excess -= taken
            dropped += taken
        self._resilience["audio_dropped_ms"] += max(dropped, 0) * 1000.0 / uplink.input_rate

    async def _switch_to(self, transport: Transport, generation: int) -> bool:
        """Make ``transport`` the session's call: audio gates open, queued events sent. False
        when it failed while they were being sent (they stay queued)."""
        if self._old_call_lost:
            self._trim_queued_audio()
        up, down = self._gates[generation]
        up.is_open = down.is_open = True
        self._transport = transport
        self._live_generation = generation
        self._restoring_generation = None
        for session_event, received in self._next_session:
            self._apply_session_event(session_event, received)
        self._next_session.clear()
        self._native.others.discard(transport)
        self._native.transport = transport
        flushed = 0
        while (queued := self._send_queue.peek()) is not None:
            text, event = queued
            try:
                await transport.send_text(text)
            except errors.RtvoiceError as exc:
                logger.warning("the new call failed while queued events were sent: %s", exc)
                self._call_down(f"the new call failed: {exc}")
                return False
            self._send_queue.pop()
            self._codec.note_sent()
            self._note_client_event(event)
            flushed += 1
        self._switching = False
        self._resilience["events_flushed"] += flushed
        return generation == self._live_generation

    def _report_replaced(
        self, reason: str, recycle: bool, attempts: int, restored: list[str], left_out: int
    ) -> None:
        was_down = self.state == "reconnecting"
        downtime_ms = (time.monotonic() - self._down_since) * 1000.0 if was_down else 0.0
        stats = self._resilience
        stats["items_restored"] = len(restored)
        stats["items_not_restored"] = left_out
        if was_down:
            stats["last_downtime_ms"] = downtime_ms
            stats["total_downtime_ms"] += downtime_ms
        data: dict[str, Any] = {
            "reason": reason,
            "attempts": attempts,
            "downtime_ms": round(downtime_ms, 1),
            "items_restored": len(restored),
            "items_not_restored": left_out,
            "session_id": self.session_id,
        }
        if self.api == "live":
            forked = self._fork_from is not None
            data["forked"] = forked
            if forked:
                self._live["forks"] += 1
            else:
                self._live["rebuilt_sessions"] += 1
                data["items_restored"], data["items_not_restored"] = self._live_rebuilt
                stats["items_restored"], stats["items_not_restored"] = self._live_rebuilt
            self._fork_from = None
        self._set_state("connected")
        if recycle:
            stats["recycles"] += 1
            data.update(type=RECYCLED_EVENT, make_before_break=not was_down)
            self._enqueue(events.ServerEvent(type=RECYCLED_EVENT, event_id=None, data=data))
        else:
            stats["reconnects"] += 1
            data.update(type=RECONNECTED_EVENT, audio_dropped_ms=stats["audio_dropped_ms"])
            self._enqueue(events.ServerEvent(type=RECONNECTED_EVENT, event_id=None, data=data))
        self._schedule_recycle()

    def _give_up(self, reason: str, exc: BaseException) -> None:
        unsent = self._send_queue.drain_ids()
        message = f"reconnecting failed ({reason}): {exc}"
        if unsent:
            message += f"; {len(unsent)} queued events were not sent"
        self._reconnect_error = errors.ReconnectFailedError(message, unsent_event_ids=unsent)
        self._set_state("failed", errors.redact(message), unsent_event_ids=list(unsent))

    # ------------------------------------------------------------------ recycling

    def _apply_session_event(self, event: events.ServerEvent, received: float) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            return
        self.session_info = session
        session_id = session.get("id")
        self.session_id = session_id if isinstance(session_id, str) else self.session_id
        if event.type in ("session.created", "session.started"):
            self._note_session_created(session, received)

    def _note_session_created(self, session: Mapping[str, Any], received: float) -> None:
        self._session_started = received
        expires = session.get("expires_at")
        self._expires_at = None
        if isinstance(expires, (int, float)) and not isinstance(expires, bool):
            self._expires_at = float(expires) if math.isfinite(expires) else None

    def _recycle_window(self) -> tuple[float, float]:
        """(when to start looking for a turn boundary, when to switch regardless), Unix time."""
        started = self._session_started or time.time()
        end = started + self._max_session_s
        if self._expires_at is not None and started < self._expires_at < end:
            end = self._expires_at
        lead = min(self._recycle_before_s, (end - started) / 2)
        return end - lead, end - min(1.0, lead / 4)

    def _schedule_recycle(self) -> None:
        # Live: a session is continued by forking it once it closed (expired), so there is no
        # make-before-break recycling.
        if not self._recycle or self.api == "live":
            return
        if self._recycle_timer is not None:
            self._recycle_timer.cancel()
        timer = asyncio.ensure_future(self._recycle_when_due(self._live_generation))
        self._tasks.add(timer)
        timer.add_done_callback(self._tasks.discard)
        # Forgotten once done: a cancelled task keeps its coroutine's frame (and this session)
        # alive through its CancelledError, which would make the session a garbage cycle.
        timer.add_done_callback(_weak_method(self._forget_recycle_timer))
        self._recycle_timer = timer

    def _forget_recycle_timer(self, task: asyncio.Task[None]) -> None:
        if self._recycle_timer is task:
            self._recycle_timer = None

    async def _recycle_when_due(self, generation: int) -> None:
        start, _ = self._recycle_window()
        await asyncio.sleep(max(start - time.time(), 0.0))
        if generation != self._live_generation or self.state != "connected":
            return
        if self._replacing is None:
            logger.info("recycling the session before its maximum duration")
            self._start_replacing("max_session", recycle=True, make_before_break=True)

    def _session_expired(self, message: str) -> None:
        """``session_expired`` on the live call: recycle now (the server is about to close)."""
        if self._replacing is not None or self.state != "connected":
            return
        if self._recycle or self._policy is not None:
            # The server ends the call in a moment: switch as soon as the next call is ready.
            self._start_replacing(message, recycle=True, make_before_break=True, urgent=True)

    # ------------------------------------------------------------------ metrics

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll_stats(self) -> None:
        while True:
            try:
                self._stats = await self._transport.get_stats()
                self._qoe.on_stats(self._stats)
                lost = self._stats.get("remote_fraction_lost")
                if lost is not None:
                    # Tell the encoder how much loss the server sees, so FEC is sized for it.
                    self._transport.set_loss_hint(max(5, int(lost * 100 + 0.5)))
            except errors.RtvoiceError:
                pass
            await asyncio.sleep(self._stats_interval_s)

    async def refresh_metrics(self) -> SessionMetrics:
        """Fetch fresh network statistics, then return :attr:`metrics`."""
        if self.state == "connected":
            self._stats = await self._transport.get_stats()
        return self.metrics

    @property
    def metrics(self) -> SessionMetrics:
        s = self._stats
        audio = self._engine.stats()
        up = audio["uplink"]
        received = int(s.get("packets_received", 0))
        lost = int(s.get("packets_lost", 0))
        timings: ConnectTimings = self._transport.timings
        return SessionMetrics(
            state=self.state,
            connect=timings.as_dict(),
            transport=self._transport.kind,
            transport_fallback=self._fallback_reason,
            rtt_ms=s.get("rtt_ms"),
            packets_sent=int(s.get("packets_sent", up["packets"])),
            packets_received=received,
            packets_lost=lost,
            loss_fraction=(lost / (received + lost)) if received + lost > 0 else 0.0,
            jitter_ms=s.get("jitter_ms"),
            remote_packets_lost=s.get("remote_packets_lost"),
            jitter_buffer=audio["jitter_buffer"],
            downlink=(
                {**audio["downlink"], "pcm_dropped_samples": s["pcm_dropped_samples"]}
                if "pcm_dropped_samples" in s
                else audio["downlink"]
            ),
            uplink=up,
            playout=audio["playout"],
            events_received=self._codec.received_count,
            events_sent=self._codec.sent_count,
            malformed_events=self._codec.malformed_count,
            dropped_events=self.dropped_events,
            media_errors=int(s.get("media_errors", 0)),
            media_path=getattr(self._transport, "media_path_used", None),
            media_path_reason=getattr(self._transport, "media_path_reason", None),
            media=dict(s.get("native", {})),
            tool_calls=self._tool_calls,
            barge_ins=self._barge_ins,
            turns=self._qoe.turns,
            live=dict(self._live) if self.api == "live" else {},
            resilience={
                **self._resilience,
                "history_items": len(self._history),
                "history_dropped": self._history.dropped,
                "queued_events": len(self._send_queue),
                "queued_bytes": self._send_queue.bytes,
            },
        )


def _merge_config(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """``session.update`` semantics on the kept configuration: nested objects are merged, other
    values replaced."""
    for key, value in update.items():
        current = base.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            _merge_config(current, value)
        else:
            base[key] = json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


def connect(**kwargs: Any) -> RealtimeSession:
    """Create a session; ``async with rtvoice.connect(...) as session`` opens and closes it.

    Keywords: see :class:`RealtimeSession` (``model``, ``instructions``, ``voice``, ``tools``,
    ``transport="auto"|"webrtc"|"websocket"``, ``base_url``, ``api_key``,
    ``api_version="ga"|"beta"``, ...).
    """
    return RealtimeSession(**kwargs)
