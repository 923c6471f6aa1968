"""Identity and adversarial shifts.

``AdversarialShift`` lets the pipeline measure diagnostics (path separation, Fisher lambda) on
adversarially perturbed inputs exactly as on corrupted ones. Severity: only severity 1 exists, meaning
"the attack as configured"; to study several budgets, configure several adversarial shifts with different
``name`` and attack ``eps`` (one YAML option each) rather than overloading the severity axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from robustdiag.shifts.base import check_images, check_severities, check_severity
from robustdiag.types import Attack

ADVERSARIAL_SEVERITIES: tuple[int, ...] = (1,)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def generator_on(device: torch.device, generator: torch.Generator) -> torch.Generator:
    """``generator`` itself if it lives on ``device``, else a generator there seeded from it (reproducibly)."""
    if _same_device(generator.device, device):
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    derived = torch.Generator(device=device)
    derived.manual_seed(seed)
    return derived


class AdversarialShift:
    """Inputs perturbed by ``attack`` against the model under evaluation (satisfies ``Shift``).

    Needs ``model`` and the true labels ``y`` at call time. The attack receives a generator on the
    batch's device (derived from the given one when that lives elsewhere), so random starts are
    reproducible under :func:`robustdiag.shifts.apply_shift`'s seeding. ``adversarial = True`` tells the
    pipeline to leave it out of the mean corruption accuracy.
    """

    adversarial = True

    def __init__(
        self, attack: Attack, name: str = "adversarial", severities: Sequence[int] = ADVERSARIAL_SEVERITIES
    ) -> None:
        if not callable(attack):
            raise ValueError(
                f"{name}: attack must be callable as attack(model, x, y, *, generator), got {attack!r}"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"AdversarialShift: name must be a non-empty string, got {name!r}")
        self.attack = attack
        self.name = name
        self.severities = check_severities(name, severities, ADVERSARIAL_SEVERITIES)

    def __repr__(self) -> str:
        return f"AdversarialShift(name={self.name!r}, attack={self.attack!r})"

    def __call__(
        self,
        x: torch.Tensor,
        severity: int,
        *,
        generator: torch.Generator,
        index: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """Adversarial pixels (B, C, H, W) in [0, 1] for the batch."""
        check_severity(self.name, severity, ADVERSARIAL_SEVERITIES)
        check_images(self.name, x)
        if model is None or y is None:
            raise ValueError(f"{self.name}: the adversarial shift needs the model and the labels y")
        x_adv = self.attack(model, x, y, generator=generator_on(x.device, generator))
        return x_adv.detach().clamp(0.0, 1.0).to(x.dtype)
