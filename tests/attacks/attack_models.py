"""Tiny models and data shared by the attack tests (pixels in [0, 1], logits out)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(
    num_classes: int = 10, channels: int = 3, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """Conv -> BatchNorm -> ReLU -> pool -> linear, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )
    return model.to(dtype).eval()


class Linear(nn.Module):
    """logits = W·flatten(x) + b: a linear softmax classifier whose worst-case attacks are known."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)  # (K, D)
        self.bias = nn.Parameter(bias)  # (K,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias  # (B, K)
