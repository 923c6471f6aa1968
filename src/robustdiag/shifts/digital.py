"""Digital corruptions (Hendrycks & Dietterich 2019): contrast, brightness, saturate, pixelate, elastic.

Re-implemented batched in torch after the functions of the same names in ``make_cifar_c.py`` /
``make_tinyimagenet_c.py`` / ``make_imagenet_c.py`` of https://github.com/hendrycks/robustness
(``elastic_transform`` there is a modification of erniejunior's gist 601cdf56d2b424757de5).

Grey-scale (C=1) images: contrast, pixelate and elastic act per channel as usual. ``brightness`` adds c
to the value, which for a grey pixel (saturation 0) is exactly what the HSV round trip does. ``saturate``
has no effect on grey pixels (no hue to saturate), so it returns the image unchanged and warns.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import ClassVar

import torch

from robustdiag.shifts.base import Corruption, Draws, Geometry, draw_uniform
from robustdiag.shifts.ops import (
    gaussian_blur,
    pil_box_weights,
    pixel_grid,
    resize_matrices,
    sample_at,
)


class Contrast(Corruption):
    """``(x - mean) c + mean`` with the per-image, per-channel mean."""

    name = "contrast"
    PARAMS: ClassVar = {
        "cifar": (0.75, 0.5, 0.4, 0.3, 0.15),
        "tinyimagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
        "imagenet": (0.4, 0.3, 0.2, 0.1, 0.05),
    }

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return (x - mean) * param + mean


class Brightness(Corruption):
    """Adds c to the HSV value channel (clipped to 1); grey-scale images get ``x + c``.

    With hue and saturation fixed, HSV -> RGB is linear in the value v, so the result is ``x v'/v`` (and
    ``v'`` on black pixels, whose saturation is 0): the HSV round trip without computing hue."""

    name = "brightness"
    COLOUR_ONLY = True
    PARAMS: ClassVar = {
        "cifar": (0.05, 0.1, 0.15, 0.2, 0.3),
        "tinyimagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
        "imagenet": (0.1, 0.2, 0.3, 0.4, 0.5),
    }

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        if x.shape[1] == 1:
            return x + param
        x = x.clamp(0.0, 1.0)
        v = x.amax(dim=1, keepdim=True)  # (B, 1, H, W) HSV value
        brighter = (v + param).clamp(0.0, 1.0)
        return torch.where(v > 0, x * (brighter / torch.where(v > 0, v, torch.ones_like(v))), brighter)


