"""Procedural class-conditional images: any size, any number of classes, deterministic given a seed.

Each class owns a smooth template drawn on a canvas a little larger than the image: a few random
low-frequency colour gratings plus a few soft blobs, on top of a background shared by all classes.
A sample is a randomly translated window of its class template plus Gaussian pixel noise. The shared
background, the translation and the noise make the task learnable by a small CNN but not trivial;
``noise``, ``max_shift`` and ``class_contrast`` are the difficulty knobs. With the defaults (32 px,
10 classes, 5000 images) a 3-layer CNN reached 99% test accuracy after 4 epochs while logistic
regression on the pixels reached 86%.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import torch

from robustdiag.data.bundle import DataBundle, ImageData, channel_stats

_CHUNK = 2048  # samples rendered at once (bounds float memory)


def _seeds(seed: int, count: int) -> list[int]:
    """Independent child seeds of ``seed`` (templates, train split, test split)."""
    children = np.random.SeedSequence(seed).spawn(count)
    return [int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for child in children]


def _gratings(
    count: int, channels: int, side: int, scale: int, n_waves: int, g: torch.Generator
) -> torch.Tensor:
    """``count`` smooth fields (count, C, side, side): sums of random colour sinusoids."""
    coords = torch.arange(side, dtype=torch.float64) / scale  # in image widths
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    freq = 0.5 + 2.5 * torch.rand(count, n_waves, generator=g, dtype=torch.float64)  # cycles per image
    angle = 2 * math.pi * torch.rand(count, n_waves, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(count, n_waves, generator=g, dtype=torch.float64)
    colour = torch.randn(count, n_waves, channels, generator=g, dtype=torch.float64)  # (n, W, C)
    fy, fx = (freq * angle.sin())[..., None, None], (freq * angle.cos())[..., None, None]  # (n, W, 1, 1)
    waves = torch.sin(2 * math.pi * (fy * yy + fx * xx) + phase[..., None, None])  # (n, W, S, S)
    return torch.einsum("nwhv,nwc->nchv", waves, colour) / math.sqrt(n_waves)


def _blobs(count: int, channels: int, side: int, n_blobs: int, g: torch.Generator) -> torch.Tensor:
    """``count`` fields (count, C, side, side) of soft Gaussian blobs with signed colours."""
    coords = torch.arange(side, dtype=torch.float64)
    centre = side * torch.rand(count, n_blobs, 2, generator=g, dtype=torch.float64)  # (n, B, 2)
    width = side * (0.08 + 0.12 * torch.rand(count, n_blobs, generator=g, dtype=torch.float64))  # (n, B)
    colour = 1.5 * torch.randn(count, n_blobs, channels, generator=g, dtype=torch.float64)  # (n, B, C)
    dy = coords[None, None, :] - centre[..., 0:1]  # (n, B, S)
    dx = coords[None, None, :] - centre[..., 1:2]  # (n, B, S)
    r2 = dy[..., :, None].square() + dx[..., None, :].square()  # (n, B, S, S)
    bumps = torch.exp(-r2 / (2 * width[..., None, None].square()))
    return torch.einsum("nbhv,nbc->nchv", bumps, colour)


def _windows(canvas: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample square windows (N, C, size, size) of ``canvas`` (N, C, S, S) at (top, left) (N,)."""
    n, c, side, _ = canvas.shape
    steps = torch.arange(size)
    rows = top[:, None] + steps  # (N, size)
    cols = left[:, None] + steps  # (N, size)
    flat = (rows[:, :, None] * side + cols[:, None, :]).view(n, 1, size * size)  # (N, 1, size*size)
    out = canvas.reshape(n, c, side * side).gather(2, flat.expand(n, c, -1))
    return out.view(n, c, size, size)


