"""Bad data on disk: refused with a message naming the file and the fix, never merged or read as garbage."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from robustdiag.data import HFImageSource


def _source(path: Path, tmp_path: Path, **kwargs) -> HFImageSource:
    options = {"name": "fake", "path": str(path), "num_classes": 10, "hf_cache_dir": str(tmp_path / "hf")}
    return HFImageSource(**{**options, **kwargs})


def _rewrite(path: Path, edit) -> None:
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    edit(batch)
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def test_negative_labels_are_refused_not_merged(cifar10_folder, tmp_path: Path) -> None:
    folder, _ = cifar10_folder

    def unlabel(batch: dict) -> None:
        batch[b"labels"][0] = -1

    _rewrite(folder / "data_batch_1", unlabel)
    with pytest.raises(ValueError, match=r"1 label\(s\) in data.train_split are negative") as err:
        _source(folder, tmp_path).load(tmp_path / "cache")
    assert "data.test_split=null" in str(err.value)  # and what to do


def test_labels_beyond_the_class_names_are_refused(cifar10_folder, tmp_path: Path) -> None:
    folder, _ = cifar10_folder

    def relabel(batch: dict) -> None:
        batch[b"labels"][0] = 250

    _rewrite(folder / "test_batch", relabel)
    with pytest.raises(ValueError, match="has label 250 but the data names only 10 classes"):
        _source(folder, tmp_path).load(tmp_path / "cache")


def test_cifar_batch_without_labels(cifar10_folder, tmp_path: Path) -> None:
    folder, _ = cifar10_folder
    _rewrite(folder / "data_batch_2", lambda batch: batch.pop(b"labels"))
    with pytest.raises(ValueError, match="data_batch_2 has no 'labels' entry"):
        _source(folder, tmp_path).load(tmp_path / "cache")


def test_truncated_cifar_pickle(cifar10_folder, tmp_path: Path) -> None:
    folder, _ = cifar10_folder
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="data_batch_3 is not a readable CIFAR batch file"):
        _source(folder, tmp_path).load(tmp_path / "cache")


def test_corrupt_parquet(parquet_dir: Path, tmp_path: Path) -> None:
    victim = next(parquet_dir.glob("train-*.parquet"))
    victim.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match="cannot be read as a dataset") as err:
        _source(parquet_dir, tmp_path, num_classes=3, image_column="img").load(tmp_path / "cache")
    assert str(parquet_dir) in str(err.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _source(tmp_path / "nowhere", tmp_path).load(tmp_path / "cache")
