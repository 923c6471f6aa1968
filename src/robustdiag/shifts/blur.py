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
        return motion_blur(x, radius, sigma, draws["angle"])


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's ``MotionBlurImage`` of every image (B, C, H, W) at its own angle (B,) in degrees."""
    weights = motion_kernel(radius, sigma).tolist()
    d_rows, d_cols = motion_offsets(angles_deg, len(weights))  # (B, width) each
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


def glass_swap_positions(h: int, w: int, delta: int) -> tuple[list[int], list[int]]:
    """The benchmark's swap loop order: rows ``h - delta`` down to ``delta + 1``, columns likewise inside."""
    rows = list(range(h - delta, delta, -1))
    cols = list(range(w - delta, delta, -1))
    return [r for r in rows for _ in cols], [c for _ in rows for c in cols]


class GlassBlur(Corruption):
    """Gaussian blur, local pixel moves, Gaussian blur again: params (sigma, delta, iterations).

    As ``glass_blur`` in the benchmark: blur with std ``sigma`` (SciPy/scikit-image ``gaussian``, edge
    pixels replicated), quantise to 8 bits (``np.uint8``: truncation), then for each iteration visit the
    pixels from the bottom-right corner towards the top-left (rows ``H - delta .. delta + 1``, same for
    columns) and "swap" each with the pixel at a random offset ``(dy, dx)``, each in ``[-delta, delta)``,
    then blur again. The benchmark's swap ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on NumPy views of
    RGB pixels, so it *copies* ``x[h', w']`` into ``x[h, w]`` and leaves ``x[h', w']`` as it was; that is
    what CIFAR-10-C and ImageNet-C contain, and what this does (for every channel count). The moves are
    sequential by nature (a pixel copied early can be copied on), so the loop over positions stays, but
    each step moves that position in every image of the batch at once, on an index map per image applied
    with one gather at the end: exactly the sequential original's result given the same offsets.
    ``delta`` is a pixel parameter (scaled with ``scale_spatial``, at least 1); the blur std scales too.
    """

    CPU_CHUNKS = False  # a Python loop over pixel positions, batched over images: one big call is faster
    name = "glass_blur"
    FAMILY = "blur"
    PARAMS: ClassVar = {
        "cifar": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "tinyimagenet": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
        "imagenet": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    }

    def pixel_param(self, param: tuple[float, int, int], geom: Geometry) -> tuple[float, int, int]:
        sigma, delta, iterations = param
        return sigma * geom.scale, max(1, int(round(delta * geom.scale))), int(iterations)

    def sample(
        self, x: torch.Tensor, param: tuple[float, int, int], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        _, delta, iterations = self.pixel_param(param, geom)
        steps = len(glass_swap_positions(x.shape[-2], x.shape[-1], delta)[0])
        if steps == 0:
            raise ValueError(
                f"glass_blur: the {geom.table} table moves pixels up to {delta} px, which leaves no pixel to move in "
                f"{x.shape[-2]}x{x.shape[-1]} images; use table=auto (or cifar) for small images, or scale_spatial=true"
            )
        offsets = torch.randint(
            -delta, delta, (x.shape[0], iterations, steps, 2), generator=generator, device=generator.device
        )  # (B, iterations, steps, [dx, dy]) as np.random.randint(-delta, delta, size=(2,))
        return {"offsets": offsets.to(x.device)}

    def apply(
        self, x: torch.Tensor, param: tuple[float, int, int], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        sigma, delta, iterations = self.pixel_param(param, geom)
        b, c, h, w = x.shape
        quantised = torch.floor(gaussian_blur(x, sigma, truncate=4.0, mode="replicate") * 255)  # np.uint8
        perm = glass_permutation(draws["offsets"], h, w, delta, iterations)  # (B, H*W)
        swapped = quantised.reshape(b, c, h * w).gather(2, perm[:, None, :].expand(b, c, h * w))
        return gaussian_blur(swapped.reshape(b, c, h, w) / 255, sigma, truncate=4.0, mode="replicate")


def glass_permutation(offsets: torch.Tensor, h: int, w: int, delta: int, iterations: int) -> torch.Tensor:
    """Where each pixel of every image comes from after the sequential moves: (B, H*W) flat source indices.

    ``offsets`` (B, iterations, steps, 2) hold (dx, dy) per step. Moving entries of an index map instead
    of pixels keeps each step at one gather and one scatter of B integers, whatever the channel count.
    """
    b = offsets.shape[0]
    device = offsets.device
    rows, cols = glass_swap_positions(h, w, delta)
    here = torch.tensor([r * w + q for r, q in zip(rows, cols)], device=device)  # (steps,)
    there = here[None, None, :] + offsets[..., 1] * w + offsets[..., 0]  # (B, iterations, steps)
    perm = torch.arange(h * w, device=device).repeat(b, 1)  # (B, H*W)
    batch = torch.arange(b, device=device)
    for it in range(iterations):
        targets = there[:, it].T.contiguous()  # (steps, B)
        for step in range(len(rows)):  # sequential by nature: a pixel copied early can be copied on
            perm[:, int(here[step])] = perm[batch, targets[step]]  # x[h, w] = x[h', w'] (see GlassBlur)
    return perm
