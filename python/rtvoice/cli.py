"""The ``rtvoice`` command: ``demo`` (embedded simulator over real WebRTC), ``talk`` (the real
API with microphone and speaker; :mod:`rtvoice.cli_talk`) and ``devices``. Each subcommand is
added by its own ``add_*_parser`` function and runs through its own ``run_*`` function."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rtvoice.cli_sim import add_serve_sim_parser, add_token_parser
from rtvoice.cli_talk import add_devices_parser, add_talk_parser

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as one clear line and a non-zero exit status."""


def add_api_key_options(p: Any, what: str) -> None:
    """``--api-key-file PATH`` (``-``: stdin) and ``--api-key``, which other users can read in
    the process list (``/proc/<pid>/cmdline``) and so is warned about."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--api-key-file",
        metavar="PATH",
        help=f"read the {what} from PATH, or from stdin with - (default: $OPENAI_API_KEY)",
    )
    group.add_argument(
        "--api-key", help="visible in the process list: prefer OPENAI_API_KEY or --api-key-file"
    )


def api_key_from(args: argparse.Namespace) -> str | None:
    """The key from ``--api-key-file``, else ``--api-key`` (with a warning on stderr), else
    ``OPENAI_API_KEY``; explicit options win over the environment, as in the openai SDK."""
    if args.api_key_file is not None:
        path = args.api_key_file
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read --api-key-file {path}: {type(exc).__name__}") from None
        key = text.strip()
        if not key or any(c.isspace() for c in key):
            # The content is never echoed: it may be a key with a stray character in it.
            raise CliError(f"--api-key-file {path} must hold exactly one key (got none, or spaces)")
        return key
    if args.api_key:
        print(
            "rtvoice: warning: --api-key is visible to other users in the process list; "
            "set OPENAI_API_KEY or use --api-key-file PATH (- for stdin) instead",
            file=sys.stderr,
        )
        return str(args.api_key)
    return os.environ.get("OPENAI_API_KEY") or None


def bundled_clip() -> Path:
    return Path(str(resources.files("rtvoice") / "data" / "hello.wav"))


# --------------------------------------------------------------------------------- demo


def add_demo_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="talk to the embedded Realtime API simulator over real WebRTC on loopback",
        description=(
            "Starts the local Realtime API simulator, connects over WebRTC on 127.0.0.1, plays a "
            "speech clip as the microphone, records what is played back, shows live status and "
            "prints a summary. With --base-url it talks to any Realtime-compatible server."
        ),
    )
    p.add_argument("--input", type=Path, help="WAV clip used as the microphone (default: bundled)")
    p.add_argument("--output", type=Path, help="write the played audio to this WAV file")
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="run for N seconds (default: until the reply ends, at most 30 s)",
    )
    p.add_argument(
        "--loss", type=float, default=0.0, help="simulator: fraction of RTP packets lost (e.g. 0.1)"
    )
    p.add_argument("--jitter", type=float, default=0.0, help="simulator: RTP jitter in ms")
    p.add_argument("--seed", type=int, default=1, help="simulator: impairment seed")
    p.add_argument(
        "--base-url", help="a Realtime-compatible server, e.g. https://api.openai.com/v1"
    )
    add_api_key_options(p, "key for --base-url")
    p.add_argument("--model", default="gpt-realtime")
    p.add_argument("--api-version", choices=["ga", "beta"], default="ga")
    p.add_argument(
        "--transport",
        choices=["auto", "webrtc", "websocket"],
        default="auto",
        help="auto: WebRTC, falling back to WebSocket when WebRTC cannot connect",
    )
    p.add_argument(
        "--block-ice",
        action="store_true",
        help="simulator: never answer ICE checks (shows the fallback to WebSocket)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="write a QoE report of the call: PATH.html (self-contained page) or PATH.png "
        "(plots); needs matplotlib: pip install 'rtvoice[report]'",
    )
    p.set_defaults(func=run_demo)


async def _start_simulator(args: argparse.Namespace) -> tuple[Any, str, str]:
    try:
        simulator = importlib.import_module("rtvoice.simulator")
    except ImportError as exc:
        raise CliError(f"the embedded simulator is not available in this build ({exc})") from exc
    sim = simulator.Simulator(
        loss=args.loss, jitter_ms=args.jitter, seed=args.seed, beta=args.api_version == "beta"
    )
    sim.faults.block_ice = bool(getattr(args, "block_ice", False))
    await sim.start()
    return sim, sim.base_url, sim.api_key


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _status_line(m: Any, playing: bool) -> str:
    jb = m.jitter_buffer
    if m.transport != "webrtc":
        jb_text = "pcm" if playing else "idle"  # WebSocket audio: a PCM buffer, no jitter buffer
    else:
        jb_text = _fmt(jb.get("current_delay_ms"), " ms", 0) if playing else "idle"
    concealed_ms = jb.get("concealed_samples", 0) / 48.0
    return (
        f"{m.state:<10} {m.transport:<9} rtt {_fmt(m.rtt_ms, ' ms')}  jb {jb_text}"
        f"  loss {m.loss_fraction * 100:.1f}%  fec {jb.get('fec_recovered_frames', 0)}"
        f"  concealed {concealed_ms:.0f} ms  sent {m.packets_sent}"
        f"  recv {m.packets_received}"
    )


def _turn_summary(turn: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "latency_ms",
        "server_ms",
        "network_ms",
        "jitter_buffer_ms",
        "playout_ms",
        "speech_stopped_ms",
        "after_speech_stopped_ms",
    )
    out: dict[str, Any] = {"turn": int(turn["index"]) + 1}
    for key in keys:
        value = turn.get(key)
        out[key] = None if value is None else round(float(value), 1)
    return out


def _turn_line(turn: dict[str, Any]) -> str:
    """One measured turn: latency and its parts (see :mod:`rtvoice.qoe`)."""
    t = _turn_summary(turn)
    stopped = t["speech_stopped_ms"]
    tail = f" (server speech_stopped +{stopped:.0f} ms)" if stopped is not None else ""
    return (
        f"turn {t['turn']}: {t['latency_ms']:.0f} ms from end of speech to reply heard = "
        f"server {_fmt(t['server_ms'], digits=0)} + network {_fmt(t['network_ms'], digits=0)}"
        f" + jitter buffer {_fmt(t['jitter_buffer_ms'], digits=0)}"
        f" + playout {_fmt(t['playout_ms'], digits=0)} ms{tail}"
    )


def mouth_to_ear_ms(
    rtt_ms: float | None, uplink_queued_ms: float, jitter_buffer_ms: float
) -> float | None:
    """Client-side mouth-to-ear: audio waiting in the uplink + half the RTT + the jitter
    buffer's delay while playing + one 20 ms playout frame (server processing excluded)."""
    if rtt_ms is None:
        return None
    return float(uplink_queued_ms + rtt_ms / 2 + jitter_buffer_ms + 20.0)


