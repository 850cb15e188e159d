"""``rtvoice token`` and ``rtvoice serve-sim``: registered by :mod:`rtvoice.cli` through
``add_token_parser(sub)`` and ``add_serve_sim_parser(sub)``; each runs through its ``run_*``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any

__all__ = ["add_serve_sim_parser", "add_token_parser", "run_serve_sim", "run_token"]


# --------------------------------------------------------------------------------- token


def add_token_parser(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="mint an ephemeral client key (ek_...) and print it",
        description=(
            "Mints an ephemeral key with the standard API key (--api-key or OPENAI_API_KEY) at "
            "--base-url (or OPENAI_BASE_URL, default https://api.openai.com/v1) and prints it. "
            "GA: POST /realtime/client_secrets; --api-version beta: POST /realtime/sessions."
        ),
    )
    p.add_argument("--api-key", help="standard API key (default: $OPENAI_API_KEY)")
    p.add_argument("--base-url", help="API base URL including /v1 (default: $OPENAI_BASE_URL)")
    p.add_argument("--model", help="model attached to the key's session")
    p.add_argument("--instructions", help="instructions attached to the key's session")
    p.add_argument("--voice", help="voice attached to the key's session")
    p.add_argument("--ttl", type=int, help="key lifetime in seconds (10-7200; server default 600)")
    p.add_argument("--api-version", choices=("ga", "beta"), default="ga")
    p.add_argument("--json", action="store_true", help="print value, expires_at and session")
    p.set_defaults(func=run_token)


async def _token(args: argparse.Namespace) -> dict[str, Any]:
    from rtvoice import auth

    session: dict[str, Any] = {}
    if args.model:
        session["model"] = args.model
    if args.instructions:
        session["instructions"] = args.instructions
    if args.voice:
        session["audio"] = {"output": {"voice": args.voice}}
    if session:
        session["type"] = "realtime"
    key = await auth.create_client_secret(
        api_key=args.api_key,
        base_url=args.base_url,
        session=session or None,
        ttl_s=args.ttl,
        api_version=args.api_version,
    )
    return {"value": key.value, "expires_at": int(key.expires_at), "session": key.session}


def run_token(args: argparse.Namespace) -> int:
    from rtvoice import errors

    try:
        out = asyncio.run(_token(args))
    except (errors.RtvoiceError, ValueError, TypeError) as exc:
        print(f"rtvoice token: {errors.redact(str(exc))}", file=sys.stderr)
        return 1
    # The key is the command's output by design; it goes to stdout only, never to a log.
    print(json.dumps(out, indent=2) if args.json else out["value"])
    return 0


# --------------------------------------------------------------------------------- serve-sim


def add_serve_sim_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve-sim",
        help="run the local Realtime API simulator on 127.0.0.1",
        description=(
            "Serves the Realtime API simulator (client secrets, calls, a WebRTC answerer and a "
            "scripted assistant) on 127.0.0.1 until interrupted. Prints its base URL and the "
            "standard key it accepts."
        ),
    )
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--api-key", help="standard key the simulator accepts (default: generated)")
    p.add_argument("--beta", action="store_true", help="also serve the beta endpoints")
    p.add_argument("--loss", type=float, default=0.0, help="fraction of RTP packets dropped")
    p.add_argument("--burst", type=float, default=0.0, help="mean loss burst length (packets)")
    p.add_argument("--jitter", type=float, default=0.0, help="RTP send jitter (ms, std dev)")
    p.add_argument("--reorder", type=float, default=0.0, help="fraction of packets reordered")
    p.add_argument("--seed", type=int, default=1, help="impairment seed")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.set_defaults(func=run_serve_sim)


async def _serve(args: argparse.Namespace) -> None:
    simulator: Any = importlib.import_module("rtvoice.simulator")
    sim = simulator.Simulator(
        port=args.port,
        api_key=args.api_key,
        beta=args.beta,
        impairment=simulator.Impairment(
            loss=args.loss,
            burst_length=args.burst,
            jitter_ms=args.jitter,
            reorder=args.reorder,
            seed=args.seed,
        ),
    )
    await sim.start()
    print(f"rtvoice simulator listening: base_url={sim.base_url}", flush=True)
    print(f"standard key: {sim.api_key}", flush=True)
    try:
        if args.seconds is not None:
            await asyncio.sleep(args.seconds)
        else:
            await asyncio.Event().wait()
    finally:
        await sim.stop()


def run_serve_sim(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        print(f"rtvoice serve-sim: {exc}", file=sys.stderr)
        return 1
    return 0
