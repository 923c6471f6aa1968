"""Checkpoint cache: one directory per training-config hash, ``last.pt`` rewritten atomically each epoch.

Loading uses ``torch.load(..., weights_only=True)``: a checkpoint can never execute code. A file that
cannot be read (truncated by a kill, corrupted on disk) is reported, moved aside and training restarts.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


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
        """Write ``state`` atomically: a killed process leaves the previous checkpoint intact."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
