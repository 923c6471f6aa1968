"""The Numba CPU kernels against the PyTorch definitions they replace (events, counts, JS, whole metric)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustdiag.metrics import path_kernels
from robustdiag.metrics.path_accum import BatchLabels
from robustdiag.metrics.path_contrib import conv_contributions, linear_contributions
from robustdiag.metrics.path_events import effective_path_events
from robustdiag.metrics.path_stats import class_pairs, pair_separation
from robustdiag.metrics.paths import ActivationSeparation, PathSeparation
from robustdiag.models import Classifier, Normalize
from robustdiag.types import EvalContext, EvalSet

pytestmark = pytest.mark.skipif(not path_kernels.available(), reason="numba not installed")

NUM_CLASSES = 4


def _labels(batch: int, labellings: int = 3, seed: int = 0) -> BatchLabels:
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.arange(batch) % NUM_CLASSES]
    rows += [rows[0][torch.randperm(batch, generator=generator)] for _ in range(labellings - 1)]
    return BatchLabels(torch.stack(rows), NUM_CLASSES, torch.float32)


def _reference_counts(fired: torch.Tensor, labels: BatchLabels) -> torch.Tensor:
    counts = torch.zeros(labels.rows.numel() // labels.size * NUM_CLASSES, fired.shape[1])
    for rows in labels.rows:
        counts.index_add_(0, rows, fired.float())
    return counts


def _check_against_definition(
    sums: torch.Tensor,
    weight: torch.Tensor,
    contrib: torch.Tensor,
    theta: float,
    out_per_group: int,
    first: int = 0,
) -> None:
    """Kernel events, counts and positive mass equal the definition on the same contributions."""
    labels = _labels(sums.shape[0])
    counts = torch.zeros(
        labels.rows.numel() // labels.size * NUM_CLASSES, contrib.shape[1] * contrib.shape[2]
    )
    fired, mass = path_kernels.effective_path_counts(
        path_kernels.tap_major(sums),
        path_kernels.tap_major(weight),
        first,
        out_per_group,
        theta,
        labels.rows,
        counts,
        keep_fired=True,
    )
    expected = effective_path_events(contrib, theta).reshape(contrib.shape[0], -1)  # (B, Oc*Ig)
    assert fired is not None
    torch.testing.assert_close(fired, expected.float(), rtol=0, atol=0)
    torch.testing.assert_close(counts, _reference_counts(expected, labels), rtol=0, atol=0)
    torch.testing.assert_close(mass, contrib.clamp(min=0).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("theta", [0.05, 0.5, 0.9, 1.0])
def test_linear_events_equal_the_definition(theta: float) -> None:
    generator = torch.Generator().manual_seed(0)
    sums = torch.rand(6, 40, generator=generator, dtype=torch.float64)  # (B, I) token sums
    weight = torch.randn(7, 40, generator=generator, dtype=torch.float64)  # (O, I)
    sums[2] = 0.0  # a sample with no input: every unit's set is empty
    weight[3] = -weight[3].abs()  # a unit with no positive contribution
    _check_against_definition(sums, weight, linear_contributions(sums, weight, 0, 7), theta, out_per_group=7)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_events_equal_the_definition_including_groups(groups: int) -> None:
    generator = torch.Generator().manual_seed(1)
    sums = torch.rand(5, 12, 9, generator=generator, dtype=torch.float64)  # (B, C, T) tap sums
    weight = torch.randn(8, 12 // groups, 9, generator=generator, dtype=torch.float64)  # (O, Cg, T)
    # a chunk of output units [2, 6): with 2 groups, units 2-3 read group 0's inputs and 4-5 group 1's
    contrib = conv_contributions(sums, weight, groups, 0, 8)[:, 2:6]
    _check_against_definition(sums, weight[2:6], contrib, 0.5, out_per_group=8 // groups, first=2)


def test_ties_wide_dynamic_range_and_crowded_bins() -> None:
    """Equal values, values far below the histogram's 8 octaves, and one bin holding most of a row."""
    rows = torch.tensor(
        [
            [2.0, 1.0, 1.0, 1.0, 0.0, -1.0, 1.0, 1.0],  # ties at the cutoff: all included
            [1.0, 1e-12, 1e-9, 3e-6, 2e-4, 0.5, 0.25, 1e-30],  # 30 orders of magnitude
            [1.0, 1.0 + 1e-9, 1.0 + 2e-9, 1.0 + 3e-9, 1.0 + 4e-9, 1.0 + 5e-9, 1.0 + 6e-9, 1.0 + 7e-9],
            [0.0] * 8,
        ],
        dtype=torch.float64,
    )
    ones = torch.ones(1, 8, dtype=torch.float64)  # C[b, o, j] = W[o, j] * 1: the rows themselves
    for theta in (0.3, 0.5, 0.6, 0.99, 1.0):
        _check_against_definition(ones, rows, linear_contributions(ones, rows, 0, 4), theta, out_per_group=4)