class Saturate(Corruption):
    """Scales and shifts HSV saturation: ``s -> clip(s a + b)``: params (a, b).

    The tables are not monotone on purpose: severities 1-2 desaturate, 3-5 oversaturate. Grey-scale
    images are returned unchanged with a warning. With hue and value fixed, each channel's distance below
    the value, ``v - x_c = v s ramp_c(h)``, is linear in s, so the result is ``v - (v - x)(s'/s)``; pixels
    with s = 0 have hue 0 (scikit-image's convention), i.e. ramp (0, 1, 1).
    """

    name = "saturate"
    COLOUR_ONLY = True
    PARAMS: ClassVar = {
        "cifar": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "tinyimagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
        "imagenet": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    }

    def apply(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        if x.shape[1] == 1:
            warnings.warn(
                f"{self.name}: grey-scale (C=1) images have no saturation; returning them unchanged",
                stacklevel=3,
            )
            return x
        scale, shift = param
        x = x.clamp(0.0, 1.0)
        v = x.amax(dim=1, keepdim=True)  # (B, 1, H, W)
        delta = v - x.amin(dim=1, keepdim=True)
        s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
        s_new = (s * scale + shift).clamp(0.0, 1.0)
        factor = s_new / torch.where(s > 0, s, torch.ones_like(s))
        hue_zero = torch.tensor([0.0, 1.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return torch.where(s > 0, v - (v - x) * factor, v - v * s_new * hue_zero)


@lru_cache(maxsize=64)
def _box(in_size: int, out_size: int) -> torch.Tensor:
    return pil_box_weights(in_size, out_size)


class Pixelate(Corruption):
    """Box-downsample to ``int(side c)`` pixels and box-upsample back (Pillow's ``Image.BOX`` resampling).

    The two resamplings are small (out, in) matrices built with Pillow's coefficient rule, so the result
    equals Pillow's up to its 8-bit rounding. On small images they are composed into one (H, H) and one
    (W, W) matrix (up @ down: two GEMMs over the batch); where going down and up separately takes fewer
    multiply-adds (224 px: about half), four GEMMs run through the small image instead.
    """

    name = "pixelate"
    PARAMS: ClassVar = {
        "cifar": (0.95, 0.9, 0.85, 0.75, 0.65),
        "tinyimagenet": (0.9, 0.8, 0.7, 0.6, 0.5),
        "imagenet": (0.6, 0.5, 0.4, 0.3, 0.25),
    }

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        h, w = x.shape[-2:]
        sh, sw = max(int(h * param), 1), max(int(w * param), 1)
        composed = h * h * w + h * w * w  # multiply-adds per channel of (H, H) @ x @ (W, W)
        separate = sh * h * w + sh * w * sw + sh * sw * w + h * sh * w  # down rows, cols; up cols, rows
        if separate < composed:
            small = resize_matrices(x, _box(h, sh), _box(w, sw))  # (B, C, sh, sw)
            return resize_matrices(small, _box(sh, h), _box(sw, w))  # (B, C, H, W)
        rows = _box(sh, h) @ _box(h, sh)  # (H, H) down then up, float64
        cols = _box(sw, w) @ _box(w, sw)  # (W, W)
        return resize_matrices(x, rows, cols)  # (B, C, H, W)


ELASTIC_UNIT: dict[str, float] = {"cifar": 32.0, "tinyimagenet": 64.0, "imagenet": 244.0}
"""The benchmark writes elastic parameters as multiples of this (ImageNet-C uses 244 at 224 px)."""


class ElasticTransform(Corruption):
    """Random affine warp, then a smoothed random displacement field: params (alpha, sigma, affine).

    In units of ``ELASTIC_UNIT`` of the table. Per image: the three points (c + s, c + s), (c + s, c - s),
    (c - s, c - s) around the centre c (s = min(H, W) // 3) are moved by U(-affine, affine) pixels and the
    image is warped by the affine map they define (bilinear, reflect-101 borders, as ``cv2.warpAffine``);
    then every pixel is displaced by ``alpha * gaussian(U(-1, 1), sigma, truncate=3)`` along rows and
    columns (bilinear, symmetric borders, as SciPy ``map_coordinates(order=1, mode="reflect")``). Both
    warps are one ``grid_sample`` each for the whole batch.
    """

    name = "elastic_transform"
    PARAMS: ClassVar = {
        "cifar": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
        "tinyimagenet": (
            (0, 0, 0.08),
            (0.05, 0.3, 0.06),
            (0.1, 0.08, 0.06),
            (0.1, 0.03, 0.03),
            (0.16, 0.03, 0.02),
        ),
        "imagenet": (
            (2, 0.7, 0.1),
            (2, 0.08, 0.2),
            (0.05, 0.01, 0.02),
            (0.07, 0.01, 0.02),
            (0.12, 0.01, 0.02),
        ),
    }

    def pixel_param(self, param: tuple[float, float, float], geom: Geometry) -> tuple[float, float, float]:
        """(alpha, sigma, affine) in pixels for this image size."""
        unit = ELASTIC_UNIT[geom.table] * geom.relative
        return param[0] * unit, param[1] * unit, param[2] * unit

    def sample(
        self, x: torch.Tensor, param: tuple[float, float, float], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        _, _, affine = self.pixel_param(param, geom)
        b, _, h, w = x.shape
        return {
            "affine": draw_uniform((b, 3, 2), generator, x, -affine, affine),  # (B, 3, 2) point offsets
            "field": draw_uniform((b, 2, h, w), generator, x, -1.0, 1.0),  # (B, 2, H, W) as (dx, dy)
        }

    def apply(
        self, x: torch.Tensor, param: tuple[float, float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        if min(x.shape[-2:]) < 3:
            raise ValueError(f"{self.name}: needs images of at least 3 x 3 pixels, got {tuple(x.shape[-2:])}")
        alpha, sigma, _ = self.pixel_param(param, geom)
        warped = affine_warp(x, draws["affine"])
        smooth = gaussian_blur(draws["field"], sigma, truncate=3.0, mode="symmetric")  # (B, 2, H, W)
        displacement = alpha * smooth
        rows, cols = pixel_grid(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return sample_at(warped, rows + displacement[:, 1], cols + displacement[:, 0], border="symmetric")


def affine_source_points(h: int, w: int) -> torch.Tensor:
    """The benchmark's three control points (3, 2) as (x, y) pixel coordinates."""
    cx, cy, s = float(w // 2), float(h // 2), float(min(h, w) // 3)
    return torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64)


def affine_warp(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Warp each image by the affine map taking the control points to themselves plus ``offsets`` (B, 3, 2).

    Output pixel p samples the input at A^-1 p, where A maps source to moved points; A^-1 is solved
    directly from the moved points back to the source points (a batched 3x3 solve in float64).
    """
    b, _, h, w = x.shape
    src = affine_source_points(h, w).to(x.device)  # (3, 2)
    dst = src + offsets.to(torch.float64)  # (B, 3, 2)
    lhs = torch.cat([dst, torch.ones(b, 3, 1, dtype=torch.float64, device=x.device)], dim=2)  # (B, 3, 3)
    inverse = torch.linalg.solve(lhs, src.expand(b, 3, 2))  # (B, 3, 2): [x y 1] @ inverse = source (x, y)
    rows, cols = pixel_grid(h, w, x.device, torch.float64)
    homog = torch.stack([cols, rows, torch.ones_like(rows)], dim=-1).reshape(1, h * w, 3)  # (1, HW, 3)
    source = (homog @ inverse).reshape(b, h, w, 2)  # (B, H, W, 2) as (x, y)
    return sample_at(x, source[..., 1].to(x.dtype), source[..., 0].to(x.dtype), border="reflect101")
