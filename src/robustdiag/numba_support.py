"""Numba, where the CPU kernels use it: whether it can run, how many threads, and what the record says.

Numba is a dependency, but a platform without its wheels (or ``ROBUSTDIAG_NUMBA=0``) still runs every
computation through its PyTorch path; GPUs always take the PyTorch path. Kernels live next to the code
they speed up (:mod:`robustdiag.metrics.path_kernels`, :mod:`robustdiag.shifts.cpu_kernels`) and compile
on first use (a few seconds; cached on disk afterwards).
"""

from __future__ import annotations

import os
from typing import Any

import torch

numba: Any
try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

DISABLE_ENV = "ROBUSTDIAG_NUMBA"


def available() -> bool:
    """True when the Numba kernels can run (installed, and not switched off with ``ROBUSTDIAG_NUMBA=0``)."""
    return numba is not None and os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no")


KERNEL_FLOATS = (torch.float32, torch.float64)  # the float types the kernels are compiled for


def on_cpu(*tensors: torch.Tensor, floats: bool = False) -> bool:
    """Numba available and every tensor on the CPU (and, with ``floats``, float32 or float64)."""
    return available() and all(
        t.device.type == "cpu" and (not floats or t.dtype in KERNEL_FLOATS) for t in tensors
    )


def match_threads() -> None:
    """Use as many kernel threads as torch does (the run's thread policy), within Numba's pool."""
    assert numba is not None
    wanted = max(1, min(torch.get_num_threads(), int(numba.config.NUMBA_NUM_THREADS)))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


def describe() -> str:
    """What runs the CPU kernels, for the record: ``numba <version>`` or ``torch``."""
    return f"numba {numba.__version__}" if available() else "torch"
