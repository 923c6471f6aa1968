"""Checkpoint cache: one directory per training-config hash, ``last.pt`` rewritten atomically each epoch.

Loading uses ``torch.load(..., weights_only=True)``: a checkpoint can never execute code. A file that
cannot be read (truncated by a kill, corrupted on disk) is reported, moved aside and training restarts.
A write that fails (a full disk) removes its temporary file and keeps the previous checkpoint.
Two processes that train the same configuration take turns (:meth:`CheckpointStore.exclusive`): the
second waits, then finds the finished checkpoint and reuses it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from robustdiag.errors import ReportedOSError

log = logging.getLogger(__name__)


class CheckpointWriteError(ReportedOSError):
    """A checkpoint could not be written; the previous one (if any) is intact."""


class CheckpointStore:
    """Reads and writes the training state of one configuration under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "last.pt"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it is unreadable (then it is moved aside)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
                raise ValueError("not a robustdiag training checkpoint")
            return state
        except Exception as err:  # noqa: BLE001 - any unreadable file means: retrain
            bad = self.path.with_suffix(".corrupt")
            os.replace(self.path, bad)
            warnings.warn(
                f"checkpoint {self.path} is unreadable ({type(err).__name__}: {err}); moved it to {bad.name} "
                "and training from scratch",
                stacklevel=2,
            )
            return None

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically: a killed process or a full disk leaves the previous checkpoint intact."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        try:
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as err:  # torch reports a full disk as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                errno.ENOSPC if _disk_full(self.root, err) else errno.EIO, _write_failure(self, err)
            ) from err

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this configuration's training lock; another process training it makes this one wait."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (concurrent training of one config is then last-writer-wins)
            yield
            return
        with open(self.root / "train.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another process is training this configuration (%s); waiting for it", self.root)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _disk_full(root: Path, err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(root).free < 1 << 20
    except OSError:
        return False


def _write_failure(store: CheckpointStore, err: BaseException) -> str:
    previous = "the previous checkpoint is kept" if store.path.exists() else "no earlier checkpoint existed"
    reason = "the disk is full" if _disk_full(store.root, err) else f"{type(err).__name__}: {err}"
    return (
        f"could not write checkpoint {store.path}: {reason}; {previous}. Free space, or point cache_dir "
        "(ROBUSTDIAG_CACHE) at another disk, then relaunch: training resumes from the last checkpoint"
    )
