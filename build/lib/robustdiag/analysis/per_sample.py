"""Per-sample AUROC: does a per-sample diagnostic (the input-Fisher lambda(x)) predict being fooled?

For each run with ``per_sample.csv``, each per-sample score column (``metric/<name>/<column>``, e.g.
``metric/fisher/lambda``) and each attack with ``attack/<name>/robust`` flags:

* samples: those the model classifies correctly on clean data (``correct == 1``). A misclassified
  sample is non-robust without any attack, so including it would measure clean error, not
  vulnerability to the attack. Samples whose score is NaN (the Fisher metric may cover only the first
  N evaluation samples) are dropped; n says how many remain.
* positive: fooled = not robust. AUROC = P(score of a fooled sample > score of a robust one), so
  AUROC > 0.5 means high lambda flags vulnerable inputs.

Per run, the interval resamples samples within the fooled/robust groups. Pooled over runs, two
versions: ``pooled`` uses the raw scores (mixes between-model scale differences into the AUROC) and
``pooled_rank`` the within-run percentile of the score (only the within-model ordering counts); their
intervals resample whole runs, as the samples of one run are not independent.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from robustdiag.analysis.stats import Auroc, auroc_with_ci, pair_rng

_SCORE = re.compile(r"^metric/[^/]+/[^/]+$")
_ROBUST = re.compile(r"^attack/(?P<attack>[^/]+)/robust$")
CORRECT = "correct"


def per_sample_columns(column: str) -> bool:
    """The per_sample.csv columns the analysis reads (usecols filter)."""
    return column in {"index", "y", CORRECT} or bool(_SCORE.match(column) or _ROBUST.match(column))


def load_per_sample(path: Path) -> pd.DataFrame | None:
    """Read the needed columns of one per_sample.csv; None (with a warning) when it cannot be read.

    Text in a column that must hold numbers (a hand-edited or foreign file) is read as missing, with a
    warning that names the file, the column and an example value."""
    if not Path(path).exists():
        return None
    try:
        table = pd.read_csv(path, usecols=per_sample_columns)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        warnings.warn(
            f"{path}: unreadable ({type(err).__name__}: {err}); this run's per-sample analyses are skipped",
            stacklevel=2,
        )
        return None
    for column in table.columns:
        numeric = pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column])
        if numeric or column == CORRECT or _ROBUST.match(column):
            continue  # numbers already, or flags (True/False text is read by flag_values)
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = table[column][numbers.isna() & table[column].notna()]
        if len(bad):
            warnings.warn(
                f"{path}: column {column} has {len(bad)} value(s) that are not numbers (e.g. {bad.iloc[0]!r}); "
                "read as missing",
                stacklevel=2,
            )
        table[column] = numbers
    return table


def score_columns(table: pd.DataFrame) -> list[str]:
    """Numeric per-sample metric columns that are scores (not boolean indicators such as ``flag``)."""
    return [
        c
        for c in table.columns
        if _SCORE.match(c)
        and pd.api.types.is_numeric_dtype(table[c])
        and not pd.api.types.is_bool_dtype(table[c])
        and not c.endswith("/flag")
    ]


def attack_names(table: pd.DataFrame) -> list[str]:
    """Attacks with per-sample robust flags."""
    return [m["attack"] for c in table.columns if (m := _ROBUST.match(c))]


_TRUE, _FALSE = {"true", "1", "1.0", "yes"}, {"false", "0", "0.0", "no"}


def flag_values(column: pd.Series) -> np.ndarray:
    """0/1 flags as floats (NaN when missing), from bools, numbers or 'True'/'False' text."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.astype(float).to_numpy()
    text = column.astype(str).str.strip().str.lower()
    return np.where(text.isin(_TRUE), 1.0, np.where(text.isin(_FALSE), 0.0, np.nan))


def fooled_among_correct(table: pd.DataFrame, score: str, attack: str) -> tuple[np.ndarray, np.ndarray]:
    """(score, fooled) of the clean-correct samples with a finite score."""
    if CORRECT in table.columns:
        correct = flag_values(table[CORRECT]) == 1
    else:  # a table without clean correctness: every sample counts
        correct = np.ones(len(table), dtype=bool)
    values = pd.to_numeric(table[score], errors="coerce").to_numpy(dtype=float)
    robust = flag_values(table[f"attack/{attack}/robust"])
    keep = correct & np.isfinite(values) & np.isfinite(robust)
    return values[keep], robust[keep] == 0


def within_run_percentile(values: np.ndarray) -> np.ndarray:
    """Average-rank percentile in (0, 1] of each value within its own run."""
    return rankdata(values) / max(len(values), 1)


def per_sample_auroc_table(
    tables: Mapping[str, pd.DataFrame], labels: pd.DataFrame, *, n_boot: int, seed: int
) -> pd.DataFrame:
    """Rows per (score, attack): one per run, then ``pooled`` and ``pooled_rank`` (see module docstring).

    ``tables`` maps run_dir -> per_sample table; ``labels`` has run_dir and identity columns.
    """
    label_of = labels.set_index("run_dir")
    pairs = sorted({(s, a) for t in tables.values() for s in score_columns(t) for a in attack_names(t)})
    rows = []
    for score, attack in pairs:
        pooled_values, pooled_ranks, pooled_fooled, pooled_runs = [], [], [], []
        for run_dir, table in tables.items():
            if score not in table.columns or f"attack/{attack}/robust" not in table.columns:
                continue
            values, fooled = fooled_among_correct(table, score, attack)
            result = auroc_with_ci(values, fooled, n_boot=n_boot, rng=pair_rng(seed, score, attack, run_dir))
            identity = (
                {str(k): v for k, v in label_of.loc[run_dir].items()} if run_dir in label_of.index else {}
            )
            rows.append(_row(score, attack, "run", run_dir, result, identity))
            pooled_values.append(values)
            pooled_ranks.append(within_run_percentile(values))
            pooled_fooled.append(fooled)
            pooled_runs.append(np.full(values.size, run_dir, dtype=object))
        if len(pooled_values) < 2:
            continue
        fooled = np.concatenate(pooled_fooled)
        clusters = np.concatenate(pooled_runs)
        for scope, values in (
            ("pooled", np.concatenate(pooled_values)),
            ("pooled_rank", np.concatenate(pooled_ranks)),
        ):
            result = auroc_with_ci(
                values, fooled, n_boot=n_boot, rng=pair_rng(seed, score, attack, scope), clusters=clusters
            )
            rows.append(_row(score, attack, scope, "all", result, {}))
    return pd.DataFrame(rows)


def _row(
    score: str, attack: str, scope: str, run_dir: str, result: Auroc, identity: Mapping[str, object]
) -> dict[str, object]:
    keep = {k: identity[k] for k in ("model", "data", "regime", "q", "seed") if k in identity}
    return {
        "score": score,
        "attack": attack,
        "scope": scope,
        "run_dir": run_dir,
        **keep,
        "n": result.n_pos + result.n_neg,
        "n_fooled": result.n_pos,
        "auroc": result.auroc,
        "auroc_ci_low": result.ci[0],
        "auroc_ci_high": result.ci[1],
        "mannwhitney_p": result.p,
    }
