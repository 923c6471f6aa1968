"""Natural distribution shifts: another test set of the same classes, not a transformation of the images.

* :class:`Cifar101`: CIFAR-10.1 (Recht et al. 2019), a new test set for CIFAR-10 classifiers, from its
  released ``.npy`` files (``cifar10.1_<version>_data.npy`` (N, 32, 32, 3) uint8 and ``_labels.npy`` (N,)
  in CIFAR-10's class order).
* :class:`TestSetFolder`: any labelled images on disk (an image folder ``root/<split>/<class>/*.png``, a
  ``datasets`` folder saved with ``save_to_disk``, parquet files, a CIFAR-style pickle folder) or a hub
  dataset, whose class *names* are matched to the training data's (``class_map`` renames where they
  differ): a domain shift a user has on disk.

A natural shift has one level (recorded as severity 1: ``shift/<name>/1/acc``); it is evaluated on up to
``eval.n_samples`` of its images (class-balanced when every class has enough), with the diagnostics that run
under shift, and it is left out of the mean corruption accuracy. Its per-sample results are not in
``per_sample.csv`` (other images than the evaluation samples).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from robustdiag.data import DataBundle, ImageData

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class TestSetShift:
    """Base of the natural shifts: ``load_test_set(reference, cache_dir)`` gives uint8 images and labels in
    the training data's class indices, at its image size and channels."""

    __test__ = False  # not a pytest class
    name: str = ""
    natural = True
    severities: tuple[int, ...] = (1,)

    def load_test_set(self, reference: DataBundle, cache_dir: Path) -> ImageData:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, severity: int, **_: object) -> torch.Tensor:
        raise TypeError(
            f"{self.name} is a natural shift: it replaces the test images (load_test_set), it is not applied to them"
        )


class Cifar101(TestSetShift):
    """CIFAR-10.1 from ``<root>/cifar10.1_<version>_data.npy`` and ``_labels.npy`` (``version``: v6 or v4)."""

    def __init__(self, root: str, version: str = "v6", name: str = "cifar10_1") -> None:
        if version not in ("v4", "v6"):
            raise ValueError(f"shift.{name}.version={version!r} is not a CIFAR-10.1 release; valid: v4, v6")
        self.root = Path(root).expanduser()
        self.version = version
        self.name = name

    def __repr__(self) -> str:
        return f"Cifar101(root={str(self.root)!r}, version={self.version!r}, name={self.name!r})"

    def files(self) -> tuple[Path, Path]:
        stem = f"cifar10.1_{self.version}"
        return self.root / f"{stem}_data.npy", self.root / f"{stem}_labels.npy"

    def load_test_set(self, reference: DataBundle, cache_dir: Path) -> ImageData:
        from robustdiag.data import ImageData

        data_file, labels_file = self.files()
        for path in (data_file, labels_file):
            if not path.is_file():
                raise ValueError(
                    f"shift.{self.name}: no {path} (shift.{self.name}.root={str(self.root)!r}); the release has "
                    f"{data_file.name} and {labels_file.name} (github.com/modestyachts/CIFAR-10.1, datasets/)"
                )
        check_cifar10_classes(self.name, reference.classes)
        try:
            images = np.load(data_file, allow_pickle=False)
            labels = np.load(labels_file, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"shift.{self.name}: cannot read the CIFAR-10.1 arrays ({err})") from None
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(
                f"shift.{self.name}: {data_file.name} holds {images.dtype} {images.shape}; CIFAR-10.1 is uint8 "
                "(N, 32, 32, 3)"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"shift.{self.name}: {labels_file.name} has shape {labels.shape} for {images.shape[0]} images"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
            raise ValueError(
                f"shift.{self.name}: labels span [{labels.min()}, {labels.max()}]; CIFAR-10.1 has 10 classes (0-9)"
            )
        if reference.image_size != 32 or reference.channels != 3:
            raise ValueError(
                f"shift.{self.name}: CIFAR-10.1 images are 32x32 RGB but the data is {reference.image_size} px with "
                f"{reference.channels} channel(s); evaluate at data.image_size=32 data.channels=3"
            )
        pixels = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 3, 32, 32)
        return ImageData(pixels, torch.from_numpy(labels.astype(np.int64)))


