"""Inference that respects how a sweep was randomised (DESIGN §4.8).

The unit of resampling is what was randomised: seeds within (architecture × regime) cells. Every
interval here is a percentile bootstrap that resamples observations *within* strata (cells), keeping
the design fixed; every p-value is a permutation test that permutes only what the null hypothesis
makes exchangeable:

Claims are directional and declared before the data, so their p-values are one-sided in the claimed
direction (``alternative``); two-sided is available for exploratory use.

* :func:`sign_flip_test` — one-sample / paired: under H0 each paired difference is symmetric about the
  null, so its sign is exchangeable (exact enumeration up to 2^16 flips, else Monte Carlo).
* :func:`rank_partial` — rank partial correlation of x and y given covariates (cell dummies, ranked
  clean accuracy): Pearson correlation of the rank residuals. Its p-value permutes x *within cells*,
  which keeps every designed factor fixed, so a variable that only encodes the design has no power.
* :func:`icc_oneway` — ICC(1) of repeated seeds within cells, with the F-test of ICC > 0.
* :func:`holm` — Holm's step-down adjustment within a family of claims.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from robustdiag.analysis.stats import percentile_ci, stratified_counts

EXACT_FLIPS = 16  # enumerate all 2^n sign flips up to this many observations
N_PERMUTATIONS = 4000  # Monte Carlo permutations otherwise


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval, p-value and the number of units it rests on."""

    value: float
    ci: tuple[float, float]
    p: float
    n: int


def strata_codes(*columns: np.ndarray) -> np.ndarray:
    """Integer cell codes of the rows (n,) from one or more label columns."""
    if not columns:
        raise ValueError("strata_codes needs at least one column")
    keys = [tuple(str(c[i]) for c in columns) for i in range(len(columns[0]))]
    _, codes = np.unique(np.array(["\x1f".join(k) for k in keys], dtype=object), return_inverse=True)
    return codes.astype(int)


ALTERNATIVES = ("greater", "less", "two-sided")


def oriented(statistic: np.ndarray | float, alternative: str) -> np.ndarray:
    """The statistic turned so that larger means more evidence for ``alternative``."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r} is not one of {list(ALTERNATIVES)}")
    value = np.asarray(statistic, dtype=float)
    return value if alternative == "greater" else -value if alternative == "less" else np.abs(value)


def permutation_p(observed: float, null: np.ndarray, alternative: str, *, exact: bool) -> float:
    """p of ``observed`` against null draws of the statistic (exact: all draws, else the observed counted once)."""
    obs = float(oriented(observed, alternative))
    draws = oriented(np.asarray(null, dtype=float), alternative)
    draws = draws[np.isfinite(draws)]
    exceed = int(np.sum(draws >= obs - 1e-12 * max(1.0, abs(obs))))
    return exceed / max(draws.size, 1) if exact else (exceed + 1) / (draws.size + 1)


def sign_flip_test(
    values: np.ndarray, null: float = 0.0, *, rng: np.random.Generator, alternative: str = "two-sided"
) -> float:
    """p-value of H0: the values are symmetric about ``null``, for their mean (one- or two-sided)."""
    d = np.asarray(values, dtype=float) - null
    d = d[np.isfinite(d)]
    n = d.size
    if n == 0:
        return float("nan")
    if n <= EXACT_FLIPS:  # exact: every one of the 2^n flips (the observed one included)
        signs = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))  # (2^n, n)
        return permutation_p(d.mean(), signs @ d / n, alternative, exact=True)
    signs = rng.choice((-1.0, 1.0), size=(N_PERMUTATIONS, n))  # Monte Carlo
    return permutation_p(d.mean(), signs @ d / n, alternative, exact=False)


def mean_with_ci(
    values: np.ndarray,
    strata: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    null: float = 0.0,
    alternative: str = "two-sided",
) -> Estimate:
    """Mean of ``values`` with a bootstrap CI resampling within ``strata`` and a sign-flip p-value."""
    values = np.asarray(values, dtype=float)
    keep = np.isfinite(values)
    values, strata = values[keep], np.asarray(strata)[keep]
    n = values.size
    if n == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")), float("nan"), 0)
    ci = (float("nan"), float("nan"))
    if n_boot > 0 and n >= 2:
        counts = stratified_counts(strata, n_boot, rng)  # (B, n)
        ci = percentile_ci(counts @ values / counts.sum(axis=1))
    return Estimate(
        float(values.mean()), ci, sign_flip_test(values, null, rng=rng, alternative=alternative), n
    )


def _rank_residuals(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Residuals of rank(values) after least squares on ``design`` (n, p)."""
    ranks = stats.rankdata(values)
    beta, *_ = np.linalg.lstsq(design, ranks, rcond=None)
    return ranks - design @ beta


