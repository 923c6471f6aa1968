"""Correlations between diagnostics and robustness, across the runs of a sweep.

Every (diagnostic, target) pair gets Spearman, Pearson and Kendall tau-b with scipy p-values and
percentile-bootstrap 95% intervals over runs, and the number n of runs where both values are finite
(runs with a missing value are dropped for that pair only).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustdiag.analysis.columns import Target, clean_accuracy, parse_shifted_metric
from robustdiag.analysis.stats import correlate, pair_rng

CORRELATION_COLUMNS = (
    ["diagnostic", "target", "target_kind", "n"]
    + [f"{c}{s}" for c in ("spearman", "pearson", "kendall") for s in ("", "_ci_low", "_ci_high", "_p")]
    + ["note"]
)
RUN_LABEL_COLUMNS = ("run_dir", "model", "data", "regime", "q", "seed")


def correlation_table(
    runs: pd.DataFrame, diagnostics: Sequence[str], targets: Sequence[Target], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """One row per diagnostic x target (see module docstring); ``runs`` holds the complete runs."""
    rows = []
    for diagnostic in diagnostics:
        x = runs[diagnostic].to_numpy(dtype=float)
        for target in targets:
            y = runs[target.column].to_numpy(dtype=float)
            result = correlate(x, y, n_boot=n_boot, rng=pair_rng(seed, diagnostic, target.column))
            rows.append(
                {
                    "diagnostic": diagnostic,
                    "target": target.column,
                    "target_kind": target.kind,
                    **result.as_row(),
                }
            )
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def shift_conditions(runs: pd.DataFrame, diagnostic: str) -> list[tuple[str, str, str]]:
    """(shift, severity, shifted diagnostic column) for which the diagnostic and the accuracy both exist."""
    _, name, stat = diagnostic.split("/")
    found = []
    for column in runs.columns:
        parsed = parse_shifted_metric(column)
        if parsed is None or parsed[0] != name or parsed[3] != stat:
            continue
        _, shift, severity, _ = parsed
        if f"shift/{shift}/{severity}/acc" in runs.columns:
            found.append((shift, severity, column))
    return found


def _drops_long(runs: pd.DataFrame, diagnostic: str, conditions: list[tuple[str, str, str]]) -> pd.DataFrame:
    """One row per (run, condition): diagnostic drop (clean - shifted) and accuracy drop."""
    clean_acc = clean_accuracy(runs)
    parts = []
    for shift, severity, column in conditions:
        parts.append(
            pd.DataFrame(
                {
                    "run_dir": runs["run_dir"],
                    "condition": f"{shift}/{severity}",
                    "diagnostic_drop": runs[diagnostic].astype(float) - runs[column].astype(float),
                    "accuracy_drop": clean_acc - runs[f"shift/{shift}/{severity}/acc"].astype(float),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def shift_drop_table(
    runs: pd.DataFrame, diagnostics: Sequence[str], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """Does a diagnostic drop where accuracy drops? Spearman/Pearson/Kendall of (clean - shifted)
    diagnostic against (clean - shifted) accuracy over the shift x severity conditions, per run and
    pooled over runs (the pooled bootstrap treats (run, condition) pairs as independent).
    """
    labels = runs[[c for c in RUN_LABEL_COLUMNS if c in runs.columns]]
    rows = []
    for diagnostic in diagnostics:
        conditions = shift_conditions(runs, diagnostic)
        if not conditions:
            continue
        long = _drops_long(runs, diagnostic, conditions)
        for run_dir, group in long.groupby("run_dir", sort=False):
            result = correlate(
                group["diagnostic_drop"].to_numpy(),
                group["accuracy_drop"].to_numpy(),
                n_boot=n_boot,
                rng=pair_rng(seed, diagnostic, "shift_drop", str(run_dir)),
            )
            label = labels[labels["run_dir"] == run_dir].iloc[0].to_dict()
            rows.append({"diagnostic": diagnostic, "scope": "run", **label, **result.as_row()})
        pooled = correlate(
            long["diagnostic_drop"].to_numpy(),
            long["accuracy_drop"].to_numpy(),
            n_boot=n_boot,
            rng=pair_rng(seed, diagnostic, "shift_drop", "pooled"),
        )
        rows.append({"diagnostic": diagnostic, "scope": "pooled", "run_dir": "all", **pooled.as_row()})
    return pd.DataFrame(rows)


def spearman_matrix(table: pd.DataFrame, diagnostics: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """Compact text cells 'rho [low, high] n=..' (diagnostic rows x target columns) for console and report."""
    index = table.set_index(["diagnostic", "target"])
    cells: dict[str, list[str]] = {}
    for target in targets:
        column = []
        for diagnostic in diagnostics:
            if (diagnostic, target) not in index.index:
                column.append("")
                continue
            row = index.loc[(diagnostic, target)]
            column.append(
                format_coefficient(row["spearman"], row["spearman_ci_low"], row["spearman_ci_high"], row["n"])
            )
        cells[target] = column
    return pd.DataFrame(cells, index=list(diagnostics))


def format_coefficient(value: float, low: float, high: float, n: float) -> str:
    """'-0.93 [-0.99, -0.71] n=12', or 'n/a (n=2)' when undefined."""
    if not np.isfinite(value):
        return f"n/a (n={int(n)})"
    interval = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:+.2f}{interval} n={int(n)}"
