"""Trace-driven evaluation of the receive path (audio-core.md §1, NetEq's neteq_rtpplay idea).

A speech clip is encoded once with rtvoice's Opus encoder; every scenario of traces.py replays
its packets on virtual time and plays them out on the same 20 ms playout clock through
  (a) rtvoice.JitterBuffer,
  (b) aiortc's own JitterBuffer(capacity=16, prefetch=4) + its Opus decoder (aiortc's receive
      path; silence when it has no frame), and
  (c) the oracle: the smallest fixed delay with rtvoice's late-loss rate (Moon/Kurose/Towsley).
Per scenario it reports playout delay (mean, p95: play time - send time - the trace's smallest
network delay), late loss, concealment, FEC, time stretching, time back to target after a stall
and PESQ wideband MOS of the played audio against the clean decode; it prints a table, checks the
targets, and writes a PNG plot and a Markdown table.

Run: python benchmarks/jitter/run_eval.py [--out DIR] [--scenarios a,b] [--seconds S]
Needs the bench extra (aiortc, pesq, scipy, matplotlib) and espeak-ng for the speech clip.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traces import FRAME_MS, SCENARIOS, Trace, generate

import rtvoice

RATE = 48000
FRAME = 960
PHASE_MS = 7.3  # playout clock phase against the sender's frame grid
TAIL_PACKETS = 10  # the last packets are not judged (aiortc holds its prefetch forever)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her on Wednesday.",
    "A voice assistant should answer quickly, clearly, and without awkward gaps.",
]

Audio = npt.NDArray[np.float32]


def speech_clip(seconds: float) -> Audio:
    """espeak-ng sentences with pauses, at 48 kHz, repeated up to `seconds`."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the speech clip (apt-get install espeak-ng)")
    pieces: list[Audio] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            path = Path(tmp) / f"s{i}.wav"
            subprocess.run(["espeak-ng", "-s", "155", "-w", str(path), text], check=True)
            with wave.open(str(path)) as w:
                rate = w.getframerate()
                pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
            x = resample_poly(pcm.astype(np.float64) / 32768.0, RATE, rate)
            pieces.append(x.astype(np.float32))
            pieces.append(np.zeros(int(0.7 * RATE), np.float32))
    clip = np.concatenate(pieces)
    clip *= 0.5 / np.abs(clip).max()
    reps = int(np.ceil(seconds * RATE / clip.size))
    return np.tile(clip, reps)[: int(seconds * RATE) // FRAME * FRAME]


def encode(clip: Audio, dtx: bool) -> list[bytes]:
    enc = rtvoice.OpusEncoder(RATE, 1, bitrate=32000, fec=True, packet_loss_perc=10, dtx=dtx)
    return [enc.encode(clip[i : i + FRAME]) for i in range(0, clip.size, FRAME)]


def clean_decode(packets: list[bytes]) -> Audio:
    dec = rtvoice.OpusDecoder(RATE, 1)
    return np.concatenate([dec.decode(p) for p in packets]).astype(np.float32)


@dataclass
class Playout:
    """What one system played: per pull, the audio and the delay of its media (NaN if none)."""

    system: str
    audio: list[Audio] = field(default_factory=list)
    delay_ms: list[float] = field(default_factory=list)
    pull_ms: list[float] = field(default_factory=list)
    first_media_pull: int | None = None
    first_media_ts: int = 0
    end_pull: int = 0  # first pull after the last judged media played
    late: int = 0
    concealed_pct: float = 0.0
    fec_frames: int = 0
    stretch_pct: float = 0.0
    back_to_target_s: float | None = None
    pesq: float = float("nan")
    target_ms: list[float] = field(default_factory=list)

    def delays(self) -> npt.NDArray[np.float64]:
        lo = self.first_media_pull or 0
        d = np.asarray(self.delay_ms[lo : self.end_pull], dtype=np.float64)
        return d[np.isfinite(d)]


def send_time(trace: Trace, media_frames: float) -> float:
    k = int(np.clip(np.floor(media_frames), 0, len(trace.send_ms) - 2))
    return float(trace.send_ms[k] + (media_frames - k) * (trace.send_ms[k + 1] - trace.send_ms[k]))


def events(trace: Trace) -> list[tuple[float, int]]:
    return sorted((a, k) for k, arr in enumerate(trace.arrivals) for a in arr)


def pull_times(trace: Trace) -> npt.NDArray[np.float64]:
    last = max(a for arr in trace.arrivals for a in arr)
    return PHASE_MS + FRAME_MS * np.arange(int((last + 1500.0) / FRAME_MS))


def run_rtvoice(trace: Trace, packets: list[bytes]) -> Playout:
    jb = rtvoice.JitterBuffer(RATE)
    out = Playout("rtvoice")
    queue = events(trace)
    last_media = (len(packets) - TAIL_PACKETS) * FRAME
    i = 0
    snapshot = None
    for n, t in enumerate(pull_times(trace)):
        while i < len(queue) and queue[i][0] <= t:
            arrival, k = queue[i]
            jb.insert(k & 0xFFFF, (k * FRAME) & 0xFFFFFFFF, packets[k], int(arrival * 1e6))
            i += 1
        pcm, _ = jb.pull(int(t * 1e6))
        s = jb.stats
        out.audio.append(pcm)
        out.pull_ms.append(t)
        out.target_ms.append(s.target_delay_ms)
        ts = s.playout_timestamp
        if ts is None:
            out.delay_ms.append(float("nan"))
            continue
        if out.first_media_pull is None:
            out.first_media_pull = n
            out.first_media_ts = ts
        out.delay_ms.append(t - send_time(trace, ts / FRAME) - trace.min_delay_ms)
        if snapshot is None and ts >= last_media:
            snapshot = s
            out.end_pull = n
    if snapshot is None:
        snapshot = jb.stats
        out.end_pull = len(out.audio)
    played = max(1, snapshot.samples_played - snapshot.silence_samples)
    out.late = snapshot.packets_late
    out.concealed_pct = 100.0 * snapshot.concealed_samples / played
    out.fec_frames = snapshot.fec_recovered_frames
    out.stretch_pct = 100.0 * (snapshot.accelerated_samples + snapshot.expanded_samples) / played
    if trace.stall_ends_ms:
        # Time from each stall's end until the delay is back within 10 ms of the target.
        worst = 0.0
        d = np.asarray(out.delay_ms)
        tgt = np.asarray(out.target_ms)
        pulls = np.asarray(out.pull_ms)
        base = np.nanmedian(d - tgt)  # constant offset between the trace's and the JB's base
        for end in trace.stall_ends_ms:
            after = np.nonzero((pulls >= end) & (d - tgt - base <= 10.0))[0]
            worst = max(worst, (pulls[after[0]] - end) / 1000.0 if after.size else np.inf)
        out.back_to_target_s = worst
    return out


def run_aiortc(trace: Trace, packets: list[bytes]) -> Playout:
    from aiortc.codecs.opus import OpusDecoder
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    jb = JitterBuffer(capacity=16, prefetch=4)
    dec = OpusDecoder()
    out = Playout("aiortc")
    fifo: collections.deque[tuple[Audio, int]] = collections.deque()
    played_frames: set[int] = set()
    queue = events(trace)
    last_media = (len(packets) - TAIL_PACKETS) * FRAME
    i = 0
    gaps = 0
    for n, t in enumerate(pull_times(trace)):
        while i < len(queue) and queue[i][0] <= t:
            _, k = queue[i]
            rtp = RtpPacket(payload_type=111, sequence_number=k & 0xFFFF, timestamp=k * FRAME)
            rtp._data = packets[k]  # type: ignore[attr-defined]  # the depayloaded Opus frame
            _, frame = jb.add(rtp)
            if frame is not None:
                for f in dec.decode(frame):
                    pcm = f.to_ndarray().reshape(-1)[::2].astype(np.float32) / 32768.0
                    fifo.append((pcm, frame.timestamp))
            i += 1
        out.pull_ms.append(t)
        if fifo:
            pcm, ts = fifo.popleft()
            played_frames.add(ts // FRAME)
            out.audio.append(pcm)
            if out.first_media_pull is None:
                out.first_media_pull = n
                out.first_media_ts = ts
            out.delay_ms.append(t - send_time(trace, ts / FRAME) - trace.min_delay_ms)
            if out.end_pull == 0 and ts >= last_media:
                out.end_pull = n
        else:
            out.audio.append(np.zeros(FRAME, np.float32))
            out.delay_ms.append(float("nan"))
            if out.first_media_pull is not None and out.end_pull == 0:
                gaps += 1
    if out.end_pull == 0:
        out.end_pull = len(out.audio)
    judged = len(packets) - TAIL_PACKETS
    out.late = sum(1 for k in range(judged) if trace.arrivals[k] and k not in played_frames)
    span = max(1, out.end_pull - (out.first_media_pull or 0))
    out.concealed_pct = 100.0 * gaps / span  # silence inserted: aiortc does not conceal
    if trace.stall_ends_ms:
        d = np.asarray(out.delay_ms)
        pulls = np.asarray(out.pull_ms)
        worst = 0.0
        for end in trace.stall_ends_ms:
            before = d[(pulls < end - 400) & (pulls > end - 2400)]
            level = np.nanmedian(before) if np.isfinite(before).any() else np.nan
            after = np.nonzero((pulls >= end) & (d <= level + 10.0))[0]
            worst = max(worst, (pulls[after[0]] - end) / 1000.0 if after.size else np.inf)
        out.back_to_target_s = worst
    return out


def oracle_delay(trace: Trace, late_rate: float, judged: int) -> float:
    """Smallest fixed delay (0.5 ms steps) on the same 20 ms playout clock whose late-loss rate
    does not exceed late_rate: packet k plays from send + min delay + D, and must have arrived
    by the pull that starts playing it."""
    arrivals = [trace.first_arrival(k) for k in range(judged)]
    send = trace.send_ms[:judged]
    for d in np.arange(0.0, 3000.0, 0.5):
        play = send + trace.min_delay_ms + d
        pull = PHASE_MS + np.floor((play - PHASE_MS) / FRAME_MS) * FRAME_MS
        late = sum(1 for k, a in enumerate(arrivals) if a is not None and a > pull[k])
        if late <= late_rate * judged + 1e-9:
            return float(d)
    return float("inf")


def pesq_mos(reference: Audio, out: Playout) -> float:
    """PESQ WB of the played audio against the clean decode, aligned by the known playout
    delay at the start (the first media played); PESQ aligns each utterance after that."""
    from pesq import pesq
    from scipy.signal import resample_poly

    if out.first_media_pull is None:
        return float("nan")
    played = np.concatenate(out.audio[out.first_media_pull :])
    ref = reference[out.first_media_ts :]
    n = min(played.size, ref.size)
    ref16 = resample_poly(ref[:n], 1, 3).astype(np.float32)
    deg16 = resample_poly(played[:n], 1, 3).astype(np.float32)
    try:
        return float(pesq(16000, ref16, deg16, "wb"))
    except Exception as exc:  # pesq raises on signals without speech
        print(f"  pesq failed for {out.system}: {exc}")
        return float("nan")


def fmt(v: float | None, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if np.isinf(v):
        return "never"
    if np.isnan(v):
        return "n/a"
    return format(v, spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=20261121)
    args = parser.parse_args()

    import aiortc
    import pesq as pesq_module  # noqa: F401

    print(f"rtvoice {rtvoice.__version__}, aiortc {aiortc.__version__}, numpy {np.__version__}")
    clip = speech_clip(args.seconds)
    names = [s for s in args.scenarios.split(",") if s]
    rows: list[dict[str, object]] = []
    curves: dict[str, tuple[Playout, Playout, float]] = {}
    encoded: dict[bool, tuple[list[bytes], Audio]] = {}
    for idx, name in enumerate(names):
        imp = SCENARIOS[name]
        if imp.dtx not in encoded:
            pk = encode(clip, imp.dtx)
            encoded[imp.dtx] = (pk, clean_decode(pk))
        packets, reference = encoded[imp.dtx]
        trace = generate(name, imp, len(packets), seed=args.seed + idx)
        judged = len(packets) - TAIL_PACKETS
        net_loss = 100.0 * sum(1 for a in trace.arrivals[:judged] if not a) / judged
        rt = run_rtvoice(trace, packets)
        ai = run_aiortc(trace, packets)
        rt.pesq = pesq_mos(reference, rt)
        ai.pesq = pesq_mos(reference, ai)
        oracle = oracle_delay(trace, rt.late / judged, judged)
        curves[name] = (rt, ai, oracle)
        for p in (rt, ai):
            d = p.delays()
            rows.append(
                {
                    "scenario": name,
                    "system": p.system,
                    "net_loss": net_loss,
                    "mean": float(d.mean()) if d.size else float("nan"),
                    "p95": float(np.percentile(d, 95)) if d.size else float("nan"),
                    "late": 100.0 * p.late / judged,
                    "conceal": p.concealed_pct,
                    "fec": p.fec_frames if p.system == "rtvoice" else None,
                    "stretch": p.stretch_pct if p.system == "rtvoice" else None,
                    "back": p.back_to_target_s,
                    "pesq": p.pesq,
                }
            )
        rows.append(
            {
                "scenario": name,
                "system": "oracle",
                "net_loss": net_loss,
                "mean": oracle,
                "p95": oracle,
                "late": 100.0 * rt.late / judged,
                "conceal": None,
                "fec": None,
                "stretch": None,
                "back": None,
                "pesq": None,
            }
        )
        print(f"  {name}: done", flush=True)

    header = (
        f"{'scenario':<14} {'system':<8} {'netloss%':>8} {'mean ms':>8} {'p95 ms':>8} "
        f"{'late%':>6} {'conceal%':>9} {'FEC':>5} {'acc/exp%':>8} {'back s':>7} {'PESQ':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<14} {r['system']:<8} {fmt(r['net_loss']):>8} {fmt(r['mean']):>8} "  # type: ignore[arg-type]
            f"{fmt(r['p95']):>8} {fmt(r['late'], '.2f'):>6} {fmt(r['conceal'], '.2f'):>9} "  # type: ignore[arg-type]
            f"{fmt(r['fec'], 'd'):>5} {fmt(r['stretch'], '.2f'):>8} {fmt(r['back'], '.2f'):>7} "  # type: ignore[arg-type]
            f"{fmt(r['pesq'], '.2f'):>5}"  # type: ignore[arg-type]
        )
    table = "\n".join(lines)
    print()
    print(table)

    verdicts = check_targets(rows)
    print()
    print("\n".join(verdicts))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jitter_eval.txt").write_text(table + "\n\n" + "\n".join(verdicts) + "\n")
    plot(curves, rows, args.out / "jitter_eval.png")
    print(f"\nwrote {args.out / 'jitter_eval.txt'} and {args.out / 'jitter_eval.png'}")
    return 0


def check_targets(rows: list[dict[str, object]]) -> list[str]:
    by = {(r["scenario"], r["system"]): r for r in rows}
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    out = ["targets (audio-core.md §1):"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    if ("clean_lan", "rtvoice") in by:
        m = float(by[("clean_lan", "rtvoice")]["mean"])  # type: ignore[arg-type]
        out.append(f"  {verdict(m <= 40)} clean link steady delay {m:.1f} ms <= 40 ms")
    for s in scenarios:
        rt, orc = by[(s, "rtvoice")], by[(s, "oracle")]
        m, o = float(rt["mean"]), float(orc["mean"])  # type: ignore[arg-type]
        out.append(f"  {verdict(m <= o + 15)} {s}: mean delay {m:.1f} ms <= oracle {o:.1f} + 15 ms")
    for s in scenarios:
        rt = by[(s, "rtvoice")]
        c, loss = float(rt["conceal"]), float(rt["net_loss"])  # type: ignore[arg-type]
        out.append(
            f"  {verdict(c <= loss + 0.3)} {s}: concealment {c:.2f} % <= network loss "
            f"{loss:.2f} % + 0.3 %"
        )
    for s in scenarios:
        back = by[(s, "rtvoice")]["back"]
        if back is not None:
            b = float(back)  # type: ignore[arg-type]
            out.append(f"  {verdict(b <= 2.0)} {s}: back to target {fmt(b, '.2f')} s <= 2 s")
    if ("loss5_jitter", "rtvoice") in by:
        p_rt = float(by[("loss5_jitter", "rtvoice")]["pesq"])  # type: ignore[arg-type]
        p_ai = float(by[("loss5_jitter", "aiortc")]["pesq"])  # type: ignore[arg-type]
        out.append(
            f"  {verdict(p_rt >= p_ai + 0.5)} loss5_jitter: PESQ {p_rt:.2f} >= aiortc "
            f"{p_ai:.2f} + 0.5"
        )
    return out


def plot(
    curves: dict[str, tuple[Playout, Playout, float]], rows: list[dict[str, object]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    cols = 4
    grid_rows = (len(names) + cols - 1) // cols
    fig = plt.figure(figsize=(4.2 * cols, 2.6 * grid_rows + 3.2))
    gs = fig.add_gridspec(grid_rows + 1, cols, height_ratios=[1.0] * grid_rows + [1.2])
    for i, name in enumerate(names):
        rt, ai, oracle = curves[name]
        ax = fig.add_subplot(gs[i // cols, i % cols])
        for p, color in ((rt, "tab:blue"), (ai, "tab:red")):
            end = p.end_pull + 1  # the stream's end is not part of the run
            t = np.asarray(p.pull_ms[:end]) / 1000.0
            ax.plot(t, p.delay_ms[:end], color=color, lw=0.8, label=p.system)
        ax.axhline(oracle, color="k", ls="--", lw=0.8, label="oracle")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(
            0, max(200.0, float(np.nanpercentile(ai.delay_ms[: ai.end_pull + 1], 99)) * 1.1)
        )
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("playout delay (ms)", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    ax = fig.add_subplot(gs[grid_rows, :])
    x = np.arange(len(names))
    for j, (system, color) in enumerate((("rtvoice", "tab:blue"), ("aiortc", "tab:red"))):
        vals = [
            float(r["pesq"])  # type: ignore[arg-type]
            for n in names
            for r in rows
            if r["scenario"] == n and r["system"] == system
        ]
        ax.bar(x + (j - 0.5) * 0.4, vals, width=0.4, color=color, label=system)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylabel("PESQ WB (MOS-LQO)")
    ax.set_ylim(1, 4.7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
