"""A loader that keeps a whole dataset on the device and shuffles and augments it in batches.

This is the approach of the fastest CIFAR trainers (e.g. KellerJordan/cifar10-airbench): the uint8
images are copied to the device once; each batch is an index gather, an optional vectorised random
crop + flip, and one conversion to float. No worker processes, no per-image Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

PADDING_MODES = ("reflect", "constant", "replicate")


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map positions outside [0, size) back inside by mirror reflection without repeating the edge."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


class Augment:
    """Batched random crop (pad by ``crop_padding`` then take a random window) and horizontal flip.

    The crop and flip are one gather with per-sample offsets, so padding is never materialised and
    uint8 inputs stay uint8. ``padding_mode``: "reflect" (default), "constant" (zeros) or "replicate".
    """

    def __init__(self, crop_padding: int = 4, flip: bool = True, padding_mode: str = "reflect") -> None:
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode={padding_mode!r} is not valid; valid values: {PADDING_MODES}")
        self.crop_padding = crop_padding
        self.flip = flip
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        return (
            f"Augment(crop_padding={self.crop_padding}, flip={self.flip}, padding_mode={self.padding_mode!r})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch (B, C, H, W) of any dtype; ``generator`` must live on ``x.device``."""
        batch, channels, height, width = x.shape
        pad = self.crop_padding
        device = x.device
        dy = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator, device=device)  # (B, 1)
        dx = torch.randint(0, 2 * pad + 1, (batch, 1), generator=generator, device=device)  # (B, 1)
        cols = torch.arange(width, device=device).expand(batch, width)  # (B, W)
        if self.flip:
            flipped = torch.rand(batch, 1, generator=generator, device=device) < 0.5  # (B, 1)
            cols = torch.where(flipped, width - 1 - cols, cols)
        rows = torch.arange(height, device=device) + dy - pad  # (B, H) source rows, may be out of range
        cols = cols + dx - pad  # (B, W)
        return self._gather(x, rows, cols)

    def _gather(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]], padding out-of-range positions."""
        batch, channels, height, width = x.shape
        inside = None
        if self.padding_mode == "reflect":
            rows, cols = _reflect(rows, height), _reflect(cols, width)
        else:
            if self.padding_mode == "constant":
                inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
                    :, None, :
                ]
            rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
        flat = (rows[:, :, None] * width + cols[:, None, :]).view(batch, 1, height * width)  # (B, 1, H*W)
        out = x.reshape(batch, channels, height * width).gather(2, flat.expand(batch, channels, -1))
        out = out.view(batch, channels, height, width)
        if inside is not None:
            out = out * inside[:, None].to(out.dtype)  # zeros outside the image
        return out


class DeviceLoader:
    """Iterate (x, y) batches of a device-resident uint8 dataset.

    x is float32 pixels in [0, 1] with shape (B, C, H, W) on ``device``; y is int64 (B,). Epoch e
    shuffles with ``torch.randperm`` seeded by ``seed + e`` (on the CPU, so the order does not depend on
    the device) and augments with a device generator seeded the same way, so a resumed run that calls
    ``set_epoch(e)`` reproduces epoch e exactly. Each iteration uses the current epoch and then advances
    it by one, so plain repeated iteration also reshuffles.
    """

    def __init__(
        self,
        images: torch.Tensor,  # (N, C, H, W) uint8
        labels: torch.Tensor,  # (N,)
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool = False,
        augment: Augment | None = None,
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)  # (N, C, H, W) uint8, copied once
        self.labels = labels.to(self.device, torch.int64)  # (N,)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.augment = augment
        self.seed = seed
        self.channels_last = channels_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration use epoch ``epoch``'s order and augmentation."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (N,) int64 on the CPU."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        order = self.epoch_order(epoch).to(self.device)  # (N,)
        augment = self.augment
        aug_generator = None
        if augment is not None:
            aug_generator = torch.Generator(device=self.device).manual_seed(self.seed + epoch)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]  # (B,)
            x = self.images.index_select(0, index)  # (B, C, H, W) uint8
            if augment is not None and aug_generator is not None:
                x = augment(x, aug_generator)
            x = x.float().div_(255.0)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, index)
