"""balanced_subset: equal counts per class, seeded, sorted, and a helpful error when a class is short."""

from __future__ import annotations

import pytest
import torch

from robustdiag.data import balanced_subset


def _labels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 5, (400,), generator=generator)


def test_balanced_sorted_unique() -> None:
    labels = _labels()
    idx = balanced_subset(labels, 50, seed=0)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, idx.sort().values) and idx.unique().numel() == 50
    assert torch.bincount(labels[idx], minlength=5).tolist() == [10] * 5


def test_deterministic_and_seed_dependent() -> None:
    labels = _labels()
    assert torch.equal(balanced_subset(labels, 50, seed=3), balanced_subset(labels, 50, seed=3))
    assert not torch.equal(balanced_subset(labels, 50, seed=3), balanced_subset(labels, 50, seed=4))


def test_whole_classes_when_asked_for_all() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    assert balanced_subset(labels, 6, seed=0).tolist() == [0, 1, 2, 3, 4, 5]


def test_not_divisible_rounds_down_with_warning() -> None:
    labels = _labels()
    with pytest.warns(UserWarning, match="not divisible"):
        idx = balanced_subset(labels, 52, seed=0)
    assert idx.numel() == 50


def test_short_class_error_names_class_counts_and_key() -> None:
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 10)
    with pytest.raises(
        ValueError, match=r"class 1 has 3 samples but 5 per class.*eval\.n_samples.*at most 9"
    ):
        balanced_subset(labels, 15, seed=0)


def test_absent_class_counts_with_num_classes() -> None:
    labels = torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(ValueError, match="class 2 has 0 samples"):
        balanced_subset(labels, 6, seed=0, num_classes=3)


def test_fewer_samples_than_classes() -> None:
    with pytest.raises(ValueError, match="eval.n_samples"):
        balanced_subset(_labels(), 3, seed=0)
