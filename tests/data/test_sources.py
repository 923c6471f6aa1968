"""Digits and Synthetic sources, the bundle contract, statistics and resizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from robustdiag.data import DataBundle, Digits, ImageData, Synthetic, channel_stats, resize_images


def test_digits_shapes_dtypes_ranges(tmp_path: Path) -> None:
    bundle = Digits().load(tmp_path)
    assert bundle.name == "digits" and bundle.num_classes == 10 and bundle.classes[3] == "3"
    assert bundle.channels == 1 and bundle.image_size == 8
    assert bundle.train.images.shape == (1437, 1, 8, 8) and bundle.test.images.shape == (360, 1, 8, 8)
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.labels.dtype == torch.int64
    assert int(bundle.train.images.max()) == 255 and int(bundle.train.images.min()) == 0
    assert set(bundle.test.labels.tolist()) == set(range(10))


def test_digits_split_fixed_stratified_and_complete(tmp_path: Path) -> None:
    first, second = Digits().load(tmp_path), Digits().load(tmp_path)
    assert torch.equal(first.test.images, second.test.images)
    assert torch.equal(first.train.labels, second.train.labels)
    totals = np.bincount(load_digits().target, minlength=10)
    test_counts = torch.bincount(first.test.labels, minlength=10).numpy()
    train_counts = torch.bincount(first.train.labels, minlength=10).numpy()
    assert np.array_equal(train_counts + test_counts, totals)
    assert np.all(np.abs(test_counts - 0.2 * totals) <= 1)  # stratified


def test_digits_pixels_are_the_sklearn_values(tmp_path: Path) -> None:
    bundle = Digits().load(tmp_path)
    expected = torch.from_numpy(np.rint(load_digits().images * 255 / 16)).flatten(1)  # (1797, 64)
    got = torch.cat([bundle.train.images, bundle.test.images]).double().flatten(1)
    distance = torch.cdist(got, expected)  # (1797, 1797)
    assert float(distance.min(1).values.max()) == 0.0  # every bundle image is an original image
    assert got.unique(dim=0).shape[0] == expected.unique(dim=0).shape[0]  # and none is lost or repeated


def test_digits_resize_and_channels(tmp_path: Path) -> None:
    bundle = Digits(image_size=16, channels=3).load(tmp_path)
    assert bundle.train.images.shape == (1437, 3, 16, 16) and bundle.channels == 3 and bundle.image_size == 16
    assert torch.equal(bundle.train.images[:, 0], bundle.train.images[:, 2])
    assert len(bundle.mean) == 3 and bundle.mean[0] == pytest.approx(bundle.mean[1])


def test_digits_mean_std_from_train_split(tmp_path: Path) -> None:
    bundle = Digits().load(tmp_path)
    pixels = bundle.train.images.double() / 255
    assert bundle.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-12)
    assert bundle.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-9)


def test_digits_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="data.channels"):
        Digits(channels=2)
    with pytest.raises(ValueError, match="data.test_fraction"):
        Digits(test_fraction=1.5)


def test_synthetic_shapes_balance_and_determinism(tmp_path: Path) -> None:
    source = Synthetic(num_classes=3, n_train=60, n_test=30, image_size=12, channels=1, seed=4)
    bundle = source.load(tmp_path)
    assert bundle.train.images.shape == (60, 1, 12, 12) and bundle.test.images.shape == (30, 1, 12, 12)
    assert bundle.train.images.dtype == torch.uint8 and bundle.num_classes == 3
    assert torch.bincount(bundle.train.labels).tolist() == [20, 20, 20]
    again = Synthetic(num_classes=3, n_train=60, n_test=30, image_size=12, channels=1, seed=4).load(tmp_path)
    assert torch.equal(bundle.train.images, again.train.images) and torch.equal(
        bundle.test.labels, again.test.labels
    )
    other = Synthetic(num_classes=3, n_train=60, n_test=30, image_size=12, channels=1, seed=5).load(tmp_path)
    assert not torch.equal(bundle.train.images, other.train.images)


def test_synthetic_test_split_does_not_depend_on_train_size(tmp_path: Path) -> None:
    small = Synthetic(num_classes=4, n_train=20, n_test=12, image_size=8).load(tmp_path)
    large = Synthetic(num_classes=4, n_train=40, n_test=12, image_size=8).load(tmp_path)
    assert torch.equal(small.test.images, large.test.images)


def test_synthetic_noise_free_samples_are_template_windows(tmp_path: Path) -> None:
    source = Synthetic(num_classes=2, n_train=10, n_test=4, image_size=8, channels=2, noise=0.0, max_shift=1)
    bundle = source.load(tmp_path)
    templates = (source.templates() * 255).round().clamp(0, 255)  # (K, C, 10, 10)
    for image, label in zip(bundle.train.images.double(), bundle.train.labels, strict=True):
        windows = templates[label].unfold(1, 8, 1).unfold(2, 8, 1)  # (C, 3, 3, 8, 8)
        diff = (windows - image[:, None, None]).abs().amax(dim=(0, 3, 4))  # (3, 3)
        assert float(diff.min()) == 0.0


def test_synthetic_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="data.num_classes"):
        Synthetic(num_classes=1)
    with pytest.raises(ValueError, match="data.noise"):
        Synthetic(noise=-1.0)


def test_channel_stats_matches_dense() -> None:
    images = torch.randint(0, 256, (9, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(images)
    dense = images.double() / 255
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), dense.mean(dim=(0, 2, 3)), atol=1e-12)
    assert torch.allclose(
        torch.tensor(std, dtype=torch.float64), dense.std(dim=(0, 2, 3), unbiased=False), atol=1e-9
    )


def test_resize_constant_stays_constant_and_crops_center() -> None:
    constant = torch.full((2, 1, 10, 10), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(constant, 4), torch.full((2, 1, 4, 4), 77, dtype=torch.uint8))
    wide = torch.zeros(1, 1, 4, 8, dtype=torch.uint8)
    wide[..., 2:6] = 200  # the central square
    assert torch.equal(resize_images(wide, 4), torch.full((1, 1, 4, 4), 200, dtype=torch.uint8))


def test_bundle_validates() -> None:
    train = ImageData(torch.zeros(4, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    test = ImageData(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels must lie"):
        DataBundle("x", train, test, ["a", "b"], (0.5,), (0.2,))
    with pytest.raises(ValueError, match="one value per channel"):
        DataBundle("x", train, train, ["a", "b"], (0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]))
