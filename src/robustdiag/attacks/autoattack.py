"""AutoAttack (Croce & Hein 2020) through the optional ``pyautoattack`` package.

Install it with ``pip install "robustdiag[autoattack]"`` (or ``pip install pyautoattack``).

Runtime: the standard version runs APGD-CE (100 iterations), then on the points still robust APGD-T
(9 target classes × 100 iterations), FAB-T (9 × 100) and Square (5000 queries). On an undefended
model APGD-CE fools almost everything and the rest is cheap; on a robust model expect a few thousand
forward/backward passes per robust sample, i.e. two to three orders of magnitude more than PGD-20.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from robustdiag.attacks.geometry import canonical_norm
from robustdiag.attacks.gradients import AttackReliabilityWarning, frozen_parameters, warn_if_training
from robustdiag.attacks.pgd import check_attack_inputs
from robustdiag.attacks.validation import check_eps

INSTALL_HINT = 'pip install "robustdiag[autoattack]" (or: pip install pyautoattack)'
VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
SUB_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
_PACKAGE_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}  # pyautoattack's spelling
_MAX_TARGETS = 9  # target classes of APGD-T and FAB-T in the standard version
_DLR_ATTACKS = ("apgd-dlr", "apgd-t")  # DLR needs 3 classes, its targeted form 4


def import_pyautoattack() -> ModuleType:
    """Import ``pyautoattack`` or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module("pyautoattack")
    except ImportError as err:
        raise ImportError(
            f"attack 'autoattack' needs the optional package pyautoattack: {INSTALL_HINT}"
        ) from err


class AutoAttack:
    """Adapter from the :class:`~robustdiag.types.Attack` protocol to ``pyautoattack.AutoAttack``.

    Deterministic given ``seed`` (or the ``generator`` passed per call, from which a seed is drawn);
    the package reseeds torch's global RNG, so the call runs inside ``torch.random.fork_rng`` and
    leaves the caller's RNG state untouched. With fewer than 10 classes the number of target classes
    is lowered to K − 1; with fewer than 4 the DLR-based sub-attacks are dropped (with a warning).

    Args:
        norm: "Linf", "L2" or "L1" (case-insensitive).
        eps: radius in [0, 1] pixel units.
        version: "standard", "plus", "rand" or "custom" (then ``attacks`` lists the sub-attacks).
        name: record key.
        seed: seed used when no generator is passed.
        attacks: sub-attacks for version "custom", from apgd-ce, apgd-dlr, fab, square, apgd-t, fab-t.
    """

    strength = float("inf")  # the strongest attack in any comparison

    def __init__(
        self,
        norm: str = "Linf",
        eps: float = 8 / 255,
        version: str = "standard",
        name: str = "autoattack",
        seed: int = 0,
        attacks: list[str] | None = None,
    ) -> None:
        self._package = import_pyautoattack()
        self.norm = canonical_norm(norm)
        self.eps = check_eps(eps, self.norm)
        if version not in VERSIONS:
            raise ValueError(
                f"version={version!r} is not an AutoAttack version; valid values: {', '.join(VERSIONS)}"
            )
        self.version = version
        self.attacks = _check_sub_attacks(attacks, version)
        self.name = name
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"AutoAttack(norm={self.norm!r}, eps={self.eps:.6g}, version={self.version!r}, "
            f"name={self.name!r}, seed={self.seed})"
        )

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Adversarial pixels (B, C, H, W) in [0, 1]; unchanged for the samples AutoAttack did not fool."""
        check_attack_inputs(x, y, generator)
        warn_if_training(model, self.name)
        x, y = x.detach(), y.detach()
        seed = self._seed_from(generator)
        # the package calls torch.manual_seed and torch.cuda.manual_seed: fork every device's RNG
        rng_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with frozen_parameters(model), torch.random.fork_rng(devices=rng_devices):
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[-1])
            runner = self._package.AutoAttack(
                model,
                attacks=self.attacks if self.version == "custom" else None,
                device=x.device,
                eps=self.eps,
                norm=_PACKAGE_NORM[self.norm],
                seed=seed,
                version=self.version,
            )
            runner.verbose = False
            self._fit_to_classes(runner, num_classes)
            x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=x.shape[0])
        return x_adv.detach()

    def _seed_from(self, generator: torch.Generator | None) -> int:
        """The package's seed: drawn from ``generator`` when given, else the configured one."""
        if generator is None:
            return self.seed
        draw = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device)
        return int(draw.item())

    def _fit_to_classes(self, runner: Any, num_classes: int) -> None:
        """Lower the target-class counts to K − 1 and drop DLR attacks when K < 4 (they need 4 classes)."""
        targets = max(1, min(_MAX_TARGETS, num_classes - 1))
        runner.apgd_targeted.n_target_classes = targets
        runner.fab.n_target_classes = targets
        if num_classes >= 4:
            return
        planned = list(runner.attacks_to_run)
        kept = [a for a in planned if a not in _DLR_ATTACKS]
        if kept != planned:
            warnings.warn(
                f"AutoAttack with {num_classes} classes: the DLR losses need at least 4 classes; "
                f"skipping {', '.join(a for a in planned if a in _DLR_ATTACKS)}, "
                f"running {', '.join(kept)}.",
                AttackReliabilityWarning,
                stacklevel=3,
            )
        runner.attacks_to_run = kept


def _check_sub_attacks(attacks: list[str] | None, version: str) -> list[str] | None:
    """Validate the sub-attack list: required (and only allowed) for version "custom"."""
    if version != "custom":
        if attacks is not None:
            raise ValueError(
                f"attacks={attacks!r} is only used with version='custom' (got version={version!r})"
            )
        return None
    if not attacks:
        raise ValueError(f"version='custom' needs attacks=[...]; valid values: {', '.join(SUB_ATTACKS)}")
    unknown = [a for a in attacks if a not in SUB_ATTACKS]
    if unknown:
        raise ValueError(f"attacks has unknown entries {unknown}; valid values: {', '.join(SUB_ATTACKS)}")
    return list(attacks)
