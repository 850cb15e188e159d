"""Time from open() to connected over WebSocket when WebRTC cannot connect.

    python benchmarks/session/bench_fallback.py --n 5 --ice-timeout 5

The simulator runs in its own process with ICE blocked (it answers the SDP offer but never a
connectivity check), so every ``transport="auto"`` session waits ``ice_timeout_s`` for ICE, then
falls back to WebSocket. Reported: open() to connected (target: ice_timeout_s + 0.5 s on
loopback) and the part after the WebRTC attempt gave up. A plain ``transport="websocket"`` open
is measured in the same run for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from importlib import metadata

import rtvoice


async def _open_once(base_url: str, key: str, transport: str, ice_timeout_s: float) -> float:
    start = time.perf_counter()
    session = rtvoice.connect(
        base_url=base_url, api_key=key, transport=transport, ice_timeout_s=ice_timeout_s
    )
    await session.open()
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    assert session.metrics.transport == "websocket", session.metrics.transport
    await session.close()
    return elapsed_ms


async def _run(args: argparse.Namespace, base_url: str, key: str) -> int:
    auto = [await _open_once(base_url, key, "auto", args.ice_timeout) for _ in range(args.n)]
    direct = [await _open_once(base_url, key, "websocket", args.ice_timeout) for _ in range(args.n)]
    target_ms = (args.ice_timeout + 0.5) * 1000.0
    print("| open() to connected | runs | p50 ms | max ms | after the ICE timeout, max ms |")
    print("|---|---|---|---|---|")
    print(
        f"| auto, WebRTC blocked → WebSocket | {args.n} | {statistics.median(auto):.1f} |"
        f" {max(auto):.1f} | {max(auto) - args.ice_timeout * 1000:.1f} |"
    )
    print(
        f"| websocket directly | {args.n} | {statistics.median(direct):.1f} | {max(direct):.1f} |"
        " - |"
    )
    ok = max(auto) <= target_ms
    print(f"target ≤ ice_timeout_s + 0.5 s = {target_ms:.0f} ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--ice-timeout", type=float, default=5.0)
    args = parser.parse_args()
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("rtvoice", "aiortc", "aiohttp"))
    print(f"{versions}, Python {sys.version.split()[0]}")
    code = (
        "import asyncio, sys\n"
        "from rtvoice.simulator import Simulator\n"
        "async def main():\n"
        "    async with Simulator() as sim:\n"
        "        sim.faults.block_ice = True\n"
        "        print(sim.base_url, sim.api_key, flush=True)\n"
        "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n"
    )
    sim = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert sim.stdout is not None
        base_url, key = sim.stdout.readline().split()
        status = asyncio.run(_run(args, base_url, key))
    finally:
        assert sim.stdin is not None
        sim.stdin.close()
        sim.wait(10)
    sys.exit(status)


if __name__ == "__main__":
    main()
