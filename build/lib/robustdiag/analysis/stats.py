"""Statistics with bootstrap confidence intervals, vectorised over resamples.

A bootstrap resample of n observations is represented by its multinomial *counts* c (how often each
original observation was drawn), so B resamples are one (B, n) integer matrix. Every statistic here is
written as a function of those counts (weighted moments, weighted rank sums, quadratic forms), which
gives exactly the value the statistic takes on the explicitly resampled data (ties from repeated draws
included) without materialising B resampled copies or looping over them in Python.

Confidence intervals are percentile intervals. Resamples where a statistic is undefined (for example
a resample in which x is constant) are left out of the percentiles; when more than half are undefined
the interval is reported as NaN.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import stats

CI_LEVEL = 0.95  # two-sided percentile interval
MIN_N = 3  # fewer paired observations than this: no correlation is reported
_MAX_MATMUL_ELEMENTS = 20_000_000  # cap on the (chunk, n) x (n, n) work of one Kendall bootstrap chunk
_MAX_BUFFER_ELEMENTS = 4_000_000  # cap on each (chunk, n) float buffer of the AUROC bootstrap (32 MB)


def pair_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and the names of what is resampled.

    Each (diagnostic, target) pair gets its own stream, so adding a column to a sweep does not change
    the intervals of the others.
    """
    key = zlib.crc32("\x1f".join(names).encode())
    return np.random.default_rng([int(seed), key])


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Multinomial counts of ``n_boot`` resamples of ``n`` observations with replacement: (B, n)."""
    draws = rng.integers(0, n, size=(n_boot, n))  # (B, n) drawn indices
    flat = (draws + n * np.arange(n_boot)[:, None]).ravel()  # offset each resample into its own row
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n)


def percentile_ci(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap values; NaN when most resamples are undefined."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0 or finite.size < 0.5 * samples.size:
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with NaN where den is zero (or numerically zero)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = den > 1e-300
    np.divide(num, den, out=out, where=ok)
    return out


def weighted_pearson(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pearson r of each resample; x, y: (n,), counts: (B, n) -> (B,)."""
    xc = (x - x.mean()) / (x.std() or 1.0)  # centre and scale once for numerical stability
    yc = (y - y.mean()) / (y.std() or 1.0)
    total = counts.sum(axis=1).astype(float)  # (B,)
    mx, my = counts @ xc / total, counts @ yc / total  # (B,)
    sxx = counts @ (xc * xc) / total - mx**2
    syy = counts @ (yc * yc) / total - my**2
    sxy = counts @ (xc * yc) / total - mx * my
    r = _safe_ratio(sxy, np.sqrt(np.clip(sxx, 0, None) * np.clip(syy, 0, None)))
    return np.clip(r, -1.0, 1.0)


