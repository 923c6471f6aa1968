"""What every benchmark shares: the device choice, GPU synchronisation and the machine description.

Benchmarks are scripts (``python benchmarks/bench_x.py``), so this module is imported as ``common``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from robustdiag.grid_point import resolve_device
from robustdiag.records.provenance import git_commit, hardware

REPO = Path(__file__).resolve().parents[1]


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU (as ``robustdiag device=auto``)."""
    return resolve_device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict[str, object]:
    """Hardware, library versions, threads and the code's commit, for the benchmark's JSON."""
    commit, dirty = git_commit()
    return {**hardware(device), "torch_threads": torch.get_num_threads(), "commit": commit, "dirty": dirty}