def test_float32_counts_match_the_torch_path_on_random_rows() -> None:
    """float32 rows: the kernel sums in float64, torch in float32; on random data the sets agree."""
    generator = torch.Generator().manual_seed(2)
    sums = torch.rand(16, 64, 9, generator=generator)
    weight = torch.randn(32, 64, 9, generator=generator)
    contrib = conv_contributions(sums.double(), weight.double(), 1, 0, 32)
    labels = _labels(16)
    counts = torch.zeros(3 * NUM_CLASSES, 32 * 64)
    path_kernels.effective_path_counts(
        path_kernels.tap_major(sums), path_kernels.tap_major(weight), 0, 32, 0.5, labels.rows, counts
    )
    expected = effective_path_events(contrib, 0.5).reshape(16, -1)
    torch.testing.assert_close(counts, _reference_counts(expected, labels), rtol=0, atol=0)


def test_js_pair_sums_equal_the_lookup_version(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(3)
    trials = 9
    counts = torch.randint(0, trials + 1, (3, 5, 700), generator=generator).float()  # (L, K, E)
    pairs = class_pairs(5, None, 0)
    fast = pair_separation(counts, pairs, "js", trials=trials)
    monkeypatch.setenv(path_kernels.DISABLE_ENV, "0")
    slow = pair_separation(counts, pairs, "js", trials=trials)
    by_probability = pair_separation(counts.double() / trials, pairs, "js")
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast, by_probability, rtol=1e-10, atol=1e-12)


def test_switch_off_with_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(path_kernels.DISABLE_ENV, "0")
    assert not path_kernels.available()
    assert not path_kernels.usable_for(torch.zeros(1))
    monkeypatch.setenv(path_kernels.DISABLE_ENV, "1")
    assert path_kernels.usable_for(torch.zeros(1))
    assert not path_kernels.usable_for(torch.zeros(1, dtype=torch.float16))


def _small_convnet() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, NUM_CLASSES),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.1, 0.1)
        net[1].running_var.uniform_(0.5, 1.5)
    return (
        Classifier(net, Normalize((0.5,) * 3, (0.25,) * 3), "small", num_classes=NUM_CLASSES).double().eval()
    )


@pytest.mark.parametrize(
    ("event", "separation"),
    [
        ("effective_path", "js"),
        ("effective_path", "naive_bayes"),
        ("neuron", "tv"),
        ("effective_path", "jaccard"),
    ],
)
def test_whole_metric_equals_the_torch_path(
    monkeypatch: pytest.MonkeyPatch, event: str, separation: str
) -> None:
    """Per-layer values and the model summary are the same with and without the kernels (float64)."""
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(48, 3, 8, 8, generator=generator, dtype=torch.float64)
    y = torch.arange(48) % NUM_CLASSES
    data = EvalSet(x=x, y=y, index=torch.arange(48))

    def measure() -> tuple[dict[str, float], list[dict[str, object]]]:
        ctx = EvalContext(model=_small_convnet(), data=data, num_classes=NUM_CLASSES, batch_size=20, seed=0)
        result = PathSeparation(event=event, separation=separation, permutations=3)(ctx)
        return result.scalars, result.per_layer

    fast_scalars, fast_layers = measure()
    monkeypatch.setenv(path_kernels.DISABLE_ENV, "0")
    slow_scalars, slow_layers = measure()
    assert fast_scalars.keys() == slow_scalars.keys()
    for key, value in fast_scalars.items():
        assert value == pytest.approx(slow_scalars[key], rel=1e-9, abs=1e-12, nan_ok=True) or (
            math.isnan(value) and math.isnan(slow_scalars[key])
        ), key
    assert [row["layer"] for row in fast_layers] == [row["layer"] for row in slow_layers]
    for fast, slow in zip(fast_layers, slow_layers):
        assert fast["raw"] == pytest.approx(slow["raw"], rel=1e-9, abs=1e-12)


def test_activation_separation_is_unaffected() -> None:
    """Activation events never go through the kernel; sharing a pass with path separation still works."""
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(32, 3, 8, 8, generator=generator, dtype=torch.float64)
    data = EvalSet(x=x, y=torch.arange(32) % NUM_CLASSES, index=torch.arange(32))
    ctx = EvalContext(model=_small_convnet(), data=data, num_classes=NUM_CLASSES, batch_size=16, seed=0)
    result = ActivationSeparation(permutations=3)(ctx)
    assert math.isfinite(result.scalars["raw"])