def check_cifar10_classes(name: str, classes: list[str]) -> None:
    if tuple(c.lower() for c in classes) != CIFAR10_CLASSES:
        shown = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
        raise ValueError(
            f"shift.{name}: CIFAR-10.1 has CIFAR-10's classes ({', '.join(CIFAR10_CLASSES)}) but the training data "
            f"has {len(classes)}: {shown}; use it with data=cifar10"
        )


class TestSetFolder(TestSetShift):
    """Test images of another domain with the training data's classes, matched by class name.

    ``path`` (a local folder, see ``robustdiag.data.HFImageSource``) or ``hub_id``; ``split`` the split to
    read; ``class_map`` renames the source's class names to the training data's ({source: training}).
    Every source class must map to a training class (else the error lists both); training classes the
    source lacks are allowed (its accuracy is then over the classes it has).
    """

    def __init__(
        self,
        name: str,
        path: str | None = None,
        hub_id: str | None = None,
        split: str = "test",
        image_column: str = "image",
        label_column: str = "label",
        class_map: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"shift: a test-set shift needs a name without '/', got {name!r}")
        if path is None and hub_id is None:
            raise ValueError(f"shift.{name}: set path (a local folder of labelled images) or hub_id")
        if path is not None and not Path(path).expanduser().exists():
            raise ValueError(f"shift.{name}.path={path!r} does not exist")
        self.name = name
        self.path = path
        self.hub_id = hub_id
        self.split = split
        self.image_column = image_column
        self.label_column = label_column
        self.class_map = {str(k): str(v) for k, v in (class_map or {}).items()}

    def __repr__(self) -> str:
        return f"TestSetFolder(name={self.name!r}, path={self.path!r}, hub_id={self.hub_id!r}, split={self.split!r})"

    def load_test_set(self, reference: DataBundle, cache_dir: Path) -> ImageData:
        from robustdiag.data import HFImageSource, ImageData

        source = HFImageSource(
            name=f"shift_{self.name}",
            hub_id=self.hub_id,
            path=self.path,
            train_split=self.split,
            test_split=self.split,
            image_column=self.image_column,
            label_column=self.label_column,
            image_size=reference.image_size,
            channels=reference.channels,
        )
        bundle = source.load(cache_dir)
        mapping = map_classes(self.name, bundle.classes, reference.classes, self.class_map)
        labels = torch.tensor(mapping, dtype=torch.int64)[bundle.test.labels]
        return ImageData(bundle.test.images, labels)


def map_classes(name: str, source: list[str], target: list[str], renames: Mapping[str, str]) -> list[int]:
    """The training-class index of every source class, by name (after ``renames``); a clear error otherwise."""
    unknown = sorted(set(renames) - set(source))
    if unknown:
        raise ValueError(
            f"shift.{name}.class_map renames {unknown}, which the shift's data does not have ({source})"
        )
    index = {c: i for i, c in enumerate(target)}
    mapped = [renames.get(c, c) for c in source]
    missing = [
        f"{s!r}" + (f" (as {m!r})" if m != s else "") for s, m in zip(source, mapped) if m not in index
    ]
    if missing:
        raise ValueError(
            f"shift.{name}: class(es) {', '.join(missing)} of the shift's data are not classes of the training data "
            f"({', '.join(target)}); rename them with shift.{name}.class_map={{source_name: training_name}}"
        )
    return [index[m] for m in mapped]


def is_natural(shift: object) -> bool:
    """Whether a shift replaces the test set (a :class:`TestSetShift`) instead of transforming its images."""
    return bool(getattr(shift, "natural", False)) and hasattr(shift, "load_test_set")


def natural_subset(labels: torch.Tensor, n: int, seed: int, num_classes: int) -> torch.Tensor:
    """Up to ``n`` indices: class-balanced when every class has ``n // K`` images, else a seeded sample
    (all images when there are at most ``n``). Ascending, int64."""
    from robustdiag.data import balanced_subset

    counts = torch.bincount(labels, minlength=num_classes)
    if n >= num_classes and bool((counts >= n // num_classes).all()):
        return balanced_subset(labels, n, seed, num_classes=num_classes)
    if labels.shape[0] <= n:
        return torch.arange(labels.shape[0])
    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))
    return order[:n].sort().values
