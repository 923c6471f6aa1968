"""A training regime: what labels, optimiser, schedule, augmentation and adversary to train with."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from robustdiag.types import Attack

if TYPE_CHECKING:
    from robustdiag.data import Augment


def labels_kind(q: float) -> str:
    """How training labels with a fraction ``q`` randomised relate to the truth: true, random or noisy."""
    return "true" if q == 0 else "random" if q == 1 else "noisy"


OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Regime:
    """Built from ``robustdiag/conf/train/<name>.yaml`` (``_target_: robustdiag.train.Regime``).

    ``q`` is the fraction of training labels replaced by random ones (0: generalise, 1: memorise).
    ``stop_train_acc`` ends training once the running train accuracy on the trained labels reaches it
    (memorisation runs); ``adversary`` turns the loop into PGD adversarial training.
    """

    name: str
    epochs: int
    batch_size: int
    optimizer: OptimizerFactory
    schedule: Callable[[float], float]
    q: float = 0.0
    augment: Augment | None = None
    stop_train_acc: float | None = None
    label_smoothing: float = 0.0
    adversary: Attack | None = None
    amp: bool = True  # bfloat16 autocast, CUDA only
    channels_last: bool = True  # CUDA only

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"train.q must be in [0, 1], got {self.q}")
        if self.stop_train_acc is not None and not 0.0 < self.stop_train_acc <= 1.0:
            raise ValueError(
                f"train.stop_train_acc={self.stop_train_acc} must be a fraction in (0, 1] (0.99, not 99) or null"
            )
        lr = getattr(self.optimizer, "keywords", {}).get("lr")  # a functools.partial from `_partial_: true`
        if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"train.optimizer.lr={lr!r} must be a finite number > 0")

    @property
    def labels(self) -> str:
        """How the training labels relate to the truth: ``true``, ``random`` or ``noisy``."""
        return labels_kind(self.q)
