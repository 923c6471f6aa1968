"""Weather corruptions (Hendrycks & Dietterich 2019): fog, from a batched diamond-square plasma fractal.

Re-implemented batched in torch after ``plasma_fractal`` and ``fog`` in ``make_cifar_c.py`` /
``make_tinyimagenet_c.py`` / ``make_imagenet_c.py`` of https://github.com/hendrycks/robustness
(their fractal is a modification of FLHerne/mapgen's ``diamondsquare.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from robustdiag.shifts.base import Corruption, Draws, Geometry, draw_uniform
from robustdiag.shifts.ops import next_power_of_two

UniformFn = Callable[[tuple[int, ...]], torch.Tensor]


def plasma_fractal(
    batch: int,
    mapsize: int,
    wibble_decay: float,
    uniform: UniformFn,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A batch of diamond-square height maps (B, mapsize, mapsize) scaled to [0, 1] per map.

    ``uniform(shape)`` returns U[0, 1) numbers (on ``device``, in ``dtype``); they are used in the
    order squares, diamonds (rows on the coarse grid), diamonds (columns), level by level. Each new point
    is the mean of its four neighbours (wrapping around) plus ``w * U(-w, w)``, with w = 100 divided by
    ``wibble_decay`` at every level. The loop runs over the log2(mapsize) levels; every level updates the
    whole batch at once.
    """
    if mapsize < 1 or mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal: mapsize must be a power of two, got {mapsize}")
    maps = torch.zeros(batch, mapsize, mapsize, device=device, dtype=dtype)  # (B, N, N)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * wibble * (2 * uniform(tuple(total.shape)) - 1)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]  # (B, k, k)
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        rows_sum = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled_mean(rows_sum)
        cols_sum = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled_mean(cols_sum)
        step //= 2
        wibble /= wibble_decay
    lo = maps.amin(dim=(1, 2), keepdim=True)
    maps = maps - lo
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)


class Fog(Corruption):
    """``(x + c f) * m / (m + c)`` with f a plasma fractal per image and m the image's maximum: params (c, decay).

    The fractal has side ``next_power_of_two(max(H, W))`` (32 for CIFAR, 256 for 224-px ImageNet, as in the
    benchmark) and is cropped to the image; it is shared by the channels. A larger decay gives smoother fog.
    """

    name = "fog"
    PARAMS: ClassVar = {
        "cifar": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "tinyimagenet": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
        "imagenet": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    }

    def sample(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        b, _, h, w = x.shape
        size = next_power_of_two(max(h, w))
        maps = plasma_fractal(
            b, size, param[1], lambda shape: draw_uniform(shape, generator, x), device=x.device, dtype=x.dtype
        )
        return {"fractal": maps[:, :h, :w]}  # (B, H, W)

    def apply(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        strength = param[0]
        peak = x.amax(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        fogged = x + strength * draws["fractal"][:, None]
        return fogged * peak / (peak + strength)
