"""What evaluating one attack on one model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttackResult:
    """Per-sample and aggregate outcome of one attack on a fixed set of evaluation samples.

    Convention (as RobustBench/AutoAttack): a sample misclassified on clean data counts as not robust,
    so ``robust = clean_correct & correct_under_attack`` and ``acc <= clean_acc`` always.
    """

    name: str
    robust: torch.Tensor  # (N,) bool on CPU: correct on clean data and under attack
    clean_correct: torch.Tensor  # (N,) bool on CPU
    acc: float  # robust accuracy, mean of `robust`
    clean_acc: float  # mean of `clean_correct`
    adv_acc: float  # accuracy on the adversarial points alone (without the clean-correct AND)
    max_perturbation: float  # largest per-sample ‖x_adv − x‖ in `norm` (L∞ when norm is unknown)
    norm: str | None = None  # "linf", "l2", "l1", or None for an attack that does not say
    eps: float | None = None  # the attack's radius in [0, 1] pixel units, when it says
    strength: float | None = None  # rough attack budget used to order attacks in compare_attacks
    time_s: float = 0.0  # wall time of the attack calls (not the clean forward or the checks)
    warnings: list[str] = field(default_factory=list)  # sanity-check messages (also warned)
    x_adv: torch.Tensor | None = None  # (N, C, H, W) adversarial pixels, kept only when asked

    @property
    def fooled(self) -> torch.Tensor:
        """(N,) bool: correct on clean data, wrong under attack."""
        return self.clean_correct & ~self.robust

    def __len__(self) -> int:
        return int(self.robust.shape[0])