async def _demo(args: argparse.Namespace) -> dict[str, Any]:
    from rtvoice import errors, qoe
    from rtvoice.audio.sources import WavSource, write_wav
    from rtvoice.session import connect

    report_path: Path | None = args.report
    if report_path is not None:
        if report_path.suffix.lower() not in (".html", ".htm", ".png"):
            raise CliError(f"--report {report_path}: the report is a .html or .png file")
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError(f"--report needs matplotlib: {qoe.REPORT_EXTRA}")
    clip = args.input or bundled_clip()
    if not Path(clip).is_file():
        raise CliError(f"input clip not found: {clip}")
    try:
        source = WavSource(clip, lead_s=0.5, tail_s=1.5)
    except ValueError as exc:
        raise CliError(str(exc)) from exc

    sim = None
    if args.base_url:
        base_url = args.base_url
        api_key = api_key_from(args)
        if not api_key:
            raise CliError("--base-url needs a key: set OPENAI_API_KEY or pass --api-key-file")
    else:
        sim, base_url, api_key = await _start_simulator(args)

    log = sys.stderr
    live = not args.quiet and not args.json
    session = connect(
        base_url=base_url,
        api_key=api_key,
        model=args.model,
        api_version=args.api_version,
        instructions="You are a helpful voice assistant. Be brief.",
        transport=args.transport,
        # The whole run is recorded for --output (the default bound is a few seconds).
        record_output_s=(args.seconds if args.seconds is not None else 30.0) + 10.0,
    )
    counts: dict[str, int] = {}
    transcripts: list[str] = []
    uplink_samples: list[float] = []
    jb_delays: list[float] = []
    finished = asyncio.Event()
    heard_reply = False
    # Live: the reply is the output transcript's deltas (there are no done events).
    is_live = session.api == "live"
    live_reply: list[str] = []
    consumer: asyncio.Future[None] | None = None
    try:
        try:
            await session.open()
        except errors.RtvoiceError as exc:
            raise CliError(f"could not connect to {base_url}: {exc}") from exc
        if live:
            via = session.metrics.transport
            fallback = session.metrics.transport_fallback
            note = f" after WebRTC failed: {fallback}" if fallback else ""
            print(f"connected to {base_url} over {via}{note}", file=log)
        session.attach_source(source)
        t_start = time.monotonic()
        limit_s = args.seconds if args.seconds is not None else 30.0

        async def consume() -> None:
            nonlocal heard_reply
            async for event in session:
                counts[event.type] = counts.get(event.type, 0) + 1
                if event.type == "response.output_audio_transcript.done":
                    transcripts.append(str(event.get("transcript", "")))
                if event.type == "session.output_transcript.delta":
                    live_reply.append(str(event.get("delta", "")))
                if event.type == qoe.TURN_EVENT and live:
                    end = "\n" if log.isatty() else ""
                    print(f"{end}{_turn_line(event.data)}", file=log, flush=True)
                if event.type in ("output_audio_buffer.stopped", "response.done"):
                    heard_reply = True
                if event.type == "rtvoice.state_changed" and event.get("state") == "failed":
                    finished.set()

        async def status() -> None:
            nonlocal heard_reply
            media_before = 0
            quiet_polls = 0
            while True:
                m = await session.refresh_metrics()
                up = session.uplink
                uplink_samples.append(m.uplink["pending_input_frames"] * 1000.0 / up.input_rate)
                media = int(m.downlink["media_samples_played"])
                playing = media > media_before  # received audio played since the last poll
                media_before = media
                # Live: a reply was heard once its transcript came and its audio stopped.
                quiet_polls = 0 if playing else quiet_polls + 1
                if is_live and live_reply and media > 0 and quiet_polls >= 2:
                    heard_reply = True
                if playing and m.transport == "webrtc":
                    jb_delays.append(float(m.jitter_buffer["current_delay_ms"]))
                if live:
                    end = "\r" if log.isatty() else "\n"
                    print(_status_line(m, playing), end=end, file=log, flush=True)
                done_clip = source.done.is_set()
                if args.seconds is None and done_clip and heard_reply:
                    # Let the tail of the reply play out of the jitter buffer.
                    await asyncio.sleep(0.6)
                    finished.set()
                    return
                if time.monotonic() - t_start >= limit_s:
                    finished.set()
                    return
                await asyncio.sleep(0.5)

        consumer = asyncio.ensure_future(consume())
        reporter = asyncio.ensure_future(status())
        finish = asyncio.ensure_future(finished.wait())
        # A failure of the status loop ends the demo with its error rather than a hang.
        await asyncio.wait({finish, reporter}, return_when=asyncio.FIRST_COMPLETED)
        finish.cancel()
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        if live and log.isatty():
            print(file=log)
        if session.state == "failed":
            raise CliError("the connection failed during the demo")
        metrics = await session.refresh_metrics()
        elapsed_s = time.monotonic() - t_start
    finally:
        await session.close()
        if sim is not None:
            await sim.stop()
    if consumer is not None:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer

    if live_reply:
        transcripts.append("".join(live_reply).strip())
    played = session.read_audio()
    if args.output:
        write_wav(args.output, played, session.output_rate_hz)
    turns = metrics.turns
    median_turn = qoe.median_latency_ms(turns)
    queued_ms = float(np.median(uplink_samples)) if uplink_samples else 0.0
    jb_delay_ms = float(np.median(jb_delays)) if jb_delays else 0.0
    jb = metrics.jitter_buffer
    # Without received audio there is no jitter-buffer delay to measure, hence no figure.
    m2e = mouth_to_ear_ms(metrics.rtt_ms, queued_ms, jb_delay_ms) if jb_delays else None
    summary: dict[str, Any] = {
        "ok": True,
        "server": "simulator" if sim is not None else base_url,
        "call_id": session.transport.call_id,
        "api": session.api,
        "model": args.model,
        "transport": metrics.transport,
        "transport_fallback": metrics.transport_fallback,
        "seconds": round(elapsed_s, 2),
        "connect_ms": {k: (None if v is None else round(v, 1)) for k, v in metrics.connect.items()},
        "packets_sent": metrics.packets_sent,
        "packets_received": metrics.packets_received,
        "packets_lost": metrics.packets_lost,
        "loss_percent": round(metrics.loss_fraction * 100, 2),
        "rtt_ms": None if metrics.rtt_ms is None else round(metrics.rtt_ms, 2),
        "jitter_ms": None if metrics.jitter_ms is None else round(metrics.jitter_ms, 2),
        "fec_recovered_frames": jb["fec_recovered_frames"],
        "concealed_ms": round(jb["concealed_samples"] / 48.0, 1),
        "concealment_events": jb["concealment_events"],
        "tail_concealed_ms": round(jb["tail_concealed_samples"] / 48.0, 1),
        "pcm_underruns": metrics.downlink["pcm_underruns"],
        "late_playout_ticks": metrics.playout.get("late_ticks", 0),
        "jitter_buffer_delay_ms": round(jb_delay_ms, 1),
        "uplink_queue_ms": round(queued_ms, 1),
        "mouth_to_ear_ms": None if m2e is None else round(m2e, 1),
        "turns": [_turn_summary(t) for t in turns],
        "turn_latency_median_ms": None if median_turn is None else round(median_turn, 1),
        "report": str(report_path) if report_path else None,
        "played_seconds": round(played.size / session.output_rate_hz, 2),
        "output": str(args.output) if args.output else None,
        "events": counts,
        "transcripts": transcripts,
    }
    if report_path is not None:
        settings = {
            "server": summary["server"],
            "transport": metrics.transport,
            "transport fallback": metrics.transport_fallback,
            "model": args.model,
            "input clip": str(clip),
            "simulator loss": args.loss if sim is not None else None,
            "simulator jitter ms": args.jitter if sim is not None else None,
            "simulator seed": args.seed if sim is not None else None,
            "output rate Hz": session.output_rate_hz,
        }
        keys = (
            "packets_sent",
            "packets_received",
            "loss_percent",
            "rtt_ms",
            "fec_recovered_frames",
            "concealed_ms",
            "tail_concealed_ms",
            "jitter_buffer_delay_ms",
            "turn_latency_median_ms",
            "seconds",
        )
        qoe.write_report(
            report_path,
            qoe.recorder_of(session).report(
                connect_ms=metrics.connect,
                settings=settings,
                summary={k: summary[k] for k in keys},
            ),
        )
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    c = s["connect_ms"]
    print("rtvoice demo summary")
    print(f"  server            {s['server']} (call {s['call_id']})")
    via = s["transport"] + (
        f" (fell back from WebRTC: {s['transport_fallback']})" if s["transport_fallback"] else ""
    )
    print(f"  transport         {via}")
    print(
        "  connect           "
        f"total {_fmt(c['total_ms'], ' ms')} = key {_fmt(c['key_ms'], ' ms')}"
        f" + ICE gathering {_fmt(c['ice_gathering_ms'], ' ms')}"
        f" + SDP POST {_fmt(c['sdp_post_ms'], ' ms')}"
        f" + ICE/DTLS {_fmt(c['ice_dtls_ms'], ' ms')}"
        f" + data channel {_fmt(c['data_channel_ms'], ' ms')}"
        f" + WebSocket handshake {_fmt(c.get('handshake_ms'), ' ms')}"
        f" + {'session.started' if s.get('api') == 'live' else 'session.created'}"
        f" {_fmt(c['session_created_ms'], ' ms')}"
    )
    print(
        f"  packets           sent {s['packets_sent']}, received {s['packets_received']}, "
        f"lost {s['packets_lost']} ({s['loss_percent']}%)"
    )
    print(
        f"  network           RTT {_fmt(s['rtt_ms'], ' ms', 2)}, "
        f"jitter {_fmt(s['jitter_ms'], ' ms', 2)}"
    )
    print(
        f"  playout           {s['fec_recovered_frames']} FEC recoveries, "
        f"{s['concealed_ms']} ms concealed ({s['concealment_events']} events), "
        f"{s['tail_concealed_ms']} ms of talkspurt fade-outs, "
        f"{s['pcm_underruns']} PCM underruns, {s['late_playout_ticks']} late playout ticks"
    )
    print(
        f"  mouth-to-ear      {_fmt(s['mouth_to_ear_ms'], ' ms')} "
        "(client path: uplink queue + RTT/2 + jitter buffer + 20 ms frame)"
    )
    turns = s["turns"]
    print(
        f"  turns             {len(turns)}, median {_fmt(s['turn_latency_median_ms'], ' ms')} "
        "from end of speech (as sent) to reply heard (as played)"
    )
    for t in turns:
        print(f"    {_turn_line({**t, 'index': t['turn'] - 1})}")
    if s["report"]:
        print(f"  report            {s['report']}")
    print(
        f"  played            {s['played_seconds']} s"
        + (f" -> {s['output']}" if s["output"] else "")
    )
    if s["transcripts"]:
        print(f"  assistant said    {' | '.join(t for t in s['transcripts'] if t)}")


def run_demo(args: argparse.Namespace) -> int:
    from rtvoice import errors

    try:
        summary = asyncio.run(_demo(args))
    except CliError as exc:
        return _fail(args, str(exc))
    except errors.RtvoiceError as exc:
        return _fail(args, f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        return _fail(args, "interrupted")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": message}))
    print(f"rtvoice {args.command}: error: {message}", file=sys.stderr)
    return EXIT_FAILURE


# --------------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtvoice", description="Live voice conversations with the OpenAI Realtime API."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_demo_parser(sub)
    add_talk_parser(sub)
    add_devices_parser(sub)
    add_token_parser(sub)
    add_serve_sim_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
