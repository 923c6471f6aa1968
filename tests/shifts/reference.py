"""Per-image NumPy / SciPy / Pillow reference implementations of the corruptions (slow; not for runs).

They follow Hendrycks & Dietterich's generators (https://github.com/hendrycks/robustness,
``ImageNet-C/create_c/make_*_c.py``) one image at a time, with the libraries those scripts use where
they still work (SciPy, Pillow) and NumPy stand-ins for the rest (OpenCV's disk blur and affine warp,
ImageMagick's motion blur, scikit-image's HSV and salt-and-pepper). They exist to test the batched torch
corruptions against an independent implementation and to benchmark them (``benchmarks/bench_shifts.py``).

Each corruption has ``draw(image, param, rng) -> draws`` (the random numbers, NumPy) and
``apply(image, param, draws) -> image``; images are (H, W, C) float64 in [0, 1]. Parameters are the
table entries after spatial scaling (see :meth:`robustdiag.shifts.Corruption.geometry`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image
from scipy import ndimage

Draws = dict[str, np.ndarray]
Rng = np.random.Generator


@dataclass(frozen=True)
class Reference:
    """One per-image reference corruption."""

    draw: Callable[[np.ndarray, Any, Rng], Draws]
    apply: Callable[[np.ndarray, Any, Draws], np.ndarray]

    def __call__(self, image: np.ndarray, param: Any, rng: Rng) -> np.ndarray:
        return np.clip(self.apply(image, param, self.draw(image, param, rng)), 0, 1)


def no_draws(image: np.ndarray, param: Any, rng: Rng) -> Draws:
    return {}


# ---------------------------------------------------------------- noise


def gaussian_noise(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    return image + c * draws["noise"]


def speckle_noise(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    return image + image * c * draws["noise"]


def normal_draws(image: np.ndarray, param: Any, rng: Rng) -> Draws:
    return {"noise": rng.standard_normal(image.shape)}


def shot_noise(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    return draws["counts"] / c


def shot_draws(image: np.ndarray, c: float, rng: Rng) -> Draws:
    return {"counts": rng.poisson(image * c).astype(np.float64)}


def impulse_noise(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    out = image.copy()
    out[draws["flip"] & draws["salt"]] = 1.0
    out[draws["flip"] & ~draws["salt"]] = 0.0
    return out


def impulse_draws(image: np.ndarray, c: float, rng: Rng) -> Draws:
    return {"flip": rng.random(image.shape) <= c, "salt": rng.random(image.shape) <= 0.5}


# ---------------------------------------------------------------- blur


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """Anti-aliased disk kernel (OpenCV's 3x3 / 5x5 Gaussian done with SciPy, reflect-101 borders)."""
    half = 8 if radius <= 8 else math.ceil(radius)
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    return ndimage.correlate(kernel, np.outer(g, g), mode="mirror")


def defocus_blur(image: np.ndarray, param: tuple[float, float], draws: Draws) -> np.ndarray:
    kernel = disk(*param)
    return np.stack(
        [ndimage.correlate(image[..., c], kernel, mode="mirror") for c in range(image.shape[2])], -1
    )


def gaussian_blur(image: np.ndarray, sigma: float, draws: Draws) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def motion_blur(image: np.ndarray, param: tuple[float, float], draws: Draws) -> np.ndarray:
    """ImageMagick's MotionBlurImage: one-sided Gaussian taps along the angle, edge pixels repeated."""
    radius, sigma = param
    width = int(2 * math.ceil(radius) + 1) if radius > 1e-12 else 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * max(sigma, 1e-12) ** 2))
    taps /= taps.sum()
    theta = np.deg2rad(float(draws["angle"]))
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    for i, k in enumerate(taps):
        if k < 1e-12:
            continue
        dr = math.ceil(i * math.sin(theta) - 0.5)
        dc = math.ceil(i * math.cos(theta) - 0.5)
        rows = np.clip(np.arange(h) + dr, 0, h - 1)
        cols = np.clip(np.arange(w) + dc, 0, w - 1)
        out += k * image[rows][:, cols]
    return out


def motion_draws(image: np.ndarray, param: Any, rng: Rng) -> Draws:
    return {"angle": np.asarray(rng.uniform(-45, 45))}


def clipped_zoom(image: np.ndarray, zoom: float) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(image[top : top + ch, left : left + cw], (zoom, zoom, 1), order=1)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top : trim_top + h, trim_left : trim_left + w]


def zoom_blur(image: np.ndarray, zooms: tuple[float, ...], draws: Draws) -> np.ndarray:
    out = np.zeros_like(image)
    for zoom in zooms:
        out += clipped_zoom(image, zoom)
    return (image + out) / (len(zooms) + 1)


# ---------------------------------------------------------------- weather


