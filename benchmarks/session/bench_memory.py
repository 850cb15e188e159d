"""Resident memory per idle session: N sessions in one process against one simulator.

The simulator (``python -m rtvoice.cli serve-sim``) runs in its own process. Each measurement
runs in a fresh child process: import rtvoice and aiortc, create the event loop, read VmRSS
(the baseline), open N sessions one after the other (standard key, so each mints an ephemeral
key first on WebRTC), wait until all are connected and idle for ``--idle`` seconds (the uplinks
send silence, as a live microphone would), read VmRSS again. Per session = (after - baseline) / N.

Rows: each transport with the defaults, and with ``record_output=True`` (the opt-in 5 s
recording for ``read_audio()``, which also starts the pump thread). The native buffer sizes of
each row are what the session's engine reports (``AudioEngine.buffer_bytes``), printed per
buffer. ``--trace`` adds a tracemalloc run per transport (Python-heap allocations by file, per
session); what RSS grows beyond that is native (rings, codec state, libsrtp/OpenSSL, thread
stacks and malloc arenas). ``--arena-max N`` adds rows with ``MALLOC_ARENA_MAX=N`` in the
child's environment, to see what glibc's per-thread malloc arenas cost.

Run: python benchmarks/session/bench_memory.py [--n 20] [--idle 3] [--trace] [--arena-max 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TARGET_MB = 8.0


def rss_kb() -> int:
    return _status_kb("VmRSS")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


from rtvoice.audio.engine import AudioEngine, AudioOptions, recording_s  # noqa: E402

ROWS = {"defaults": {}, "record_output=True": {"record_output": True}}


def native_buffer_bytes(transport: str, kwargs: dict[str, Any]) -> dict[str, int]:
    """What a session's native buffers allocate (and zero-fill, so they are resident from the
    start), by buffer, as its engine reports them."""
    options = AudioOptions(
        input_buffer_s=kwargs.get("input_buffer_s", AudioOptions.input_buffer_s),
        record_output_s=recording_s(kwargs.get("record_output"), kwargs.get("record_output_s")),
    )
    engine = AudioEngine("opus" if transport == "webrtc" else "pcm16", options)
    return engine.buffer_bytes()


# --------------------------------------------------------------------------------- child


def child(args: argparse.Namespace) -> None:
    import aiortc  # noqa: F401  (part of the baseline)

    import rtvoice

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    kwargs: dict[str, Any] = dict(ROWS[args.settings])

    async def run() -> dict[str, Any]:
        # One warm-up session is opened and closed first, so lazily imported modules and
        # one-time native allocations are part of the baseline, not of the first session.
        async with rtvoice.connect(
            base_url=args.base_url, api_key=args.api_key, transport=args.transport, **kwargs
        ):
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
        import gc

        gc.collect()
        base = rss_kb()
        base_threads = threads()
        if args.trace:
            import tracemalloc

            tracemalloc.start(1)
            snap0 = tracemalloc.take_snapshot()
        sessions = []
        t0 = time.monotonic()
        for _ in range(args.n):
            s = rtvoice.connect(
                base_url=args.base_url, api_key=args.api_key, transport=args.transport, **kwargs
            )
            await s.open()
            sessions.append(s)
        connect_s = time.monotonic() - t0
        assert all(s.state == "connected" for s in sessions)
        assert all(s.transport.kind == args.transport for s in sessions)
        await asyncio.sleep(args.idle)
        assert all(s.state == "connected" for s in sessions), [s.state for s in sessions]
        gc.collect()
        after = rss_kb()
        out: dict[str, Any] = {
            "transport": args.transport,
            "settings": args.settings,
            "arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "n": args.n,
            "base_kb": base,
            "after_kb": after,
            "per_session_kb": (after - base) / args.n,
            "threads_per_session": (threads() - base_threads) / args.n,
            "python_threads": threading.active_count(),
            "connect_s": connect_s,
        }
        if args.trace:
            snap = tracemalloc.take_snapshot()
            stats = snap.compare_to(snap0, "filename")
            traced = sum(st.size_diff for st in stats)
            out["traced_per_session_kb"] = traced / 1024 / args.n
            top = []
            for st in stats[:12]:
                name = str(st.traceback).split("site-packages/")[-1].split("python3.11/")[-1]
                top.append((name, st.size_diff / 1024 / args.n, st.count_diff / args.n))
            out["top"] = top
            tracemalloc.stop()
        for s in sessions:
            await s.close()
        return out

    result = loop.run_until_complete(run())
    loop.close()
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------- parent


def spawn_simulator() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvoice.cli", "serve-sim", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = re.search(r"base_url=(\S+)", proc.stdout.readline())
    key = re.search(r"standard key: (\S+)", proc.stdout.readline())
    if url is None or key is None:
        proc.kill()
        raise RuntimeError("the simulator did not start")
    return proc, url.group(1), key.group(1)


def run_child(
    transport: str,
    settings: str,
    trace: bool,
    n: int,
    idle: float,
    url: str,
    key: str,
    arena_max: int | None = None,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--transport",
        transport,
        "--n",
        str(n),
        "--idle",
        str(idle),
        "--base-url",
        url,
        "--api-key",
        key,
    ]
    cmd += ["--settings", settings]
    if trace:
        cmd.append("--trace")
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)
    if arena_max is not None:
        env["MALLOC_ARENA_MAX"] = str(arena_max)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--trace", action="store_true", help="add tracemalloc runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--transport", default="webrtc", help=argparse.SUPPRESS)
    parser.add_argument(
        "--arena-max", type=int, help="add rows with MALLOC_ARENA_MAX set in the child"
    )
    parser.add_argument("--settings", default="defaults", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import aiohttp
    import aiortc
    import numpy as np

    import rtvoice

    print(
        f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, aiohttp "
        f"{aiohttp.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
        f"glibc {'.'.join(map(str, os.confstr('CS_GNU_LIBC_VERSION').split()[-1:]))}"
    )
    print(
        f"{args.n} sessions in one process, simulator in another; RSS after {args.idle:g} s idle "
        "minus the baseline (rtvoice + aiortc imported, loop created, one warm-up session closed)"
    )
    t0 = time.monotonic()
    sim, url, key = spawn_simulator()
    rows = []
    try:
        for transport in ("webrtc", "websocket"):
            for settings in ROWS:
                rows.append(run_child(transport, settings, False, args.n, args.idle, url, key))
            if args.arena_max is not None:
                rows.append(
                    run_child(
                        transport, "defaults", False, args.n, args.idle, url, key, args.arena_max
                    )
                )
        traces = []
        if args.trace:
            for transport in ("webrtc", "websocket"):
                traces.append(run_child(transport, "defaults", True, args.n, args.idle, url, key))
    finally:
        sim.terminate()
        sim.wait(5)
    print()
    print(
        "| transport | settings | baseline MB | after MB | per session MB | native buffers MB |"
        " threads per session | target ≤ 8 MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        buffers = native_buffer_bytes(r["transport"], ROWS[r["settings"]])
        per = r["per_session_kb"] / 1024
        settings = r["settings"]
        if r["arena_max"] is not None:
            settings += f", MALLOC_ARENA_MAX={r['arena_max']}"
        print(
            f"| {r['transport']} | {settings} | {r['base_kb'] / 1024:.1f} |"
            f" {r['after_kb'] / 1024:.1f} | {per:.2f} | {sum(buffers.values()) / 2**20:.2f} |"
            f" {r['threads_per_session']:.1f} | {'yes' if per <= TARGET_MB else 'no'} |"
        )
    print()
    print("native buffers per session, KiB (AudioEngine.buffer_bytes):")
    for transport in ("webrtc", "websocket"):
        for name, kwargs in ROWS.items():
            buffers = native_buffer_bytes(transport, kwargs)
            parts = ", ".join(f"{k} {v / 1024:.0f}" for k, v in buffers.items() if v > 2)
            print(f"  {transport}, {name}: {parts}")
    for t in traces:
        print()
        print(
            f"tracemalloc, {t['transport']}, defaults: RSS {t['per_session_kb'] / 1024:.2f} MB "
            f"per session, of which Python heap {t['traced_per_session_kb'] / 1024:.2f} MB; "
            "top files (KB per session, blocks per session):"
        )
        for name, kb, count in t["top"]:
            print(f"  {kb:8.1f} KB {count:7.0f}  {name}")
    print(f"  total {time.monotonic() - t0:.0f} s")
    over = [r for r in rows if r["per_session_kb"] / 1024 > TARGET_MB]
    if over:
        print(f"FAIL: {len(over)} row(s) over {TARGET_MB} MB per session")
        sys.exit(1)


if __name__ == "__main__":
    main()
