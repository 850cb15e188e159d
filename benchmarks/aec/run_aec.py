"""Echo cancellation benchmark: every voice processing backend of this build, in one run, on the
synthetic echo scenes of scenes.py (three rooms, RT60 0.2-0.6 s, 30-200 ms extra delay, each
with the microphone at a device's distance from the loudspeaker and far-field).

Per backend and scene, through rtvoice.AudioProcessor at 48 kHz in 10 ms frames (exactly what
the Uplink runs on the capture thread), with the reference being what the speaker was given:

- ERLE after convergence: 10 log10(mic power / output power) over the far-end-only section
  from 1 s on, frames with far-end echo only;
- time to converge: from the first far-end speech, the first 100 ms step after which the
  ERLE of the rest of the far-end-only section stays >= 25 dB ("-" if it never does);
- near-end PESQ (wideband, at 16 kHz) in double-talk against the clean near-end, and the same
  chain run on the same near-end and noise with the far end silent: the drop is what the echo
  and its cancellation cost the user's voice;
- "dt dB": in double-talk, the echo's power against that of the difference between the output
  and the no-echo run's output (the echo left and the near end taken with it both count): what
  the chain removes of the echo while keeping the user's voice;
- CPU per 10 ms frame (thread time around each native call, median and mean) and the share of
  one core that is.

Then what the double-talk target takes: the PESQ drop of an ideal canceller that attenuates the
echo by a fixed amount and leaves the near end and noise untouched, on the device scenes, against
the microphone without echo; the "dt dB" a backend would need.

Configurations: "aec" (echo cancellation and high-pass; ERLE is the canceller's alone) and
"full" (also noise suppression and AGC, as `rtvoice talk` runs it), each with the device path's
delay reported to the canceller (`stream_delay_ms`, as `rtvoice talk` does from PortAudio's
latencies; SpeexDSP has no such input), and "aec/est" with no delay reported (WebRTC's
delay estimator alone; AEC3 with webrtc-audio-processing 1.x, else the 0.3 release's
delay-agnostic one). The first line names each backend's library
(rtvoice._core.voice_processing_libraries()).

Targets (issue 12): ERLE >= 25 dB within 1 s of far-end speech; PESQ drop <= 0.3 in
double-talk; <= 5 % of a core. The verdict is given apart for the device scenes (the loudspeaker
0.2-0.5 m from the microphone, as on a laptop or a kiosk) and the far-field ones (2-5 m).

Run: python benchmarks/aec/run_aec.py   (the bench extra: scipy, pesq; espeak-ng)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import RATE, Scene, make_scenes

import rtvoice
from rtvoice._core import voice_processing_backends, voice_processing_libraries

FRAME = RATE // 100
ERLE_TARGET_DB = 25.0
CONVERGE_TARGET_S = 1.0
PESQ_DROP_TARGET = 0.3
CPU_TARGET_PERCENT = 5.0
# name -> (AudioProcessor options, report the scene's delay)
CONFIGS = {
    "aec": ({"noise_suppression": False, "agc": False}, True),
    "aec/est": ({"noise_suppression": False, "agc": False}, False),
    "full": ({"noise_suppression": True, "agc": True}, True),
}

Audio = npt.NDArray[np.float32]


@dataclass
class Row:
    backend: str
    config: str
    room: str
    far_field: bool
    erle_db: float
    converge_s: float | None
    pesq_dt: float
    pesq_dt_no_echo: float
    pesq_mic: float
    dt_erle_db: float
    cpu_us_median: float
    cpu_us_mean: float

    @property
    def pesq_drop(self) -> float:
        return self.pesq_dt_no_echo - self.pesq_dt


def run(
    backend: str, config: str, mic: Audio, far: Audio, delay_ms: int
) -> tuple[Audio, list[int]]:
    options, report_delay = CONFIGS[config]
    proc = rtvoice.AudioProcessor(
        RATE, backend=backend, stream_delay_ms=delay_ms if report_delay else 0, **options
    )
    out = np.empty_like(mic)
    times = []
    for k in range(0, mic.size - FRAME + 1, FRAME):
        c = np.ascontiguousarray(mic[k : k + FRAME])
        r = np.ascontiguousarray(far[k : k + FRAME])
        t0 = time.thread_time_ns()
        out[k : k + FRAME] = proc.process(c, r)
        times.append(time.thread_time_ns() - t0)
    return out, times


def _power(x: Audio) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-20


def erle_db(scene: Scene, out: Audio, start_s: float) -> float:
    """ERLE over frames of the far-end-only section from start_s on where the echo is above
    -60 dBFS (speech pauses excluded)."""
    mic = scene.mic
    a = int(start_s * RATE) // FRAME * FRAME
    b = scene.far_end.stop // FRAME * FRAME
    m = mic[a:b].reshape(-1, FRAME)
    o = out[a:b].reshape(-1, FRAME)
    e = scene.echo[a:b].reshape(-1, FRAME)
    active = (e.astype(np.float64) ** 2).mean(axis=1) > 1e-6
    if not active.any():
        return float("nan")
    return 10 * np.log10(_power(m[active]) / _power(o[active]))


def converge_s(scene: Scene, out: Audio) -> float | None:
    far_active = np.flatnonzero(np.abs(scene.far[scene.far_end]) > 1e-3)
    if far_active.size == 0:
        return None
    onset_s = far_active[0] / RATE
    end_s = scene.far_end.stop / RATE
    t = onset_s
    while t < end_s - 1.0:
        if erle_db(scene, out, t) >= ERLE_TARGET_DB:
            return t - onset_s
        t += 0.1
    return None


def pesq16(ref: Audio, deg: Audio) -> float:
    from pesq import pesq
    from scipy.signal import resample_poly

    r = resample_poly(ref.astype(np.float64), 1, 3)
    d = resample_poly(deg.astype(np.float64), 1, 3)
    return float(pesq(16000, r, d, "wb"))


def evaluate(backend: str, config: str, scene: Scene) -> Row:
    delay = scene.room.delay_ms
    out, times = run(backend, config, scene.mic, scene.far, delay)
    silent_far = np.zeros_like(scene.far)
    clean_out, _ = run(backend, config, scene.mic_without_echo, silent_far, delay)
    dt = scene.double_talk
    us = np.array(times[len(times) // 10 :]) / 1000.0  # after warm-up
    # In double-talk, the echo against what the output differs by from the same chain's output
    # without it: the echo left and the near end taken with it both count.
    dt_erle = 10 * np.log10(_power(scene.echo[dt]) / _power(out[dt] - clean_out[dt]))
    return Row(
        backend=backend,
        config=config,
        room=(
            f"{scene.room.name} {scene.room.rt60_s:.1f}s +{scene.room.delay_ms}ms "
            f"{scene.room.distance_m:g}m DRR{scene.room.drr_db:+.0f}"
        ),
        far_field=scene.room.far_field,
        erle_db=erle_db(scene, out, 1.0),
        converge_s=converge_s(scene, out),
        pesq_dt=pesq16(scene.near[dt], out[dt]),
        pesq_dt_no_echo=pesq16(scene.near[dt], clean_out[dt]),
        pesq_mic=pesq16(scene.near[dt], scene.mic[dt]),
        dt_erle_db=float(dt_erle),
        cpu_us_median=float(np.median(us)),
        cpu_us_mean=float(np.mean(us)),
    )


IDEAL_ATTENUATION_DB = (10, 20, 25, 30, 35, 40)


def ideal_drops(scenes: list[Scene]) -> dict[int, float]:
    """Worst PESQ drop in double-talk over the scenes with the echo attenuated by each amount
    and nothing else changed."""
    worst = dict.fromkeys(IDEAL_ATTENUATION_DB, 0.0)
    for scene in scenes:
        dt = scene.double_talk
        clean = pesq16(scene.near[dt], scene.mic_without_echo[dt])
        for db in IDEAL_ATTENUATION_DB:
            mic = scene.mic_without_echo[dt] + scene.echo[dt] * np.float32(10 ** (-db / 20))
            worst[db] = max(worst[db], clean - pesq16(scene.near[dt], mic))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(voice_processing_backends()))
    args = parser.parse_args()
    from importlib.metadata import version

    import scipy

    print(
        f"rtvoice {rtvoice.__version__}, backends {voice_processing_libraries()}, "
        f"pesq {version('pesq')}, scipy {scipy.__version__}, "
        f"{platform.machine()}, Python {platform.python_version()}"
    )
    scenes = make_scenes()
    rows = [
        evaluate(b, c, s)
        for b in args.backends.split(",")
        for c in CONFIGS
        if not (b == "speex" and c == "aec/est")  # SpeexDSP takes no delay: one row is enough
        for s in scenes
    ]
    header = (
        f"{'backend':<7} {'config':<7} {'scene':<32} {'ERLE dB':>7} {'conv s':>6} "
        f"{'PESQ dt':>7} {'no echo':>7} {'drop':>5} {'mic':>5} {'dt dB':>5} "
        f"{'us/10ms':>8} {'mean':>6} "
        f"{'core %':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        conv = "-" if r.converge_s is None else f"{r.converge_s:.1f}"
        print(
            f"{r.backend:<7} {r.config:<7} {r.room:<32} {r.erle_db:7.1f} {conv:>6} "
            f"{r.pesq_dt:7.2f} {r.pesq_dt_no_echo:7.2f} {r.pesq_drop:5.2f} {r.pesq_mic:5.2f} "
            f"{r.dt_erle_db:5.1f} "
            f"{r.cpu_us_median:8.1f} {r.cpu_us_mean:6.1f} {r.cpu_us_mean / 100:6.2f}"
        )
    print()
    print(
        f"targets: ERLE >= {ERLE_TARGET_DB:.0f} dB within {CONVERGE_TARGET_S:.0f} s, PESQ drop "
        f"<= {PESQ_DROP_TARGET} in double-talk, <= {CPU_TARGET_PERCENT:.0f} % of a core"
    )
    for backend, config, far_field in (
        (b, c, f) for f in (False, True) for b in args.backends.split(",") for c in CONFIGS
    ):
        mine = [
            r
            for r in rows
            if r.backend == backend and r.config == config and r.far_field == far_field
        ]
        if not mine:
            continue
        erle = min(r.erle_db for r in mine)
        conv = [r.converge_s for r in mine]
        worst_conv = None if None in conv else max(c for c in conv if c is not None)
        drop = max(r.pesq_drop for r in mine)
        core = max(r.cpu_us_mean for r in mine) / 100
        misses = [
            name
            for name, met in (
                ("ERLE", erle >= ERLE_TARGET_DB),
                (
                    "convergence",
                    worst_conv is not None and worst_conv <= CONVERGE_TARGET_S,
                ),
                ("double-talk PESQ", drop <= PESQ_DROP_TARGET),
                ("CPU", core <= CPU_TARGET_PERCENT),
            )
            if not met
        ]
        conv_text = "never" if worst_conv is None else f"{worst_conv:.1f} s"
        verdict = "meets the targets" if not misses else "misses " + ", ".join(misses)
        print(
            f"{backend:<7} {config:<7} {'far-field' if far_field else 'device':<9} worst ERLE "
            f"{erle:.1f} dB, converged {conv_text}, PESQ drop {drop:.2f}, {core:.2f} % core: "
            f"{verdict}"
        )
    drops = ideal_drops([s for s in scenes if not s.room.far_field])
    needed = [db for db, drop in drops.items() if drop <= PESQ_DROP_TARGET]
    print()
    print(
        "an ideal canceller in double-talk (the echo attenuated, the near end untouched), worst "
        "device scene's PESQ drop: "
        + ", ".join(f"{db} dB {drop:.2f}" for db, drop in drops.items())
        + (
            f"; the target takes {min(needed)} dB"
            if needed
            else f"; more than {max(drops)} dB for the target"
        )
    )
    worst_dt = {
        (r.backend, r.config): min(
            x.dt_erle_db
            for x in rows
            if (x.backend, x.config) == (r.backend, r.config) and not x.far_field
        )
        for r in rows
    }
    print("worst device dt dB: " + ", ".join(f"{b} {c} {v:.1f}" for (b, c), v in worst_dt.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
