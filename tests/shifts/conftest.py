"""Fixtures of the shift tests."""

from __future__ import annotations

import pytest
import torch
from shift_images import natural_images


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Eight natural-ish RGB images, 32 x 32, float32."""
    return natural_images(8, 3, 32).float()
