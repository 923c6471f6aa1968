"""Adversarial attacks in [0, 1] pixel space, their batched evaluation, and sanity checks.

* :class:`PGD` (L∞ / L2, random start, restarts) and :class:`FGSM`: batched, one forward and one
  input-backward per step, parameters untouched.
* :class:`AutoAttack`: adapter to the optional ``pyautoattack`` package.
* :func:`evaluate_attack`: per-sample robust flags, robust accuracy, contract and sanity checks.
* :func:`compare_attacks`: warns when a stronger attack does worse than a weaker one.

Hydra options live in ``robustdiag/conf/attack/`` (``attack=[pgd_linf,fgsm]``); each names its class in
``_target_``.
"""

from robustdiag.attacks.autoattack import AutoAttack
from robustdiag.attacks.checks import AttackContractError, compare_attacks
from robustdiag.attacks.evaluate import evaluate_attack
from robustdiag.attacks.gradients import AttackReliabilityWarning, frozen_parameters
from robustdiag.attacks.pgd import FGSM, PGD
from robustdiag.attacks.result import AttackResult

__all__ = [
    "FGSM",
    "PGD",
    "AttackContractError",
    "AttackReliabilityWarning",
    "AttackResult",
    "AutoAttack",
    "compare_attacks",
    "evaluate_attack",
    "frozen_parameters",
]
