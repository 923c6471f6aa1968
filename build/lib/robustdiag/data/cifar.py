"""The classic CIFAR python-pickle folders (``cifar-10-batches-py/``, ``cifar-100-python/``).

The pickles are read with an unpickler that only admits numpy arrays, so a folder cannot run code.
"""

from __future__ import annotations

import pathlib
import pickle
from typing import Any

import numpy as np

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
_CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle plain containers and numpy arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR pickle refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def _unpickle(path: pathlib.Path) -> dict[str, Any]:
    """A CIFAR batch file as a dict; a file that is not one is refused with its name."""
    try:
        with open(path, "rb") as handle:
            raw = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"{path} is not a readable CIFAR batch file ({err}); re-extract the official archive into "
            "data.path"
        ) from err
    if not isinstance(raw, dict):
        raise ValueError(
            f"{path} holds a {type(raw).__name__}, not a CIFAR batch (a dict of data and labels)"
        )
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def _entry(part: dict[str, Any], key: str, path: pathlib.Path) -> Any:
    """``part[key]``, or an error naming the file, the missing entry and the entries it has."""
    if key not in part:
        raise ValueError(
            f"{path} has no {key!r} entry (it has {sorted(part)}); it is not a CIFAR batch file of this kind "
            "(for CIFAR-100, data.label_column picks fine_labels or coarse_labels)"
        )
    return part[key]


def find_cifar_folder(path: pathlib.Path) -> tuple[str, pathlib.Path] | None:
    """("cifar10" | "cifar100", folder) when ``path`` is (or directly holds) a CIFAR pickle folder."""
    for candidate in (path, path / CIFAR10_DIR, path / CIFAR100_DIR):
        if all((candidate / name).is_file() for name in [*_CIFAR10_TRAIN, "test_batch"]):
            return "cifar10", candidate
        if all((candidate / name).is_file() for name in ("train", "test", "meta")):
            return "cifar100", candidate
    return None


def _images(data: np.ndarray) -> np.ndarray:
    """Rows of 3072 bytes (R plane, G plane, B plane) -> (N, 3, 32, 32) uint8."""
    return np.ascontiguousarray(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))


def read_cifar(
    kind: str, folder: pathlib.Path, label_column: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """{"train"/"test": (images (N, 3, 32, 32) uint8, labels (N,) int64)} and the class names.

    For CIFAR-100, a ``label_column`` containing "coarse" selects the 20 superclasses, otherwise the
    100 fine classes.
    """
    if kind == "cifar10":
        meta = _unpickle(folder / "batches.meta") if (folder / "batches.meta").is_file() else {}
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
        batches = {"train": _CIFAR10_TRAIN, "test": ["test_batch"]}
        key = "labels"
    else:
        coarse = "coarse" in label_column
        meta = _unpickle(folder / "meta")
        raw_names = meta.get("coarse_label_names" if coarse else "fine_label_names", [])
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw_names]
        batches = {"train": ["train"], "test": ["test"]}
        key = "coarse_labels" if coarse else "fine_labels"
    splits = {}
    for split, files in batches.items():
        parts = [(folder / name, _unpickle(folder / name)) for name in files]
        images = np.concatenate([_images(_entry(part, "data", path)) for path, part in parts])
        labels = np.concatenate([np.asarray(_entry(part, key, path), dtype=np.int64) for path, part in parts])
        splits[split] = (images, labels)
    if not names:
        names = [str(k) for k in range(int(splits["train"][1].max()) + 1)]
    return splits, names
