"""Shared test fixtures: the real config tree, composed and shrunk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustdiag.config import PACKAGE_CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = Path(PACKAGE_CONFIG_DIR)

os.environ.setdefault("ROBUSTDIAG_PROGRESS", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def conf_dir() -> Path:
    return CONF_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without CUDA (skipped, not failed)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
