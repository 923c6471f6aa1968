"""Which record columns are diagnostics and which are robustness targets.

Diagnostics are model-level statistics on clean data, ``metric/<name>/<stat>``. Targets are the
accuracies a diagnostic should predict: robust accuracy per attack, accuracy under each shift and
severity, the mean corruption accuracy, clean accuracy, and the accuracy *drops* (clean minus
adversarial, clean minus shifted), which remove the clean-accuracy level from the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustdiag.records import schema

# The diagnostics of the two papers; shown first and used for figures, console and ranking when present.
HEADLINE_DIAGNOSTICS = (
    "metric/fisher/mean",
    "metric/path_separation/excess",
    "metric/activation_separation/excess",
    "metric/spectral_bound/log10_bound",
    "metric/spectral_bound/bound",
)
MIN_FINITE = 3  # a diagnostic needs this many finite values over the complete runs

MEAN_CORRUPTION = schema.MEAN_CORRUPTION_ACC
CLEAN_TEST = schema.CLEAN_TEST_ACC
CLEAN_EVAL = schema.EVAL_CLEAN_ACC

TARGET_KINDS = (
    "adversarial",
    "mean_corruption",
    "shift",
    "clean",
    "drop_adversarial",
    "drop_mean_corruption",
    "drop_shift",
)


@dataclass(frozen=True)
class Target:
    """A robustness target column and what kind of accuracy it is."""

    column: str
    kind: str  # one of TARGET_KINDS


def _severity_key(severity: str) -> tuple[int, float | str]:
    try:
        return (0, float(severity))
    except ValueError:
        return (1, severity)


def _usable(values: pd.Series) -> bool:
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    return len(finite) >= MIN_FINITE and float(finite.max() - finite.min()) > 0


def diagnostic_columns(runs: pd.DataFrame, declared: list[str]) -> list[str]:
    """The declared diagnostic and baseline keys (``record/diagnostics``, ``record/baselines``) with
    >= 3 finite, non-constant values. Nothing else enters the analyses (no sample counts, edge counts
    or timings). Headline diagnostics come first, then the rest alphabetically.
    """
    found = [c for c in declared if c in runs.columns and _usable(runs[c].astype(float))]
    first = [c for c in HEADLINE_DIAGNOSTICS if c in found]
    return first + sorted(c for c in found if c not in first)


def headline_diagnostics(diagnostics: list[str], *, limit: int = 12) -> list[str]:
    """The diagnostics to show in figures and console: the papers' ones if present, else the first few."""
    chosen = [c for c in diagnostics if c in HEADLINE_DIAGNOSTICS]
    if "metric/spectral_bound/log10_bound" in chosen and "metric/spectral_bound/bound" in chosen:
        chosen.remove("metric/spectral_bound/bound")  # same ranking, log scale reads better
    return chosen or diagnostics[:limit]


def attack_columns(runs: pd.DataFrame) -> list[str]:
    """``attack/<name>/acc`` columns, sorted by attack name."""
    return sorted(c for c in runs.columns if schema.parse_attack_acc_key(c) is not None)


def shift_columns(runs: pd.DataFrame) -> list[str]:
    """``shift/<name>/<severity>/acc`` columns, sorted by shift then numeric severity."""
    cols = [c for c in runs.columns if schema.parse_shift_acc_key(c) is not None and c != MEAN_CORRUPTION]

    def key(column: str) -> tuple[str, tuple[int, float | str]]:
        parsed = schema.parse_shift_acc_key(column)
        assert parsed is not None
        return parsed[0], _severity_key(parsed[1])

    return sorted(cols, key=key)


def parse_shifted_metric(column: str) -> tuple[str, str, str, str] | None:
    """(metric, shift, severity, stat) of ``metric/<name>/<shift>/<severity>/<stat>``, else None."""
    return schema.parse_shifted_metric_key(column)


def clean_accuracy(runs: pd.DataFrame) -> pd.Series:
    """Clean accuracy on the evaluation samples (what attacks and shifts start from), else on the test split."""
    test = (
        runs[CLEAN_TEST].astype(float) if CLEAN_TEST in runs.columns else pd.Series(np.nan, index=runs.index)
    )
    if CLEAN_EVAL not in runs.columns:
        return test
    return runs[CLEAN_EVAL].astype(float).fillna(test)


def with_drop_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with ``drop/...`` columns: clean accuracy minus adversarial / shifted accuracy."""
    clean = clean_accuracy(runs)
    drops: dict[str, pd.Series] = {}
    for column in attack_columns(runs):
        drops["drop/" + column.removesuffix("/acc")] = clean - runs[column].astype(float)
    if MEAN_CORRUPTION in runs.columns:
        drops["drop/mean_corruption"] = clean - runs[MEAN_CORRUPTION].astype(float)
    for column in shift_columns(runs):
        drops["drop/" + column.removesuffix("/acc")] = clean - runs[column].astype(float)
    return pd.concat([runs, pd.DataFrame(drops, index=runs.index)], axis=1) if drops else runs.copy()


def target_columns(runs: pd.DataFrame) -> list[Target]:
    """Every robustness target present, in reading order (``runs`` must have the drop columns)."""
    targets = [Target(c, "adversarial") for c in attack_columns(runs)]
    if MEAN_CORRUPTION in runs.columns:
        targets.append(Target(MEAN_CORRUPTION, "mean_corruption"))
    targets += [Target(c, "shift") for c in shift_columns(runs)]
    if CLEAN_TEST in runs.columns:
        targets.append(Target(CLEAN_TEST, "clean"))
    targets += [Target("drop/" + c.removesuffix("/acc"), "drop_adversarial") for c in attack_columns(runs)]
    if MEAN_CORRUPTION in runs.columns:
        targets.append(Target("drop/mean_corruption", "drop_mean_corruption"))
    targets += [Target("drop/" + c.removesuffix("/acc"), "drop_shift") for c in shift_columns(runs)]
    return [t for t in targets if t.column in runs.columns]


def main_targets(targets: list[Target]) -> list[Target]:
    """The targets for compact tables: robust accuracy per attack and the mean corruption accuracy."""
    keep = ("adversarial", "mean_corruption")
    return [t for t in targets if t.kind in keep]


def short_name(column: str) -> str:
    """A column name without its family prefix, for table cells and axis labels."""
    for prefix in ("metric/", "attack/"):
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column
