"""Fixtures for the attack tests; the tiny models live in attack_models.py."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    """16 random 3x8x8 images in [0, 1] (some pixels exactly 0 or 1) and 10-class labels."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 8, 8, generator=g)
    x[:, 0, 0, :4] = 0.0  # pixels on the box boundary exercise the [0, 1] clipping
    x[:, 0, 1, :4] = 1.0
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y
