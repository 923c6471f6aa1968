"""Correlations between diagnostics and robustness, across the runs of a sweep.

Every (diagnostic, target) pair gets Spearman, Pearson and Kendall tau-b with scipy p-values and
percentile-bootstrap 95% intervals over runs, and the number n of runs where both values are finite
(runs with a missing value are dropped for that pair only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd

from robustdiag.analysis.claims.data import run_cells, run_groups, run_models
from robustdiag.analysis.columns import Target, clean_accuracy, parse_shifted_metric
from robustdiag.analysis.stats import correlate, pair_rng

CORRELATION_COLUMNS = (
    ["diagnostic", "target", "target_kind", "scope", "n"]
    + [f"{c}{s}" for c in ("spearman", "pearson", "kendall") for s in ("", "_ci_low", "_ci_high", "_p")]
    + ["spearman_p_holm", "note"]
)
MIN_SCOPE_RUNS = 4  # a within-regime / within-architecture row needs this many runs
RUN_LABEL_COLUMNS = ("run_dir", "model", "data", "regime", "q", "seed")


def scopes(runs: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(scope, row mask): all runs pooled, then within each regime group and each architecture.

    Groups are the recorded facts (labels kind, q, adversarial training), never config names.
    """
    out = [("pooled", np.ones(len(runs), dtype=bool))]
    for label, values in (("regime", run_groups(runs).to_numpy()), ("model", run_models(runs).to_numpy())):
        if len(set(values)) < 2:
            continue
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() >= MIN_SCOPE_RUNS:
                out.append((f"within {label} {value}", mask))
    return out


PARTIAL_SCOPE = "partial | cell, clean acc"
PARTIAL_PERMUTATIONS = 1000  # exploratory: fewer permutations than the claims' tests
PARTIAL_BOOT = 200


def partial_rows(
    runs: pd.DataFrame,
    diagnostics: Sequence[str],
    targets: Sequence[Target],
    cells: np.ndarray,
    *,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Rank partial Spearman of each diagnostic with each adversarial / mean-corruption target given the
    architecture × regime cell and clean accuracy (p: diagnostic permuted within cells). Only where at
    least two cells have two or more seeds; the other coefficients stay empty (NaN)."""
    from robustdiag.analysis.inference import rank_partial, strata_codes

    codes = strata_codes(cells)
    if int((np.bincount(codes) >= 2).sum()) < 2:
        return pd.DataFrame(columns=CORRELATION_COLUMNS)
    clean = clean_accuracy(runs).to_numpy(float)
    rows = []
    for diagnostic in diagnostics:
        x = runs[diagnostic].to_numpy(dtype=float)
        for target in targets:
            if target.kind not in ("adversarial", "mean_corruption"):
                continue
            y = runs[target.column].to_numpy(dtype=float)
            rng = pair_rng(seed, diagnostic, target.column, PARTIAL_SCOPE)
            est, dof = rank_partial(
                x,
                y,
                codes,
                [clean],
                n_boot=min(n_boot, PARTIAL_BOOT),
                rng=rng,
                n_permutations=PARTIAL_PERMUTATIONS,
            )
            rows.append(
                {
                    "diagnostic": diagnostic,
                    "target": target.column,
                    "target_kind": target.kind,
                    "scope": PARTIAL_SCOPE,
                    "n": est.n,
                    "spearman": est.value,
                    "spearman_ci_low": est.ci[0],
                    "spearman_ci_high": est.ci[1],
                    "spearman_p": est.p,
                    "note": f"{dof} residual dof" if dof >= 1 else "too few runs beyond the design",
                }
            )
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def correlation_table(
    runs: pd.DataFrame, diagnostics: Sequence[str], targets: Sequence[Target], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """One row per diagnostic x target x scope (pooled, within each regime, within each architecture).

    Intervals resample seeds within architecture × regime cells (the design stays fixed); Holm-adjusted
    Spearman p-values over the whole table say how much survives the number of comparisons. These are
    exploratory: the claims table is where verdicts are made.
    """
    rows: list[dict[str, object]] = []
    cells = run_cells(runs).to_numpy()
    for scope, mask in scopes(runs):
        for diagnostic in diagnostics:
            x = runs[diagnostic].to_numpy(dtype=float)[mask]
            for target in targets:
                y = runs[target.column].to_numpy(dtype=float)[mask]
                rng = pair_rng(seed, diagnostic, target.column, scope)
                result = correlate(x, y, n_boot=n_boot, rng=rng, strata=cells[mask])
                rows.append(
                    {
                        "diagnostic": diagnostic,
                        "target": target.column,
                        "target_kind": target.kind,
                        "scope": scope,
                        **result.as_row(),
                    }
                )
    partial = partial_rows(runs, diagnostics, targets, cells, n_boot=n_boot, seed=seed)
    table = pd.concat([pd.DataFrame(rows, columns=CORRELATION_COLUMNS), partial], ignore_index=True)
    if not table.empty:
        from robustdiag.analysis.inference import holm

        table["spearman_p_holm"] = holm(table["spearman_p"].astype(float).tolist())
    return table


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
    pooled over runs (the pooled bootstrap resamples whole runs, not (run, condition) pairs).
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
            label = {str(k): v for k, v in labels[labels["run_dir"] == run_dir].iloc[0].items()}
            rows.append({"diagnostic": diagnostic, "scope": "run", **label, **result.as_row()})
        pooled = correlate(
            long["diagnostic_drop"].to_numpy(),
            long["accuracy_drop"].to_numpy(),
            n_boot=n_boot,
            rng=pair_rng(seed, diagnostic, "shift_drop", "pooled"),
            clusters=long["run_dir"].to_numpy(),  # a run's conditions are not independent: resample runs
        )
        rows.append({"diagnostic": diagnostic, "scope": "pooled", "run_dir": "all", **pooled.as_row()})
    return pd.DataFrame(rows)


def pooled(table: pd.DataFrame) -> pd.DataFrame:
    """The rows pooled over every run (one per diagnostic × target)."""
    return table[table["scope"] == "pooled"] if "scope" in table.columns else table


def spearman_matrix(table: pd.DataFrame, diagnostics: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """Compact text cells 'rho [low, high] n=..' (diagnostic rows x target columns) for console and report."""
    index = pooled(table).set_index(["diagnostic", "target"])
    cells: dict[str, list[str]] = {}
    for target in targets:
        column = []
        for diagnostic in diagnostics:
            if (diagnostic, target) not in index.index:
                column.append("")
                continue
            column.append(coefficient_cell(index, diagnostic, target))
        cells[target] = column
    return pd.DataFrame(cells, index=list(diagnostics))


def coefficient_cell(index: pd.DataFrame, diagnostic: str, target: str) -> str:
    """The pooled Spearman cell of (diagnostic, target) from a table indexed by those two columns."""
    row = cast(pd.Series, index.loc[(diagnostic, target)])
    rho, low, high, n = (float(row[k]) for k in ("spearman", "spearman_ci_low", "spearman_ci_high", "n"))
    return format_coefficient(rho, low, high, n)


def format_coefficient(value: float, low: float, high: float, n: float) -> str:
    """'-0.93 [-0.99, -0.71] n=12', or 'n/a (n=2)' when undefined."""
    if not np.isfinite(value):
        return f"n/a (n={int(n)})"
    interval = f" [{low:+.2f}, {high:+.2f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:+.2f}{interval} n={int(n)}"