def _chunks(n_rows: int, n: int) -> list[slice]:
    """Row slices of a (n_rows, n) count matrix whose (rows, n) @ (n, n) products fit the buffer cap."""
    step = max(1, _MAX_MATMUL_ELEMENTS // max(n * 4, 1))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]


@dataclass(frozen=True)
class _TieGroups:
    """Observations grouped by equal value, in ascending order of value."""

    order: np.ndarray  # (n,) argsort of the values
    starts: np.ndarray  # (G,) first position (in sorted order) of each group
    group_of: np.ndarray  # (n,) group index of each original observation

    @classmethod
    def of(cls, x: np.ndarray) -> _TieGroups:
        order = np.argsort(x, kind="stable")
        v = x[order]
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        group_sorted = np.cumsum(np.r_[True, v[1:] != v[:-1]]) - 1  # (n,) in sorted order
        group_of = np.empty_like(group_sorted)
        group_of[order] = group_sorted
        return cls(order, starts, group_of)

    def counts(self, counts: np.ndarray) -> np.ndarray:
        """Draws per tie group in each resample: (B, n) -> (B, G)."""
        return np.add.reduceat(counts[:, self.order], self.starts, axis=1)


def _ranks(counts: np.ndarray, groups: _TieGroups) -> np.ndarray:
    """Average rank each original observation gets inside each resample: (B, n) -> (B, n).

    In a resample, observation i has rank (#draws with value < x_i) + (#draws with value == x_i + 1) / 2,
    the average rank of its tie group (the convention of ``scipy.stats.rankdata``). O(B n).
    """
    per_group = groups.counts(counts)  # (B, G)
    below = np.cumsum(per_group, axis=1) - per_group  # (B, G) draws in strictly lower groups
    return (below + (per_group + 1.0) / 2.0)[:, groups.group_of]  # (B, n)


def _untied_pairs(counts: np.ndarray, groups: _TieGroups) -> np.ndarray:
    """Ordered pairs of draws with different values, c'|S|c = (sum c)^2 - sum_g (draws in g)^2: -> (B,)."""
    per_group = groups.counts(counts)  # (B, G)
    return counts.sum(axis=1) ** 2 - (per_group**2).sum(axis=1)


def weighted_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Spearman rho of each resample (Pearson r of the within-resample ranks): -> (B,)."""
    c = counts.astype(float)  # (B, n)
    rx, ry = _ranks(c, _TieGroups.of(x)), _ranks(c, _TieGroups.of(y))  # (B, n)
    total = c.sum(axis=1)  # (B,)
    mx = (c * rx).sum(axis=1) / total
    my = (c * ry).sum(axis=1) / total
    dx, dy = rx - mx[:, None], ry - my[:, None]
    sxy = (c * dx * dy).sum(axis=1)
    sxx = (c * dx * dx).sum(axis=1)
    syy = (c * dy * dy).sum(axis=1)
    return np.clip(_safe_ratio(sxy, np.sqrt(sxx * syy)), -1.0, 1.0)


def weighted_kendall(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each resample as quadratic forms in the counts: -> (B,).

    With S^x_ij = sign(x_i - x_j): tau_b = c'(S^x*S^y)c / sqrt(c'|S^x|c * c'|S^y|c), which equals
    scipy's tau-b on the explicitly resampled data (repeated draws are ties in both x and y). The
    numerator is one (B, n) x (n, n) product; the tie terms are O(B n).
    """
    concord = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])  # (n, n)
    c = counts.astype(float)  # (B, n)
    num = np.empty(c.shape[0])
    for rows in _chunks(c.shape[0], x.size):
        num[rows] = ((c[rows] @ concord) * c[rows]).sum(axis=1)
    den = np.sqrt(_untied_pairs(c, _TieGroups.of(x)) * _untied_pairs(c, _TieGroups.of(y)))
    return np.clip(_safe_ratio(num, den), -1.0, 1.0)


@dataclass(frozen=True)
class Correlation:
    """Point estimates, p-values and bootstrap intervals of three coefficients for one (x, y) pair."""

    n: int
    spearman: float
    spearman_p: float
    spearman_ci: tuple[float, float]
    pearson: float
    pearson_p: float
    pearson_ci: tuple[float, float]
    kendall: float
    kendall_p: float
    kendall_ci: tuple[float, float]
    note: str = ""

    def as_row(self) -> dict[str, float | int | str]:
        """Flat columns for a results table."""
        row: dict[str, float | int | str] = {"n": self.n}
        for name in ("spearman", "pearson", "kendall"):
            low, high = getattr(self, f"{name}_ci")
            row[name] = getattr(self, name)
            row[f"{name}_ci_low"] = low
            row[f"{name}_ci_high"] = high
            row[f"{name}_p"] = getattr(self, f"{name}_p")
        row["note"] = self.note
        return row


def _undefined_correlation(n: int, note: str) -> Correlation:
    nan, ci = float("nan"), (float("nan"), float("nan"))
    return Correlation(n, nan, nan, ci, nan, nan, ci, nan, nan, ci, note)


