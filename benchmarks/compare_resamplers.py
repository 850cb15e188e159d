"""rtvoice.Resampler against python-soxr (HQ) and PyAV's AudioResampler, in one process.

Run: python benchmarks/compare_resamplers.py [--rounds N] [--chunks N] [--no-native]

For each pair (24k->48k, 48k->24k, 44.1k->48k, 16k->48k) and each engine, streaming 20 ms mono
float32 chunks:

* us/chunk: wall time of one streaming call per 20 ms chunk, through Python. Each round makes a
  fresh engine, feeds one warm-up chunk, then times `--chunks` consecutive chunks; the table
  gives the median and the minimum over `--rounds` rounds (the machine is shared: compare within
  one run). PyAV's input frames are built before timing. x rtvoice is the ratio of medians.
* 2 s call: one call on 2 s of audio, divided into 20 ms (per-call overhead amortised).
* native: the C++ harness (benchmarks/resampler_bench.cpp, built here with g++ -O2) calling
  rtvoice::Resampler::process on 20 ms chunks with no Python at all; median / min over rounds of
  the thread's CPU time per chunk (time spent descheduled on a shared machine is not counted).
* rejection: the same definition as tests/unit/test_resampler.py. Full-scale tones, each streamed
  through a fresh engine in 20 ms chunks; passband tones (0.02-0.9 x the lower Nyquist) are fitted
  by least squares at their frequency (free phase and gain) and everything else is the residual;
  for downsampling, stopband tones (1.1 x the output Nyquist up to the input Nyquist) are all
  residual. rejection = worst 10 log10(tone power / residual power) over the sweep, measured away
  from the stream's start and end. Tones in the 0.9-1.1 transition band are not swept.
* held back: how long each input sample waits before the output sample representing it has been
  returned. The engine's delay d (output frames) is measured with an impulse; after chunk k,
  held back = input time consumed - (output frames returned - d) / out_rate. rtvoice returns
  exact counts with a fixed delay, so its value is constant; soxr buffers inside.

PyAV runs with format "flt" (aiortc's path uses "s16" with the same swresample filter; float
output keeps 16-bit quantisation out of the rejection figure).
"""

from __future__ import annotations

import argparse
import fractions
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import rtvoice

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(24000, 48000), (48000, 24000), (44100, 48000), (16000, 48000)]
ENGINES = ("rtvoice", "soxr HQ", "PyAV swr")
F32 = npt.NDArray[np.float32]


class Stream:
    """One engine's streaming interface: feed(chunk) -> output, finish() -> tail."""

    def __init__(self, engine: str, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.engine = engine
        self.pts = 0
        if engine == "rtvoice":
            self.r: Any = rtvoice.Resampler(in_rate, out_rate)
        elif engine == "soxr HQ":
            import soxr

            self.r = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        else:
            import av

            self.r = av.AudioResampler(format="flt", layout="mono", rate=out_rate)

    def frame(self, chunk: F32) -> Any:
        import av

        f = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        f.sample_rate = self.in_rate
        f.pts = self.pts
        f.time_base = fractions.Fraction(1, self.in_rate)
        self.pts += len(chunk)
        return f

    def feed(self, chunk: F32) -> F32:
        if self.engine == "rtvoice":
            return self.r.process(chunk)  # type: ignore[no-any-return]
        if self.engine == "soxr HQ":
            return self.r.resample_chunk(chunk)  # type: ignore[no-any-return]
        return self.feed_frame(self.frame(chunk))

    def feed_frame(self, frame: Any) -> F32:
        frames = self.r.resample(frame)
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])

    def finish(self) -> F32:
        if self.engine == "rtvoice":
            return self.r.flush()  # type: ignore[no-any-return]
        if self.engine == "soxr HQ":
            return self.r.resample_chunk(np.zeros(0, np.float32), last=True)  # type: ignore[no-any-return]
        return self.feed_frame(None)


def chunks_of(x: F32, n: int) -> list[F32]:
    return [np.ascontiguousarray(x[i : i + n]) for i in range(0, len(x), n)]