def plasma_fractal(
    mapsize: int, wibble_decay: float, uniform: Callable[[tuple[int, ...]], np.ndarray]
) -> np.ndarray:
    """Diamond-square height map (mapsize, mapsize) in [0, 1]; ``uniform`` gives U[0, 1) arrays."""
    maps = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * wibble * (2 * uniform(total.shape) - 1)

    while step >= 2:
        half = step // 2
        corners = maps[0::step, 0::step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares = squares + np.roll(squares, -1, axis=1)
        maps[half::step, half::step] = wibbled_mean(squares)
        centres, corners = maps[half::step, half::step], maps[0::step, 0::step]
        maps[0::step, half::step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        )
        maps[half::step, 0::step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        )
        step //= 2
        wibble /= wibble_decay
    maps -= maps.min()
    return maps / maps.max()


def fog(image: np.ndarray, param: tuple[float, float], draws: Draws) -> np.ndarray:
    strength = param[0]
    peak = image.max()
    return (image + strength * draws["fractal"][..., None]) * peak / (peak + strength)


def fog_draws(image: np.ndarray, param: tuple[float, float], rng: Rng) -> Draws:
    h, w = image.shape[:2]
    size = 1 << (max(h, w) - 1).bit_length()
    return {"fractal": plasma_fractal(size, param[1], lambda shape: rng.random(shape))[:h, :w]}


# ---------------------------------------------------------------- digital


def contrast(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    mean = image.mean(axis=(0, 1), keepdims=True)
    return (image - mean) * c + mean


def brightness(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    if image.shape[2] == 1:
        return image + c
    hsv = rgb_to_hsv(np.clip(image, 0, 1))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return hsv_to_rgb(hsv)


def saturate(image: np.ndarray, param: tuple[float, float], draws: Draws) -> np.ndarray:
    if image.shape[2] == 1:
        return image
    hsv = rgb_to_hsv(np.clip(image, 0, 1))
    hsv[..., 1] = np.clip(hsv[..., 1] * param[0] + param[1], 0, 1)
    return hsv_to_rgb(hsv)


def to_pil(image: np.ndarray) -> Image.Image:
    levels = np.floor(np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(levels[..., 0] if image.shape[2] == 1 else levels)


def from_pil(picture: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(picture, dtype=np.float64) / 255
    return array.reshape(array.shape[0], array.shape[1], channels)


def jpeg_compression(image: np.ndarray, quality: int, draws: Draws) -> np.ndarray:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, "JPEG", quality=int(quality))
    return from_pil(Image.open(buffer), image.shape[2])


def pixelate(image: np.ndarray, c: float, draws: Draws) -> np.ndarray:
    h, w = image.shape[:2]
    picture = to_pil(image).resize((max(int(w * c), 1), max(int(h * c), 1)), Image.BOX)
    return from_pil(picture.resize((w, h), Image.BOX), image.shape[2])


def elastic_transform(image: np.ndarray, param: tuple[float, float, float], draws: Draws) -> np.ndarray:
    """``param`` = (alpha, sigma, affine) in pixels; draws: affine (3, 2) offsets, field (2, H, W) as (dx, dy)."""
    alpha, sigma, _ = param
    h, w, channels = image.shape
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    src = np.array([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=np.float64)
    dst = src + draws["affine"]
    inverse = np.linalg.solve(
        np.concatenate([dst, np.ones((3, 1))], axis=1), src
    )  # [x y 1] @ inverse = source
    matrix = np.array([[inverse[1, 1], inverse[0, 1]], [inverse[1, 0], inverse[0, 0]]])  # (row, col) order
    offset = np.array([inverse[2, 1], inverse[2, 0]])
    warped = np.stack(
        [
            ndimage.affine_transform(image[..., c], matrix, offset, order=1, mode="mirror")
            for c in range(channels)
        ],
        -1,
    )
    dx = alpha * ndimage.gaussian_filter(draws["field"][0], sigma, mode="reflect", truncate=3.0)
    dy = alpha * ndimage.gaussian_filter(draws["field"][1], sigma, mode="reflect", truncate=3.0)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rows + dy, cols + dx])
    return np.stack(
        [ndimage.map_coordinates(warped[..., c], coords, order=1, mode="reflect") for c in range(channels)],
        -1,
    )


def elastic_draws(image: np.ndarray, param: tuple[float, float, float], rng: Rng) -> Draws:
    h, w = image.shape[:2]
    return {
        "affine": rng.uniform(-param[2], param[2], size=(3, 2)),
        "field": rng.uniform(-1, 1, size=(2, h, w)),
    }


# ---------------------------------------------------------------- the benchmark's other four (glass, snow, frost, spatter)


def glass_blur(image: np.ndarray, param: tuple[float, int, int], draws: Draws) -> np.ndarray:
    """The benchmark's loop as written, one pixel at a time (its RGB "swap" copies: see GlassBlur)."""
    sigma, delta, iterations = param
    x = np.floor(ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="nearest", truncate=4.0) * 255)
    h, w = x.shape[:2]
    for i in range(iterations):
        k = 0
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = draws["offsets"][i, k]
                k += 1
                x[row, col], x[row + dy, col + dx] = x[row + dy, col + dx], x[row, col]  # views: a copy
    return ndimage.gaussian_filter(x / 255, (sigma, sigma, 0), mode="nearest", truncate=4.0)


def snow(image: np.ndarray, param: tuple[float, ...], draws: Draws) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, blend = param
    layer = clipped_zoom((mean + std * draws["layer"])[..., None], zoom)
    layer[layer < threshold] = 0
    layer = np.clip(layer, 0, 1)
    layer = (layer * 255).astype(np.uint8).astype(np.float64) / 255  # PIL "L" image from astype(np.uint8)
    layer = motion_blur(layer, (radius, sigma), {"angle": draws["angle"]})  # ImageMagick stand-in
    layer = np.floor(layer * 255 + 0.5) / 255  # 8-bit PNG out of ImageMagick
    grey = image if image.shape[2] == 1 else image @ np.array([0.299, 0.587, 0.114])[:, None]
    x = blend * image + (1 - blend) * np.maximum(image, grey * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2)


def spatter(image: np.ndarray, param: tuple[float, ...], draws: Draws) -> np.ndarray:
    """The benchmark's spatter with OpenCV itself (water) and scikit-image's gaussian (SciPy here)."""
    import cv2

    mean, std, sigma, threshold, intensity, mud = param
    liquid = ndimage.gaussian_filter(mean + std * draws["liquid"], sigma, mode="nearest", truncate=4.0)
    liquid[liquid < threshold] = 0
    grey = image.shape[2] == 1
    if not mud:
        level = (liquid * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(level, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = level * dist
        m = m / m.max() * intensity if m.max() > 0 else m
        colour = np.array([175, 238, 238]) / 255.0
        colour = colour @ np.array([0.299, 0.587, 0.114]) if grey else colour
        return image + m[..., None] * colour
    mask = ndimage.gaussian_filter(
        (liquid > threshold).astype(np.float64), intensity, mode="nearest", truncate=4.0
    )
    mask[mask < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0
    colour = colour @ np.array([0.299, 0.587, 0.114]) if grey else colour
    return image * (1 - mask[..., None]) + mask[..., None] * colour


def frost_photo_crop(photo: np.ndarray, factor: float, start: tuple[int, int], h: int, w: int) -> np.ndarray:
    """``cv2.resize(frost, (0, 0), fx=factor, fy=factor)`` then the crop at ``start``, as the benchmark."""
    import cv2

    levels = np.round(photo * 255).astype(np.uint8)
    if factor != 1.0:
        levels = cv2.resize(levels, (0, 0), fx=factor, fy=factor)
    return levels[start[0] : start[0] + h, start[1] : start[1] + w].astype(np.float64) / 255


def snow_draws(image: np.ndarray, param: Any, rng: Rng) -> Draws:
    return {"layer": rng.standard_normal(image.shape[:2]), "angle": np.asarray(rng.uniform(-135, -45))}


def glass_draws(image: np.ndarray, param: tuple[float, int, int], rng: Rng) -> Draws:
    h, w = image.shape[:2]
    _, delta, iterations = param
    steps = len(range(h - delta, delta, -1)) * len(range(w - delta, delta, -1))
    return {"offsets": rng.integers(-delta, delta, size=(iterations, steps, 2))}


def spatter_draws(image: np.ndarray, param: Any, rng: Rng) -> Draws:
    return {"liquid": rng.standard_normal(image.shape[:2])}


REFERENCES: dict[str, Reference] = {
    "gaussian_noise": Reference(normal_draws, gaussian_noise),
    "shot_noise": Reference(shot_draws, shot_noise),
    "impulse_noise": Reference(impulse_draws, impulse_noise),
    "speckle_noise": Reference(normal_draws, speckle_noise),
    "defocus_blur": Reference(no_draws, defocus_blur),
    "gaussian_blur": Reference(no_draws, gaussian_blur),
    "motion_blur": Reference(motion_draws, motion_blur),
    "zoom_blur": Reference(no_draws, zoom_blur),
    "fog": Reference(fog_draws, fog),
    "brightness": Reference(no_draws, brightness),
    "contrast": Reference(no_draws, contrast),
    "saturate": Reference(no_draws, saturate),
    "elastic_transform": Reference(elastic_draws, elastic_transform),
    "pixelate": Reference(no_draws, pixelate),
    "jpeg_compression": Reference(no_draws, jpeg_compression),
    "glass_blur": Reference(glass_draws, glass_blur),
    "snow": Reference(snow_draws, snow),
    "spatter": Reference(spatter_draws, spatter),
}
"""Per-image references by corruption name."""