def correlate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    strata: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
) -> Correlation:
    """Spearman, Pearson and Kendall (tau-b) of paired observations, dropping pairs with a NaN.

    The bootstrap resamples what was randomised: observations within ``strata`` (e.g. seeds within
    architecture × regime cells, keeping the design fixed), or whole ``clusters`` (e.g. every row of one
    run together), else observations independently. p-values are scipy's; all three
    coefficients computed on the same resamples.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    strata = None if strata is None else np.asarray(strata)[keep]
    clusters = None if clusters is None else np.asarray(clusters)[keep]
    n = int(x.size)
    if n < MIN_N:
        return _undefined_correlation(n, f"n={n} < {MIN_N} paired finite values")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        which = "diagnostic" if np.ptp(x) == 0 else "target"
        return _undefined_correlation(n, f"{which} is constant over the {n} runs")
    spearman = stats.spearmanr(x, y)
    pearson = stats.pearsonr(x, y)
    kendall = stats.kendalltau(x, y)
    nan_ci = (float("nan"), float("nan"))
    cis = {"spearman": nan_ci, "pearson": nan_ci, "kendall": nan_ci}
    if n_boot > 0:
        counts = resample_counts(n, n_boot, rng, strata=strata, clusters=clusters)  # (B, n)
        cis = {
            "spearman": percentile_ci(weighted_spearman(x, y, counts)),
            "pearson": percentile_ci(weighted_pearson(x, y, counts)),
            "kendall": percentile_ci(weighted_kendall(x, y, counts)),
        }
    return Correlation(
        n=n,
        spearman=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        spearman_ci=cis["spearman"],
        pearson=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        pearson_ci=cis["pearson"],
        kendall=float(kendall.statistic),
        kendall_p=float(kendall.pvalue),
        kendall_ci=cis["kendall"],
    )


def resample_counts(
    n: int,
    n_boot: int,
    rng: np.random.Generator,
    *,
    strata: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap counts (B, n): within strata, by whole clusters, or of independent observations."""
    if clusters is not None:
        labels, member_of = np.unique(clusters, return_inverse=True)
        draws = bootstrap_counts(labels.size, n_boot, rng)  # (B, K) copies of each cluster
        return draws[:, member_of]
    if strata is not None:
        return stratified_counts(np.unique(strata, return_inverse=True)[1], n_boot, rng)
    return bootstrap_counts(n, n_boot, rng)


