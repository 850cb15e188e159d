"""``rtvoice talk`` (a conversation through the sound devices) and ``rtvoice devices`` (list
them): registered by :mod:`rtvoice.cli` through ``add_talk_parser(sub)`` and
``add_devices_parser(sub)``; each runs through its ``run_*``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_devices_parser", "add_talk_parser", "run_devices", "run_talk"]

# How often talk checks the devices and the deadline and refreshes its status line on a
# terminal; into a file or pipe the line is written every STATUS_LOG_S.
TICK_S = 0.25
STATUS_LOG_S = 2.0


# --------------------------------------------------------------------------------- devices


def add_devices_parser(sub: Any) -> None:
    p = sub.add_parser(
        "devices",
        help="list the sound devices `rtvoice talk` can use",
        description="Lists PortAudio's devices: index, name, host API, input and output "
        "channels and default rate; * marks the default input (<) and output (>).",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    from rtvoice.audio.devices import list_devices
    from rtvoice.audio.sources import DeviceError
    from rtvoice.cli import EXIT_OK, _fail

    try:
        devices = list_devices()
    except DeviceError as exc:
        return _fail(args, str(exc))
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
        return EXIT_OK
    if not devices:
        print("no sound devices")
    for d in devices:
        mark = ("<" if d.default_input else " ") + (">" if d.default_output else " ")
        print(
            f"{mark} {d.index:3d}  {d.name:<32} {d.host_api:<10} in {d.max_input_channels:2d}"
            f"  out {d.max_output_channels:2d}  {d.default_rate_hz:.0f} Hz"
        )
    return EXIT_OK


# --------------------------------------------------------------------------------- talk


def add_talk_parser(sub: Any) -> None:
    from rtvoice.cli import add_api_key_options

    p = sub.add_parser(
        "talk",
        help="talk to the Realtime API with your microphone and speaker",
        description="Connects to the Realtime API (default https://api.openai.com/v1) over "
        "WebRTC and holds a conversation through sound devices (sounddevice/PortAudio, 48 kHz "
        "mono), with echo cancellation, noise suppression, gain control and a high-pass filter "
        "in the native capture path. Ctrl-C hangs up.",
    )
    p.add_argument("--base-url", default=None, help="default: $OPENAI_BASE_URL or the real API")
    add_api_key_options(p, "API key")
    p.add_argument("--model", default="gpt-realtime")
    p.add_argument("--voice", default=None)
    p.add_argument("--instructions", default="You are a helpful voice assistant.")
    p.add_argument("--api-version", choices=["ga", "beta"], default="ga")
    p.add_argument(
        "--transport",
        choices=["webrtc", "websocket"],
        default="webrtc",
        help="WebRTC (default) or WebSocket; voice processing runs on both",
    )
    p.add_argument("--seconds", type=float, default=None, help="hang up after N seconds")
    p.add_argument(
        "--input-device", default=None, help="microphone: index or name (see `rtvoice devices`)"
    )
    p.add_argument(
        "--output-device", default=None, help="speaker: index or name (see `rtvoice devices`)"
    )
    p.add_argument("--block-ms", type=int, choices=[10, 20], default=20, help="device block")
    p.add_argument(
        "--callbacks",
        choices=["auto", "native", "python"],
        default="auto",
        help="device callbacks: native (no GIL; the default where available) or sounddevice's",
    )
    p.add_argument(
        "--latency",
        default="low",
        help="PortAudio's suggested latency: low, high or seconds (default: low)",
    )
    p.add_argument("--no-aec", action="store_true", help="turn echo cancellation off")
    p.add_argument(
        "--aec-suppression",
        choices=["low", "moderate", "high"],
        default="moderate",
        help="the WebRTC canceller's residual echo suppression (default: moderate)",
    )
    p.add_argument("--no-noise-suppression", action="store_true")
    p.add_argument("--no-agc", action="store_true", help="turn automatic gain control off")
    p.add_argument("--no-high-pass", action="store_true")
    p.add_argument(
        "--aec-backend",
        choices=["webrtc", "speex"],
        default=None,
        help="voice processing library (default: the build's preferred one)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write the call's QoE report (PATH.html or PATH.png; needs the report extra)",
    )
    p.set_defaults(func=run_talk)


def _latency(text: str) -> str | float:
    from rtvoice.cli import CliError

    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--latency must be low, high or seconds, not {text!r}") from None
    if not 0 < value <= 1:
        raise CliError(f"--latency must be between 0 and 1 s, not {value}")
    return value


def _db(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.0f}"


def talk_status_line(m: Any) -> str:
    """One status line: state, input and output levels (dBFS), RTT, jitter-buffer delay, AEC
    state and device under/overflows, from :class:`rtvoice.SessionMetrics`."""
    proc = m.uplink.get("processing") or {}
    if proc.get("aec"):
        delay = proc.get("backend_delay_ms", -1)
        aec = f"aec on -{_db(proc.get('echo_suppression_db'))} dB" + (
            f" delay {delay} ms" if delay is not None and delay >= 0 else ""
        )
    else:
        aec = "aec off"
    rtt = "-" if m.rtt_ms is None else f"{m.rtt_ms:.0f} ms"
    return (
        f"{m.state:<10} in {_db(proc.get('capture_dbfs'))} dBFS"
        f"  out {_db(proc.get('render_dbfs'))} dBFS  rtt {rtt}"
        f"  jb {m.jitter_buffer.get('current_delay_ms', 0):.0f} ms  {aec}"
        f"  xruns in {m.uplink.get('device_input_overflows', 0)}"
        f" out {m.downlink.get('device_output_underflows', 0)}"
    )


async def _talk(args: argparse.Namespace) -> dict[str, Any]:
    from rtvoice import errors
    from rtvoice.audio.devices import DeviceStreams, import_sounddevice, resolve_device
    from rtvoice.audio.engine import VoiceProcessing, apply_voice_processing, stream_delay_for
    from rtvoice.audio.sources import DeviceError
    from rtvoice.cli import CliError, api_key_from
    from rtvoice.session import connect

    latency = _latency(args.latency)
    report_path: Path | None = getattr(args, "report", None)
    if report_path is not None:
        from rtvoice import qoe

        if report_path.suffix.lower() not in (".html", ".htm", ".png"):
            raise CliError(f"--report {report_path}: the report is a .html or .png file")
        if importlib.util.find_spec("matplotlib") is None:
            raise CliError(f"--report needs matplotlib: {qoe.REPORT_EXTRA}")
    api_key = api_key_from(args)
    if not api_key:
        raise CliError("no API key: set OPENAI_API_KEY or pass --api-key-file PATH")
    # A missing library or device is reported before anything connects.
    try:
        import_sounddevice()
        mic = resolve_device(args.input_device, "input")
        speaker = resolve_device(args.output_device, "output")
    except DeviceError as exc:
        raise CliError(str(exc)) from exc
    vp = VoiceProcessing(
        aec=not args.no_aec,
        noise_suppression=not args.no_noise_suppression,
        agc=not args.no_agc,
        high_pass=not args.no_high_pass,
        backend=args.aec_backend,
        aec_suppression={"low": 0, "moderate": 1, "high": 2}[
            getattr(args, "aec_suppression", "moderate")
        ],
    )
    # The devices feed the native pipelines directly; with voice processing the uplink takes
    # 48 kHz on either transport (the WebSocket one converts to its 24 kHz PCM16 natively,
    # after the canceller).
    session = connect(
        base_url=args.base_url,
        api_key=api_key,
        model=args.model,
        voice=args.voice,
        instructions=args.instructions,
        api_version=args.api_version,
        transport=getattr(args, "transport", "webrtc"),
        headless_playout=False,
        record_output=False,
        voice_processing=vp,
    )
    log = sys.stderr
    live = not args.quiet
    streams: DeviceStreams | None = None
    counts: dict[str, int] = {}
    failed = asyncio.Event()
    interrupted = False
    t_start = time.monotonic()
    consumer: asyncio.Future[None] | None = None
    try:
        try:
            await session.open()
        except errors.RtvoiceError as exc:
            raise CliError(f"could not connect: {exc}") from exc
        apply_voice_processing(session.uplink, session.downlink, vp)
        streams = DeviceStreams(
            session.uplink,
            session.downlink,
            input_device=mic,
            output_device=speaker,
            block_ms=args.block_ms,
            latency=latency,
            native_callbacks={"auto": None, "native": True, "python": False}[
                getattr(args, "callbacks", "auto")
            ],
        )
        try:
            streams.start()
        except DeviceError as exc:
            raise CliError(str(exc)) from exc
        in_s, out_s = streams.latency_s
        # What the reference's lead cannot cover of the device path; the WebRTC backend's delay
        # estimator finds the rest.
        delay_ms = stream_delay_for(vp, in_s, out_s)
        apply_voice_processing(
            session.uplink, session.downlink, dataclasses.replace(vp, stream_delay_ms=delay_ms)
        )
        print(
            f"connected; microphone {mic.name!r} at {streams.input_rate_hz} Hz, speaker "
            f"{speaker.name!r} at {streams.output_rate_hz} Hz (latency {in_s * 1000:.0f} / "
            f"{out_s * 1000:.0f} ms); speak now (Ctrl-C to hang up)",
            file=log,
            flush=True,
        )

        async def consume() -> None:
            async for event in session:
                counts[event.type] = counts.get(event.type, 0) + 1
                if event.type == "response.output_audio_transcript.done":
                    print(f"assistant: {event.get('transcript', '')}", file=log, flush=True)
                elif event.type == "conversation.item.input_audio_transcription.completed":
                    print(f"you: {event.get('transcript', '')}", file=log, flush=True)
                elif event.type == "rtvoice.state_changed" and event.get("state") == "failed":
                    failed.set()
            failed.set()  # the event stream ended: the session closed under us

        consumer = asyncio.ensure_future(consume())
        deadline = None if args.seconds is None else t_start + args.seconds
        # The deadline and the devices are checked on a timer, not on server events: a server
        # that sends nothing cannot keep the call open.
        next_status = time.monotonic()
        try:
            while deadline is None or time.monotonic() < deadline:
                if failed.is_set():
                    raise CliError(f"the connection ended (state {session.state})")
                try:
                    streams.check()
                except DeviceError as exc:
                    raise CliError(str(exc)) from exc
                if live and (log.isatty() or time.monotonic() >= next_status):
                    end = "\r" if log.isatty() else "\n"
                    print(talk_status_line(session.metrics), end=end, file=log, flush=True)
                    next_status = time.monotonic() + STATUS_LOG_S
                await asyncio.sleep(TICK_S)
        except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
            interrupted = True
        if live and log.isatty():
            print(file=log)
        metrics = session.metrics
    finally:
        if streams is not None:
            streams.stop()
        await session.close()
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    summary = {
        "ok": True,
        "interrupted": interrupted,
        "seconds": round(time.monotonic() - t_start, 2),
        "input_device": mic.name,
        "output_device": speaker.name,
        "device_rates_hz": [streams.input_rate_hz, streams.output_rate_hz],
        "transport": metrics.transport,
        "native_callbacks": streams.native_callbacks,
        "events": counts,
        "uplink": metrics.uplink,
        "downlink": metrics.downlink,
        "jitter_buffer": metrics.jitter_buffer,
        "report": str(report_path) if report_path else None,
    }
    if report_path is not None:
        from rtvoice import qoe

        qoe.write_session_report(report_path, session)
    print(
        f"rtvoice talk: hung up after {summary['seconds']} s"
        + (" (interrupted)" if interrupted else ""),
        file=log,
        flush=True,
    )
    return summary


def run_talk(args: argparse.Namespace) -> int:
    from rtvoice import errors
    from rtvoice.cli import EXIT_OK, CliError, _fail

    try:
        summary = asyncio.run(_talk(args))
    except CliError as exc:
        return _fail(args, str(exc))
    except errors.RtvoiceError as exc:
        return _fail(args, f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:  # before the call was up
        return _fail(args, "interrupted")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return EXIT_OK
