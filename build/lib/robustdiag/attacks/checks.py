"""Sanity checks for attack evaluations, in the spirit of AutoAttack's flags (Croce & Hein 2020).

Checks that mean "this number may be unreliable" return a message (or None); :func:`emit` turns the
messages into :class:`AttackReliabilityWarning` warnings and the caller stores them in
``AttackResult.warnings``. A broken attack contract (perturbation outside the ε-ball or pixels
outside [0, 1]) raises :class:`AttackContractError`: such a number must not be recorded at all.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch

from robustdiag.attacks.geometry import perturbation_norm
from robustdiag.attacks.gradients import AttackReliabilityWarning
from robustdiag.attacks.result import AttackResult

PROBABILITY_ATOL = 1e-4  # rows summing to 1 within this look like softmax outputs
RANDOMNESS_RTOL = 1e-4  # two identical forward passes must agree to this relative tolerance
RANDOMNESS_ATOL = 1e-5
MAX_MASKED_FRACTION = 0.05  # warn when more samples than this have a zero input gradient
PERTURBATION_ATOL = 1e-5  # rounding slack of x_adv − x in float32 pixels
PER_SAMPLE_TOLERANCE = 0.02  # warn when more samples than this are fooled by a weaker attack only


class AttackContractError(RuntimeError):
    """An attack returned points outside its threat model (ε-ball or [0, 1])."""


def emit(messages: Sequence[str | None]) -> list[str]:
    """Warn each non-empty message as an :class:`AttackReliabilityWarning`; return them as a list."""
    kept = [m for m in messages if m]
    for message in kept:
        warnings.warn(message, AttackReliabilityWarning, stacklevel=3)
    return kept


def probability_output_message(logits: torch.Tensor, *, atol: float = PROBABILITY_ATOL) -> str | None:
    """Message when model outputs (B, K) look like probabilities (non-negative rows summing to 1)."""
    if logits.numel() == 0:
        return None
    nonnegative = bool((logits >= 0).all())
    sums_to_one = bool(((logits.sum(dim=-1) - 1).abs() <= atol).all())
    if not (nonnegative and sums_to_one):
        return None
    return (
        "model outputs look like probabilities (every row is non-negative and sums to 1), not logits: "
        "cross-entropy on softmax outputs has vanishing gradients and underestimates attacks. "
        "Remove the final softmax so the model returns logits."
    )


def randomness_message(
    first: torch.Tensor, second: torch.Tensor, *, rtol: float = RANDOMNESS_RTOL, atol: float = RANDOMNESS_ATOL
) -> str | None:
    """Message when two forward passes on the same batch give different outputs (B, K)."""
    if torch.allclose(first.float(), second.float(), rtol=rtol, atol=atol, equal_nan=True):
        return None
    gap = (first.float() - second.float()).abs().max().item()
    return (
        f"two identical forward passes differ (max |Δlogit| = {gap:.3g}): the model is stochastic "
        "(dropout or another random layer left on, or a randomised defence). Attacks on random "
        "models need expectation over transformation (e.g. AutoAttack version='rand'); check that "
        "every random layer respects model.eval()."
    )


def gradient_masking_message(
    grad: torch.Tensor, *, max_masked_fraction: float = MAX_MASKED_FRACTION
) -> str | None:
    """Message when input gradients (B, ...) are non-finite for any sample or zero for too many."""
    flat = grad.flatten(1)  # (B, D)
    nonfinite = ~torch.isfinite(flat).all(dim=1)  # (B,)
    zero = (flat == 0).all(dim=1)  # (B,)
    n = flat.shape[0]
    problems = []
    if bool(nonfinite.any()):
        problems.append(f"{int(nonfinite.sum())}/{n} samples have non-finite input gradients")
    if n and zero.float().mean().item() > max_masked_fraction:
        problems.append(f"{int(zero.sum())}/{n} samples have an exactly zero input gradient")
    if not problems:
        return None
    return (
        f"possible gradient masking: {'; '.join(problems)}. Gradient-based attacks (PGD, FGSM) then "
        "overestimate robustness. Look for non-differentiable layers (argmax, rounding, quantisation), "
        "saturated softmax (overconfident logits), or NaNs; confirm with a gradient-free attack "
        "(AutoAttack's Square)."
    )


def robust_above_clean_message(name: str, adv_acc: float, clean_acc: float) -> str | None:
    """Message when accuracy on adversarial points exceeds clean accuracy (an attack cannot help)."""
    if adv_acc <= clean_acc:
        return None
    return (
        f"attack {name!r}: accuracy under attack ({adv_acc:.2%}) exceeds clean accuracy "
        f"({clean_acc:.2%}): the attack made the model more accurate, which points to a bug "
        "(wrong labels passed to the attack, a sign error in the loss, or a model that changes between "
        "calls)."
    )


def check_adversarial_batch(
    name: str,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    norm: str | None,
    eps: float | None,
    *,
    atol: float = PERTURBATION_ATOL,
) -> torch.Tensor:
    """Raise :class:`AttackContractError` unless ``x_adv`` is a valid attack output; return norms (B,).

    Valid: same shape as ``x``, finite, in [0, 1], and ‖x_adv − x‖ ≤ eps + atol per sample in
    ``norm`` (checked when the attack states its norm and eps; L∞ is measured otherwise).
    """
    if x_adv.shape != x.shape:
        raise AttackContractError(
            f"attack {name!r} returned shape {tuple(x_adv.shape)}, expected {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x_adv).all()):
        raise AttackContractError(f"attack {name!r} returned non-finite pixels")
    low, high = x_adv.min().item(), x_adv.max().item()
    if low < -atol or high > 1 + atol:
        raise AttackContractError(
            f"attack {name!r} returned pixels in [{low:.4g}, {high:.4g}], outside [0, 1]"
        )
    sizes = perturbation_norm((x_adv - x).float(), norm or "linf")  # (B,)
    if eps is not None and sizes.numel() and sizes.max().item() > eps + atol:
        raise AttackContractError(
            f"attack {name!r} perturbed a sample by {sizes.max().item():.6g} in {norm}, more than eps={eps:.6g}"
        )
    return sizes


def _comparable(weak: AttackResult, strong: AttackResult) -> bool:
    """True when ``strong`` must do at least as well as ``weak``: same norm and samples, no smaller eps."""
    if weak.norm is None or weak.norm != strong.norm or len(weak) != len(strong):
        return False
    if weak.eps is None or strong.eps is None:
        return False
    return strong.eps >= weak.eps - 1e-12


def _strength_pairs(
    results: Mapping[str, AttackResult], strength_order: Sequence[str] | None
) -> list[tuple[str, str]]:
    """(weaker, stronger) name pairs to compare, from ``strength_order`` or each result's ``strength``."""
    if strength_order is None:
        strengths = {n: float(r.strength) for n, r in results.items() if r.strength is not None}
        names = sorted((n for n in strengths if not math.isnan(strengths[n])), key=strengths.__getitem__)
        return [
            (weak, strong)
            for i, weak in enumerate(names)
            for strong in names[i + 1 :]
            if strengths[strong] > strengths[weak]
        ]
    names = [n for n in strength_order if n in results]
    return [(weak, strong) for i, weak in enumerate(names) for strong in names[i + 1 :]]


