"""Do diagnostics tell memorising networks from generalising ones?

Runs are grouped by training regime (``train.name``): ``memorise`` (random labels) against
``generalise`` (true labels, augmentation, weight decay). ``label_noise`` runs use the memorising recipe
with a fraction q of random labels; at q = 1 they are memorising runs, otherwise they stay out of the
two-group comparison, as do other regimes (adversarial training, paper recipes). When the regime is not
recorded, ``labels`` decides (random: memorise, true: generalise).

AUROC is P(diagnostic of a generalising run > diagnostic of a memorising run), ties counted one half,
so 0.5 means no separation and 0 or 1 perfect separation; its interval resamples runs within each
group. Cohen's d and Hedges' g are (generalise - memorise) / pooled sd.

Dose-response: within the memorising recipe (``label_noise`` and ``memorise`` runs, which differ only
in q), the Spearman correlation of the diagnostic with q, reported when >= 3 distinct q values exist.
Generalising runs are left out of it: their recipe differs (augmentation, weight decay), which would be
confounded with q = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robustdiag.analysis.stats import auroc_with_ci, correlate, effect_size, pair_rng

GENERALISE, MEMORISE = "generalise", "memorise"
_GENERALISE_NAMES = {"generalise", "generalize"}
_MEMORISE_NAMES = {"memorise", "memorize"}
_NOISE_NAMES = {"label_noise"}
MIN_DOSE_LEVELS = 3  # distinct label-noise fractions needed for a dose-response


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def regime_group(regime: object, labels: object, q: object) -> str | None:
    """'generalise', 'memorise' or None (not part of the two-group comparison); see module docstring."""
    regime, labels, frac = str(regime).lower(), str(labels).lower(), _as_float(q)
    if regime in _MEMORISE_NAMES:
        return MEMORISE
    if regime in _GENERALISE_NAMES:
        return GENERALISE
    if regime in _NOISE_NAMES:
        return MEMORISE if frac >= 1.0 else None
    if regime in {"unknown", "none", "nan", ""}:
        if labels == "random" and (np.isnan(frac) or frac >= 1.0):
            return MEMORISE
        return GENERALISE if labels == "true" else None
    return None


def random_label_fraction(regime: object, q: object) -> float:
    """q of runs of the memorising recipe (label_noise, memorise; memorise defaults to 1), else NaN."""
    regime, frac = str(regime).lower(), _as_float(q)
    if regime in _NOISE_NAMES:
        return frac
    if regime in _MEMORISE_NAMES:
        return 1.0 if np.isnan(frac) else frac
    return float("nan")


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series("unknown", index=runs.index)


def groups_of(runs: pd.DataFrame) -> pd.Series:
    """regime_group of every run."""
    regime, labels, q = _column(runs, "regime"), _column(runs, "labels"), _column(runs, "q")
    return pd.Series([regime_group(r, lab, v) for r, lab, v in zip(regime, labels, q)], index=runs.index)


def noise_fractions(runs: pd.DataFrame) -> pd.Series:
    """random_label_fraction of every run."""
    regime, q = _column(runs, "regime"), _column(runs, "q")
    return pd.Series([random_label_fraction(r, v) for r, v in zip(regime, q)], index=runs.index, dtype=float)


def separability_table(
    runs: pd.DataFrame, diagnostics: Sequence[str], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """One row per diagnostic: group sizes, means, AUROC, effect sizes, dose-response (NaN where n/a)."""
    group = groups_of(runs)
    is_gen, is_mem = (group == GENERALISE).to_numpy(), (group == MEMORISE).to_numpy()
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
            values[is_gen], values[is_mem], n_boot=n_boot, rng=pair_rng(seed, diagnostic, "effect")
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
