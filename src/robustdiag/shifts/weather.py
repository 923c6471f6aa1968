"""Weather corruptions (Hendrycks & Dietterich 2019): fog (a batched diamond-square plasma fractal), snow,
frost and spatter.

Re-implemented batched in torch after ``plasma_fractal`` and ``fog`` in ``make_cifar_c.py`` /
``make_tinyimagenet_c.py`` / ``make_imagenet_c.py`` of https://github.com/hendrycks/robustness
(their fractal is a modification of FLHerne/mapgen's ``diamondsquare.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from robustdiag.shifts import cpu_kernels
from robustdiag.shifts.base import SEVERITY_RANGE, Corruption, Draws, Geometry, draw_normal, draw_uniform
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


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """``cv2.cvtColor(x, COLOR_RGB2GRAY)`` for float images (B, 3, H, W) -> (B, 1, H, W); grey images pass."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


class Snow(Corruption):
    """Falling snow: a thresholded, zoomed noise layer, motion-blurred, added twice (once upside down) to a
    brightened image: params (mean, std, zoom, threshold, blur radius, blur sigma, blend).

    As ``snow`` in the benchmark: the layer ``N(mean, std)`` per pixel is zoomed by ``clipped_zoom``, values
    below the threshold set to 0, quantised to 8 bits, blurred with ImageMagick's motion blur at a random
    angle in [-135, -45] degrees, quantised again (the benchmark round-trips it through PNG files); the
    image becomes ``blend x + (1 - blend) max(x, 1.5 grey(x) + 0.5)`` and the layer and its 180-degree
    rotation are added. Blur radius and sigma are pixel parameters (scaled with ``scale_spatial``).
    """

    CPU_CHUNKS = False  # Python loops over rows and taps, batched over images: one big call is faster
    name = "snow"
    COLOUR_ONLY = True
    PARAMS: ClassVar = {
        "cifar": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "tinyimagenet": (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.8),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6),
        ),
        "imagenet": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
    }

    def pixel_param(self, param: tuple[float, ...], geom: Geometry) -> tuple[float, ...]:
        mean, std, zoom, threshold, radius, sigma, blend = param
        return mean, std, zoom, threshold, radius * geom.scale, sigma * geom.scale, blend

    def sample(
        self, x: torch.Tensor, param: tuple[float, ...], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        b, _, h, w = x.shape
        return {
            "layer": draw_normal((b, h, w), generator, x),  # (B, H, W) standard normal
            "angle": draw_uniform((b,), generator, x, -135.0, -45.0),  # (B,) degrees
        }

    def apply(self, x: torch.Tensor, param: tuple[float, ...], geom: Geometry, draws: Draws) -> torch.Tensor:
        from robustdiag.shifts.blur import clipped_zoom, motion_blur

        mean, std, zoom, threshold, radius, sigma, blend = self.pixel_param(param, geom)
        layer = clipped_zoom((mean + std * draws["layer"])[:, None], zoom)  # (B, 1, H, W)
        layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
        layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # written as an 8-bit PNG (astype: truncation)
        layer = motion_blur(layer, radius, sigma, draws["angle"])
        layer = torch.floor(layer * 255 + 0.5) / 255  # ImageMagick writes 8 bits (rounding)
        brightened = torch.maximum(x, rgb_to_gray(x) * 1.5 + 0.5)
        x = blend * x + (1 - blend) * brightened
        return x + layer + layer.flip(-2, -1)


# The per-channel mean of the benchmark's frost photos (frost1-frost5 of hendrycks/robustness, the ones its
# np.random.randint(5) draws from) and their average within-photo standard deviation, in [0, 1] units.
FROST_PHOTO_MEAN = (0.4885, 0.6186, 0.6694)
FROST_PHOTO_STD = 0.11
FROST_RESIZE = {"cifar": 0.2, "tinyimagenet": 0.3, "imagenet": 1.0}  # cv2.resize factor of the photos
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class Frost(Corruption):
    """Frost on the lens: ``c0 x + c1 frost``, a random crop of a frost photograph per image: params (c0, c1).

    As ``frost`` in the benchmark: one of the frost photos, resized by 0.2 (CIFAR), 0.3 (Tiny-ImageNet) or 1
    (ImageNet) with OpenCV's bilinear rule, cropped at a random position. ``images``: a folder of frost
    photos; the benchmark's are ``frost1.png`` ... ``frost5.jpg`` in ``ImageNet-C/create_c/`` of
    https://github.com/hendrycks/robustness (its draw uses the first five; put exactly those five in the
    folder to match it). Photos are read with Pillow (RGB), which may decode JPEGs a level apart from
    OpenCV.

    Without ``images`` the frost is a **procedural approximation**, not the benchmark's: a ridged plasma
    fractal per image, scaled to the photos' per-channel mean (0.489, 0.619, 0.669) and average std (0.11).
    Its numbers are not comparable with published frost results; the record says which was used
    (``shift_info/frost/source``).
    """

    name = "frost"
    COLOUR_ONLY = True
    PARAMS: ClassVar = {
        "cifar": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "tinyimagenet": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
        "imagenet": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
    }

    def __init__(
        self, severities: Sequence[int] = SEVERITY_RANGE, *, images: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(severities, **kwargs)
        self.images = images
        self.photo_names = frost_photo_files(images) if images else []  # sorted image files of the folder
        self.photos = [load_frost_photo(path) for path in self.photo_names]  # (3, h, w) float64 in [0, 1]
        self._resized: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pixels: dict[tuple[float, str, torch.dtype], torch.Tensor] = {}

    @property
    def source(self) -> str:
        """``images:<folder>`` (the benchmark's procedure) or ``procedural`` (an approximation)."""
        return f"images:{self.images}" if self.images else "procedural"

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, source={self.source!r})"

    def resize_factor(self, geom: Geometry) -> float:
        return FROST_RESIZE[geom.table] * geom.scale

    def stacked_photos(self, geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
        """The resized photos padded into one CPU tensor (N, 3, Hmax, Wmax) float64 and their sizes (N, 2)."""
        factor = self.resize_factor(geom)
        if factor not in self._resized:
            resized = [opencv_resize_linear(p, factor) for p in self.photos]
            for path, photo in zip(self.photo_names, resized):
                if photo.shape[1] <= geom.height or photo.shape[2] <= geom.width:
                    raise ValueError(
                        f"frost: photo {path} is {tuple(photo.shape[1:])} px after resizing by {factor:g}, not "
                        f"larger than the {geom.height}x{geom.width} images; use larger photos"
                    )
            hmax = max(p.shape[1] for p in resized)
            wmax = max(p.shape[2] for p in resized)
            stack = torch.zeros(len(resized), 3, hmax, wmax, dtype=torch.float64)
            for i, p in enumerate(resized):
                stack[i, :, : p.shape[1], : p.shape[2]] = p
            sizes = torch.tensor([[p.shape[1], p.shape[2]] for p in resized])
            self._resized[factor] = (stack, sizes)
        return self._resized[factor]

    def photo_pixels(self, geom: Geometry, like: torch.Tensor) -> torch.Tensor:
        """The resized photos as (N, Hmax, Wmax, 3) in ``like``'s dtype and device (made once): channels
        last, so a crop gathers one contiguous RGB triple per pixel."""
        key = (self.resize_factor(geom), str(like.device), like.dtype)
        if key not in self._pixels:
            stack, _ = self.stacked_photos(geom)
            self._pixels[key] = (
                stack.permute(0, 2, 3, 1).to(device=like.device, dtype=like.dtype).contiguous()
            )
        return self._pixels[key]

    def sample(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        b, _, h, w = x.shape
        if not self.images:
            size = next_power_of_two(max(h, w))
            uniform = lambda shape: draw_uniform(shape, generator, x)  # noqa: E731
            ridged = plasma_fractal(b * 3, size, 1.4, uniform, device=x.device, dtype=x.dtype)
            smooth = plasma_fractal(b, size, 2.2, uniform, device=x.device, dtype=x.dtype)
            return {"ridged": ridged[:, :h, :w].reshape(b, 3, h, w), "smooth": smooth[:, :h, :w]}
        _, sizes = self.stacked_photos(geom)
        choice = torch.randint(0, len(self.photos), (b,), generator=generator, device=generator.device).cpu()
        u = torch.rand(b, 2, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        room = (sizes[choice] - torch.tensor([h, w])).to(torch.float64)  # np.random.randint(0, size - crop)
        starts = torch.floor(u * room).long()
        return {"photo": choice.to(x.device), "start": starts.to(x.device)}

    def frost_layer(self, x: torch.Tensor, geom: Geometry, draws: Draws) -> torch.Tensor:
        """The frost each image gets (B, 3, H, W) in [0, 1]."""
        b, _, h, w = x.shape
        if not self.images:
            ridges = (1 - (2 * draws["ridged"] - 1).abs()) ** 3  # (B, 3, H, W) thin bright crystal lines
            texture = 0.7 * ridges + 0.3 * draws["smooth"][:, None]
            texture = (texture - texture.mean(dim=(2, 3), keepdim=True)) / texture.std(
                dim=(2, 3), keepdim=True
            ).clamp_min(1e-6)
            mean = torch.tensor(FROST_PHOTO_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (mean + FROST_PHOTO_STD * texture).clamp(0, 1)
        pixels = self.photo_pixels(geom, x)  # (N, Hmax, Wmax, 3)
        rows = draws["start"][:, 0:1] + torch.arange(h, device=x.device)[None, :]  # (B, H)
        cols = draws["start"][:, 1:2] + torch.arange(w, device=x.device)[None, :]  # (B, W)
        photo = draws["photo"][:, None, None]
        crop = pixels[photo, rows[:, :, None], cols[:, None, :]]  # (B, H, W, 3)
        return crop.permute(0, 3, 1, 2)  # (B, 3, H, W), a channels-last view

    def apply(
        self, x: torch.Tensor, param: tuple[float, float], geom: Geometry, draws: Draws
    ) -> torch.Tensor:
        if self.images and x.shape[1] == 3 and cpu_kernels.usable_for(x, floats=True):
            # CPU: crop and blend in one pass per image (the same products and sum)
            pixels = self.photo_pixels(geom, x)
            return cpu_kernels.crop_blend(x, pixels, draws["photo"], draws["start"], param[0], param[1])
        frost = self.frost_layer(x, geom, draws)
        if x.shape[1] == 1:
            frost = rgb_to_gray(frost)
        return param[0] * x + param[1] * frost


def frost_photo_files(folder: str | Path) -> list[str]:
    """The image files of a frost folder, sorted by name; a clear error when it is missing or empty."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"frost: images={str(folder)!r} is not a folder (give a folder of frost photos)")
    files = sorted(str(p) for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"frost: images={str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); the benchmark's "
            "are frost1.png ... frost5.jpg in ImageNet-C/create_c/ of github.com/hendrycks/robustness"
        )
    return files


def load_frost_photo(path: str) -> torch.Tensor:
    """One frost photo as (3, h, w) float64 RGB in [0, 1]; a clear error for a file that is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"frost: {path} is not a readable image ({err})") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def opencv_resize_linear(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``cv2.resize(image, (0, 0), fx=factor, fy=factor)`` (INTER_LINEAR) of a (C, h, w) image in [0, 1],
    rounded to 8 bits as OpenCV returns it. Size ``round(side * factor)``; source ``(d + 0.5) / factor - 0.5``
    clamped to the edge pixels."""
    if factor == 1.0:
        return image

    def axis(n: int) -> torch.Tensor:
        out = int(round(n * factor))
        src = (torch.arange(out, dtype=torch.float64) + 0.5) / factor - 0.5
        lo = torch.floor(src)
        frac = src - lo
        frac = torch.where(lo < 0, torch.zeros_like(frac), frac)
        lo = lo.clamp(min=0)
        frac = torch.where(lo >= n - 1, torch.zeros_like(frac), frac)
        lo = lo.clamp(max=n - 1).long()
        hi = (lo + 1).clamp(max=n - 1)
        weights = torch.zeros(out, n, dtype=torch.float64)
        weights[torch.arange(out), lo] += 1 - frac
        weights[torch.arange(out), hi] += frac
        return weights  # (out, n)

    rows, cols = axis(image.shape[1]), axis(image.shape[2])
    resized = torch.einsum("oh,chw,pw->cop", rows, image.to(torch.float64), cols)
    return torch.round(resized * 255) / 255


class Spatter(Corruption):
    """Water or mud drops: params (mean, std, sigma, threshold, intensity, mud).

    As ``spatter`` in the benchmark: a liquid layer ``N(mean, std)`` per pixel, Gaussian-blurred (std
    ``sigma``, edge pixels replicated), zero below the threshold. Water (``mud = 0``): the layer's edges
    (OpenCV Canny 50/150), their chamfer distance map truncated at 20, blurred, equalised, embossed and
    blurred (:mod:`robustdiag.shifts.cvops`, OpenCV's arithmetic) weight pale-turquoise drops (175, 238,
    238) / 255 of strength ``intensity``. Mud (``mud = 1``): the blurred mask (std ``intensity``) above 0.8
    replaces the image with brown (63, 42, 20) / 255. Grey images get the colours' grey value. Blur stds are
    pixel parameters (scaled with ``scale_spatial``).
    """

    name = "spatter"
    PARAMS: ClassVar = {
        "cifar": (
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ),
        "tinyimagenet": (
            (0.62, 0.1, 0.7, 0.7, 0.6, 0),
            (0.65, 0.1, 0.8, 0.7, 0.6, 0),
            (0.65, 0.3, 1, 0.69, 0.6, 0),
            (0.65, 0.1, 0.7, 0.68, 0.6, 1),
            (0.65, 0.1, 0.5, 0.67, 0.6, 1),
        ),
        "imagenet": (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
    }
    WATER = (175 / 255, 238 / 255, 238 / 255)
    MUD = (63 / 255, 42 / 255, 20 / 255)

    def pixel_param(self, param: tuple[float, ...], geom: Geometry) -> tuple[float, ...]:
        mean, std, sigma, threshold, intensity, mud = param
        intensity = intensity * geom.scale if mud else intensity  # mud: a blur std; water: a strength
        return mean, std, sigma * geom.scale, threshold, intensity, mud

    def sample(
        self, x: torch.Tensor, param: tuple[float, ...], geom: Geometry, generator: torch.Generator
    ) -> Draws:
        b, _, h, w = x.shape
        return {"liquid": draw_normal((b, h, w), generator, x)}  # (B, H, W) standard normal

    def apply(self, x: torch.Tensor, param: tuple[float, ...], geom: Geometry, draws: Draws) -> torch.Tensor:
        from robustdiag.shifts.ops import gaussian_blur

        mean, std, sigma, threshold, intensity, mud = self.pixel_param(param, geom)
        liquid = gaussian_blur((mean + std * draws["liquid"])[:, None], sigma, truncate=4.0, mode="replicate")
        liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)[:, 0]  # (B, H, W)
        colour = self.colour(self.MUD if mud else self.WATER, x)  # (1, C, 1, 1)
        if mud:
            mask = gaussian_blur(
                (liquid > threshold).to(x.dtype)[:, None], intensity, truncate=4.0, mode="replicate"
            )
            mask = torch.where(mask < 0.8, torch.zeros_like(mask), mask)  # (B, 1, H, W)
            return x * (1 - mask) + colour * mask
        drops = water_drops(liquid)  # (B, H, W)
        return x + intensity * drops[:, None].to(x.dtype) * colour

    @staticmethod
    def colour(rgb: tuple[float, float, float], x: torch.Tensor) -> torch.Tensor:
        value = torch.tensor(rgb, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return rgb_to_gray(value) if x.shape[1] == 1 else value


def water_drops(liquid: torch.Tensor) -> torch.Tensor:
    """The water variant's drop map (B, H, W) in [0, 1]: ``liquid * emboss(dist) / max`` as the benchmark
    computes it with OpenCV (8-bit steps included)."""
    from robustdiag.shifts import cvops

    low, high = CANNY_THRESHOLDS
    if cpu_kernels.usable_for(liquid, floats=True):  # CPU: every step per image, one pass
        return cpu_kernels.water_drops(liquid, low, high, DISTANCE_CAP, EMBOSS)
    level = torch.floor(liquid * 255).remainder(256)  # (liquid * 255).astype(np.uint8) wraps above 255
    edges = cvops.canny(level, low, high)
    dist = cvops.chamfer_distance(edges > 0, DISTANCE_CAP)  # distance to the drops' edges, truncated
    dist = torch.floor(cvops.box3(dist).to(torch.float32)).to(torch.float64)  # blur, astype(np.uint8)
    dist = cvops.equalize_hist(dist)
    dist = cvops.filter2d_u8(dist, EMBOSS)
    dist = torch.round(cvops.box3(dist))  # cv2.blur of 8-bit input returns rounded 8-bit (round half even)
    drops = level * dist  # (B, H, W)
    peak = drops.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, drops / peak.clamp_min(1e-12), torch.zeros_like(drops))


EMBOSS = torch.tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=torch.float64)
CANNY_THRESHOLDS = (50, 150)  # the benchmark's cv2.Canny(level, 50, 150)
DISTANCE_CAP = 20.0  # cv2.threshold(dist, 20, 20, THRESH_TRUNC)
