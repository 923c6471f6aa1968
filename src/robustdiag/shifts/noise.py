"""Noise corruptions (Hendrycks & Dietterich 2019): Gaussian, shot (Poisson), impulse (salt & pepper), speckle.

Re-implemented batched in torch after ``gaussian_noise``, ``shot_noise``, ``impulse_noise`` and
``speckle_noise`` in ``make_cifar_c.py`` / ``make_tinyimagenet_c.py`` / ``make_imagenet_c.py`` of
https://github.com/hendrycks/robustness. Noise is drawn per pixel and per channel, as there.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from robustdiag.shifts.base import (
    Corruption,
    Draws,
    Geometry,
    draw_bernoulli_positions,
    draw_normal,
    draw_poisson,
)


class GaussianNoise(Corruption):
    """``x + N(0, c^2)``, c = noise std in pixel units [0, 1]."""

    name = "gaussian_noise"
    PARAMS: ClassVar = {
        "cifar": (0.04, 0.06, 0.08, 0.09, 0.10),
        "tinyimagenet": (0.04, 0.08, 0.12, 0.15, 0.18),
        "imagenet": (0.08, 0.12, 0.18, 0.26, 0.38),
    }

    def sample(self, x: torch.Tensor, param: float, geom: Geometry, generator: torch.Generator) -> Draws:
        return {"noise": draw_normal(x.shape, generator, x)}  # (B, C, H, W)

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        return x + param * draws["noise"]


class ShotNoise(Corruption):
    """``Poisson(c x) / c``: photon noise with c photons at full intensity (smaller c = more noise)."""

    name = "shot_noise"
    PARAMS: ClassVar = {
        "cifar": (500, 250, 100, 75, 50),
        "tinyimagenet": (250, 100, 50, 30, 15),
        "imagenet": (60, 25, 12, 5, 3),
    }

    def sample(self, x: torch.Tensor, param: float, geom: Geometry, generator: torch.Generator) -> Draws:
        return {"counts": draw_poisson(x.clamp(min=0.0) * param, generator)}  # (B, C, H, W)

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        return draws["counts"] / param


class ImpulseNoise(Corruption):
    """Salt and pepper: each value is replaced with probability c, by 1 or 0 with equal odds.

    As ``skimage.util.random_noise(mode="s&p")``, which the benchmark calls: per channel, not per pixel.
    The replaced values are drawn as geometric gaps (:func:`draw_bernoulli_positions`, about ``c`` random
    numbers per value instead of one or two) and each is salt or pepper by a fair coin: the same law as
    skimage's two uniform draws per value.
    """

    name = "impulse_noise"
    PARAMS: ClassVar = {
        "cifar": (0.01, 0.02, 0.03, 0.05, 0.07),
        "tinyimagenet": (0.01, 0.02, 0.05, 0.08, 0.14),
        "imagenet": (0.03, 0.06, 0.09, 0.17, 0.27),
    }

    def sample(self, x: torch.Tensor, param: float, geom: Geometry, generator: torch.Generator) -> Draws:
        flipped = draw_bernoulli_positions(x.numel(), param, generator)  # (K,) flat positions
        salted = flipped[torch.rand(len(flipped), generator=generator, device=generator.device) < 0.5]
        flip = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
        salt = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
        flip[flipped.to(x.device)] = True
        salt[salted.to(x.device)] = True
        return {"flip": flip.view(x.shape), "salt": salt.view(x.shape)}  # (B, C, H, W); salt implies flip

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        flip, salt = draws["flip"], draws["salt"]  # salt implies flip
        return x.masked_fill(flip, 0.0).masked_fill(salt, 1.0)


class SpeckleNoise(Corruption):
    """Multiplicative noise ``x + x N(0, c^2)`` (one of CIFAR-10-C's four extra corruptions)."""

    name = "speckle_noise"
    PARAMS: ClassVar = {
        "cifar": (0.06, 0.1, 0.12, 0.16, 0.2),
        "tinyimagenet": (0.15, 0.2, 0.25, 0.3, 0.35),
        "imagenet": (0.15, 0.2, 0.35, 0.45, 0.6),
    }

    def sample(self, x: torch.Tensor, param: float, geom: Geometry, generator: torch.Generator) -> Draws:
        return {"noise": draw_normal(x.shape, generator, x)}  # (B, C, H, W)

    def apply(self, x: torch.Tensor, param: float, geom: Geometry, draws: Draws) -> torch.Tensor:
        return x + x * param * draws["noise"]
