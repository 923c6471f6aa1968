"""Run one attack over a fixed evaluation set, batched, with sanity checks."""

from __future__ import annotations

import time

import torch
from torch import nn

from robustdiag.attacks.checks import (
    check_adversarial_batch,
    emit,
    gradient_masking_message,
    probability_output_message,
    randomness_message,
    robust_above_clean_message,
)
from robustdiag.attacks.gradients import frozen_parameters, loss_and_input_gradient
from robustdiag.attacks.result import AttackResult
from robustdiag.models.mode import evaluating
from robustdiag.progress import progress
from robustdiag.types import Attack


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter (or buffer), else ``fallback``."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return fallback


def model_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[str | None]]:
    """Clean logits (B, K) of one batch plus the messages of the model-level sanity checks.

    Costs one forward with an input-backward (the gradient-masking check) and one more forward (the
    randomness check); the first forward's logits double as the clean predictions.
    """
    with frozen_parameters(model):
        logits, grad = loss_and_input_gradient(model, x, y)  # (B, K), (B, C, H, W)
    with torch.no_grad():
        again = model(x)  # (B, K)
    messages = [
        probability_output_message(logits),
        gradient_masking_message(grad),
        randomness_message(logits, again),
    ]
    return logits, messages


def _train_mode_message(name: str) -> str:
    return (
        f"evaluate_attack({name!r}): the model was in train mode; it was switched to eval mode for the "
        "attack and restored afterwards. Call model.eval() before evaluating (BatchNorm and dropout "
        "behave differently in train mode)."
    )


def evaluate_attack(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    seed: int,
    keep_adv: bool = False,
    run_checks: bool = True,
) -> AttackResult:
    """Attack ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,) batch by batch; return per-sample flags.

    Samples misclassified on clean data count as not robust (the RobustBench/AutoAttack convention).
    The model runs in eval mode (a train-mode model is switched, with a warning, and restored after).
    One ``torch.Generator`` seeded with ``seed`` on the model's device drives every batch, so results
    are reproducible for a given ``batch_size``. Every batch is checked against the attack's threat
    model (:class:`~robustdiag.attacks.checks.AttackContractError` on violation); with ``run_checks``
    the first batch also gets the model-level checks (probabilities, gradient masking, randomness),
    whose messages are warned and stored in ``AttackResult.warnings``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be >= 1")
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same number (>= 1) of samples, got {x.shape[0]} and {y.shape[0]}"
        )
    name = attack.name
    norm, eps = attack.norm, float(attack.eps)  # the threat model every result is checked against
    device = model_device(model, x.device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    messages: list[str | None] = []
    robust, clean_correct, adv_correct, kept = [], [], [], []
    max_perturbation, attack_time = 0.0, 0.0

    with evaluating(model) as was_training:
        if was_training:
            messages.append(_train_mode_message(name))
        starts = range(0, x.shape[0], batch_size)
        for start in progress(starts, desc=f"attack {name}", total=len(starts), unit="batch"):
            xb = x[start : start + batch_size].to(device)  # (B, C, H, W)
            yb = y[start : start + batch_size].to(device)  # (B,)
            if run_checks and start == 0:
                clean_logits, found = model_checks(model, xb, yb)
                messages.extend(found)
            else:
                with torch.no_grad():
                    clean_logits = model(xb)  # (B, K)
            tic = time.perf_counter()
            scored = getattr(attack, "attack_with_logits", None)  # PGD scores its result in its last forward
            if callable(scored):
                x_adv, adv_logits = scored(model, xb, yb, generator=generator)  # (B, C, H, W), (B, K)
            else:
                x_adv, adv_logits = attack(model, xb, yb, generator=generator), None
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # so the attack's GPU time lands in attack_time
            attack_time += time.perf_counter() - tic
            sizes = check_adversarial_batch(name, xb, x_adv, norm, eps)  # (B,)
            if adv_logits is None:
                with torch.no_grad():
                    adv_logits = model(x_adv)  # (B, K)
            clean_ok = (clean_logits.argmax(dim=1) == yb).cpu()
            adv_ok = (adv_logits.argmax(dim=1) == yb).cpu()
            clean_correct.append(clean_ok)
            adv_correct.append(adv_ok)
            robust.append(clean_ok & adv_ok)
            max_perturbation = max(max_perturbation, sizes.max().item())
            if keep_adv:
                kept.append(x_adv.detach().to(x.device))

    robust_all, clean_all, adv_all = torch.cat(robust), torch.cat(clean_correct), torch.cat(adv_correct)
    clean_acc, adv_acc = clean_all.float().mean().item(), adv_all.float().mean().item()
    messages.append(robust_above_clean_message(name, adv_acc, clean_acc))
    return AttackResult(
        name=name,
        robust=robust_all,
        clean_correct=clean_all,
        acc=robust_all.float().mean().item(),
        clean_acc=clean_acc,
        adv_acc=adv_acc,
        max_perturbation=max_perturbation,
        norm=norm,
        eps=eps,
        strength=getattr(attack, "strength", None),
        time_s=attack_time,
        warnings=emit(messages),
        x_adv=torch.cat(kept) if keep_adv else None,
    )
