"""The count-based bootstrap statistics equal scipy/sklearn on the explicitly resampled data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from robustdiag.analysis import stats as S


@pytest.fixture
def paired() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=14)
    y = 0.6 * x + rng.normal(size=14)
    x[5] = x[6]  # ties in x, and in y below, on top of the ties repeated draws create
    y[2] = y[9]
    return x, y


def _explicit(counts: np.ndarray) -> list[np.ndarray]:
    """The index arrays of the resamples that ``counts`` describes."""
    return [np.repeat(np.arange(counts.shape[1]), row) for row in counts]


@pytest.mark.parametrize(
    ("weighted", "reference"),
    [
        (S.weighted_spearman, lambda a, b: stats.spearmanr(a, b).statistic),
        (S.weighted_pearson, lambda a, b: stats.pearsonr(a, b).statistic),
        (S.weighted_kendall, lambda a, b: stats.kendalltau(a, b).statistic),
    ],
    ids=["spearman", "pearson", "kendall"],
)
def test_count_based_coefficients_equal_scipy_on_resamples(paired, weighted, reference) -> None:
    x, y = paired
    counts = S.bootstrap_counts(x.size, 40, np.random.default_rng(0))
    got = weighted(x, y, counts)
    expected = np.array([reference(x[i], y[i]) for i in _explicit(counts)])
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_chunked_bootstrap_equals_unchunked(paired, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = paired
    counts = S.bootstrap_counts(x.size, 25, np.random.default_rng(1))
    whole = (S.weighted_spearman(x, y, counts), S.weighted_kendall(x, y, counts))
    monkeypatch.setattr(S, "_MAX_MATMUL_ELEMENTS", 3 * x.size * 4)  # 3 resamples per chunk
    chunked = (S.weighted_spearman(x, y, counts), S.weighted_kendall(x, y, counts))
    np.testing.assert_allclose(chunked, whole, atol=1e-14)


def test_weighted_auroc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(4)
    values = np.round(rng.normal(size=30), 1)  # many ties
    positive = rng.random(30) < 0.4
    counts = S.stratified_counts(positive.astype(int), 30, rng)
    got = S.weighted_auroc(values, positive, counts)
    expected = [roc_auc_score(positive[i], values[i]) for i in _explicit(counts)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    plain = S.weighted_auroc(values, positive, np.ones((1, 30)))[0]
    u = stats.mannwhitneyu(values[positive], values[~positive]).statistic
    assert plain == pytest.approx(u / (positive.sum() * (~positive).sum()))


def test_stratified_counts_keep_group_sizes() -> None:
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    counts = S.stratified_counts(groups, 50, np.random.default_rng(5))
    for g in np.unique(groups):
        assert (counts[:, groups == g].sum(axis=1) == (groups == g).sum()).all()


def test_cluster_auroc_equals_sklearn_on_resampled_clusters() -> None:
    rng = np.random.default_rng(8)
    clusters = np.repeat(np.array(["r0", "r1", "r2", "r3"]), [10, 7, 12, 9])
    values = np.round(rng.normal(size=clusters.size) + (clusters == "r2"), 1)  # ties, cluster effect
    positive = rng.random(clusters.size) < 0.4
    draws = S.bootstrap_counts(4, 30, rng)  # (B, K) counts of r0..r3
    got = S.cluster_auroc(values, positive, clusters, draws)
    expected = []
    for row in draws:
        take = np.concatenate([np.flatnonzero(clusters == f"r{k}") for k in range(4) for _ in range(row[k])])
        labels = positive[take]
        expected.append(roc_auc_score(labels, values[take]) if 0 < labels.sum() < labels.size else np.nan)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    ones = S.cluster_auroc(values, positive, clusters, np.ones((1, 4)))[0]
    assert ones == pytest.approx(roc_auc_score(positive, values))


def test_correlate_matches_scipy_and_drops_nan_pairs(paired) -> None:
    x, y = paired
    x_nan, y_nan = x.copy(), y.copy()
    x_nan[0], y_nan[3] = np.nan, np.nan
    result = S.correlate(x_nan, y_nan, n_boot=500, rng=np.random.default_rng(0))
    keep = np.isfinite(x_nan) & np.isfinite(y_nan)
    assert result.n == 12
    assert result.spearman == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic)
    assert result.spearman_p == pytest.approx(stats.spearmanr(x[keep], y[keep]).pvalue)
    assert result.pearson == pytest.approx(stats.pearsonr(x[keep], y[keep]).statistic)
    assert result.kendall == pytest.approx(stats.kendalltau(x[keep], y[keep]).statistic)
    assert result.kendall_p == pytest.approx(stats.kendalltau(x[keep], y[keep]).pvalue)
    for name in ("spearman", "pearson", "kendall"):
        low, high = getattr(result, f"{name}_ci")
        assert low <= getattr(result, name) <= high


def test_correlate_is_seeded(paired) -> None:
    x, y = paired
    first = S.correlate(x, y, n_boot=300, rng=S.pair_rng(7, "a", "b"))
    again = S.correlate(x, y, n_boot=300, rng=S.pair_rng(7, "a", "b"))
    other = S.correlate(x, y, n_boot=300, rng=S.pair_rng(8, "a", "b"))
    assert first == again
    assert other.spearman == first.spearman and other.spearman_ci != first.spearman_ci
    assert S.correlate(x, y, n_boot=300, rng=S.pair_rng(7, "a", "c")).spearman_ci != first.spearman_ci


def test_correlate_undefined_cases_say_why() -> None:
    short = S.correlate(
        np.array([1.0, 2.0, np.nan]), np.array([1.0, 2.0, 3.0]), n_boot=10, rng=np.random.default_rng(0)
    )
    assert short.n == 2 and np.isnan(short.spearman) and "n=2" in short.note
    flat = S.correlate(np.ones(5), np.arange(5.0), n_boot=10, rng=np.random.default_rng(0))
    assert np.isnan(flat.pearson) and "diagnostic is constant" in flat.note
    no_ci = S.correlate(np.arange(5.0), np.arange(5.0) ** 2, n_boot=0, rng=np.random.default_rng(0))
    assert no_ci.spearman == pytest.approx(1.0) and np.isnan(no_ci.spearman_ci[0])


def test_percentile_ci_needs_most_resamples_defined() -> None:
    assert S.percentile_ci(np.array([np.nan] * 6 + [0.1] * 4)) == pytest.approx((np.nan, np.nan), nan_ok=True)
    low, high = S.percentile_ci(np.linspace(0, 1, 1001))
    assert low == pytest.approx(0.025) and high == pytest.approx(0.975)


def test_effect_size_matches_formula() -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(1.0, 1.0, 7), rng.normal(0.0, 2.0, 5)
    result = S.effect_size(a, b, n_boot=400, rng=rng)
    pooled = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    d = (a.mean() - b.mean()) / pooled
    assert result.cohens_d == pytest.approx(d)
    assert result.hedges_g == pytest.approx(d * (1 - 3 / (4 * (a.size + b.size) - 9)))
    assert result.hedges_g_ci[0] < result.hedges_g_ci[1]
    assert (result.n_a, result.n_b) == (7, 5)
    assert np.isnan(S.effect_size(a[:1], b, n_boot=10, rng=rng).hedges_g)


def test_auroc_with_ci_perfect_and_missing_group() -> None:
    values = np.array([1.0, 2.0, 3.0, 10.0, 11.0, np.nan])
    positive = np.array([False, False, False, True, True, True])
    result = S.auroc_with_ci(values, positive, n_boot=200, rng=np.random.default_rng(0))
    assert result.auroc == 1.0 and result.ci == (1.0, 1.0) and (result.n_pos, result.n_neg) == (2, 3)
    empty = S.auroc_with_ci(values[:3], positive[:3], n_boot=10, rng=np.random.default_rng(0))
    assert np.isnan(empty.auroc) and empty.n_pos == 0
