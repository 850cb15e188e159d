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
