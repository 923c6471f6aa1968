"""Fixtures of the analysis tests: a quiet offline environment and the planted-sweep factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from analysis_records import PlantedRun, build_sweep


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, silent W&B confined to the test's tmp dir; no progress bars."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("ROBUSTDIAG_PROGRESS", "0")


SweepFactory = Callable[..., tuple[Path, list[PlantedRun]]]


@pytest.fixture
def make_sweep(tmp_path: Path) -> SweepFactory:
    """Factory: (name, tables=, multirun=, seed=) -> (sweep dir under tmp_path, planted runs)."""

    def make(name: str = "sweep", **kwargs: object) -> tuple[Path, list[PlantedRun]]:
        root = tmp_path / name
        return root, build_sweep(root, **kwargs)  # type: ignore[arg-type]

    return make