def weighted_auroc(values: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC = P(value of a positive > value of a negative), ties counting one half, per weight row.

    values, positive: (n,); weights: (B, n) non-negative observation weights (bootstrap counts, or ones
    for the plain estimate). Sorts once, then is O(B n): per tie group of values, the weighted number
    of negatives strictly below plus half of those tied.
    """
    order = np.argsort(values, kind="stable")
    v, pos = values[order], positive[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])  # (G,) first index of each tie group
    out = np.empty(weights.shape[0])
    step = max(1, _MAX_BUFFER_ELEMENTS // max(v.size, 1))
    for lo in range(0, weights.shape[0], step):
        w = weights[lo : lo + step][:, order].astype(float)  # (b, n)
        w_pos = np.add.reduceat(w * pos, starts, axis=1)  # (b, G)
        w_neg = np.add.reduceat(w * ~pos, starts, axis=1)  # (b, G)
        neg_below = np.cumsum(w_neg, axis=1) - w_neg  # (b, G) strictly lower groups
        wins = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
        out[lo : lo + step] = _safe_ratio(wins, w_pos.sum(axis=1) * w_neg.sum(axis=1))
    return out


def stratified_counts(groups: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap counts (B, n) that resample within each group, keeping the group sizes fixed."""
    counts = np.zeros((n_boot, groups.size), dtype=np.int64)
    for value in np.unique(groups):
        members = np.flatnonzero(groups == value)
        counts[:, members] = bootstrap_counts(members.size, n_boot, rng)
    return counts


def cluster_auroc(
    values: np.ndarray, positive: np.ndarray, clusters: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """AUROC when whole clusters (e.g. runs) are resampled; draws: (B, K) counts of the sorted cluster labels.

    Precomputes wins[k, l] = sum over positives of cluster k and negatives of cluster l of
    1[v_pos > v_neg] + 1/2 1[v_pos == v_neg]; a resample is then the quadratic form w' wins w over
    its cluster counts w, exact and O(B K^2) whatever the number of samples.
    """
    labels, member_of = np.unique(clusters, return_inverse=True)
    k = labels.size
    pos_values, pos_cluster = values[positive], member_of[positive]
    wins = np.zeros((k, k))
    for cluster in range(k):  # loop over clusters (runs), never over samples
        neg = np.sort(values[~positive & (member_of == cluster)])
        below = np.searchsorted(neg, pos_values, side="left")
        upto = np.searchsorted(neg, pos_values, side="right")
        wins[:, cluster] = np.bincount(pos_cluster, weights=below + 0.5 * (upto - below), minlength=k)
    n_pos = np.bincount(pos_cluster, minlength=k).astype(float)  # (K,)
    n_neg = np.bincount(member_of[~positive], minlength=k).astype(float)
    w = draws.astype(float)  # (B, K)
    return _safe_ratio(((w @ wins) * w).sum(axis=1), (w @ n_pos) * (w @ n_neg))


@dataclass(frozen=True)
class Auroc:
    """AUROC with its bootstrap interval and the Mann-Whitney p-value."""

    auroc: float
    ci: tuple[float, float]
    p: float
    n_pos: int
    n_neg: int


def auroc_with_ci(
    values: np.ndarray,
    positive: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    clusters: np.ndarray | None = None,
) -> Auroc:
    """AUROC of ``values`` for ``positive``, NaN values dropped.

    The bootstrap resamples within the positive and negative groups, or whole clusters when
    ``clusters`` is given (observations of one cluster are not independent, e.g. samples of one run).
    """
    values, positive = np.asarray(values, dtype=float), np.asarray(positive, dtype=bool)
    keep = np.isfinite(values)
    values, positive = values[keep], positive[keep]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return Auroc(float("nan"), (float("nan"), float("nan")), float("nan"), n_pos, n_neg)
    point = float(weighted_auroc(values, positive, np.ones((1, values.size)))[0])
    p = float(stats.mannwhitneyu(values[positive], values[~positive], alternative="two-sided").pvalue)
    ci = (float("nan"), float("nan"))
    if n_boot > 0:
        if clusters is None:
            counts = stratified_counts(positive.astype(int), n_boot, rng)
            ci = percentile_ci(weighted_auroc(values, positive, counts))
        else:
            clusters = np.asarray(clusters)[keep]
            draws = bootstrap_counts(np.unique(clusters).size, n_boot, rng)  # (B, K)
            ci = percentile_ci(cluster_auroc(values, positive, clusters, draws))
    return Auroc(point, ci, p, n_pos, n_neg)


def hedges_correction(n_a: int, n_b: int) -> float:
    """Small-sample factor J turning Cohen's d into Hedges' g."""
    dof = n_a + n_b - 2
    return 1.0 - 3.0 / (4.0 * dof - 1.0) if dof > 0 else float("nan")


def weighted_cohens_d(a: np.ndarray, b: np.ndarray, counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """Cohen's d = (mean_a - mean_b) / pooled sd (ddof 1) per resample: (n_a,), (n_b,), (B, n_a), (B, n_b)."""
    n_a, n_b = a.size, b.size
    mean_a, mean_b = counts_a @ a / n_a, counts_b @ b / n_b  # (B,)
    ss_a = counts_a @ (a * a) - n_a * mean_a**2  # sums of squared deviations
    ss_b = counts_b @ (b * b) - n_b * mean_b**2
    pooled = np.sqrt(np.clip(ss_a + ss_b, 0, None) / (n_a + n_b - 2))
    return _safe_ratio(mean_a - mean_b, pooled)


@dataclass(frozen=True)
class EffectSize:
    """Cohen's d and Hedges' g of group a minus group b, with a bootstrap interval for g."""

    cohens_d: float
    hedges_g: float
    hedges_g_ci: tuple[float, float]
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float


def effect_size(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_boot: int,
    rng: np.random.Generator,
    strata: tuple[np.ndarray, np.ndarray] | None = None,
) -> EffectSize:
    """Standardised mean difference of a over b (NaNs dropped); needs at least 2 values per group.

    ``strata`` (one label array per group, e.g. architectures) makes the bootstrap resample within them.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep_a, keep_b = np.isfinite(a), np.isfinite(b)
    a, b = a[keep_a], b[keep_b]
    strata_a = None if strata is None else np.asarray(strata[0])[keep_a]
    strata_b = None if strata is None else np.asarray(strata[1])[keep_b]
    n_a, n_b = a.size, b.size
    nan = float("nan")
    mean_a = float(a.mean()) if n_a else nan
    mean_b = float(b.mean()) if n_b else nan
    sd_a = float(a.std(ddof=1)) if n_a > 1 else nan
    sd_b = float(b.std(ddof=1)) if n_b > 1 else nan
    if n_a < 2 or n_b < 2:
        return EffectSize(nan, nan, (nan, nan), n_a, n_b, mean_a, mean_b, sd_a, sd_b)
    d = float(weighted_cohens_d(a, b, np.ones((1, n_a)), np.ones((1, n_b)))[0])
    j = hedges_correction(n_a, n_b)
    ci = (nan, nan)
    if n_boot > 0:
        counts_a = resample_counts(n_a, n_boot, rng, strata=strata_a)
        counts_b = resample_counts(n_b, n_boot, rng, strata=strata_b)
        boot = weighted_cohens_d(a, b, counts_a, counts_b)
        ci = percentile_ci(j * boot)
    return EffectSize(d, j * d, ci, n_a, n_b, mean_a, mean_b, sd_a, sd_b)
