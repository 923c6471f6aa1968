"""Natural-ish test images for the shift tests: smooth colour fields plus a sharp edge per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def natural_images(
    batch: int, channels: int = 3, height: int = 32, width: int | None = None, *, seed: int = 0
) -> torch.Tensor:
    """(B, C, H, W) float64 in [0, 1]: bicubic-upsampled 4x4 noise (smooth shading) + a random straight edge."""
    width = height if width is None else width
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, 4, 4, generator=g, dtype=torch.float64)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, height, dtype=torch.float64),
        torch.linspace(-1, 1, width, dtype=torch.float64),
        indexing="ij",
    )
    angle = torch.rand(batch, 1, 1, 1, generator=g, dtype=torch.float64) * 2 * torch.pi
    edge = ((xx * torch.cos(angle) + yy * torch.sin(angle)) > 0.1).to(torch.float64)
    return (0.6 * smooth + 0.4 * edge).clamp(0, 1)


def quantised(x: torch.Tensor) -> torch.Tensor:
    """Round pixels to 8-bit levels (what Pillow-based references see)."""
    return torch.floor(x * 255 + 0.5) / 255
