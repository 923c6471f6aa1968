"""AutoAttack (Croce & Hein 2020) through the optional ``pyautoattack`` package.

Install it with ``pip install "robustdiag[autoattack]"`` (or ``pip install pyautoattack``).

Runtime: the standard version runs APGD-CE (100 iterations), then on the points still robust APGD-T
(9 target classes × 100 iterations), FAB-T (9 × 100) and Square (5000 queries). On an undefended
model APGD-CE fools almost everything and the rest is cheap; on a robust model expect a few thousand
forward/backward passes per robust sample, i.e. two to three orders of magnitude more than PGD-20.
"""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from robustdiag.attacks.geometry import canonical_norm
from robustdiag.attacks.gradients import AttackReliabilityWarning, frozen_parameters, warn_if_training
from robustdiag.attacks.pgd import check_attack_inputs
from robustdiag.attacks.validation import check_eps
from robustdiag.progress import progress

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "robustdiag[autoattack]" (or: pip install pyautoattack)'
VERSIONS: tuple[str, ...] = ("standard", "plus", "rand", "custom")
SUB_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
_PACKAGE_NORM = {"linf": "Linf", "l2": "L2", "l1": "L1"}  # pyautoattack's spelling
_MAX_TARGETS = 9  # target classes of APGD-T and FAB-T in the standard version
_DLR_ATTACKS = ("apgd-dlr", "apgd-t")  # DLR needs 3 classes, its targeted form 4
_STANDARD = {
    "standard": ["apgd-ce", "apgd-t", "fab-t", "square"],
    "plus": ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
    "rand": ["apgd-ce", "apgd-dlr"],
}


class _CountingModel(nn.Module):
    """The model, advancing a progress bar by one per call (AutoAttack's unit of work)."""

    def __init__(self, model: nn.Module, bar: Any) -> None:
        super().__init__()
        self.model, self.bar = model, bar

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        self.bar.update(1)
        return self.model(x)


def worst_case_calls(runner: Any, attacks: list[str]) -> int:
    """Model calls AutoAttack makes on a batch in which no sample is ever fooled (from the runner's settings).

    APGD: restarts x (iterations + 1), per target class for APGD-T; FAB: restarts x (2 iterations + 1)
    (logits, then their gradients), per target for FAB-T; Square: restarts x (queries + 1). An upper-bound
    estimate for the progress bar and the log, not a contract."""
    apgd, apgd_t, fab, square = runner.apgd, runner.apgd_targeted, runner.fab, runner.square
    calls = {
        "apgd-ce": apgd.n_restarts * (apgd.n_iter + 1),
        "apgd-dlr": apgd.n_restarts * (apgd.n_iter + 1),
        "apgd-t": apgd_t.n_target_classes * apgd_t.n_restarts * (apgd_t.n_iter + 1),
        "fab": fab.n_restarts * (2 * fab.n_iter + 1),
        "fab-t": fab.n_target_classes * fab.n_restarts * (2 * fab.n_iter + 1),
        "square": square.n_restarts * (square.n_queries + 1),
    }
    return sum(calls[a] for a in attacks)


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
            planned = list(self.attacks or runner.attacks_to_run or _STANDARD.get(self.version, []))
            budget = worst_case_calls(runner, planned)
            square_calls = worst_case_calls(runner, ["square"]) if "square" in planned else 0
            self._log_estimate(model, x, y, budget, square_calls, planned)
            with progress(
                range(budget), desc=f"{self.name} ({len(x)} samples)", total=budget, unit="call"
            ) as bar:
                runner.model = _CountingModel(model, bar)
                for attack in (runner.apgd, runner.apgd_targeted, runner.fab, runner.square):
                    for attribute in ("model", "predict"):  # the package keeps the model under either name
                        if hasattr(attack, attribute):
                            setattr(attack, attribute, runner.model)
                x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=x.shape[0])
        return x_adv.detach()

    def _log_estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: int,
        queries: int,
        planned: list[str],
    ) -> None:
        """Say, before starting, how long AutoAttack can take here: worst-case calls x measured call costs."""
        probe = x[: min(len(x), 256)]
        scale = max(1.0, len(x) / len(probe))

        def gradient_call() -> None:
            with torch.enable_grad():
                p = probe.clone().requires_grad_(True)
                torch.nn.functional.cross_entropy(model(p), y[: len(p)]).backward()

        def forward_call() -> None:
            with torch.no_grad():
                model(probe)

        timings = []
        for call in (gradient_call, gradient_call, forward_call):  # the first call warms up
            start = time.perf_counter()
            call()
            timings.append((time.perf_counter() - start) * scale)
        # Square's queries need no gradient
        seconds = (budget - queries) * timings[1] + queries * timings[2]
        log.info(
            "%s (%s: %s) on %d samples: at most ~%d model calls, ~%.0f s on this machine if no sample is fooled "
            "early (forward+backward %.1f ms, forward %.1f ms); fooled samples drop out, so undefended models "
            "finish far sooner", self.name, self.version, ", ".join(planned), len(x), budget, seconds,
            timings[1] * 1e3, timings[2] * 1e3,
        )  # fmt: skip

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
