"""metric=baselines and metric=fisher_checks against dense and analytic answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustdiag.metrics.baselines import Baselines, clever_score, lips_score, logit_baselines
from robustdiag.metrics.fisher_checks import (
    FisherChecks,
    identity_errors,
    kl_relative_errors,
    top_eigenvector,
)
from robustdiag.metrics.fisher_linalg import dense_fisher
from robustdiag.types import EvalContext, EvalSet


def tiny_model(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, classes)).eval()


def context(model: nn.Module, n: int = 16) -> EvalContext:
    torch.manual_seed(1)
    x = torch.rand(n, 3, 2, 2)
    data = EvalSet(x=x, y=torch.randint(0, 4, (n,)), index=torch.arange(n))
    return EvalContext(model=model, data=data, num_classes=4, batch_size=5, seed=0)


def test_logit_baselines_on_known_logits() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = logit_baselines(logits)
    p = torch.softmax(logits.double(), -1)
    assert out["msp"].tolist() == pytest.approx((1 - p.max(-1).values).tolist())
    assert out["margin"].tolist() == pytest.approx([-2.0, 0.0])
    assert out["entropy"][1].item() == pytest.approx(math.log(3))
    assert out["entropy"][0] < out["entropy"][1]  # confident -> lower entropy, oriented like the others


def test_lips_equals_the_largest_probability_gradient_norm() -> None:
    model = tiny_model().double()
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)

    def probs(xi: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(xi.unsqueeze(0)), -1).squeeze(0)

    J = torch.stack([torch.autograd.functional.jacobian(probs, xi).reshape(4, -1) for xi in x])  # (B, K, D)
    assert lips_score(model, x).tolist() == pytest.approx(J.norm(dim=-1).amax(-1).tolist(), rel=1e-9)


def test_clever_is_minus_margin_over_the_dual_norm_of_its_gradient_for_a_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double().eval()
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    z = model(x)
    top2 = z.topk(2, -1).indices
    W = model[1].weight
    margin = z.gather(1, top2[:, :1]).squeeze(1) - z.gather(1, top2[:, 1:]).squeeze(1)
    lipschitz = (W[top2[:, 0]] - W[top2[:, 1]]).abs().sum(-1)  # constant gradient: exact for a linear model
    generator = torch.Generator().manual_seed(0)
    score = clever_score(model, x, eps=8 / 255, points=3, generator=generator)
    assert score.tolist() == pytest.approx((-margin / lipschitz).tolist(), rel=1e-9)


def test_baselines_metric_columns_roles_and_padding() -> None:
    ctx = context(tiny_model())
    result = Baselines(n_samples=10, clever_points=2)(ctx)
    assert set(result.per_sample) == {"msp", "margin", "entropy", "lips", "clever"}
    assert all(len(v) == 16 for v in result.per_sample.values())
    assert math.isnan(result.per_sample["lips"][12]) and not math.isnan(result.per_sample["msp"][12])
    assert Baselines().roles.per_sample_baselines == ("msp", "margin", "entropy", "lips", "clever")
    assert result.scalars["n"] == 10 and result.scalars["lips_seconds"] >= 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clever_eps": 8}, "pixel units"),
        ({"n_samples": 0}, "n_samples"),
        ({"clever_points": -1}, "clever_points"),
    ],
)
def test_baselines_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Baselines(**kwargs)


def test_fisher_identity_holds_to_float64_round_off() -> None:
    errors = identity_errors(tiny_model(), torch.rand(3, 3, 2, 2), dense_max_dim=4096)
    assert float(errors.max()) < 1e-12
    gradient_level = identity_errors(tiny_model(), torch.rand(3, 3, 2, 2), dense_max_dim=4)
    assert float(gradient_level.max()) < 1e-12


def test_top_eigenvector_matches_the_dense_fisher() -> None:
    from robustdiag.metrics.fisher_linalg import class_gradients

    model = tiny_model().double()
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64)
    log_p, G = class_gradients(model, x)
    lam, v = top_eigenvector(log_p.exp(), G)
    F = dense_fisher(model, x)  # (B, D, D)
    for b in range(2):
        assert (F[b] @ v[b]).tolist() == pytest.approx((lam[b] * v[b]).tolist(), abs=1e-10)


def test_kl_matches_the_quadratic_form_for_small_perturbations() -> None:
    from robustdiag.metrics.fisher_linalg import class_gradients

    model = tiny_model().double()
    x = torch.rand(4, 3, 2, 2, dtype=torch.float64)
    log_p, G = class_gradients(model, x)
    delta = 1e-4 * torch.randn_like(x)
    errors, kl = kl_relative_errors(model, x, delta, log_p.exp(), G)
    assert float(errors.max()) < 1e-3 and bool((kl > 0).all())


def test_fisher_checks_metric_scalars() -> None:
    ctx = context(tiny_model())
    result = FisherChecks(n_samples=8, identity_samples=2)(ctx)
    s = result.scalars
    assert s["identity_rel_err_max"] < 1e-12
    assert s["fidelity_power_ratio_median"] == pytest.approx(1.0, rel=1e-4)
    assert s["fidelity_lanczos_ratio_median"] == pytest.approx(1.0, rel=1e-4)
    assert s["fidelity_srp_maxrq_ratio_median"] <= 1.0 + 1e-6  # a lower bound
    assert s["fidelity_trace_ratio_median"] >= 1.0 - 1e-6  # an upper bound
    assert s["kl_top_over_random_e8"] > 1.0  # the top eigenvector is the most sensitive direction
    assert s["kl_random_e1_rel_err_median"] < s["kl_random_e8_rel_err_median"]
    assert FisherChecks().roles.diagnostics == ()  # checks are never analysed as diagnostics


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kl_eps": [8]}, "pixel units"),
        ({"kl_eps": [0.01, 0.01]}, "distinct"),
        ({"estimators": ["exact"]}, "valid values"),
        ({"estimators": ["power", "power"]}, "twice"),
    ],
)
def test_fisher_checks_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FisherChecks(**kwargs)
