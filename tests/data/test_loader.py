"""DeviceLoader and Augment: coverage, order, reproducibility, and that augmentation is a true crop/flip."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from robustdiag.data import Augment, DeviceLoader


def _indexed_data(n: int, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels encode their index (mod 256), labels = index."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 2, size, size).contiguous()
    return images, torch.arange(n)


def _epoch_labels(loader: DeviceLoader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_every_sample_once_per_epoch() -> None:
    images, labels = _indexed_data(103)
    loader = DeviceLoader(images, labels, 10, shuffle=True, seed=3)
    assert len(loader) == 11
    for _ in range(3):
        seen = _epoch_labels(loader)
        assert seen.shape == (103,)
        assert torch.equal(seen.sort().values, labels)


def test_drop_last() -> None:
    images, labels = _indexed_data(103)
    loader = DeviceLoader(images, labels, 10, shuffle=True, drop_last=True)
    assert len(loader) == 10
    batches = list(loader)
    assert len(batches) == 10 and all(y.shape == (10,) for _, y in batches)
    assert torch.cat([y for _, y in batches]).unique().numel() == 100


def test_batches_are_the_images_as_floats() -> None:
    images, labels = _indexed_data(20)
    loader = DeviceLoader(images, labels, 8, shuffle=True, seed=1)
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (2, 6, 6)
        assert torch.equal(x, images[y].float() / 255.0)


def test_unshuffled_order_is_the_dataset_order() -> None:
    images, labels = _indexed_data(25)
    assert torch.equal(_epoch_labels(DeviceLoader(images, labels, 7, shuffle=False)), labels)


def test_order_reproducible_per_epoch_and_resumable() -> None:
    images, labels = _indexed_data(50)
    first = DeviceLoader(images, labels, 8, shuffle=True, seed=5)
    orders = [_epoch_labels(first) for _ in range(3)]  # iteration advances the epoch
    assert not torch.equal(orders[0], orders[1])
    resumed = DeviceLoader(images, labels, 8, shuffle=True, seed=5)
    resumed.set_epoch(2)
    assert torch.equal(_epoch_labels(resumed), orders[2])
    assert torch.equal(orders[1], first.epoch_order(1))
    other_seed = DeviceLoader(images, labels, 8, shuffle=True, seed=6)
    assert not torch.equal(_epoch_labels(other_seed), orders[0])


def test_augmented_epochs_reproducible() -> None:
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(30)
    make = lambda: DeviceLoader(images, labels, 16, shuffle=True, augment=Augment(), seed=2)  # noqa: E731
    a, b = make(), make()
    a.set_epoch(4)
    b.set_epoch(4)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_channels_last_flag() -> None:
    images, labels = _indexed_data(9)
    x, _ = next(iter(DeviceLoader(images, labels, 4, shuffle=False, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_loader_validates_inputs() -> None:
    images, labels = _indexed_data(9)
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(images.float(), labels, 4, shuffle=False)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(images, labels[:3], 4, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(images, labels, 0, shuffle=False)


@pytest.mark.parametrize("padding_mode", ["reflect", "constant", "replicate"])
def test_augment_is_a_window_of_the_padded_image(padding_mode: str) -> None:
    """Every output equals some (dy, dx) window of the padded input, possibly mirrored; all options occur."""
    pad, batch = 2, 256
    x = torch.randint(0, 256, (batch, 3, 7, 9), dtype=torch.uint8)
    augment = Augment(crop_padding=pad, flip=True, padding_mode=padding_mode)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x.double(), (pad, pad, pad, pad), mode=padding_mode)  # (B, C, H+2p, W+2p) reference
    found = torch.zeros(batch, dtype=torch.long)
    used = set()
    for dy, dx, flip in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True)):
        window = padded[:, :, dy : dy + 7, dx : dx + 9]
        window = window.flip(-1) if flip else window
        match = (window == out.double()).flatten(1).all(1)  # (B,)
        found += match.long()
        if match.any():
            used.add((dy, dx, flip))
    assert bool((found >= 1).all()), "some output is not a window of the padded image"
    assert len(used) == (2 * pad + 1) ** 2 * 2  # every offset and both flip states drawn


def test_augment_float_range_and_identity() -> None:
    x = torch.rand(16, 3, 8, 8)
    out = Augment()(x, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    identity = Augment(crop_padding=0, flip=False)
    assert torch.equal(identity(x, torch.Generator().manual_seed(1)), x)


def test_flip_only_mirrors() -> None:
    x = torch.randint(0, 256, (64, 1, 5, 5), dtype=torch.uint8)
    out = Augment(crop_padding=0, flip=True)(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and bool(same.any()) and bool(mirrored.any())


def test_augment_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="valid values"):
        Augment(padding_mode="wrap")
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)
