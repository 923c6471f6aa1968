"""Do diagnostics tell memorising networks from generalising ones?

Runs are grouped by what their records say about training (:func:`robustdiag.analysis.claims.group_of`):
memorising (q = 1 random labels) against generalising (true labels, not adversarially trained); noisy
(0 < q < 1) and adversarially trained runs stay out of the two-group comparison. Descriptive: the paired
verdict is claim P1.1 of the claims table.

AUROC is P(diagnostic of a generalising run > diagnostic of a memorising run), ties counted one half,
so 0.5 means no separation and 0 or 1 perfect separation; its interval resamples runs within each
group. Cohen's d and Hedges' g are (generalise - memorise) / pooled sd.

Dose-response: over runs trained on random labels (q > 0), the Spearman correlation of the diagnostic
with q, reported when >= 3 distinct q values exist (claim P1.3 tests it within one recipe).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustdiag.analysis.claims.data import run_groups
from robustdiag.analysis.stats import auroc_with_ci, correlate, effect_size, pair_rng

GENERALISE, MEMORISE = "generalise", "memorise"
MIN_DOSE_LEVELS = 3  # distinct label-noise fractions needed for a dose-response


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series("unknown", index=runs.index)


def groups_of(runs: pd.DataFrame) -> pd.Series:
    """generalise / memorise / noisy / adversarial of every run, from the recorded facts (labels kind,
    q, train/adversarial), never from the names of the training configs."""
    return run_groups(runs)


def noise_fractions(runs: pd.DataFrame) -> pd.Series:
    """q of the runs trained with the memorising runs' recipe (``train/recipe``, so q = 0 runs of that
    recipe count too), else NaN; records without a recipe: the runs on (partly) random labels."""
    group = groups_of(runs)
    q = pd.to_numeric(_column(runs, "q"), errors="coerce").astype(float)
    q = q.where(~(q.isna() & (group == MEMORISE)), 1.0)  # a memorising run without q has q = 1
    if "train/recipe" in runs.columns:
        recipes = set(runs.loc[group == MEMORISE, "train/recipe"].astype(str))
        return q.where(runs["train/recipe"].astype(str).isin(recipes))
    return q.where(group.isin([MEMORISE, "noisy"]))


def separability_table(
    runs: pd.DataFrame, diagnostics: Sequence[str], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """One row per diagnostic: group sizes, means, AUROC, effect sizes, dose-response (NaN where n/a)."""
    group = groups_of(runs)
    is_gen, is_mem = (group == GENERALISE).to_numpy(), (group == MEMORISE).to_numpy()
    models = _column(runs, "model").astype(str).to_numpy()  # seeds are resampled within architectures
    fraction = noise_fractions(runs).to_numpy()
    dose_levels = np.unique(fraction[np.isfinite(fraction)])
    rows = []
    for diagnostic in diagnostics:
        values = runs[diagnostic].to_numpy(dtype=float)
        both = (is_gen | is_mem) & np.isfinite(values)
        auroc = auroc_with_ci(
            values[both], is_gen[both], n_boot=n_boot, rng=pair_rng(seed, diagnostic, "auroc")
        )
        effect = effect_size(
            values[is_gen],
            values[is_mem],
            n_boot=n_boot,
            rng=pair_rng(seed, diagnostic, "effect"),
            strata=(models[is_gen], models[is_mem]),
        )
        row: dict[str, object] = {
            "diagnostic": diagnostic,
            "n_generalise": effect.n_a,
            "n_memorise": effect.n_b,
            "mean_generalise": effect.mean_a,
            "sd_generalise": effect.sd_a,
            "mean_memorise": effect.mean_b,
            "sd_memorise": effect.sd_b,
            "auroc": auroc.auroc,
            "auroc_ci_low": auroc.ci[0],
            "auroc_ci_high": auroc.ci[1],
            "mannwhitney_p": auroc.p,
            "cohens_d": effect.cohens_d,
            "hedges_g": effect.hedges_g,
            "hedges_g_ci_low": effect.hedges_g_ci[0],
            "hedges_g_ci_high": effect.hedges_g_ci[1],
        }
        row.update(_dose_response(values, fraction, dose_levels, diagnostic, n_boot=n_boot, seed=seed))
        row["note"] = _note(effect.n_a, effect.n_b, len(dose_levels))
        rows.append(row)
    return pd.DataFrame(rows)


def _dose_response(
    values: np.ndarray, fraction: np.ndarray, levels: np.ndarray, diagnostic: str, *, n_boot: int, seed: int
) -> dict[str, object]:
    nan = float("nan")
    if len(levels) < MIN_DOSE_LEVELS:
        return {
            "dose_n": 0,
            "dose_q_values": "",
            "dose_spearman": nan,
            "dose_ci_low": nan,
            "dose_ci_high": nan,
            "dose_p": nan,
        }
    result = correlate(fraction, values, n_boot=n_boot, rng=pair_rng(seed, diagnostic, "dose"))
    return {
        "dose_n": result.n,
        "dose_q_values": " ".join(f"{v:g}" for v in levels),
        "dose_spearman": result.spearman,
        "dose_ci_low": result.spearman_ci[0],
        "dose_ci_high": result.spearman_ci[1],
        "dose_p": result.spearman_p,
    }


def _note(n_gen: int, n_mem: int, n_levels: int) -> str:
    parts = []
    if n_gen == 0 or n_mem == 0:
        missing = "generalising" if n_gen == 0 else "memorising"
        parts.append(f"no {missing} runs: no AUROC or effect size")
    elif min(n_gen, n_mem) < 2:
        parts.append("fewer than 2 runs in a group: no effect size")
    if 0 < n_levels < MIN_DOSE_LEVELS:
        parts.append(f"{n_levels} label-noise level(s): no dose-response (needs {MIN_DOSE_LEVELS})")
    return "; ".join(parts)


def has_groups(runs: pd.DataFrame) -> bool:
    """True when the sweep has both memorising and generalising runs."""
    group = groups_of(runs)
    return bool((group == GENERALISE).any() and (group == MEMORISE).any())
