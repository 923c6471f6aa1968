"""Published corruption files: CIFAR-10-C / CIFAR-100-C ``.npy`` arrays read as a shift.

Layout (Hendrycks & Dietterich's release): ``<root>/<corruption>.npy`` of shape (5 N, H, W, 3) uint8,
the N test images in test-set order at severity 1, then at severity 2, ..., 5 (N = 10000 for CIFAR), and
``<root>/labels.npy`` (5 N,) with the matching labels. The shift's ``name`` defaults to the corruption
name, so its record keys (``shift/<name>/<severity>/acc``) line up with the computed corruption's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustdiag.shifts.base import SEVERITY_RANGE, check_images, check_severities, check_severity

LAYOUT = (
    "CIFAR-10-C layout: <root>/<corruption>.npy of shape (5*N, H, W, C) uint8 holding the N test images "
    "in test-set order at severities 1..5 (one block of N per severity), and <root>/labels.npy of shape (5*N,)"
)


class CorruptionFiles:
    """Reads pre-computed corrupted test images by their test-split position (satisfies ``Shift``).

    ``index`` (B,) selects images; the output is (B, C, H, W) float in [0, 1] on ``x``'s device and dtype
    and must have ``x``'s shape. When ``y`` is given and ``labels.npy`` exists, the stored labels are
    checked against it, which catches a test split in a different order than the files. The generator
    is ignored (the files are fixed).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        corruption: str,
        severities: Sequence[int] = SEVERITY_RANGE,
        *,
        name: str | None = None,
        check_labels: bool = True,
    ) -> None:
        if not isinstance(corruption, str) or not corruption or any(sep in corruption for sep in "/\\"):
            raise ValueError(
                f"CorruptionFiles: corruption must be a file stem like 'fog', got {corruption!r}"
            )
        self.name = corruption if name is None else name
        self.root = Path(root)
        self.corruption = corruption
        self.severities = check_severities(self.name, severities)
        self.check_labels = bool(check_labels)
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._warned_labels = False

    def __repr__(self) -> str:
        return f"CorruptionFiles(root={str(self.root)!r}, corruption={self.corruption!r}, name={self.name!r})"

    @property
    def path(self) -> Path:
        return self.root / f"{self.corruption}.npy"

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.npy"

    def images(self) -> np.ndarray:
        """The memory-mapped array (5 N, H, W, C) uint8, loaded and validated on first use."""
        if self._images is None:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.name}: {self.path} does not exist. Expected the {LAYOUT}.")
            images = np.load(self.path, mmap_mode="r")
            if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] % 5:
                raise ValueError(
                    f"{self.name}: {self.path} has shape {images.shape} and dtype {images.dtype}; "
                    f"expected the {LAYOUT}."
                )
            self._images = images
        return self._images

    @property
    def images_per_severity(self) -> int:
        return self.images().shape[0] // 5

    def labels(self) -> np.ndarray | None:
        """Stored labels (5 N,), or None when ``labels.npy`` is absent."""
        if self._labels is None and self.labels_path.is_file():
            self._labels = np.load(self.labels_path, mmap_mode="r")
        return self._labels

    def rows(self, index: torch.Tensor, severity: int) -> np.ndarray:
        """Row numbers in the ``.npy`` array of test positions ``index`` at ``severity``."""
        n = self.images_per_severity
        positions = index.detach().to("cpu", torch.int64).numpy()
        if positions.ndim != 1:
            raise ValueError(f"{self.name}: index must be 1-D (B,), got shape {tuple(index.shape)}")
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            bad = positions[(positions < 0) | (positions >= n)][:5].tolist()
            raise IndexError(
                f"{self.name}: index out of range {bad}; {self.path} holds {n} images per severity"
            )
        return (severity - 1) * n + positions

    def verify_labels(self, rows: np.ndarray, y: torch.Tensor) -> None:
        labels = self.labels()
        if labels is None:
            if not self._warned_labels:
                warnings.warn(
                    f"{self.name}: {self.labels_path} not found; cannot check that the files follow the "
                    "test split's order",
                    stacklevel=3,
                )
                self._warned_labels = True
            return
        stored = torch.from_numpy(np.asarray(labels[rows]).astype(np.int64))
        if not torch.equal(stored, y.detach().to("cpu", torch.int64)):
            raise ValueError(
                f"{self.name}: labels in {self.labels_path} differ from the given labels y at "
                f"{int((stored != y.cpu()).sum())} of {len(rows)} positions; the files do not follow the "
                "test split's order (or belong to another data set)"
            )

    def __call__(
        self,
        x: torch.Tensor,
        severity: int,
        *,
        generator: torch.Generator | None = None,
        index: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """The stored images for test positions ``index`` at ``severity``: (B, C, H, W) like ``x``."""
        severity = check_severity(self.name, severity)
        check_images(self.name, x)
        if index is None:
            raise ValueError(
                f"{self.name}: reading published corruption files needs index (test-split positions)"
            )
        if index.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: index has {index.shape[0]} entries for a batch of {x.shape[0]}")
        rows = self.rows(index, severity)
        if y is not None and self.check_labels:
            self.verify_labels(rows, y)
        batch = torch.from_numpy(np.ascontiguousarray(self.images()[rows]))  # (B, H, W[, C]) uint8
        if batch.ndim == 3:
            batch = batch[..., None]
        out = batch.permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255  # (B, C, H, W)
        if out.shape != x.shape:
            raise ValueError(
                f"{self.name}: images in {self.path} have shape {tuple(out.shape[1:])} but the inputs are "
                f"{tuple(x.shape[1:])}; evaluate at the files' resolution"
            )
        return out