def design_matrix(cells: np.ndarray, covariates: list[np.ndarray]) -> np.ndarray:
    """Intercept + one dummy per cell beyond the first + ranked numeric covariates: (n, p)."""
    n = len(cells)
    columns = [np.ones(n)]
    for code in np.unique(cells)[1:]:
        columns.append((cells == code).astype(float))
    columns += [stats.rankdata(c) for c in covariates]
    return np.column_stack(columns)


def _residual_correlation(x: np.ndarray, y: np.ndarray, design: np.ndarray) -> float:
    rx, ry = _rank_residuals(x, design), _rank_residuals(y, design)
    sx, sy = np.sqrt((rx * rx).sum()), np.sqrt((ry * ry).sum())
    if sx < 1e-9 or sy < 1e-9:
        return float("nan")
    return float((rx * ry).sum() / (sx * sy))


def rank_partial(
    x: np.ndarray,
    y: np.ndarray,
    cells: np.ndarray,
    covariates: list[np.ndarray],
    *,
    n_boot: int,
    rng: np.random.Generator,
    alternative: str = "two-sided",
    n_permutations: int = N_PERMUTATIONS,
) -> tuple[Estimate, int]:
    """Rank partial correlation of x and y given the cells and covariates; returns (estimate, residual dof).

    p: x permuted within cells (``n_permutations`` draws). CI: runs resampled within cells (resamples
    that lose a cell's variation are skipped by ``percentile_ci``'s NaN rule).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    for c in covariates:
        ok &= np.isfinite(np.asarray(c, float))
    x, y, cells = x[ok], y[ok], np.asarray(cells)[ok]
    covariates = [np.asarray(c, float)[ok] for c in covariates]
    design = design_matrix(cells, covariates)
    dof = int(x.size - np.linalg.matrix_rank(design) - 1)
    if x.size < 3 or dof < 1:
        return Estimate(float("nan"), (float("nan"), float("nan")), float("nan"), int(x.size)), dof
    observed = _residual_correlation(x, y, design)
    if not np.isfinite(observed):
        return Estimate(float("nan"), (float("nan"), float("nan")), float("nan"), int(x.size)), dof
    groups = [np.flatnonzero(cells == c) for c in np.unique(cells)]
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        xp = x.copy()
        for members in groups:
            xp[members] = x[rng.permutation(members)]
        null[i] = _residual_correlation(xp, y, design)
    p = permutation_p(observed, null, alternative, exact=False)
    ci = (float("nan"), float("nan"))
    if n_boot > 0:
        boots = []
        for row in stratified_counts(cells, n_boot, rng):
            index = np.repeat(np.arange(x.size), row)
            jitter = rng.random(index.size) * 1e-9  # break the ties repeated draws make in the dummies' ranks
            d = design_matrix(cells[index], [c[index] + jitter for c in covariates])
            boots.append(_residual_correlation(x[index] + jitter, y[index], d))
        ci = percentile_ci(np.array(boots, dtype=float))
    return Estimate(observed, ci, float(p), int(x.size)), dof


def icc_oneway(values: np.ndarray, cells: np.ndarray) -> tuple[float, float]:
    """ICC(1) (one-way random effects, Shrout & Fleiss) of ``values`` grouped by ``cells``, and the
    p-value of its F-test (H0: ICC = 0). Unequal cell sizes use the average-size correction k0."""
    values, cells = np.asarray(values, float), np.asarray(cells)
    ok = np.isfinite(values)
    values, cells = values[ok], cells[ok]
    labels = [c for c in np.unique(cells) if np.sum(cells == c) >= 2]
    if len(labels) < 2:
        return float("nan"), float("nan")
    keep = np.isin(cells, labels)
    values, cells = values[keep], cells[keep]
    n, g = values.size, len(labels)
    sizes = np.array([np.sum(cells == c) for c in labels], dtype=float)
    means = np.array([values[cells == c].mean() for c in labels])
    grand = values.mean()
    ms_between = float(np.sum(sizes * (means - grand) ** 2) / (g - 1))
    ms_within = float(sum(((values[cells == c] - m) ** 2).sum() for c, m in zip(labels, means)) / (n - g))
    k0 = (n - np.sum(sizes**2) / n) / (g - 1)
    if ms_within <= 0:
        return (1.0 if ms_between > 0 else float("nan")), (0.0 if ms_between > 0 else float("nan"))
    icc = (ms_between - ms_within) / (ms_between + (k0 - 1) * ms_within)
    p = float(stats.f.sf(ms_between / ms_within, g - 1, n - g))
    return float(icc), p


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    index = np.flatnonzero(np.isfinite(p))
    m = index.size
    if m == 0:
        return out.tolist()
    order = index[np.argsort(p[index], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
