"""Natural shifts: CIFAR-10.1 from its release files and a folder of another domain's test images, matched by
class name; evaluated through the engine; bad files and class names refused with what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustdiag.data import DataBundle, ImageData
from robustdiag.shifts import Cifar101, TestSetFolder
from robustdiag.shifts.natural import CIFAR10_CLASSES, map_classes, natural_subset


def bundle(classes, size: int = 32, channels: int = 3) -> DataBundle:
    images = torch.zeros(len(classes), channels, size, size, dtype=torch.uint8)
    labels = torch.arange(len(classes))
    split = ImageData(images, labels)
    return DataBundle("ref", split, split, list(classes), (0.5,) * channels, (0.25,) * channels)


def write_cifar101(
    root: Path, n: int = 40, shape=(32, 32, 3), labels_max: int = 10, version: str = "v6"
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(root / f"cifar10.1_{version}_data.npy", rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    np.save(root / f"cifar10.1_{version}_labels.npy", np.arange(n) % labels_max)


def test_cifar101_loads_its_release_files(tmp_path: Path) -> None:
    write_cifar101(tmp_path)
    data = Cifar101(str(tmp_path)).load_test_set(bundle(CIFAR10_CLASSES), tmp_path / "cache")
    assert data.images.shape == (40, 3, 32, 32) and data.images.dtype == torch.uint8
    raw = np.load(tmp_path / "cifar10.1_v6_data.npy")
    assert np.array_equal(data.images[3].permute(1, 2, 0).numpy(), raw[3])
    assert data.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "no .*cifar10.1_v6_data.npy"),
        ("shape", r"CIFAR-10.1 is uint8 \(N, 32, 32, 3\)"),
        ("labels", "CIFAR-10.1 has 10 classes"),
        ("classes", "use it with data=cifar10"),
        ("size", "evaluate at data.image_size=32"),
    ],
)
def test_cifar101_bad_files_and_data_are_refused(tmp_path: Path, setup: str, message: str) -> None:
    if setup != "missing":
        write_cifar101(
            tmp_path,
            shape=(28, 28, 3) if setup == "shape" else (32, 32, 3),
            labels_max=12 if setup == "labels" else 10,
        )
    reference = bundle(CIFAR10_CLASSES, size=64 if setup == "size" else 32)
    if setup == "classes":
        reference = bundle([f"c{i}" for i in range(10)])
    with pytest.raises(ValueError, match=message):
        Cifar101(str(tmp_path)).load_test_set(reference, tmp_path / "cache")


def test_class_names_are_matched_and_renamed() -> None:
    assert map_classes("d", ["cat", "car"], ["automobile", "cat"], {"car": "automobile"}) == [1, 0]
    with pytest.raises(
        ValueError, match=r"class\(es\) 'car' of the shift's data are not classes of the training"
    ):
        map_classes("d", ["cat", "car"], ["automobile", "cat"], {})
    with pytest.raises(ValueError, match="renames \\['truck'\\]"):
        map_classes("d", ["cat"], ["cat"], {"truck": "lorry"})


def test_subset_is_balanced_when_it_can_be() -> None:
    labels = torch.arange(100) % 10
    idx = natural_subset(labels, 20, 0, 10)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [2] * 10
    uneven = torch.tensor([0] * 30 + [1] * 3)
    assert len(natural_subset(uneven, 20, 0, 2)) == 20  # class 1 too small: a seeded sample instead


def test_folder_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        TestSetFolder(name="d", path=str(tmp_path / "nope"))


def write_domain_folder(root: Path, n_per_class: int, size: int, rename: dict[int, str]) -> None:
    """An image folder root/test/<class>/*.png of structured images (a shifted 'domain' of synthetic-like data)."""
    rng = np.random.default_rng(1)
    for k in range(10):
        folder = root / "test" / rename.get(k, f"class_{k}")
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.mark.slow
def test_folder_shift_runs_through_the_cli(tmp_path: Path) -> None:
    """A domain folder beside a corruption: its accuracy and diagnostics are recorded, classes matched by name
    (one renamed through class_map), and it stays out of the mean corruption accuracy."""
    write_domain_folder(tmp_path / "domain", n_per_class=3, size=32, rename={0: "zero"})
    env = {**os.environ, "ROBUSTDIAG_CACHE": str(tmp_path / "cache"), "ROBUSTDIAG_PROGRESS": "0", "WANDB_MODE": "disabled",
           "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    out = subprocess.run(
        [str(Path(sys.executable).parent / "robustdiag"), "data=synthetic", "data.n_train=100", "data.n_test=100",
         "train.epochs=1", "eval.n_samples=20", "eval.batch_size=20", "shift=[gaussian_noise,test_folder]",
         "shift.severities=[2]", f"shift.test_folder.path={tmp_path / 'domain'}", "shift.test_folder.name=mydomain",
         "+shift.test_folder.class_map={zero: class_0}", "metric=[path_separation]",
         f"hydra.run.dir={tmp_path / 'run'}", "threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= record["shift/mydomain/1/acc"] <= 1.0 and record["shift_info/mydomain/n"] == 20
    assert (
        record["shift/mean_corruption_acc"] == record["shift/gaussian_noise/2/acc"]
    )  # the natural one is out
    assert isinstance(record["metric/path_separation/mydomain/1/excess"], float)
