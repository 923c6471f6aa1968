"""The in-memory form of a dataset: uint8 image tensors, labels, class names and channel statistics."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_STATS_CHUNK = 4096  # images per chunk when summing statistics (bounds float64 memory)
_RESIZE_CHUNK = 1024  # images per chunk when resizing


@dataclass
class ImageData:
    """One split: images as uint8 pixels and integer labels."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    """A train and a test split with the class names and the per-channel statistics of the train split."""

    name: str
    train: ImageData
    test: ImageData
    classes: list[str]
    mean: tuple[float, ...]  # per channel, pixel units in [0, 1] (used by Normalize)
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.train.images.shape[1:] != self.test.images.shape[1:]:
            raise ValueError(
                f"{self.name}: train images are {tuple(self.train.images.shape[1:])} but test images are "
                f"{tuple(self.test.images.shape[1:])}; set data.image_size (and data.channels) to make them agree"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"{self.name}: mean {self.mean} and std {self.std} need one value per channel ({self.channels})"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")
        for split, data in (("train", self.train), ("test", self.test)):
            if len(data) and (int(data.labels.min()) < 0 or int(data.labels.max()) >= self.num_classes):
                raise ValueError(
                    f"{self.name}: {split} labels must lie in [0, {self.num_classes}), got "
                    f"[{int(data.labels.min())}, {int(data.labels.max())}]"
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_fingerprint(self) -> str:
        """A digest of the decoded training images, labels and class names: what a trained model depends
        on beyond its config (the checkpoint cache is keyed by it, so new files at the same path retrain)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str((tuple(self.train.images.shape), self.classes)).encode())
        digest.update(self.train.images.contiguous().numpy().tobytes())
        digest.update(self.train.labels.contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Side length in pixels (every source produces square images)."""
        height, width = self.train.images.shape[-2:]
        if height != width:
            raise ValueError(f"{self.name}: images are {height}x{width}, not square; set data.image_size")
        return int(height)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] pixel units (float64 sums)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64) / 255.0  # (b, C, H, W)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt().clamp_min(1e-6)  # a constant channel must not divide by zero inside Normalize
    return tuple(mean.tolist()), tuple(std.tolist())


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to (N, C, size, size) with antialiased bilinear interpolation.

    Non-square images are first center-cropped to a square (keeps the aspect ratio, as ImageNet
    evaluation does); square images are resized as a whole.
    """
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    images = images[..., top : top + side, left : left + side]
    if side == size:
        return images.contiguous()
    chunks = []
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()  # (b, C, side, side)
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
    if not chunks:
        return images.new_zeros((0, images.shape[1], size, size))
    return torch.cat(chunks)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 images between 1 (gray) and 3 (RGB) channels: repeat gray, or ITU-R 601 luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        gray = (images.float() * weights).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        return gray.round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to channels={channels}; valid values: 1, 3")
