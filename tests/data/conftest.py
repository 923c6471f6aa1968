"""Tiny local datasets in every layout the HF source reads (built in tmp_path; no network)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from data_fakes import CLASS_NAMES, FakeSplit, fake_split, write_image_folder
from PIL import Image


@pytest.fixture
def splits() -> dict[str, FakeSplit]:
    return {"train": fake_split(12, seed=0), "test": fake_split(6, seed=1)}


def _hf_dataset(split: FakeSplit, names: list[str]):  # -> datasets.Dataset
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    pil = [Image.fromarray(image) for image in split.images]
    return datasets.Dataset.from_dict({"img": pil, "label": split.labels.tolist()}, features=features)


@pytest.fixture
def saved_dataset(tmp_path: Path, splits: dict[str, FakeSplit]) -> Path:
    import datasets

    root = tmp_path / "saved"
    datasets.DatasetDict({k: _hf_dataset(v, CLASS_NAMES) for k, v in splits.items()}).save_to_disk(str(root))
    return root


@pytest.fixture
def parquet_dir(tmp_path: Path, splits: dict[str, FakeSplit]) -> Path:
    root = tmp_path / "parquet"
    root.mkdir()
    for name, split in splits.items():
        _hf_dataset(split, CLASS_NAMES).to_parquet(str(root / f"{name}-00000-of-00001.parquet"))
    return root


@pytest.fixture
def image_folder(tmp_path: Path, splits: dict[str, FakeSplit]) -> Path:
    return write_image_folder(tmp_path / "folder", splits)


def _cifar_rows(split: FakeSplit) -> np.ndarray:
    """(N, H, W, 3) -> (N, 3*H*W) rows: the R plane, then G, then B (the CIFAR layout)."""
    return np.ascontiguousarray(split.images.transpose(0, 3, 1, 2).reshape(len(split.labels), -1))


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


@pytest.fixture
def cifar10_folder(tmp_path: Path) -> tuple[Path, dict[str, FakeSplit]]:
    """A cifar-10-batches-py folder (32x32, 10 classes) inside tmp_path/cifar."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = [fake_split(4, seed=10 + i, size=32, num_classes=10) for i in range(5)]
    for i, part in enumerate(parts, start=1):
        _dump(
            folder / f"data_batch_{i}",
            {b"batch_label": b"x", b"data": _cifar_rows(part), b"labels": part.labels.tolist()},
        )
    test = fake_split(10, seed=20, size=32, num_classes=10)
    _dump(folder / "test_batch", {b"data": _cifar_rows(test), b"labels": test.labels.tolist()})
    _dump(folder / "batches.meta", {b"label_names": [f"c{k}".encode() for k in range(10)]})
    train = FakeSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    return folder, {"train": train, "test": test}


@pytest.fixture
def cifar100_folder(tmp_path: Path) -> tuple[Path, dict[str, FakeSplit]]:
    """A cifar-100-python folder (fine labels 0..99, coarse = fine // 5)."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    splits = {
        "train": fake_split(200, seed=30, size=32, num_classes=100),
        "test": fake_split(100, seed=31, size=32, num_classes=100),
    }
    for name, split in splits.items():
        fine = split.labels.tolist()
        _dump(
            folder / name,
            {b"data": _cifar_rows(split), b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]},
        )
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"f{k}".encode() for k in range(100)],
            b"coarse_label_names": [f"s{k}".encode() for k in range(20)],
        },
    )
    return folder, splits
