"""Playout underruns of a sound device while an application thread holds the GIL.

A private PulseAudio server (tests/integration/pulse.py: a null sink as the speaker, reached by
PortAudio through ALSA's pulse plugin) plays a Downlink through rtvoice's device streams: native
callbacks (rtvoice._core.NativeAudioStream on sounddevice's PortAudio library: no Python and no
GIL on PortAudio's thread) and sounddevice's Python callbacks (each one native call,
Downlink.pull_into_device, that releases the GIL inside). The Downlink plays a continuous tone
pushed in real time by a feeder thread, so every block carries audio. For each configuration it
runs SECONDS with and without an application thread spinning in a pure-Python busy loop (it
holds the GIL and gives it up only at sys.getswitchinterval(), 5 ms by default), and counts
PortAudio's output underflows (Downlink.stats["device_output_underflows"]), the callbacks
against the expected count, the callbacks that came more than 1.5 blocks after the previous one
(device_late_blocks: on a device that buffers two blocks, each is close to an underrun) and the
longest gap between two callbacks after the first 100 (device_max_gap_ms), and the Downlink's
PCM ring running dry (the feeder falling behind, which would be silence, not an underrun of the
device). PulseAudio's ALSA plugin hides its own underruns from PortAudio (the server plays
silence), so the gaps are the figure that transfers to real hardware.

Target (issue 12): no underrun in 60 s with 20 ms blocks under the busy thread.

Run: python benchmarks/devices/bench_playout_gil.py [--seconds 60]
Needs pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2 and sounddevice.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.pulse import SPEAKER, PulseServer  # noqa: E402


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(10000):  # pure Python: holds the GIL between switch intervals
            x += 1


def feeder(downlink: object, stop: threading.Event) -> None:
    """Pushes 20 ms of a 24 kHz tone every 20 ms, a little ahead of playout."""
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(480) / 24000)).astype(np.int16)
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        due = start + k * 0.02 - 0.1
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        downlink.push_pcm(tone)  # type: ignore[attr-defined]
        k += 1


def run(
    seconds: float, block_ms: int, latency: str, with_busy: bool, native: bool
) -> dict[str, float]:
    from rtvoice import Downlink, Uplink
    from rtvoice.audio.devices import DeviceStreams, resolve_device

    downlink = Downlink(48000, 1, "pcm16", pcm_prebuffer_ms=60)
    uplink = Uplink(48000)
    streams = DeviceStreams(
        uplink,
        downlink,
        input_device=None,
        output_device=resolve_device(SPEAKER, "output"),
        block_ms=block_ms,
        latency=latency,
        native_callbacks=native,
    )
    stop = threading.Event()
    threads = [threading.Thread(target=feeder, args=(downlink, stop), daemon=True)]
    if with_busy:
        threads.append(threading.Thread(target=busy, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    time.sleep(0.3)  # the feeder is ahead before the device starts
    streams.start()
    time.sleep(2.5)  # the stream settles (and device_max_gap_ms starts); then count
    before = downlink.stats
    t0 = time.monotonic()
    time.sleep(seconds)
    after = downlink.stats
    elapsed = time.monotonic() - t0
    latency_ms = streams.latency_s[1] * 1000
    streams.stop()
    stop.set()
    for t in threads:
        t.join(2)
    blocks = after["device_blocks"] - before["device_blocks"]
    result = {
        "blocks": blocks,
        "expected": elapsed * 1000 / block_ms,
        "underflows": after["device_output_underflows"] - before["device_output_underflows"],
        "late": after["device_late_blocks"] - before["device_late_blocks"],
        "max_gap_ms": after["device_max_gap_ms"],
        "pcm_underruns": after["pcm_underruns"] - before["pcm_underruns"],
        "output_latency_ms": latency_ms,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="playout underruns under a GIL-holding thread")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--callbacks",
        choices=["native", "python", "both"],
        default="both",
        help="native PortAudio callbacks (no GIL), sounddevice's Python callbacks, or both",
    )
    parser.add_argument(
        "--rows",
        choices=["all", "20ms"],
        default="all",
        help="all block/latency settings, or only 20 ms blocks at low latency",
    )
    args = parser.parse_args()
    kinds = {"native": [True], "python": [False], "both": [True, False]}[args.callbacks]
    settings = [(20, "low")]
    if args.rows == "all":
        settings += [(10, "low"), (20, "high")]
    with tempfile.TemporaryDirectory() as tmp:
        server = PulseServer(Path(tmp) / "pulse")
        os.environ.update(server.env)  # PortAudio reads them when sounddevice loads
        try:
            import sounddevice  # type: ignore[import-untyped]

            import rtvoice

            print(
                f"rtvoice {rtvoice.__version__}, sounddevice {sounddevice.__version__}, "
                f"{sounddevice.get_portaudio_version()[1]}, switch interval "
                f"{sys.getswitchinterval() * 1000:.0f} ms, {args.seconds:.0f} s per row"
            )
            print(
                f"{'kind':>6} {'block':>6} {'latency':>7} {'busy thread':>11} {'callbacks':>9} "
                f"{'expected':>8} {'underflows':>10} {'late':>5} {'max gap':>9} "
                f"{'ring underruns':>14} {'out latency':>11}"
            )
            for native in kinds:
                for block_ms, latency in settings:
                    for with_busy in (False, True):
                        r = run(args.seconds, block_ms, latency, with_busy, native)
                        kind = "native" if native else "python"
                        busy_text = "yes" if with_busy else "no"
                        print(
                            f"{kind:>6} {block_ms:>3} ms {latency:>7} {busy_text:>11} "
                            f"{r['blocks']:>9.0f} {r['expected']:>8.0f} {r['underflows']:>10.0f} "
                            f"{r['late']:>5.0f} {r['max_gap_ms']:>6.1f} ms "
                            f"{r['pcm_underruns']:>14.0f} {r['output_latency_ms']:>8.1f} ms",
                            flush=True,
                        )
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
