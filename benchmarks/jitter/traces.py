"""Deterministic, seeded network traces for 20 ms audio packets (virtual time, milliseconds).

A trace says, for packet k sent at ``send_ms[k]`` on the sender's clock, when each copy of it
arrives on the receiver's clock (``arrivals[k]``: empty when lost, two entries when duplicated).
The impairments are composable: random and Gilbert-Elliott loss, normal jitter with Pareto
spikes (FIFO: a delayed packet holds up the ones behind it), stalls, delay steps, reordering,
duplicates and sender clock drift. ``SCENARIOS`` names the ones the evaluation runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FRAME_MS = 20.0


@dataclass(frozen=True)
class Impairments:
    base_delay_ms: float = 5.0
    jitter_ms: float = 0.3  # standard deviation of the normal jitter
    spike_prob: float = 0.0  # per packet, a Pareto-distributed extra delay
    spike_scale_ms: float = 20.0
    spike_shape: float = 2.0
    loss: float = 0.0  # random loss
    ge_loss: tuple[float, float] | None = None  # Gilbert-Elliott (p good->bad, p bad->good)
    ge_bad_loss: float = 0.7
    stalls_every_s: float = 0.0  # a stall of stall_ms every this many seconds
    stall_ms: float = 300.0
    delay_steps_ms: tuple[float, ...] = ()  # base delay changes, one per third of the trace
    reorder: float = 0.0  # probability that a packet is held back behind the next one
    reorder_ms: float = 30.0
    duplicate: float = 0.0
    drift_ppm: float = 0.0  # sender clock rate error
    dtx: bool = False  # the encoder runs with DTX (the clip has pauses)


@dataclass
class Trace:
    name: str
    send_ms: np.ndarray
    arrivals: list[list[float]]
    stall_ends_ms: list[float] = field(default_factory=list)
    min_delay_ms: float = 0.0

    @property
    def lost(self) -> int:
        return sum(1 for a in self.arrivals if not a)

    def first_arrival(self, k: int) -> float | None:
        return min(self.arrivals[k]) if self.arrivals[k] else None


def generate(name: str, imp: Impairments, packets: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    send = np.arange(packets) * FRAME_MS * (1.0 + imp.drift_ppm * 1e-6)
    n_steps = len(imp.delay_steps_ms)
    base = np.full(packets, float(imp.base_delay_ms))
    for i, step in enumerate(imp.delay_steps_ms):
        base[(i + 1) * packets // (n_steps + 1) :] += step
    delay = base + np.abs(rng.normal(0.0, imp.jitter_ms, packets))
    spikes = rng.random(packets) < imp.spike_prob
    delay[spikes] += (rng.pareto(imp.spike_shape, spikes.sum()) + 1.0) * imp.spike_scale_ms
    arrival = send + delay
    # FIFO network: nobody overtakes a delayed packet (except the explicit reorderings below).
    arrival = np.maximum.accumulate(arrival)
    stall_ends: list[float] = []
    if imp.stalls_every_s > 0:
        t = imp.stalls_every_s * 1000.0 * 0.6
        while t < arrival[-1]:
            end = t + imp.stall_ms
            held = (arrival >= t) & (arrival < end)
            arrival[held] = end + np.arange(held.sum()) * 0.05  # released as a burst
            stall_ends.append(end)
            t += imp.stalls_every_s * 1000.0
    reordered = rng.random(packets) < imp.reorder
    arrival[reordered] += imp.reorder_ms

    lost = rng.random(packets) < imp.loss
    if imp.ge_loss is not None:
        p_gb, p_bg = imp.ge_loss
        bad = False
        for k in range(packets):
            bad = (rng.random() < p_gb) if not bad else (rng.random() >= p_bg)
            if bad and rng.random() < imp.ge_bad_loss:
                lost[k] = True
    dup = rng.random(packets) < imp.duplicate
    arrivals: list[list[float]] = []
    for k in range(packets):
        if lost[k]:
            arrivals.append([])
        elif dup[k]:
            arrivals.append([float(arrival[k]), float(arrival[k] + rng.uniform(1, 40))])
        else:
            arrivals.append([float(arrival[k])])
    min_delay = float(np.min(delay))
    return Trace(name, send, arrivals, stall_ends, min_delay)


SCENARIOS: dict[str, Impairments] = {
    "clean_lan": Impairments(base_delay_ms=2, jitter_ms=0.3),
    "wifi": Impairments(
        base_delay_ms=15, jitter_ms=6, spike_prob=0.01, spike_scale_ms=30, loss=0.01
    ),
    "lte": Impairments(
        base_delay_ms=45,
        jitter_ms=12,
        spike_prob=0.02,
        spike_scale_ms=40,
        ge_loss=(0.01, 0.5),
        reorder=0.01,
    ),
    "loss5_jitter": Impairments(base_delay_ms=30, jitter_ms=10, loss=0.05),
    "loss20": Impairments(base_delay_ms=30, jitter_ms=4, loss=0.20),
    "bursty_loss": Impairments(base_delay_ms=30, jitter_ms=4, ge_loss=(0.02, 0.3)),
    "stalls_300ms": Impairments(base_delay_ms=20, jitter_ms=2, stalls_every_s=8.0),
    "delay_steps": Impairments(base_delay_ms=20, jitter_ms=2, delay_steps_ms=(120.0, -120.0)),
    "reorder_dup": Impairments(base_delay_ms=20, jitter_ms=3, reorder=0.05, duplicate=0.05),
    "dtx": Impairments(base_delay_ms=20, jitter_ms=5, loss=0.01, dtx=True),
    "drift_+100ppm": Impairments(base_delay_ms=20, jitter_ms=1, drift_ppm=100.0),
    "drift_-100ppm": Impairments(base_delay_ms=20, jitter_ms=1, drift_ppm=-100.0),
    "bad_mobile": Impairments(
        base_delay_ms=70,
        jitter_ms=20,
        spike_prob=0.03,
        spike_scale_ms=60,
        ge_loss=(0.02, 0.4),
        stalls_every_s=10.0,
        reorder=0.02,
        duplicate=0.01,
    ),
}
