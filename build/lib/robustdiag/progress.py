"""One place that decides how progress bars look.

Bars go to stderr and are shown on terminals; set ``ROBUSTDIAG_PROGRESS=0`` to silence them (CI, Slurm
logs) or ``ROBUSTDIAG_PROGRESS=1`` to force them on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """True when bars should be drawn: forced by the environment, else only on a terminal."""
    setting = os.environ.get("ROBUSTDIAG_PROGRESS", "").strip().lower()
    if setting in {"0", "false", "no", "off"}:
        return False
    if setting in {"1", "true", "yes", "on"}:
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> tqdm:
    """Wrap ``iterable`` in a transient tqdm bar (it disappears when done; summaries go to the log)."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        leave=False,
        dynamic_ncols=True,
        disable=not progress_enabled(),
    )
