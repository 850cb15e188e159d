"""Soak: one session held for N minutes against the simulator, with faults injected on a cycle.

    python benchmarks/soak.py --minutes 30 --loss 0.05 [--transport webrtc] [--fault-every 120]

The simulator runs in a child process (its own recordings grow with the call; they must not
count against the client), with ``--loss`` random packet loss on what it sends. The client
speaks continuously (the packaged hello.wav, then 2.5 s of silence, looped in real time), so the
simulator's voice activity detection answers every utterance; every 2 s it also adds a marker
text item (``conversation.item.create``). Every ``--fault-every`` seconds the next fault of the
cycle is injected on the live call:

- ``freeze``: 3 s without a packet from the server (ridden out, no reconnect);
- ``vanish``: the server goes silent for good (dead-peer detection, reconnect, restore);
- ``expire``: ``session_expired`` then the call ends (recycle into a new call).

Reported: client RSS after a warm-up and at the end (target: growth < 5 MB), reconnects,
recycles and their downtime, markers lost (must be 0: a marker is lost when no call of the
simulator ever held its item, sent directly or replayed), FEC recoveries and concealment.
Exit status 1 when the RSS target is missed or a marker was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import platform
import sys
import threading
import time
from importlib import resources
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

RSS_TARGET_MB = 5.0
FAULTS = ("freeze", "vanish", "expire")


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ----------------------------------------------------------------------------- simulator side


def run_simulator(conn: Connection, loss: float, seed: int) -> None:
    """Child process: a simulator driven by commands on ``conn``."""
    from rtvoice.simulator import Simulator

    async def main() -> None:
        async with Simulator(
            loss=loss, seed=seed, transcribe=lambda pcm: f"utterance of {pcm.size / 48000:.1f} s"
        ) as sim:
            conn.send(("ready", sim.base_url, sim.api_key))
            loop = asyncio.get_running_loop()
            commands: asyncio.Queue[Any] = asyncio.Queue()
            loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
            background: set[asyncio.Task[Any]] = set()
            while True:
                cmd = await commands.get()
                call = sim.last_call
                if cmd[0] == "stop":
                    break
                if cmd[0] == "report":
                    items: set[str] = set()
                    for c in sim.calls.values():
                        items.update(c.items)
                    conn.send(("report", sorted(items), len(sim.calls)))
                elif call is None or call.closed:
                    continue
                elif cmd[0] == "freeze":
                    call.freeze(3.0)
                elif cmd[0] == "vanish":
                    call.vanish()
                elif cmd[0] == "expire":
                    task = asyncio.ensure_future(call.expire_session(how="error", close_after_s=2))
                    background.add(task)
                    task.add_done_callback(background.discard)
            loop.remove_reader(conn.fileno())

    asyncio.run(main())


# ----------------------------------------------------------------------------- client side


class Speaker(threading.Thread):
    """Pushes speech and pauses in real time, looped, until stopped."""

    def __init__(self, session: Any) -> None:
        super().__init__(name="soak-speaker", daemon=True)
        from rtvoice.audio.sources import read_wav

        ref = resources.files("rtvoice") / "data" / "hello.wav"
        with resources.as_file(ref) as path:
            pcm, rate = read_wav(path)
        pause = np.zeros(int(2.5 * rate), dtype=np.float32)
        self.signal = np.concatenate([pcm, pause]).astype(np.float32)
        self.rate = rate
        self.session = session
        self.stopped = threading.Event()
        self.pushed_s = 0.0

    def run(self) -> None:
        chunk = self.rate // 50
        start = time.monotonic()
        k = 0
        while not self.stopped.is_set():
            offset = (k * chunk) % (self.signal.size - chunk)
            delay = start + k * 0.02 - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                return
            try:
                self.session.push_audio(self.signal[offset : offset + chunk], self.rate)
            except Exception:  # the session failed or closed
                return
            self.pushed_s += 0.02
            k += 1


async def soak(args: argparse.Namespace, conn: Connection, base_url: str, key: str) -> int:
    import rtvoice

    session = rtvoice.connect(
        base_url=base_url,
        api_key=key,
        transport=args.transport,
        session={"audio": {"input": {"transcription": {"model": "whisper-1"}}}},
    )
    counts: dict[str, int] = {}
    markers: list[str] = []

    async def consume() -> None:
        async for event in session:
            counts[event.type] = counts.get(event.type, 0) + 1
            if event.type == "rtvoice.state_changed":
                print(
                    f"  {time.strftime('%H:%M:%S')} state {event.get('state')}"
                    + (f" ({event.get('reason')})" if event.get("reason") else ""),
                    flush=True,
                )
            elif event.type in ("rtvoice.reconnected", "rtvoice.recycled"):
                print(
                    f"  {time.strftime('%H:%M:%S')} {event.type}: downtime "
                    f"{event.get('downtime_ms')} ms, items restored {event.get('items_restored')}",
                    flush=True,
                )

    async with session:
        consumer = asyncio.ensure_future(consume())
        speaker = Speaker(session)
        speaker.start()
        await asyncio.sleep(args.warmup)
        if args.trace:
            import tracemalloc

            tracemalloc.start(8)
            trace_start = tracemalloc.take_snapshot()
        rss_start = rss_kb()
        started = time.monotonic()
        end = started + args.minutes * 60
        next_fault = started + args.fault_every
        next_marker = started
        fault_index = 0
        injected: list[str] = []
        while time.monotonic() < end and session.state not in ("failed", "closed"):
            now = time.monotonic()
            if now >= next_marker:
                event_id = await session.send(
                    {
                        "type": "conversation.item.create",
                        "item": {
                            "id": f"item_marker_{len(markers):06d}",
                            "type": "message",
                            "role": "user",
                            "content": [{"type": "input_text", "text": f"marker {len(markers)}"}],
                        },
                    }
                )
                del event_id
                markers.append(f"item_marker_{len(markers):06d}")
                next_marker += 2.0
            if now >= next_fault:
                fault = FAULTS[fault_index % len(FAULTS)]
                fault_index += 1
                injected.append(fault)
                print(f"  {time.strftime('%H:%M:%S')} fault: {fault}", flush=True)
                conn.send((fault,))
                next_fault += args.fault_every
            await asyncio.sleep(0.1)
        # Let the last markers and any reconnect settle before counting.
        deadline = time.monotonic() + 20
        while session.state == "reconnecting" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        rss_end = rss_kb()
        if args.trace:
            import tracemalloc

            top = tracemalloc.take_snapshot().compare_to(trace_start, "filename")
            print("  python heap growth by file (tracemalloc):")
            for stat in top[:12]:
                print(f"    {stat.size_diff / 1024:+9.1f} KiB  {stat.traceback[0].filename}")
            tracemalloc.stop()
        metrics = await session.refresh_metrics()
        speaker.stopped.set()
        speaker.join(2)
        consumer.cancel()
        final_state = session.state
    conn.send(("report",))
    _, items, calls = conn.recv()
    held = set(items)
    lost = [m for m in markers if m not in held]
    res, jb = metrics.resilience, metrics.jitter_buffer
    growth_mb = (rss_end - rss_start) / 1024.0
    played = max(int(jb.get("samples_played", 0)), 1)
    print()
    print(f"soak: {args.minutes:g} min, {args.transport}, loss {args.loss:.0%}, faults {injected}")
    print(
        f"  rss {rss_start / 1024:.1f} MB after {args.warmup:g} s warm-up -> {rss_end / 1024:.1f}"
        f" MB at the end: growth {growth_mb:+.2f} MB (target < {RSS_TARGET_MB:g} MB)"
    )
    print(
        f"  reconnects {res['reconnects']}, recycles {res['recycles']}, attempts "
        f"{res['attempts']} ({res['failed_attempts']} failed), downtime total "
        f"{res['total_downtime_ms']:.0f} ms, last {res['last_downtime_ms']} ms; calls {calls}"
    )
    print(
        f"  markers sent {len(markers)}, lost {len(lost)}; events queued {res['events_queued']},"
        f" flushed {res['events_flushed']}; audio dropped while down "
        f"{res['audio_dropped_ms']:.0f} ms; responses interrupted "
        f"{res['responses_interrupted']}; history {res['history_items']} items "
        f"({res['history_dropped']} dropped)"
    )
    print(
        f"  downlink: fec recovered {jb.get('fec_recovered_frames')} frames, "
        f"concealed {100.0 * int(jb.get('concealed_samples', 0)) / played:.2f} % of "
        f"{played / 48000:.0f} s played, packets lost {jb.get('packets_lost')}; "
        f"uplink frames dropped {metrics.uplink.get('frames_dropped')}; final state {final_state}"
    )
    print(f"  responses {counts.get('response.done', 0)}, speech pushed {speaker.pushed_s:.0f} s")
    print(f"  python {platform.python_version()}, {platform.machine()}")
    return 0 if growth_mb < RSS_TARGET_MB and not lost and final_state == "connected" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--transport", choices=["webrtc", "websocket"], default="webrtc")
    parser.add_argument("--fault-every", type=float, default=120.0, help="seconds between faults")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the first RSS")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--trace", action="store_true", help="print Python heap growth by file")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(child, args.loss, args.seed), daemon=True)
    proc.start()
    try:
        _, base_url, key = parent.recv()
        return asyncio.run(soak(args, parent, base_url, key))
    finally:
        parent.send(("stop",))
        proc.join(10)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
