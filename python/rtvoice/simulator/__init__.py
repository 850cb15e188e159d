"""A local Realtime API simulator on 127.0.0.1: real HTTP endpoints, a real aiortc answerer, and
a scripted assistant (protocol.md §6).

Start::

    async with Simulator(loss=0.1, burst_length=2, jitter_ms=10, seed=7) as sim:
        sim.base_url      # "http://127.0.0.1:<port>/v1"
        sim.api_key       # the standard key it accepts ("sk-sim-...")
        key = sim.mint_key(ttl_s=60)                  # an ek_ key without HTTP
        call = await sim.wait_for_call()             # after a client connected

Endpoints: ``POST /v1/realtime/client_secrets``, ``POST /v1/realtime/calls`` (application/sdp or
multipart ``sdp`` + ``session``; 201, ``Location: /v1/realtime/calls/rtc_...``),
``POST /v1/realtime/calls/{id}/hangup``; with ``beta=True`` also ``POST /v1/realtime/sessions``
and ``POST /v1/realtime?model=`` (beta event names and session shapes on those calls).
WebSocket ``GET /v1/realtime?model=`` (Bearer or ``openai-insecure-api-key.<k>`` subprotocol,
``realtime`` echoed; ``input_audio_buffer.append`` in, ``response.output_audio.delta`` out) and
``?call_id=rtc_...`` (a sideband on a WebRTC call: same events, standard key only). A bad key gets
``error`` + close 3000; ``OpenAI-Beta: realtime=v1`` without ``beta=True`` gets
``beta_api_shape_disabled`` + close 4000.

The assistant: ``session.created`` + ``conversation.created`` when ``oai-events`` opens;
``session.update`` validated (``session.type`` required, unknown fields rejected with ``error``
whose ``error.event_id`` is the client's); an energy VAD on the received audio emits
``input_audio_buffer.speech_started``/``speech_stopped``/``committed``, the user item and (with
``audio.input.transcription`` set) transcription events, then a response: the GA sequence with
``output_audio_buffer.started``/``stopped``, transcript deltas paced over the audio, and the
user's utterance played back on the RTP track (``reply_audio="echo"``, default) or a synthetic
voice (``"synth"``). Speech during playback cancels the response (``turn_detected``) and sends
``output_audio_buffer.cleared``. With function tools in the session it answers with a tool call
and waits for ``function_call_output`` + ``response.create``.

Impairment (outbound RTP, per packet, seeded): :class:`Impairment` or the ``loss``,
``burst_length``, ``jitter_ms``, ``reorder``, ``seed`` keywords. Faults: ``sim.faults``
(:class:`Faults`: ``fail_next(path_suffix, status, body)``, ``bad_answer``, ``ice_failure``,
``answer_delay_s``, ``malformed_after_created``, ``drop_channel_after_s``, ``block_ice``: every
STUN request ignored, so ICE never connects although the SDP POST is answered),
``sim.expire_keys()``, ``sim.advance_time(s)``, ``session_max_s=``, ``ice_lite=True`` (the answer
says ``a=ice-lite`` and, after nomination, binding requests without USE-CANDIDATE go unanswered,
as on OpenAI's media servers; ``call.stun`` counts them); per call ``call.send_raw(text)``,
``call.send_error(...)``, ``call.drop_data_channel()``, ``await call.expire_session()``.

Records: ``sim.requests`` (:class:`RequestRecord`), ``sim.calls``; per :class:`Call`:
``client_events``, ``server_events``, ``received_packets``, ``received_pcm()``, ``utterances``,
``played`` (PCM sent per response id), ``pacer.sent`` (:class:`SentPacket` with impairment
decisions), ``await call.wait_for_client_event(type)``, ``await call.wait_for_server_event(type)``.

The Live API (protocol-live.md) is served beside Realtime: ``Simulator(api="both")`` (default),
``"live"`` or ``"realtime"`` (the other API's routes then answer 404). Standard key only
(``ek_`` keys get 401). Live keywords: ``delegate(transcript) -> bool`` (whether an utterance is
delegated; ``None``: never under client delegation, always when the session has function tools
under Responses delegation), ``fork_ready_after_s=0.2`` (a closed stored session is forkable
this long after it closed; until then ``409 session_not_finalized``), ``live_usage_interval_s=1.0``
(``session.usage.updated``; ``None`` off), ``session_max_s`` (shared: ``expires_at``, then
``session.closed`` ``expired``), and the shared ``transcribe``, ``reply_text``, ``reply_audio``,
``tool_arguments``, ``vad_threshold_dbfs``, impairments and ``ice_lite``.

Endpoints: ``POST /v1/live/sessions`` (JSON ``{"session": MediaSessionConfig, "transport":
{"type": "webrtc", "sdp"}}`` -> 200 ``{"session": {"id": "live_..."}, "transport": {"type":
"webrtc", "sdp": answer}}``; ``session.started`` on ``oai-events`` once it opens; audio on the
RTP track as for Realtime calls); WebSocket ``GET /v1/live/sessions`` (no query; Bearer or
``openai-insecure-api-key.<k>``; first frame ``session.start``, else ``error`` and close 1008;
PCM16 16/24 kHz, G.711 refused with ``unsupported_audio_format``); forks ``POST
/v1/live/sessions/{id}/fork`` (``{"transport", "session"?: {client, delegation, store}}``) and
WebSocket ``/v1/live/sessions/{id}/fork`` (``session.start`` with a ForkSessionConfig, ``{}``
inherits): refused with ``404 session_not_found``, ``400 session_not_stored``, ``409
session_not_closed`` / ``session_not_finalized``, ``immutable_field_update`` for model,
instructions, voice or input; the new session inherits the stored one's transcript.
Validation errors: HTTP 400 / ``error`` events with ``code`` and dotted ``param``
(``unknown_parameter``, ``missing_required_parameter``, ``invalid_type``, ``invalid_value``,
``array_above_max_length``, ``token_limit_exceeded``; ``session.update`` outside ``delegation``
(same type) and ``triggers``: ``immutable_field_update``; odd PCM: ``invalid_audio``; Responses
events without Responses delegation: ``responses_delegation_required``; an early
``response.create``: ``tool_output_missing``; decisions and fixtures: ``unsupported_by_simulator``).

The script, on one ms timeline (the later of input audio read and time since start): an energy
VAD over the input (silence while muted); at the end of an utterance
``session.input_transcript.delta`` (word deltas over its ``start_ms``..``end_ms``), then either a
reply (``session.output_transcript.delta`` deltas spread over the reply audio, which goes on the
RTP track or as ``session.output_audio.delta`` in 100 ms chunks in the session's format, real
time after a 200 ms lead), or a delegation: client (``session.delegation.created`` target
``client``; ``session.commentary.append`` with its id -> ``session.commentary.appended`` and the
content spoken), or Responses (``session.delegation.created`` with ``response_id``, then
``response.event`` wrapping ``response.created``, ``response.output_item.added``,
``response.function_call_arguments.delta``/``.done``, ``response.output_item.done``; after
``response.item.create`` ``function_call_output`` + ``response.create``: ``response.completed``
and the reply "The result is <output>."). Typed text (``response.item.create`` user message +
``response.create``) gets ``response.created``/``output_item.done``/``completed`` and a spoken
reply. Speech during a reply stops it. No done or turn events.

Per :class:`LiveSession` (``sim.live_sessions[id]``, ``await sim.wait_for_live_session()``):
faults ``await close_with(reason)`` (``expired``, ``content``, ``close_requested``: that
``session.closed`` then close; ``connection_lost``: the primary drops without a word), ``vanish()``,
``freeze(s)``, ``resume()``; records ``client_events``, ``server_events``, ``received_pcm()``,
``utterances`` (:class:`LiveUtterance`), ``replies`` (:class:`LiveReply`), ``played``,
``delegations`` (:class:`LiveDelegation`), ``conversation``, ``inherited``, ``transcript()``,
``forked_from``, ``closed_reason``, ``pacer.sent``.
"""

from rtvoice.simulator.call import Call, ReceivedPacket, Utterance
from rtvoice.simulator.impair import Impairer, Impairment
from rtvoice.simulator.live import LiveDelegation, LiveReply, LiveSession, LiveUtterance
from rtvoice.simulator.pacer import RtpPacer, SentPacket
from rtvoice.simulator.server import Faults, HttpFault, RequestRecord, Simulator

__all__ = [
    "Call",
    "Faults",
    "HttpFault",
    "Impairer",
    "Impairment",
    "LiveDelegation",
    "LiveReply",
    "LiveSession",
    "LiveUtterance",
    "ReceivedPacket",
    "RequestRecord",
    "RtpPacer",
    "SentPacket",
    "Simulator",
    "Utterance",
]
