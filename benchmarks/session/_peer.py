"""A Realtime-style answerer in its own process, for the session benchmarks.

Run as a script it prints its base URL and serves until killed. It reuses the test answerer and
adds GET /v1/debug/arrivals/{index}: the arrival times (monotonic ns, this host's clock) of every
RTP packet of call number ``index``. Being a separate process, its receive timing is not affected
by whatever the client process does to its own event loop or GIL.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from tests.integration.answerer import MiniAnswerer  # noqa: E402


class BenchPeer(MiniAnswerer):
    async def start(self) -> str:
        url = await super().start()
        # The answerer's routes are frozen once it runs, so the debug route gets its own app.
        app = web.Application()
        app.router.add_get("/arrivals/{index}", self._arrivals)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.debug_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return url

    async def _arrivals(self, request: web.Request) -> web.Response:
        index = int(request.match_info["index"])
        packets = self.sinks[index].packets if index < len(self.sinks) else []
        return web.json_response([p[3] for p in packets])


async def _serve(echo: bool) -> None:
    peer = BenchPeer(echo=echo)
    url = await peer.start()
    print(url, peer.debug_url, flush=True)
    await asyncio.Event().wait()


def spawn(echo: bool = False) -> tuple[subprocess.Popen[str], str, str]:
    """Start the peer process (``echo``: it sends every RTP packet straight back); returns
    (process, base_url, debug_url)."""
    args = [sys.executable, __file__] + (["--echo"] if echo else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise RuntimeError("benchmark peer did not start")
    return proc, line[0], line[1]


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


if __name__ == "__main__":
    asyncio.run(_serve("--echo" in sys.argv))
