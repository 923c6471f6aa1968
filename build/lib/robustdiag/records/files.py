"""Run-record files: ``metrics.json`` (flat keys, atomic), ``per_sample.csv`` and ``per_layer.csv``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustdiag.records.schema import (
    COMPLETE,
    FAILED,
    METRICS_FILE,
    PER_LAYER_FILE,
    PER_SAMPLE_FILE,
    RECORD_VERSION,
    RUNNING,
)

__all__ = ["METRICS_FILE", "PER_LAYER_FILE", "PER_SAMPLE_FILE", "RECORD_VERSION", "RunRecord"]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON through a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(_jsonable(data), indent=1, sort_keys=False, allow_nan=True))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class RunRecord:
    """The flat record of one grid point, rewritten atomically whenever it changes."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / METRICS_FILE
        self.values: dict[str, Any] = {"status": RUNNING, "error": None, "record_version": RECORD_VERSION}

    def update(self, values: dict[str, Any]) -> None:
        self.values.update(values)
        self.flush()

    def flush(self) -> None:
        write_json_atomic(self.path, self.values)

    def complete(self) -> None:
        self.update({"status": COMPLETE, "error": None})

    def fail(self, error: BaseException) -> None:
        self.update({"status": FAILED, "error": f"{type(error).__name__}: {error}"})


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write a ``.npy`` file atomically (tmp + rename): a kill or a full disk never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(path: Path, rows: pd.DataFrame) -> None:
    """Write a CSV atomically (tmp + rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        rows.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
