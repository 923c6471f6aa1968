"""Input gradients without touching the model: parameters are frozen while an attack runs.

Attacks need ∇ₓ loss only. Turning ``requires_grad`` off on the parameters for the duration means
autograd neither builds nor saves anything for weight gradients (one forward + one input-backward per
step), and a training loop that calls the attack finds its ``.grad`` fields and flags untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class AttackReliabilityWarning(UserWarning):
    """An attack evaluation may be unreliable (gradient masking, train mode, softmax outputs, ...)."""


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter that has it, and restore the flags on exit."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def warn_if_training(model: nn.Module, attack_name: str) -> None:
    """Warn that attacking a train-mode model updates BatchNorm statistics and keeps dropout on."""
    if model.training:
        warnings.warn(
            f"attack {attack_name!r} runs on a model in train mode: BatchNorm running statistics are "
            "updated and dropout is active during the attack. Call model.eval() before attacking "
            "(evaluate_attack() does this for you).",
            AttackReliabilityWarning,
            stacklevel=3,
        )


def loss_and_input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` and ∇ₓ Σᵢ CE(model(xᵢ), yᵢ), one forward and one input-backward.

    The loss is summed (not averaged) over the batch so each sample's gradient is its own, not scaled
    by 1/B. Call inside :func:`frozen_parameters` to skip weight gradients.
    Returns logits (B, K) detached and the gradient (B, C, H, W).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)  # (B, K)
        loss = F.cross_entropy(logits, y, reduction="sum")
        if not loss.requires_grad:  # output detached from the input (argmax, no_grad inside): masked
            return logits.detach(), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x)
    return logits.detach(), grad
