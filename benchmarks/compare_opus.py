"""Opus encode/decode cost per 20 ms frame: rtvoice against its peers, in one process.

Peers: opuslib (ctypes over the system libopus), PyAV's libopus codec configured like rtvoice,
and aiortc's own OpusEncoder/OpusDecoder exactly as aiortc uses them (stereo, 96 kb/s, s16,
through an AudioResampler). A small C++ harness (benchmarks/opus_c_bench.cpp, built here with
g++ against -lopus) times the same frames through libopus directly, for the binding overhead;
a second build of it links PyAV's bundled (newer) libopus, which separates the library
version's share of any difference from the binding's.

Material: the speech fixture (tests/data/speech_24k.wav) at 48 kHz mono, 298 frames of 20 ms;
settings: VOIP, 32 kb/s, complexity 9, in-band FEC, 10 % expected loss.

Timing, identical for every candidate and for the C++ harness: the sequence is run ROUNDS x
REPEATS times from a fresh codec state, every call is timed on its own with the monotonic
clock, and each frame keeps its fastest call; a figure is the mean of those per-frame minima
minus the cost of reading the clock. On a shared machine this filters out preemption, which
whole-run means or CPU-time clocks do not (a busy hyperthread sibling still slows calls, so
compare only figures from one run). The rounds interleave the candidates.

Run: python benchmarks/compare_opus.py [--rounds N]
"""

from __future__ import annotations

import argparse
import ctypes
import fractions
import glob
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from audio_fixtures import speech  # noqa: E402

import rtvoice  # noqa: E402
from rtvoice import OpusDecoder, OpusEncoder  # noqa: E402

RATE_HZ = 48000
FRAME = 960
BITRATE = 32000
COMPLEXITY = 9
LOSS_PERC = 10
# Decoding is ~10x cheaper than encoding: more runs for the same time give cleaner minima.
DECODE_REPEAT_FACTOR = 5


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def libopus_version_of(lib: ctypes.CDLL) -> str:
    fn = lib.opus_get_version_string
    fn.restype = ctypes.c_char_p
    return str(fn().decode())


def pyav_libopus() -> ctypes.CDLL | None:
    """The libopus that PyAV's wheel bundles (av.libs/libopus-*.so), if it is a wheel build."""
    import av

    hits = glob.glob(
        os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs", "libopus*")
    )
    return ctypes.CDLL(hits[0]) if hits else None


def timer_overhead_ns() -> int:
    clock = time.perf_counter_ns
    best = 10**9
    for _ in range(20000):
        t0 = clock()
        t1 = clock()
        best = min(best, t1 - t0)
    return best


class Candidate:
    """A codec driven frame by frame: prepare() starts a fresh stream, step(i) handles frame i."""

    def __init__(self, prepare: Callable[[], None], step: Callable[[int], object]) -> None:
        self.prepare = prepare
        self.step = step
        self.best_ns: np.ndarray | None = None

    def run(self, frames: int, repeats: int) -> None:
        clock = time.perf_counter_ns
        step = self.step
        best = np.full(frames, np.iinfo(np.int64).max) if self.best_ns is None else self.best_ns
        for _ in range(repeats):
            self.prepare()
            for i in range(frames):
                t0 = clock()
                step(i)
                t1 = clock()
                if t1 - t0 < best[i]:
                    best[i] = t1 - t0
        self.best_ns = best

    def us_per_frame(self, timer_ns: int) -> float:
        assert self.best_ns is not None
        return float(np.mean(self.best_ns - timer_ns) / 1e3)


# ---------------------------------------------------------------------------------------------
# Candidates. Each encoder also returns a function that encodes the whole sequence once, for
# the packet statistics.


