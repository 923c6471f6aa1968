"""Bernoulli events against brute-force loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustdiag.metrics.path_events import (
    activation_events,
    cover_cutoff,
    cover_mask,
    effective_path_events,
    neuron_events,
    next_topk_hint,
    positive_events,
)


def brute_cover(values: np.ndarray, theta: float) -> np.ndarray:
    """Smallest set whose values cover theta of the positive total, one row at a time."""
    mask = np.zeros(values.shape, dtype=bool)
    for index in np.ndindex(values.shape[:-1]):
        row = np.clip(values[index], 0, None)
        total = row.sum()
        if total <= 0:
            continue
        covered = 0.0
        for j in np.argsort(-row, kind="stable"):
            if covered >= theta * total or row[j] <= 0:  # zeros never join (rounding at theta = 1)
                break
            mask[index + (j,)] = True
            covered += row[j]
    return mask


@pytest.mark.parametrize("theta", [0.1, 0.5, 0.9, 1.0])
def test_effective_path_matches_brute_force(theta: float) -> None:
    generator = torch.Generator().manual_seed(1)
    contrib = torch.randn(4, 6, 9, generator=generator, dtype=torch.float64)  # (B, O, I)
    contrib[0, 0] = -1.0  # a unit with no positive contribution: empty set
    contrib[1, 2, :3] = 0.0
    events = effective_path_events(contrib, theta)
    np.testing.assert_array_equal(events.numpy(), brute_cover(contrib.numpy(), theta))
    assert not events[0, 0].any()
    assert not (events & (contrib <= 0)).any()


def test_effective_path_single_dominant_input() -> None:
    contrib = torch.tensor([[[5.0, 1.5, 1.0, -3.0]]])  # positive total 7.5
    assert effective_path_events(contrib, 0.5).tolist() == [[[True, False, False, False]]]
    assert effective_path_events(contrib, 0.8).tolist() == [[[True, True, False, False]]]
    assert effective_path_events(contrib, 1.0).tolist() == [[[True, True, True, False]]]


def test_ties_at_the_threshold_are_included() -> None:
    values = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    # 2 covers 0.5 of 4: the minimal set is {0}; at 0.6 one of the tied 1s is needed: both are taken
    assert cover_mask(values, 0.5).tolist() == [[True, False, False, False]]
    assert cover_mask(values, 0.6).tolist() == [[True, True, True, False]]


def test_positive_events() -> None:
    contrib = torch.tensor([[[0.5, 0.0, -0.2]]])
    assert positive_events(contrib).tolist() == [[[True, False, False]]]


@pytest.mark.parametrize("theta", [0.3, 0.5, 1.0])
def test_neuron_events_match_brute_force(theta: float) -> None:
    generator = torch.Generator().manual_seed(2)
    contrib = torch.randn(5, 7, 4, generator=generator, dtype=torch.float64)  # (B, O, I)
    mass = contrib.clamp(min=0).sum(-1)  # (B, O) positive incoming mass per unit
    np.testing.assert_array_equal(neuron_events(mass, theta).numpy(), brute_cover(mass.numpy(), theta))


def test_activation_events() -> None:
    preact = torch.tensor([[1.0, -1.0, 0.0]])
    assert activation_events(preact).tolist() == [[True, False, False]]


@pytest.mark.parametrize("k", [1, 3, 8, 30])
@pytest.mark.parametrize("theta", [0.2, 0.5, 1.0])
def test_topk_route_matches_full_sort_and_brute_force(k: int, theta: float) -> None:
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(6, 5, 30, generator=generator, dtype=torch.float64).clamp(min=0)  # (B, O, I)
    values[:, 0] *= torch.linspace(0, 5, 30, dtype=torch.float64) ** 4  # skewed rows: small sets
    values[2, 3] = 0.0  # empty row
    cutoff, count = cover_cutoff(values, theta, k)  # some rows resolved by topk, the rest by a full sort
    full_cutoff, full_count = cover_cutoff(values, theta)
    torch.testing.assert_close(cutoff, full_cutoff)
    assert torch.equal(count, full_count)
    expected = brute_cover(values.numpy(), theta)
    np.testing.assert_array_equal(cover_mask(values, theta, k).numpy(), expected)
    np.testing.assert_array_equal(count[..., 0].numpy(), expected.sum(-1))
    assert cutoff[2, 3].item() == float("inf") and count[2, 3].item() == 0


def test_topk_hint_tracks_typical_set_size() -> None:
    count = torch.cat([torch.full((99,), 10), torch.tensor([200])])
    assert next_topk_hint(count, n=256) == 14  # 99th percentile 10, +25 %, +1
    assert next_topk_hint(torch.full((4,), 500), n=256) == 256
