"""Learning-rate schedules as multipliers of the optimiser's base rate, by training progress in [0, 1].

Configured by ``_target_`` (``train.schedule``); the loop wraps them in ``LambdaLR`` stepped per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    """Constant rate, optionally after a linear warm-up over the first ``warmup`` fraction."""

    warmup: float = 0.0

    def __call__(self, progress: float) -> float:
        return _warm(progress, self.warmup, 1.0)


@dataclass(frozen=True)
class Cosine:
    """Linear warm-up, then cosine decay to ``final`` x base rate (Loshchilov & Hutter 2017)."""

    warmup: float = 0.0
    final: float = 0.0

    def __call__(self, progress: float) -> float:
        if progress < self.warmup:
            return _warm(progress, self.warmup, 1.0)
        t = (progress - self.warmup) / max(1e-12, 1.0 - self.warmup)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@dataclass(frozen=True)
class OneCycle:
    """Triangular one-cycle (airbench-style): up to 1 at ``peak``, linearly down to ``final``."""

    peak: float = 0.25
    start: float = 0.1
    final: float = 0.0

    def __call__(self, progress: float) -> float:
        if progress < self.peak:
            return self.start + (1.0 - self.start) * progress / self.peak
        return 1.0 + (self.final - 1.0) * (progress - self.peak) / max(1e-12, 1.0 - self.peak)


def _warm(progress: float, warmup: float, value: float) -> float:
    return value * min(1.0, progress / warmup) if warmup > 0 else value