class Material:
    def __init__(self) -> None:
        x = speech(RATE_HZ)
        n = x.size // FRAME
        self.f32 = np.ascontiguousarray(x[: n * FRAME])
        self.i16 = np.clip(np.round(self.f32 * 32768), -32768, 32767).astype(np.int16)
        self.frames_f32 = [self.f32[i * FRAME : (i + 1) * FRAME] for i in range(n)]
        self.frames_i16 = [self.i16[i * FRAME : (i + 1) * FRAME] for i in range(n)]
        self.bytes_f32 = [f.tobytes() for f in self.frames_f32]
        self.bytes_i16 = [f.tobytes() for f in self.frames_i16]
        enc = rtvoice_opus_encoder()
        self.packets = [enc.encode(f) for f in self.frames_f32]
        self.n = n


def rtvoice_opus_encoder() -> OpusEncoder:
    return OpusEncoder(bitrate=BITRATE, complexity=COMPLEXITY, fec=True, packet_loss_perc=LOSS_PERC)


def all_packets(c: Candidate, n: int) -> list[bytes]:
    c.prepare()
    out: list[bytes] = []
    for i in range(n):
        r = c.step(i)
        out += r if isinstance(r, list) else [bytes(r)]  # type: ignore[arg-type]
    return out


def rtvoice_encoder(m: Material, dtype: str) -> Candidate:
    enc = rtvoice_opus_encoder()
    frames = m.frames_f32 if dtype == "f32" else m.frames_i16
    encode = enc.encode
    return Candidate(enc.reset, lambda i: encode(frames[i]))


def opuslib_encoder(m: Material, dtype: str) -> Candidate:
    import opuslib

    enc = opuslib.Encoder(RATE_HZ, 1, opuslib.APPLICATION_VOIP)
    enc.bitrate = BITRATE
    enc.complexity = COMPLEXITY
    # opuslib's inband_fec property setter drops its value; call the ctl directly.
    opuslib.api.encoder.encoder_ctl(enc.encoder_state, opuslib.api.ctl.set_inband_fec, 1)
    enc.packet_loss_perc = LOSS_PERC
    data = m.bytes_f32 if dtype == "f32" else m.bytes_i16
    encode = enc.encode_float if dtype == "f32" else enc.encode
    return Candidate(enc.reset_state, lambda i: encode(data[i], FRAME))


