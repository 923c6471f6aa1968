"""Blur corruptions (Hendrycks & Dietterich 2019): defocus, Gaussian, motion and zoom blur.

Re-implemented batched in torch after ``defocus_blur``, ``gaussian_blur``, ``motion_blur`` and
``zoom_blur`` in ``make_cifar_c.py`` / ``make_tinyimagenet_c.py`` / ``make_imagenet_c.py`` of
https://github.com/hendrycks/robustness. Border handling follows the libraries those scripts call:
OpenCV ``filter2D`` (reflect-101) for defocus, scikit-image ``gaussian`` (nearest) for Gaussian blur,
ImageMagick ``MotionBlurImage`` (edge pixels) for motion blur, SciPy ``zoom`` for zoom blur.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robustdiag.shifts.base import Corruption, Draws, Geometry, draw_uniform
from robustdiag.shifts.ops import disk_kernel, filter2d, gather_shifted, gaussian_blur


@lru_cache(maxsize=64)
def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    return disk_kernel(radius, alias_blur)


class DefocusBlur(Corruption):
    """Convolution with an anti-aliased disk of radius r (pixels), alias blur std a: params (r, a)."""

    name = "defocus_blur"
    PARAMS: ClassVar = {
        "cifar": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "tinyimagenet": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
        "imagenet": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    }

    def pixel_param(self, param: tuple[float, float], geom: Geometry) -> tuple[float, float]:
        return param[0] * geom.scale, param[1] * geom.scale

    def apply(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        return filter2d(x, _disk(*self.pixel_param(param, geom)), "reflect101")


class GaussianBlur(Corruption):
    """Gaussian blur with std c pixels (kernel truncated at 4 std, edge pixels replicated)."""

    name = "gaussian_blur"
    PARAMS: ClassVar = {
        "cifar": (0.4, 0.6, 0.7, 0.8, 1.0),
        "tinyimagenet": (0.5, 0.75, 1.0, 1.25, 1.5),
        "imagenet": (1.0, 2.0, 3.0, 4.0, 6.0),
    }

    def pixel_param(self, param: float, geom: Geometry) -> float:
        return param * geom.scale

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        return gaussian_blur(x, self.pixel_param(param, geom), truncate=4.0, mode="replicate")


def motion_kernel(radius: float, sigma: float) -> torch.Tensor:
    """ImageMagick's one-sided motion-blur weights: width 2 ceil(radius) + 1, Gaussian exp(-i^2 / 2 sigma^2)."""
    width = int(2 * math.ceil(radius) + 1) if radius > 1e-12 else 1
    sigma = max(sigma, 1e-12)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


def motion_offsets(angles_deg: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (row, col) offsets (B, width) of each tap along each image's blur direction (float64 maths)."""
    # computed on the CPU so that CPU and CUDA runs round the offsets identically
    theta = torch.deg2rad(angles_deg.detach().cpu().to(torch.float64))[:, None]  # (B, 1)
    i = torch.arange(width, dtype=torch.float64)[None, :]  # (1, width)
    d_cols = torch.ceil(i * torch.cos(theta) - 0.5).long()
    d_rows = torch.ceil(i * torch.sin(theta) - 0.5).long()
    return d_rows.to(angles_deg.device), d_cols.to(angles_deg.device)


class MotionBlur(Corruption):
    """Directional blur of length ``radius`` and std ``sigma`` (pixels) at a random angle per image.

    Re-implements ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` (the benchmark's Wand call):
    ``out(y, x) = sum_i k_i in(y + ceil(i sin a - 1/2), x + ceil(i cos a - 1/2))`` with one-sided
    Gaussian weights k, edge pixels replicated, angle a ~ U(-45, 45) degrees drawn per image. One gather
    per tap for the whole batch (no per-image loop).
    """

    name = "motion_blur"
    PARAMS: ClassVar = {
        "cifar": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "tinyimagenet": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
        "imagenet": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    }

    def sample(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        return {"angle": draw_uniform((x.shape[0],), generator, x, -45.0, 45.0)}  # (B,) degrees

    def pixel_param(self, param: tuple[float, float], geom: Geometry) -> tuple[float, float]:
        return param[0] * geom.scale, param[1] * geom.scale

    def apply(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        radius, sigma = self.pixel_param(param, geom)
        weights = motion_kernel(radius, sigma).tolist()
        d_rows, d_cols = motion_offsets(draws["angle"], len(weights))  # (B, width) each
        out = torch.zeros_like(x)
        for tap, w in enumerate(weights):  # loop over kernel taps, each covering the whole batch
            if w < 1e-12:
                continue
            out.add_(gather_shifted(x, d_rows[:, tap], d_cols[:, tap]), alpha=w)
        return out


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The benchmark's ``clipped_zoom`` of (B, C, H, W): zoom the centre by ``zoom``, keep the central H x W.

    Crops the central ``ceil(side / zoom)`` pixels, resizes them linearly to ``round(crop * zoom)`` with
    corner-aligned sampling (SciPy ``zoom(order=1)``, i.e. ``align_corners=True``) and trims the excess.
    """
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = int(round(ch * zoom)), int(round(cw * zoom))
    crop = x[..., top : top + ch, left : left + cw]
    zoomed = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    trim_top, trim_left = (oh - h) // 2, (ow - w) // 2
    return zoomed[..., trim_top : trim_top + h, trim_left : trim_left + w]


class ZoomBlur(Corruption):
    """Average of the image and its centred zooms by each factor in the severity's list.

    ``out = (x + sum_z zoom_z(x)) / (len(zs) + 1)`` with the factor lists of the benchmark (``np.arange``
    ranges, kept bit-for-bit including their floating-point end points).
    """

    name = "zoom_blur"
    PARAMS: ClassVar = {
        "cifar": tuple(tuple(np.arange(1, stop, 0.01).tolist()) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
        "tinyimagenet": tuple(
            tuple(np.arange(1, stop, 0.01).tolist()) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)
        ),
        "imagenet": tuple(
            tuple(np.arange(1, stop, step).tolist())
            for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
        ),
    }

    def apply(self, x: torch.Tensor, param: tuple[float, ...], geom: Geometry, draws: Draws) -> torch.Tensor:
        out = x.clone()
        for zoom in param:  # loop over zoom factors, each covering the whole batch
            out += clipped_zoom(x, zoom)
        return out / (len(param) + 1)
