"""Architecture ranking: do the diagnostics order architectures the way their robustness does?

Within each training regime (a memorised ResNet and a generalising ViT are not comparable), runs are
averaged over seeds per architecture (``model``). Each column is ranked with 1 = highest value (for
accuracies: most robust). Agreement is Kendall's tau-b between a diagnostic's values and a target's
values across architectures: tau = -1 means the diagnostic orders architectures exactly opposite to the
target (what a vulnerability score such as lambda or a Lipschitz bound should do against robust
accuracy), +1 the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from robustdiag.analysis.columns import CLEAN_TEST, MEAN_CORRUPTION, attack_columns

MIN_MODELS = 2


def ranked_columns(runs: pd.DataFrame, diagnostics: Sequence[str]) -> tuple[list[str], list[str]]:
    """(diagnostic columns, accuracy columns) that the ranking shows."""
    accuracies = [c for c in (CLEAN_TEST, MEAN_CORRUPTION) if c in runs.columns] + attack_columns(runs)
    return list(diagnostics), accuracies


def architecture_ranking(runs: pd.DataFrame, diagnostics: Sequence[str]) -> pd.DataFrame:
    """Per (regime, model): n_runs, seed-mean of every diagnostic and accuracy, and their ranks.

    Empty when no regime has at least two architectures.
    """
    if "model" not in runs.columns:
        return pd.DataFrame()
    diagnostic_cols, accuracy_cols = ranked_columns(runs, diagnostics)
    value_cols = diagnostic_cols + accuracy_cols
    regime = runs["regime"] if "regime" in runs.columns else pd.Series("unknown", index=runs.index)
    frames = []
    for regime_name, group in runs.assign(regime=regime).groupby("regime", sort=True):
        if group["model"].nunique() < MIN_MODELS:
            continue
        means = group.groupby("model", sort=True)[value_cols].mean()
        sds = group.groupby("model", sort=True)[value_cols].std(ddof=1).add_suffix("/sd")
        table = means.join(sds)
        table.insert(0, "n_runs", group.groupby("model").size())
        for column in value_cols:
            table[f"rank/{column}"] = means[column].rank(ascending=False, method="min")
        table.insert(0, "regime", regime_name)
        frames.append(table.reset_index())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def ranking_agreement(
    ranking: pd.DataFrame, diagnostics: Sequence[str], targets: Sequence[str]
) -> pd.DataFrame:
    """Kendall tau-b (and p) between each diagnostic and each accuracy across architectures, per regime."""
    rows = []
    if ranking.empty:
        return pd.DataFrame()
    for regime_name, table in ranking.groupby("regime", sort=True):
        for diagnostic in diagnostics:
            for target in targets:
                x, y = table[diagnostic].to_numpy(float), table[target].to_numpy(float)
                keep = np.isfinite(x) & np.isfinite(y)
                tau, p = float("nan"), float("nan")
                if keep.sum() >= MIN_MODELS and np.ptp(x[keep]) > 0 and np.ptp(y[keep]) > 0:
                    result = stats.kendalltau(x[keep], y[keep])
                    tau, p = float(result.statistic), float(result.pvalue)
                rows.append(
                    {
                        "regime": regime_name,
                        "diagnostic": diagnostic,
                        "target": target,
                        "n_models": int(keep.sum()),
                        "kendall_tau": tau,
                        "kendall_p": p,
                    }
                )
    return pd.DataFrame(rows)