def stream_all(engine: str, in_rate: int, out_rate: int, x: F32) -> tuple[F32, list[int]]:
    """Output of streaming x in 20 ms chunks, and the output count after each chunk."""
    s = Stream(engine, in_rate, out_rate)
    outs: list[F32] = []
    counts: list[int] = []
    total = 0
    for c in chunks_of(x, in_rate // 50):
        y = s.feed(c)
        outs.append(y)
        total += len(y)
        counts.append(total)
    outs.append(s.finish())
    return np.concatenate(outs).astype(np.float32), counts


# ---------------------------------------------------------------------------------------------
# Speed


def time_streaming(
    engine: str, in_rate: int, out_rate: int, rounds: int, n_chunks: int
) -> list[float]:
    rng = np.random.default_rng(1)
    chunk = in_rate // 50
    data = [(rng.standard_normal(chunk) * 0.1).astype(np.float32) for _ in range(n_chunks + 1)]
    per_chunk_us: list[float] = []
    for _ in range(rounds):
        s = Stream(engine, in_rate, out_rate)
        step: Callable[[Any], Any]
        if engine == "PyAV swr":
            items: list[Any] = [s.frame(c) for c in data]
            step = s.r.resample
        elif engine == "soxr HQ":
            items = data
            step = s.r.resample_chunk
        else:
            items = data
            step = s.r.process
        step(items[0])
        timed = items[1:]
        t0 = time.perf_counter_ns()
        for item in timed:
            step(item)
        per_chunk_us.append((time.perf_counter_ns() - t0) / 1e3 / len(timed))
    return per_chunk_us


def time_long_call(engine: str, in_rate: int, out_rate: int, rounds: int) -> float:
    """Median over rounds of one call on 2 s of audio, in microseconds per 20 ms."""
    x = (np.random.default_rng(2).standard_normal(2 * in_rate) * 0.1).astype(np.float32)
    results = []
    for _ in range(rounds):
        s = Stream(engine, in_rate, out_rate)
        item: Any = s.frame(x) if engine == "PyAV swr" else x
        step = s.r.resample if engine == "PyAV swr" else s.feed
        t0 = time.perf_counter_ns()
        step(item)
        results.append((time.perf_counter_ns() - t0) / 1e3 / 100)
    return statistics.median(results)


def build_native() -> Path | None:
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / "resampler_bench"
    sources = [ROOT / "benchmarks" / "resampler_bench.cpp", ROOT / "cpp" / "src" / "resampler.cpp"]
    header = ROOT / "cpp" / "include" / "rtvoice" / "resampler.hpp"
    newest = max(p.stat().st_mtime for p in [*sources, header])
    if not exe.exists() or exe.stat().st_mtime < newest:
        cxx = os.environ.get("CXX", "g++")
        if shutil.which(cxx) is None:
            return None
        cmd = [cxx, "-O2", "-std=c++17", f"-I{ROOT / 'cpp' / 'include'}", *map(str, sources)]
        subprocess.run([*cmd, "-o", str(exe)], check=True)
    return exe


def run_native(exe: Path) -> dict[tuple[int, int], tuple[str, float, float]]:
    args = [f"{a}:{b}" for a, b in PAIRS]
    out = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        a, b, kernel, median_us, min_us, _wall_median_us = line.split()
        result[(int(a), int(b))] = (kernel, float(median_us), float(min_us))
    return result


# ---------------------------------------------------------------------------------------------
# Quality and held-back audio


def sweep(in_rate: int, out_rate: int) -> list[tuple[float, bool]]:
    nyq_low = min(in_rate, out_rate) / 2
    tones = [(f, True) for f in [997.0, *np.linspace(0.02, 0.9, 10) * nyq_low]]
    if 1.1 * nyq_low < 0.999 * in_rate / 2:
        tones += [(f, False) for f in np.linspace(1.1 * nyq_low, 0.999 * in_rate / 2, 10)]
    return tones


def rejection_db(engine: str, in_rate: int, out_rate: int) -> float:
    n_in = int(0.3 * in_rate)
    worst = math.inf
    for f_hz, in_passband in sweep(in_rate, out_rate):
        x = np.sin(2 * np.pi * f_hz * np.arange(n_in) / in_rate + 0.4).astype(np.float32)
        y, _ = stream_all(engine, in_rate, out_rate, x)
        seg = y[int(0.06 * out_rate) : -int(0.06 * out_rate)].astype(np.float64)
        if in_passband:
            t = 2 * np.pi * f_hz * np.arange(len(seg)) / out_rate
            basis = np.stack([np.sin(t), np.cos(t)], axis=1)
            coef, *_ = np.linalg.lstsq(basis, seg, rcond=None)
            residual = seg - basis @ coef
        else:
            residual = seg
        worst = min(worst, 10 * math.log10(0.5 / max(np.mean(residual**2), 1e-30)))
    return worst


def held_back_ms(engine: str, in_rate: int, out_rate: int) -> tuple[float, float]:
    chunk = in_rate // 50
    n0 = 10 * chunk + 7
    x = np.zeros(40 * chunk, np.float32)
    x[n0] = 1.0
    y, counts = stream_all(engine, in_rate, out_rate, x)
    k = int(np.argmax(np.abs(y)))
    # parabolic interpolation of the peak for a sub-sample delay
    a, b, c = np.abs(y[k - 1 : k + 2]).astype(np.float64)
    k_frac = k + 0.5 * (a - c) / (a - 2 * b + c)
    delay_frames = k_frac - n0 * out_rate / in_rate
    held = [
        ((i + 1) * chunk / in_rate - (n_out - delay_frames) / out_rate) * 1e3
        for i, n_out in enumerate(counts)
    ]
    steady = held[2:]  # after the first chunks, whatever an engine does at start-up
    return statistics.mean(steady), max(steady)


# ---------------------------------------------------------------------------------------------


def versions() -> list[str]:
    import av
    import soxr

    swr = av.library_versions.get("libswresample", ())
    r = rtvoice.Resampler(48000, 24000)
    return [
        f"python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}",
        f"rtvoice {rtvoice.__version__} (kernel {r.kernel})",
        f"soxr {soxr.__version__} (libsoxr {getattr(soxr, '__libsoxr_version__', '?')}), HQ",
        f"av {av.__version__} (libswresample {'.'.join(map(str, swr))}), AudioResampler defaults",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--no-native", action="store_true", help="skip the C++ harness")
    args = parser.parse_args()

    for line in versions():
        print(line)
    native: dict[tuple[int, int], tuple[str, float, float]] = {}
    if not args.no_native:
        exe = build_native()
        if exe is None:
            print("C++ harness: no compiler found, skipped")
        else:
            native = run_native(exe)
            print(f"C++ harness: {exe.relative_to(ROOT)} (g++ -O2, no -march; thread CPU time)")
    print(f"timing: {args.rounds} rounds x {args.chunks} chunks of 20 ms, mono float32")
    print()
    header = (
        f"{'pair':<12} {'engine':<9} {'us/chunk med':>12} {'min':>7} {'x rtvoice':>9} "
        f"{'2 s call':>8} {'native med/min':>15} {'rejection':>9} {'held back ms':>14}"
    )
    print(header)
    print("-" * len(header))
    for in_rate, out_rate in PAIRS:
        label = f"{in_rate / 1000:g}k->{out_rate / 1000:g}k"
        base = None
        for engine in ENGINES:
            t = time_streaming(engine, in_rate, out_rate, args.rounds, args.chunks)
            med = statistics.median(t)
            base = med if base is None else base
            long_us = time_long_call(engine, in_rate, out_rate, args.rounds)
            nat = ""
            if engine == "rtvoice" and (in_rate, out_rate) in native:
                _, n_med, n_min = native[(in_rate, out_rate)]
                nat = f"{n_med:.2f} / {n_min:.2f}"
            rej = rejection_db(engine, in_rate, out_rate)
            mean_ms, max_ms = held_back_ms(engine, in_rate, out_rate)
            print(
                f"{label:<12} {engine:<9} {med:12.2f} {min(t):7.2f} {med / base:9.2f} "
                f"{long_us:8.2f} {nat:>15} {rej:8.1f}  {mean_ms:6.2f} / {max_ms:5.2f}"
            )
            label = ""
    print()
    print("us: microseconds per 20 ms chunk; rejection in dB (worst tone); held back: mean / max")
    return 0


if __name__ == "__main__":
    sys.exit(main())
