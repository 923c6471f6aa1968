"""Tiny fake image datasets (shared by the data tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = ["cat", "dog", "owl"]


@dataclass
class FakeSplit:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64


def fake_split(n: int, seed: int, size: int = 10, num_classes: int = 3) -> FakeSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return FakeSplit(images, np.arange(n, dtype=np.int64) % num_classes)


def write_image_folder(root: Path, splits: dict[str, FakeSplit]) -> Path:
    for name, split in splits.items():
        for i, (image, label) in enumerate(zip(split.images, split.labels, strict=True)):
            folder = root / name / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
    return root
