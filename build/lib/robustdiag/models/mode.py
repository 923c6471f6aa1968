"""One rule for "evaluate in eval mode", used by every metric and attack.

In train mode BatchNorm normalises with batch statistics (and updates its running statistics) and
dropout is random: a measurement would depend on the other samples of its batch and would change the
model for every later measurement. :func:`evaluating` switches the model to eval mode and restores every
submodule's own mode afterwards; with ``who`` it warns that the model arrived in train mode.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def evaluating(model: nn.Module, who: str | None = None) -> Iterator[bool]:
    """Run the block with ``model`` in eval mode; yields whether it was training on entry."""
    modes = {module: module.training for module in model.modules()}
    was_training = any(modes.values())
    if was_training and who:
        warnings.warn(
            f"{who}: the model is in train mode (BatchNorm would mix samples across the batch and update its "
            "statistics); switching it to eval() for this measurement and restoring its mode afterwards.",
            stacklevel=3,
        )
    model.eval()
    try:
        yield was_training
    finally:
        for module, training in modes.items():
            module.training = training


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 when it has none): the one
    rule for "what precision is this model in" used by the Fisher and separation metrics."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32
