"""Sweep analysis: read run records, correlate diagnostics with robustness, write figures and a report.

Entry points: :func:`analyze_sweep` (programmatic) and ``robustdiag-analyze <sweep dir>`` (console).
Names are imported lazily, so ``robustdiag-analyze --help`` does not pay for scipy and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from robustdiag.analysis.options import DEFAULT_OUT

if TYPE_CHECKING:
    from robustdiag.analysis.pipeline import analyze_sweep
    from robustdiag.analysis.reader import NoRunsError, Sweep, load_sweep
    from robustdiag.analysis.report import console_summary
    from robustdiag.analysis.result import AnalysisResult

_LAZY = {
    "analyze_sweep": "robustdiag.analysis.pipeline",
    "NoRunsError": "robustdiag.analysis.reader",
    "Sweep": "robustdiag.analysis.reader",
    "load_sweep": "robustdiag.analysis.reader",
    "console_summary": "robustdiag.analysis.report",
    "AnalysisResult": "robustdiag.analysis.result",
}

__all__ = [
    "DEFAULT_OUT",
    "AnalysisResult",
    "NoRunsError",
    "Sweep",
    "analyze_sweep",
    "console_summary",
    "load_sweep",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(
        f"module 'robustdiag.analysis' has no attribute {name!r}; public names: {', '.join(__all__)}"
    )