def pyav_codec_encoder(m: Material) -> Candidate:
    """PyAV's libopus with rtvoice's settings, s16 AudioFrames in; a new context per stream."""
    import av

    tb = fractions.Fraction(1, RATE_HZ)
    state: dict[str, av.CodecContext] = {}

    def prepare() -> None:
        c = av.CodecContext.create("libopus", "w")
        c.bit_rate = BITRATE
        c.format = "s16"
        c.layout = "mono"
        c.sample_rate = RATE_HZ
        c.time_base = tb
        c.options = {
            "application": "voip",
            "fec": "1",
            "packet_loss": str(LOSS_PERC),
            "compression_level": str(COMPLEXITY),
        }
        state["ctx"] = c

    def step(i: int) -> list[bytes]:
        frame = av.AudioFrame.from_ndarray(m.frames_i16[i][None, :], format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        frame.pts = i * FRAME
        frame.time_base = tb
        return [bytes(p) for p in state["ctx"].encode(frame)]

    return Candidate(prepare, step)


def aiortc_encoder(m: Material) -> Candidate:
    """aiortc.codecs.opus.OpusEncoder as aiortc calls it: one s16 mono AudioFrame per 20 ms."""
    import av
    from aiortc.codecs.opus import OpusEncoder as AiortcEncoder

    tb = fractions.Fraction(1, RATE_HZ)
    state: dict[str, AiortcEncoder] = {}

    def prepare() -> None:
        state["enc"] = AiortcEncoder()

    def step(i: int) -> list[bytes]:
        frame = av.AudioFrame.from_ndarray(m.frames_i16[i][None, :], format="s16", layout="mono")
        frame.sample_rate = RATE_HZ
        frame.pts = i * FRAME
        frame.time_base = tb
        return state["enc"].encode(frame)[0]

    return Candidate(prepare, step)


def rtvoice_decoder(m: Material, dtype: str) -> Candidate:
    dec = OpusDecoder(RATE_HZ, 1)
    decode = dec.decode
    packets = m.packets
    dt = np.float32 if dtype == "f32" else np.int16
    return Candidate(dec.reset, lambda i: decode(packets[i], dt))


def opuslib_decoder(m: Material, dtype: str) -> Candidate:
    import opuslib

    dec = opuslib.Decoder(RATE_HZ, 1)
    decode = dec.decode_float if dtype == "f32" else dec.decode
    packets = m.packets
    return Candidate(dec.reset_state, lambda i: decode(packets[i], FRAME))


def pyav_codec_decoder(m: Material) -> Candidate:
    """PyAV's libopus decoder, mono s16, each frame converted to a numpy array."""
    import av

    state: dict[str, av.CodecContext] = {}

    def prepare() -> None:
        c = av.CodecContext.create("libopus", "r")
        c.format = "s16"
        c.layout = "mono"
        c.sample_rate = RATE_HZ
        state["ctx"] = c

    def step(i: int) -> list[object]:
        return [f.to_ndarray() for f in state["ctx"].decode(av.Packet(m.packets[i]))]

    return Candidate(prepare, step)


def aiortc_decoder(m: Material) -> Candidate:
    """aiortc.codecs.opus.OpusDecoder as aiortc calls it (stereo s16 av.AudioFrames out)."""
    from aiortc.codecs.opus import OpusDecoder as AiortcDecoder
    from aiortc.jitterbuffer import JitterFrame

    state: dict[str, AiortcDecoder] = {}
    jitter_frames = [JitterFrame(p, i * FRAME) for i, p in enumerate(m.packets)]

    def prepare() -> None:
        state["dec"] = AiortcDecoder()

    return Candidate(prepare, lambda i: state["dec"].decode(jitter_frames[i]))


# ---------------------------------------------------------------------------------------------
# The C++ reference harness


def build_harness(against: ctypes.CDLL | None = None) -> Path:
    """Builds the harness against the system libopus, or against the library file `against`
    (PyAV's bundled copy: same C ABI, newer version), using the system headers either way."""
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = out_dir / ("opus_c_bench" if against is None else "opus_c_bench_pyav")
    src = ROOT / "benchmarks" / "opus_c_bench.cpp"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:

        def pkg(*what: str) -> list[str]:
            return subprocess.run(
                ["pkg-config", *what, "opus"], check=True, capture_output=True, text=True
            ).stdout.split()

        if against is None:
            link = pkg("--libs")
        else:
            lib = Path(against._name)
            link = [f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"]
        cxx = os.environ.get("CXX", "g++")
        cmd = [cxx, "-O2", "-std=c++17", str(src), *pkg("--cflags"), *link, "-o", str(exe)]
        subprocess.run(cmd, check=True)
    return exe


def run_harness(exe: Path, pcm_path: Path, packets_path: Path, repeats: int) -> dict[str, str]:
    decode_repeats = repeats * DECODE_REPEAT_FACTOR
    out = subprocess.run(
        [str(exe), str(pcm_path), str(packets_path), str(repeats), str(decode_repeats)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def keep_minima(best: dict[str, np.ndarray], run: dict[str, str]) -> None:
    for k in ("encode_f32", "encode_i16", "decode_f32", "decode_i16"):
        row = np.array(run[k].split(), dtype=np.int64)
        best[k] = np.minimum(best[k], row) if k in best else row


def read_packets(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, i = [], 0
    while i < len(data):
        n = data[i] | (data[i + 1] << 8)
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


# ---------------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |")


def lbrr_cross_check(lib: ctypes.CDLL) -> str:
    """rtvoice's packet_has_fec against libopus >= 1.5's opus_packet_has_lbrr."""
    fn = lib.opus_packet_has_lbrr
    fn.argtypes = [ctypes.c_char_p, ctypes.c_int32]
    packets: list[bytes] = []
    for rate in (8000, 16000, 48000):
        x = speech(rate)
        for channels in (1, 2):
            xs = x if channels == 1 else np.ascontiguousarray(np.stack([x, np.roll(x, 31)], 1))
            for ms in (10, 20, 40, 60):
                n = rate * ms // 1000
                enc = OpusEncoder(rate, channels, bitrate=32000, packet_loss_perc=15)
                packets += [enc.encode(xs[i : i + n]) for i in range(0, x.size - n + 1, n)]
    rng = np.random.default_rng(7)
    packets += [
        rng.integers(0, 256, rng.integers(1, 400), np.uint8).tobytes() for _ in range(20000)
    ]
    agree = sum(OpusDecoder.packet_has_fec(p) == (fn(p, len(p)) == 1) for p in packets)
    positives = sum(OpusDecoder.packet_has_fec(p) for p in packets)
    return f"{agree}/{len(packets)} packets agree ({positives} with LBRR)"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per candidate per round (3)")
    args = ap.parse_args()

    import aiortc  # noqa: F401
    import av
    import opuslib.api

    av_opus = pyav_libopus()
    print("versions:")
    print(f"  python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"  rtvoice {rtvoice.__version__} -> {rtvoice._core.libopus_version()}")
    print(f"  opuslib {version('opuslib')} (ctypes) -> {libopus_version_of(opuslib.api.libopus)}")
    av_opus_text = libopus_version_of(av_opus) if av_opus else "libopus version unknown"
    print(f"  av {av.__version__} -> bundled {av_opus_text}")
    print(f"  aiortc {version('aiortc')} (its OpusEncoder/OpusDecoder over av)")
    exe = build_harness()
    exe_av = build_harness(av_opus) if av_opus is not None else None
    gxx = shutil.which(os.environ.get("CXX", "g++"))
    print(f"  C++ harness: {exe.relative_to(ROOT)}, {gxx} -O2 against the system libopus")
    if exe_av is not None:
        print(f"  C++ harness: {exe_av.relative_to(ROOT)}, the same against PyAV's libopus")

    m = Material()
    print(
        f"\nmaterial: speech fixture, 48 kHz mono, {m.n} frames of 20 ms; VOIP, "
        f"{BITRATE // 1000} kb/s, complexity {COMPLEXITY}, FEC on, expected loss {LOSS_PERC} %"
    )
    print(
        f"timing: per-frame minimum over {args.rounds} interleaved rounds x {args.repeats} runs "
        f"(decoders x {args.repeats * DECODE_REPEAT_FACTOR}), averaged over the frames, "
        "clock cost subtracted"
    )

    encoders = {
        "rtvoice float32": rtvoice_encoder(m, "f32"),
        "rtvoice int16": rtvoice_encoder(m, "i16"),
        "opuslib float32 (ctypes)": opuslib_encoder(m, "f32"),
        "opuslib int16 (ctypes)": opuslib_encoder(m, "i16"),
        "PyAV libopus, same settings, s16": pyav_codec_encoder(m),
        "aiortc OpusEncoder (stereo 96 kb/s, s16)": aiortc_encoder(m),
    }
    decoders = {
        "rtvoice float32": rtvoice_decoder(m, "f32"),
        "rtvoice int16": rtvoice_decoder(m, "i16"),
        "opuslib float32 (ctypes)": opuslib_decoder(m, "f32"),
        "opuslib int16 (ctypes)": opuslib_decoder(m, "i16"),
        "PyAV libopus, mono s16 + to_ndarray": pyav_codec_decoder(m),
        "aiortc OpusDecoder (stereo s16 frames)": aiortc_decoder(m),
    }

    c_best: dict[str, np.ndarray] = {}
    av_best: dict[str, np.ndarray] = {}
    c_av: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pcm_path, packets_path = Path(tmp) / "pcm.f32", Path(tmp) / "packets.bin"
        m.f32.tofile(pcm_path)
        for _ in range(args.rounds):
            c = run_harness(exe, pcm_path, packets_path, args.repeats)
            keep_minima(c_best, c)
            for cand in encoders.values():
                cand.run(m.n, args.repeats)
            for cand in decoders.values():
                cand.run(m.n, args.repeats * DECODE_REPEAT_FACTOR)
            if exe_av is not None:
                c_av = run_harness(exe_av, pcm_path, Path(tmp) / "av_packets.bin", args.repeats)
                keep_minima(av_best, c_av)
        c_packets = read_packets(packets_path)
    c_timer_ns = int(c["timer_ns"])
    py_timer_ns = timer_overhead_ns()

    def us(cand: Candidate) -> float:
        return cand.us_per_frame(py_timer_ns)

    def c_us(key: str, best: dict[str, np.ndarray] = c_best) -> float:
        return float(np.mean(best[key] - c_timer_ns) / 1e3)

    enc_packets = {name: all_packets(cand, m.n) for name, cand in encoders.items()}

    def ratio_rows(
        cands: dict[str, Candidate], extra: Callable[[str], list[str]], kind: str
    ) -> list[list[str]]:
        out = []
        for name, cand in cands.items():
            same_type = "rtvoice int16" if ("int16" in name or "s16" in name) else "rtvoice float32"
            t = us(cand)
            out.append([name, f"{t:.1f}", f"{t / us(cands[same_type]):.2f}", *extra(name)])
        # Reference rows: libopus itself from C++, no binding at all.
        refs = [(f"C++ -> {c['version']} (system)", c_best)]
        if av_best:
            refs.append((f"C++ -> {c_av['version']} (PyAV's copy)", av_best))
        for label, best in refs:
            for suffix, key in (("float32", f"{kind}_f32"), ("int16", f"{kind}_i16")):
                t = c_us(key, best)
                ref = us(cands[f"rtvoice {suffix}"])
                blanks = ["", ""] if kind == "encode" else []
                out.append([f"{label} {suffix}", f"{t:.1f}", f"{t / ref:.2f}", *blanks])
        return out

    table(
        "Encode, µs per 20 ms frame (x rtvoice: time over rtvoice's for the same sample type)",
        ["encoder", "µs/frame", "x rtvoice", "bytes/packet", "packets with FEC"],
        ratio_rows(
            encoders,
            lambda n: [
                f"{np.mean([len(p) for p in enc_packets[n]]):.0f}",
                f"{100 * np.mean([OpusDecoder.packet_has_fec(p) for p in enc_packets[n]]):.0f} %",
            ],
            "encode",
        ),
    )
    table(
        "Decode, µs per 20 ms frame (every decoder gets the same rtvoice packets)",
        ["decoder", "µs/frame", "x rtvoice"],
        ratio_rows(decoders, lambda n: [], "decode"),
    )

    same_packets = c_packets == m.packets
    overhead_rows = []
    for op, key, cand in (
        ("encode float32", "encode_f32", encoders["rtvoice float32"]),
        ("encode int16", "encode_i16", encoders["rtvoice int16"]),
        ("decode float32", "decode_f32", decoders["rtvoice float32"]),
        ("decode int16", "decode_i16", decoders["rtvoice int16"]),
    ):
        base, mine = c_us(key), us(cand)
        overhead_rows.append(
            [
                op,
                f"{base:.2f}",
                f"{mine:.2f}",
                f"{mine - base:+.2f}",
                f"{100 * (mine / base - 1):+.1f} %",
            ]
        )
    table(
        f"Binding overhead: rtvoice from Python vs {c['version']} from C++ "
        f"(identical packets: {'yes' if same_packets else 'NO'}; clock cost {py_timer_ns} ns "
        f"Python, {c_timer_ns} ns C++)",
        ["operation", "C++ µs", "rtvoice µs", "difference µs", "overhead"],
        overhead_rows,
    )

    if av_opus is not None and hasattr(av_opus, "opus_packet_has_lbrr"):
        print(
            f"\npacket_has_fec vs {libopus_version_of(av_opus)}'s opus_packet_has_lbrr: "
            f"{lbrr_cross_check(av_opus)}"
        )


if __name__ == "__main__":
    main()