def compare_attacks(
    results: Mapping[str, AttackResult],
    strength_order: Sequence[str] | None = None,
    *,
    tolerance: float = 0.0,
    per_sample_tolerance: float = PER_SAMPLE_TOLERANCE,
) -> list[str]:
    """Warn when a stronger attack leaves more robust than a weaker one at the same norm and no smaller ε.

    ``strength_order`` lists attack names from weakest to strongest (e.g. ``["fgsm", "pgd_linf",
    "autoattack"]``); names missing from ``results`` are skipped. By default attacks are ordered by
    their ``strength`` (FGSM 1 < PGD steps·restarts < AutoAttack). Two signals per pair: the stronger
    attack's robust accuracy exceeds the weaker one's by more than ``tolerance``, or more than
    ``per_sample_tolerance`` of the samples are fooled by the weaker attack but not by the stronger.
    Returns the messages (also warned as :class:`AttackReliabilityWarning`).
    """
    messages: list[str] = []
    for weak_name, strong_name in _strength_pairs(results, strength_order):
        weak, strong = results[weak_name], results[strong_name]
        if not _comparable(weak, strong):
            continue
        only_weak = weak.fooled & ~strong.fooled  # (N,)
        only_weak_fraction = only_weak.float().mean().item() if len(weak) else 0.0
        if strong.acc <= weak.acc + tolerance and only_weak_fraction <= per_sample_tolerance:
            continue
        messages.append(
            f"attack {strong_name!r} ({strong.acc:.2%} robust) should be at least as strong as "
            f"{weak_name!r} ({weak.acc:.2%} robust) at {strong.norm} eps={strong.eps:.4g}, but "
            f"{int(only_weak.sum())}/{len(weak)} samples are fooled by {weak_name!r} only. "
            "This is a classic sign of gradient masking or of too few steps / a badly tuned step size; "
            "try more steps or restarts, or AutoAttack."
        )
    return emit(messages)