class Synthetic:
    """Seeded procedural images.

    Args:
        num_classes, n_train, n_test, image_size, channels: the shape of the data set (balanced classes).
        noise: std of the Gaussian pixel noise, in [0, 1] pixel units.
        max_shift: largest translation in pixels (null: image_size // 4).
        class_contrast: weight of the class-specific pattern against the shared background.
        seed: the data seed (independent of the run seed); templates, train and test use separate
            child seeds, so the test split does not change with n_train.
    """

    def __init__(
        self,
        num_classes: int = 10,
        n_train: int = 5000,
        n_test: int = 1000,
        image_size: int = 32,
        channels: int = 3,
        noise: float = 0.3,
        max_shift: int | None = None,
        class_contrast: float = 0.6,
        seed: int = 0,
        name: str = "synthetic",
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2, got {num_classes}")
        if n_train < num_classes or n_test < num_classes:
            raise ValueError(
                f"data.n_train={n_train} and data.n_test={n_test} must each be >= data.num_classes={num_classes}"
            )
        if image_size < 4:
            raise ValueError(f"data.image_size must be >= 4, got {image_size}")
        if channels < 1:
            raise ValueError(f"data.channels must be >= 1, got {channels}")
        if noise < 0:
            raise ValueError(f"data.noise must be >= 0, got {noise}")
        self.num_classes = num_classes
        self.n_train = n_train
        self.n_test = n_test
        self.image_size = image_size
        self.channels = channels
        self.noise = noise
        self.max_shift = image_size // 4 if max_shift is None else max_shift
        if self.max_shift < 0:
            raise ValueError(f"data.max_shift must be >= 0, got {max_shift}")
        if class_contrast <= 0:
            raise ValueError(f"data.class_contrast must be > 0, got {class_contrast}")
        self.class_contrast = class_contrast
        self.seed = seed
        self.name = name

    def templates(self) -> torch.Tensor:
        """Class templates (K, C, S, S) float64 around 0.5, S = image_size + 2 * max_shift."""
        g = torch.Generator().manual_seed(_seeds(self.seed, 3)[0])
        side = self.image_size + 2 * self.max_shift
        args = (self.channels, side)
        background = _gratings(1, *args, self.image_size, 4, g) + _blobs(1, *args, 3, g)  # (1, C, S, S)
        specific = _gratings(self.num_classes, *args, self.image_size, 3, g) + _blobs(
            self.num_classes, *args, 2, g
        )  # (K, C, S, S)
        fields = background + self.class_contrast * specific
        fields = fields - fields.mean(dim=(1, 2, 3), keepdim=True)
        fields = fields / fields.std(dim=(1, 2, 3), keepdim=True)
        return 0.5 + 0.18 * fields

    def _split(self, templates: torch.Tensor, n: int, seed: int) -> ImageData:
        """Render ``n`` class-balanced samples (labels in a seeded random order)."""
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=g)]  # (n,)
        span = 2 * self.max_shift + 1
        top = torch.randint(0, span, (n,), generator=g)
        left = torch.randint(0, span, (n,), generator=g)
        chunks = []
        for start in range(0, n, _CHUNK):
            part = slice(start, start + _CHUNK)
            clean = _windows(templates[labels[part]], top[part], left[part], self.image_size)  # (b, C, H, W)
            noisy = clean + self.noise * torch.randn(clean.shape, generator=g, dtype=clean.dtype)
            chunks.append((noisy * 255.0).round_().clamp_(0, 255).to(torch.uint8))
        return ImageData(torch.cat(chunks), labels)

    def load(self, cache_dir: pathlib.Path) -> DataBundle:
        """Render the bundle (fast and in memory; ``cache_dir`` is not needed)."""
        _, train_seed, test_seed = _seeds(self.seed, 3)
        templates = self.templates()
        train = self._split(templates, self.n_train, train_seed)
        test = self._split(templates, self.n_test, test_seed)
        mean, std = channel_stats(train.images)
        classes = [f"class_{k}" for k in range(self.num_classes)]
        return DataBundle(self.name, train, test, classes, mean, std)
