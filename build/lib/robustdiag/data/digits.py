"""scikit-learn's bundled handwritten digits: 1797 real 8x8 grayscale images that need no network."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from robustdiag.data.bundle import DataBundle, ImageData, channel_stats, resize_images, to_channels

SPLIT_SEED = 0  # the train/test split never depends on the run seed


class Digits:
    """The UCI optical digits (sklearn ``load_digits``), values 0..16 mapped to uint8 0..255.

    A fixed stratified split (seed 0) holds out ``test_fraction`` of each class. ``image_size`` other
    than 8 resizes with antialiased bilinear interpolation; ``channels=3`` repeats the gray channel.
    """

    def __init__(
        self, test_fraction: float = 0.2, image_size: int = 8, channels: int = 1, name: str = "digits"
    ):
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must lie in (0, 1), got {test_fraction}")
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels} is not valid; valid values: 1, 3")
        if image_size < 1:
            raise ValueError(f"data.image_size must be >= 1, got {image_size}")
        self.test_fraction = test_fraction
        self.image_size = image_size
        self.channels = channels
        self.name = name

    def load(self, cache_dir: pathlib.Path) -> DataBundle:
        """Build the bundle (fast and in memory; ``cache_dir`` is not needed)."""
        from sklearn.datasets import load_digits  # imported here: keeps `import robustdiag.data` light
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
        images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
        images = to_channels(resize_images(images, self.image_size), self.channels)
        labels = torch.from_numpy(digits.target.astype(np.int64))  # (N,)
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)),
            test_size=self.test_fraction,
            stratify=digits.target,
            random_state=SPLIT_SEED,
        )
        train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
        train = ImageData(images[train_idx].contiguous(), labels[train_idx])
        test = ImageData(images[test_idx].contiguous(), labels[test_idx])
        mean, std = channel_stats(train.images)
        classes = [str(int(c)) for c in digits.target_names]
        return DataBundle(self.name, train, test, classes, mean, std)
