"""Seeded per-packet impairments for what the simulator sends: loss (independent or bursty,
Gilbert-Elliott), jitter and reordering."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Impairer", "Impairment"]


@dataclass(frozen=True)
class Impairment:
    """What to do to outbound RTP.

    ``loss``: long-run fraction of packets dropped (0..1). ``burst_length``: mean length of a loss
    burst in packets; ``<= 1`` means independent (Bernoulli) losses, larger values use a two-state
    Gilbert-Elliott chain with the same long-run loss. ``jitter_ms``: standard deviation of the
    extra one-way delay (half-normal); packets keep their order under jitter alone.
    ``reorder``: probability that a packet is held back and sent after the next one.
    ``seed``: the same seed gives the same decisions for the same packet sequence.
    """

    loss: float = 0.0
    burst_length: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be within [0, 1), got {self.loss}")
        if self.burst_length < 0:
            raise ValueError(f"burst_length must be >= 0, got {self.burst_length}")
        if self.jitter_ms < 0:
            raise ValueError(f"jitter_ms must be >= 0, got {self.jitter_ms}")
        if not 0.0 <= self.reorder <= 1.0:
            raise ValueError(f"reorder must be within [0, 1], got {self.reorder}")

    @property
    def active(self) -> bool:
        return self.loss > 0 or self.jitter_ms > 0 or self.reorder > 0


class Impairer:
    """Per-packet decisions for one stream. Not thread-safe."""

    def __init__(self, impairment: Impairment) -> None:
        self.config = impairment
        self._rng = random.Random(impairment.seed)
        self._bad = False
        loss, burst = impairment.loss, impairment.burst_length
        if burst > 1 and loss > 0:
            # Bad state always loses, good state never; r = 1/burst keeps the mean burst length,
            # p makes the stationary probability of the bad state equal to `loss`.
            self._r = 1.0 / burst
            self._p = min(1.0, loss * self._r / (1.0 - loss))
        else:
            self._r = self._p = 0.0
        self.dropped = 0
        self.decided = 0

    def drop(self) -> bool:
        """Whether the next packet is lost."""
        self.decided += 1
        cfg = self.config
        if cfg.loss <= 0:
            return False
        if self._p > 0:
            if self._bad:
                self._bad = self._rng.random() >= self._r
            else:
                self._bad = self._rng.random() < self._p
            lost = self._bad
        else:
            lost = self._rng.random() < cfg.loss
        if lost:
            self.dropped += 1
        return lost

    def delay_ns(self) -> int:
        """Extra one-way delay for the next packet (half-normal with sigma = jitter_ms)."""
        if self.config.jitter_ms <= 0:
            return 0
        return int(abs(self._rng.gauss(0.0, self.config.jitter_ms)) * 1_000_000)

    def hold_back(self) -> bool:
        """Whether the next packet swaps places with the one after it."""
        return self.config.reorder > 0 and self._rng.random() < self.config.reorder
