"""Separation formulas against direct NumPy computations; null summaries; streaming naive Bayes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.naive_bayes import BernoulliNB

from robustdiag.metrics.path_accum import BatchLabels, EventCounters
from robustdiag.metrics.path_stats import (
    class_pairs,
    model_summary,
    null_summary,
    pair_separation,
)

EPS = 1e-3


def np_divergence(p: float, q: float, kind: str) -> float:
    """One edge, written out from the definitions."""
    if kind == "js":

        def kl(a: float, b: float) -> float:
            return sum(x * math.log2(x / y) for x, y in ((a, b), (1 - a, 1 - b)) if x > 0)

        m = (p + q) / 2
        return 0.5 * kl(p, m) + 0.5 * kl(q, m)
    if kind == "tv":
        return 0.5 * (abs(p - q) + abs((1 - p) - (1 - q)))
    p, q = min(max(p, EPS), 1 - EPS), min(max(q, EPS), 1 - EPS)
    if kind == "sym_kl":
        return (
            p * math.log(p / q)
            + (1 - p) * math.log((1 - p) / (1 - q))
            + q * math.log(q / p)
            + (1 - q) * math.log((1 - q) / (1 - p))
        )
    if kind == "bhattacharyya":
        return -math.log(math.sqrt(p * q) + math.sqrt((1 - p) * (1 - q)))
    raise AssertionError(kind)


def np_separation(probs: np.ndarray, pairs: list[tuple[int, int]], kind: str, tau: float = 0.5) -> float:
    """Mean over pairs of the mean over edges (jaccard: of thresholded class paths)."""
    values = []
    for a, b in pairs:
        if kind == "jaccard":
            on_a, on_b = probs[a] > tau, probs[b] > tau
            union = np.logical_or(on_a, on_b).sum()
            values.append(0.0 if union == 0 else 1 - np.logical_and(on_a, on_b).sum() / union)
        else:
            values.append(np.mean([np_divergence(p, q, kind) for p, q in zip(probs[a], probs[b])]))
    return float(np.mean(values))


@pytest.mark.parametrize("kind", ["js", "tv", "sym_kl", "bhattacharyya", "jaccard"])
def test_separations_match_numpy_on_probability_tables(kind: str) -> None:
    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(3, 4, 7))  # (L, K, E)
    probs[0, 1, :2] = [0.0, 1.0]  # deterministic edges
    probs[1, 2, 3] = 0.0
    pairs = list(itertools.combinations(range(4), 2))
    got = pair_separation(torch.tensor(probs), torch.tensor(pairs), kind, eps=EPS, chunk_elements=5)
    expected = [np_separation(probs[r], pairs, kind) for r in range(3)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["js", "tv", "sym_kl", "bhattacharyya", "jaccard"])
def test_separations_from_counts_match_numpy(kind: str) -> None:
    rng = np.random.default_rng(1)
    trials = 9
    counts = rng.integers(0, trials + 1, size=(2, 5, 11)).astype(np.float32)  # (L, K, E)
    pairs = [(0, 3), (1, 2), (2, 4)]
    got = pair_separation(
        torch.tensor(counts), torch.tensor(pairs), kind, trials=trials, eps=EPS, chunk_elements=13
    )
    expected = [np_separation(counts[r].astype(np.float64) / trials, pairs, kind) for r in range(2)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_separation_extremes() -> None:
    disjoint = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]])  # (1, 2, 4)
    same = torch.full((1, 2, 4), 0.3, dtype=torch.float64)
    pairs = torch.tensor([[0, 1]])
    assert pair_separation(disjoint, pairs, "js").item() == pytest.approx(1.0)  # bits: maximum 1
    assert pair_separation(disjoint, pairs, "tv").item() == pytest.approx(1.0)
    assert pair_separation(disjoint, pairs, "jaccard").item() == pytest.approx(1.0)
    for kind in ("js", "tv", "sym_kl", "bhattacharyya", "jaccard"):
        assert pair_separation(same, pairs, kind).item() == pytest.approx(0.0, abs=1e-12)


def test_class_pairs_all_or_seeded_sample() -> None:
    assert class_pairs(4, None, 0).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    sample = class_pairs(100, 50, seed=3)
    assert sample.shape == (50, 2) and (sample[:, 0] < sample[:, 1]).all()
    assert len({tuple(p) for p in sample.tolist()}) == 50
    assert torch.equal(sample, class_pairs(100, 50, seed=3))
    assert not torch.equal(sample, class_pairs(100, 50, seed=4))


def test_null_and_model_summaries() -> None:
    values = torch.tensor([0.9, 0.1, 0.2, 0.3])
    summary = null_summary(values)
    assert summary["raw"] == pytest.approx(0.9)
    assert summary["null_mean"] == pytest.approx(0.2)
    assert summary["null_std"] == pytest.approx(np.std([0.1, 0.2, 0.3], ddof=1))
    assert summary["excess"] == pytest.approx(0.7)
    assert summary["z"] == pytest.approx(0.7 / 0.1)
    per_layer = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.5, 0.3, 0.3, 0.6]])
    model = model_summary(per_layer)
    layer_mean = per_layer.double().mean(0)
    assert model["raw"] == pytest.approx(0.7)
    assert model["null_std"] == pytest.approx(float(layer_mean[1:].std()))
    assert model["z"] == pytest.approx((0.7 - float(layer_mean[1:].mean())) / float(layer_mean[1:].std()))
    assert model["z_layer_mean"] == pytest.approx(
        (7.0 + (0.5 - 0.4) / float(torch.tensor([0.3, 0.3, 0.6]).std())) / 2
    )
    with pytest.warns(UserWarning, match="permutation"):
        assert math.isnan(model_summary(torch.tensor([[0.5, 0.4]]))["z"])


def test_streaming_naive_bayes_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    num_classes, width, per_class = 3, 12, 20
    labels = np.repeat(np.arange(num_classes), per_class)
    rates = rng.uniform(0.1, 0.9, size=(num_classes, width))
    events = rng.uniform(size=(labels.size, width)) < rates[labels]  # (N, E) Bernoulli samples
    fit = np.concatenate([np.flatnonzero(labels == k)[: per_class // 2] for k in range(num_classes)])
    test = np.setdiff1d(np.arange(labels.size), fit)
    shuffled = rng.permutation(labels)
    labellings = torch.tensor(np.stack([labels, shuffled]))  # (L=2, N)

    counters = EventCounters(2 * num_classes, [5, width - 5], naive_bayes=True, device=torch.device("cpu"))
    class_counts = torch.zeros(2 * num_classes)
    for part, is_test in ((fit, False), (test, True)):
        if is_test:
            counters.fit_naive_bayes(class_counts)
        for chunk in np.array_split(part, 3):  # several batches
            batch = BatchLabels(labellings[:, chunk], num_classes, torch.float32)
            class_counts += batch.onehot.sum(1)
            counters.begin_batch(len(chunk))
            counters.add(batch, torch.tensor(events[chunk, :5]), 0)  # two column blocks
            counters.add(batch, torch.tensor(events[chunk, 5:]), 1)
            counters.end_batch(batch)
    got = counters.nb_accuracy().numpy()
    for row, y in enumerate((labels, shuffled)):
        model = BernoulliNB(alpha=1.0, fit_prior=False, binarize=None).fit(events[fit], y[fit])
        assert got[row] == pytest.approx(model.score(events[test], y[test]))
    expected_counts = np.stack([events[labels == k].sum(0) for k in range(num_classes)])
    np.testing.assert_array_equal(counters.counts[:num_classes].numpy(), expected_counts)


def test_rounding_level_null_spread_gives_no_z() -> None:
    """Labellings equal up to summation order: the spread is rounding, so z is NaN, not excess/1e-20."""
    from robustdiag.metrics.path_stats import null_summary

    values = torch.tensor([6.33e-4, 6.33e-4 + 1e-19, 6.33e-4, 6.33e-4 - 1e-19], dtype=torch.float64)
    summary = null_summary(values)
    assert summary["null_std"] == 0.0
    assert math.isnan(summary["z"])
    real = null_summary(torch.tensor([0.5, 0.1, 0.11, 0.09], dtype=torch.float64))
    assert real["z"] == pytest.approx(0.4 / 0.01)
