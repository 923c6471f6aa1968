"""Input-Fisher λ_max: every estimator against the dense F from jacrev, closed forms, the metric, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from robustdiag.metrics.fisher import FisherMetric, FisherShared, auroc
from robustdiag.metrics.fisher_linalg import (
    blackbox,
    class_gradients,
    dense_fisher,
    fisher_gram,
    lambda_max_exact,
    lanczos,
    power_iteration,
    srp_maxrq,
    trace_exact,
    trace_hutchinson,
)
from robustdiag.models import Classifier, Normalize
from robustdiag.types import EvalContext, EvalSet, Metric

REL = 1e-5  # issue 4: exact paths within 1e-5 of the dense λ_max in float64


def mlp(in_dim: int = 12, classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return (
        nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 16), nn.Tanh(), nn.Linear(16, classes)).double().eval()
    )


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10, channels=(8, 8, 8, 8), stem_width=8).double().eval()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=6, img_size=8, patch_size=4).double().eval()


MODELS = {
    "mlp": (mlp, (2, 1, 2, 6)),  # D = 12
    "resnet": (tiny_resnet, (2, 3, 8, 8)),
    "vit": (tiny_vit, (2, 3, 8, 8)),
}


def inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense_lambda(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    Fd = dense_fisher(model, x)  # (B, D, D)
    return torch.linalg.eigvalsh(Fd)[:, -1], Fd


def make_ctx(model: nn.Module, x: torch.Tensor, num_classes: int, **kwargs: object) -> EvalContext:
    y = torch.zeros(len(x), dtype=torch.int64)
    data = EvalSet(x=x, y=y, index=torch.arange(len(x)))
    return EvalContext(model=model, data=data, num_classes=num_classes, batch_size=4, seed=0, **kwargs)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


# --- identities and the exact paths ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_matches_dense_jacrev(name: str) -> None:
    build, shape = MODELS[name]
    model, x = build(), inputs(shape)
    lam_dense, Fd = dense_lambda(model, x)
    log_p, G = class_gradients(model, x)
    p = log_p.exp()
    assert rel_err(lambda_max_exact(p, G), lam_dense) <= REL
    assert rel_err(trace_exact(p, G), Fd.diagonal(dim1=1, dim2=2).sum(-1)) <= REL
    # G Gᵀ in class space has F's non-zero spectrum: the top K eigenvalues agree
    K = p.shape[1]
    top_dense = torch.linalg.eigvalsh(Fd)[:, -K:]
    top_gram = torch.linalg.eigvalsh(fisher_gram(p, G))
    assert torch.allclose(top_gram, top_dense, atol=1e-10 * float(top_dense.max()))


def test_three_forms_of_the_fisher_agree() -> None:
    """Σ p_k g_k g_kᵀ = Jᵀ(diag p − ppᵀ)J = Cov_{y∼p}(∇ₓ f_y) on a tiny ResNet."""
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    log_p, G = class_gradients(model, x)
    p = log_p.exp()
    form1 = G.transpose(1, 2) @ (p.unsqueeze(-1) * G)  # Σ p_k g_k g_kᵀ
    J = torch.func.vmap(torch.func.jacrev(lambda xi: model(xi.unsqueeze(0)).squeeze(0)))(x).flatten(
        2
    )  # (B, K, D)
    form2 = J.transpose(1, 2) @ (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)) @ J
    mean = (p.unsqueeze(-1) * J).sum(1, keepdim=True)  # E_y ∇f_y
    centred = J - mean
    form3 = centred.transpose(1, 2) @ (p.unsqueeze(-1) * centred)  # Cov_{y∼p}
    scale = float(form1.abs().max())
    assert torch.allclose(form1, form2, atol=1e-12 * scale)
    assert torch.allclose(form1, form3, atol=1e-12 * scale)
    assert torch.allclose(form1, dense_fisher(model, x), atol=1e-12 * scale)


def test_linear_softmax_closed_form() -> None:
    """f = Wx + b: F = Wᵀ(diag p − ppᵀ)W exactly, and every white-box estimator finds its λ_max."""
    torch.manual_seed(3)
    K, D = 4, 6
    linear = nn.Linear(D, K).double()
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = inputs((3, 1, 2, 3))
    W = linear.weight.detach()
    p = model(x).softmax(-1).detach()
    closed = W.T @ (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)) @ W  # (B, D, D)
    lam_closed = torch.linalg.eigvalsh(closed)[:, -1]
    log_p, G = class_gradients(model, x)
    assert rel_err(lambda_max_exact(log_p.exp(), G), lam_closed) <= REL
    res = lanczos(model, x, generator=torch.Generator().manual_seed(0))
    assert rel_err(res.lam, lam_closed) <= REL
    assert torch.allclose(dense_fisher(model, x), closed, atol=1e-14)


# --- iterative and randomised estimators -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("jvp", ["forward", "double_backward"])
def test_lanczos_matches_exact(name: str, jvp: str) -> None:
    build, shape = MODELS[name]
    model, x = build(), inputs(shape)
    lam_dense, _ = dense_lambda(model, x)
    res = lanczos(model, x, generator=torch.Generator().manual_seed(0), tol=1e-10, jvp=jvp)
    assert bool(res.converged.all())
    assert rel_err(res.lam, lam_dense) <= REL
    assert int(res.iterations.max()) <= res.p.shape[1]  # Krylov space of dimension ≤ K


def test_lanczos_reports_iterations_under_a_cap() -> None:
    model, x = tiny_resnet(), inputs((3, 3, 8, 8))
    res = lanczos(model, x, generator=torch.Generator().manual_seed(0), tol=1e-14, max_iter=2)
    assert int(res.iterations.max()) == 2 and not bool(res.converged.any())
    exact = lambda_max_exact(*(lambda lp, G: (lp.exp(), G))(*class_gradients(model, x)))
    assert bool((res.lam <= exact * (1 + 1e-12)).all())  # Ritz values approach from below


def test_power_iteration_converges_to_exact() -> None:
    model, x = tiny_resnet(), inputs((4, 3, 8, 8))
    log_p, G = class_gradients(model, x)
    p = log_p.exp()
    exact = lambda_max_exact(p, G)
    lam, iters, converged = power_iteration(p, G, tol=1e-13, max_iter=5000)
    assert bool(converged.all()) and rel_err(lam, exact) <= REL
    lam_paper, iters_paper, _ = power_iteration(p, G)  # the paper's settings: a lower bound
    assert bool((lam_paper <= exact * (1 + 1e-12)).all()) and int(iters_paper.max()) <= 100
    assert rel_err(lam_paper, exact) <= 1e-2


def test_srp_maxrq_is_a_lower_bound() -> None:
    model, x = tiny_resnet(), inputs((4, 3, 8, 8))
    log_p, G = class_gradients(model, x)
    p = log_p.exp()
    exact = lambda_max_exact(p, G)
    for probes in ("gaussian", "rademacher"):
        lam = srp_maxrq(p, G, generator=torch.Generator().manual_seed(0), probes=probes)
        assert bool((lam <= exact * (1 + 1e-12)).all()) and bool((lam > 0).all())


def test_hutchinson_trace_is_unbiased_within_its_standard_error() -> None:
    model, x = mlp(), inputs((6, 1, 2, 6))
    log_p, G = class_gradients(model, x)
    exact = trace_exact(log_p.exp(), G)
    hutch = trace_hutchinson(model, x, n_probes=400, generator=torch.Generator().manual_seed(0))
    z = (hutch.estimate - exact) / hutch.se
    assert bool((z.abs() < 4.0).all()), z  # 4 standard errors: a false alarm has probability ~1e-4
    assert bool((hutch.se < 0.2 * exact).all())  # and the standard error is informative
    assert bool(((hutch.ci_low <= hutch.estimate) & (hutch.estimate <= hutch.ci_high)).all())


def test_hutchinson_intervals_are_calibrated() -> None:
    """Over 10 probe seeds x 200 samples of a small CNN (K = 10, D = 192), the 95% intervals at 16 probes
    miss the exact trace about 5 % of the time; the old sample-variance normal interval missed ~9 %."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    ).double().eval()  # fmt: skip
    x = torch.rand(200, 3, 8, 8, dtype=torch.float64)
    log_p, G = class_gradients(model, x)
    exact = trace_exact(log_p.exp(), G)
    misses, z = [], []
    for seed in range(10):
        hutch = trace_hutchinson(model, x, n_probes=16, generator=torch.Generator().manual_seed(seed))
        misses.append(((exact < hutch.ci_low) | (exact > hutch.ci_high)).double())
        z.append((hutch.estimate - exact) / hutch.se)
    miss = float(torch.cat(misses).mean())
    zs = torch.cat(z)
    assert 0.03 <= miss <= 0.075, miss
    assert abs(float(zs.mean())) < 0.3 and 0.9 < float(zs.std()) < 1.15
    assert float((zs.abs() > 3).double().mean()) < 0.02


def test_blackbox_matches_white_box_when_directions_span_the_input() -> None:
    """D = 12 ≤ m = 24 directions: the Rayleigh–Ritz estimate recovers λ_max from forward queries alone."""
    model, x = mlp(), inputs((3, 1, 2, 6))
    lam_dense, Fd = dense_lambda(model, x)
    res = blackbox(model, x, generator=torch.Generator().manual_seed(0), n_directions=24)
    assert rel_err(res.rayleigh_ritz, lam_dense) <= 1e-5  # finite-difference error O(h²)
    assert bool((res.max_quadratic <= lam_dense * (1 + 1e-5)).all())  # a max over directions undershoots
    assert res.queries == 1 + 2 * 12  # an orthonormal frame has at most D = 12 directions
    # with a full orthonormal frame, d · mean qᵀFq is the trace exactly (up to finite differences)
    assert rel_err(res.trace, Fd.diagonal(dim1=1, dim2=2).sum(-1)) <= 1e-5


@pytest.mark.parametrize("directions", [2, 5, 9, 11, 12])
def test_blackbox_rayleigh_ritz_never_exceeds_lambda_max(directions: int) -> None:
    """Before: non-orthonormal directions and pinv(VVᵀ) (condition ~1e7) overshot λ_max by up to 35%."""
    model, x = mlp(), inputs((6, 1, 2, 6))
    lam_dense, _ = dense_lambda(model, x)
    for seed in range(5):
        res = blackbox(model, x, generator=torch.Generator().manual_seed(seed), n_directions=directions)
        assert bool((res.rayleigh_ritz <= lam_dense * (1 + 1e-6)).all())
        assert bool((res.max_quadratic <= res.rayleigh_ritz * (1 + 1e-9)).all())


def test_blackbox_on_a_subspace_is_below_white_box() -> None:
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    lam_dense, _ = dense_lambda(model, x)
    res = blackbox(model, x, generator=torch.Generator().manual_seed(0), n_directions=20)
    assert bool((res.max_quadratic <= res.rayleigh_ritz * (1 + 1e-6)).all())
    assert bool((res.rayleigh_ritz <= lam_dense * (1 + 1e-5)).all())


def test_kl_is_half_the_fisher_quadratic_form_for_small_perturbations() -> None:
    model, x = tiny_resnet(), inputs((3, 3, 8, 8))
    _, Fd = dense_lambda(model, x)
    evals, evecs = torch.linalg.eigh(Fd)
    log_p = F.log_softmax(model(x), -1).detach()
    for direction in (evecs[..., -1], torch.randn(x.shape[0], x[0].numel(), dtype=x.dtype)):
        delta = 1e-3 * direction / direction.norm(dim=-1, keepdim=True)  # (B, D)
        log_q = F.log_softmax(model(x + delta.view_as(x)), -1).detach()
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        quad = 0.5 * torch.einsum("bd,bde,be->b", delta, Fd, delta)
        assert rel_err(kl, quad) <= 1e-2
    # along the top eigenvector KL ≈ ½ ε² λ_max
    delta = 1e-3 * evecs[..., -1]
    log_q = F.log_softmax(model(x + delta.view_as(x)), -1).detach()
    kl_top = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert rel_err(kl_top, 0.5 * 1e-6 * evals[:, -1]) <= 1e-2


def test_normalized_input_space_is_the_pixel_fisher_rescaled() -> None:
    """F_pixel = S⁻¹ F_normalized S⁻¹ with S = diag(std): check dense, and that the metric uses the right one."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 5))
    model = Classifier(net, Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.25)), name="tiny").double().eval()
    x = inputs((2, 3, 4, 4))
    F_pix = dense_fisher(model, x)
    F_norm = dense_fisher(model.net, model.normalize(x).detach())
    s_inv = (1.0 / model.normalize.std).expand(1, 3, 4, 4).reshape(-1)  # (D,)
    assert torch.allclose(F_pix, s_inv[:, None] * F_norm * s_inv[None, :], rtol=1e-10, atol=1e-14)
    for space, Fd in (("pixel", F_pix), ("normalized", F_norm)):
        result = FisherMetric(estimator="exact", input_space=space)(make_ctx(model, x, 5))
        assert rel_err(torch.from_numpy(result.per_sample["lambda"]), torch.linalg.eigvalsh(Fd)[:, -1]) <= REL


def test_normalized_input_space_needs_a_classifier() -> None:
    with pytest.raises(ValueError, match="normalize"):
        FisherMetric(input_space="normalized")(make_ctx(mlp(), inputs((2, 1, 2, 6)), 5))


# --- the metric --------------------------------------------------------------------------------------------


def test_metric_follows_the_protocol_and_validates_keys() -> None:
    metric = FisherMetric()
    assert isinstance(metric, Metric) and metric.name == "fisher" and metric.under_shift is False
    assert FisherMetric(under_shift=True).under_shift
    with pytest.raises(ValueError, match=r"estimator='hutch'.*exact"):
        FisherMetric(estimator="hutch")
    with pytest.raises(ValueError, match="input_space"):
        FisherMetric(input_space="logit")
    with pytest.raises(ValueError, match="n_samples"):
        FisherMetric(n_samples=0)


@pytest.mark.parametrize("estimator", ["exact", "lanczos", "power", "srp_maxrq", "trace", "blackbox", "auto"])
def test_every_estimator_runs_through_the_metric(estimator: str) -> None:
    model, x = tiny_resnet(), inputs((6, 3, 8, 8))
    lam_dense, Fd = dense_lambda(model, x[:5])
    ctx = make_ctx(model, x, 10)
    result = FisherMetric(estimator=estimator, n_samples=5, blackbox_directions=8, trace_probes=4)(ctx)
    lam = torch.from_numpy(result.per_sample["lambda"])
    assert lam.shape == (6,) and math.isnan(float(lam[5]))  # per-sample columns have length N
    lam = lam[:5]
    trace_dense = Fd.diagonal(dim1=1, dim2=2).sum(-1)
    if estimator in ("exact", "lanczos", "power", "auto"):
        assert rel_err(lam, lam_dense) <= (1e-3 if estimator == "power" else REL)
    elif estimator == "trace":
        assert rel_err(lam, trace_dense) <= REL and bool((lam >= lam_dense).all())  # upper bound
    else:  # srp_maxrq, blackbox: lower bounds
        assert bool((lam <= lam_dense * (1 + 1e-4)).all())
    s = result.scalars
    assert s["mean"] == pytest.approx(float(lam.mean()))
    assert s["median"] == pytest.approx(float(lam.median()))
    assert s["max"] == pytest.approx(float(lam.max()))
    assert s["inv_mean"] == pytest.approx(1 / s["mean"])
    assert s["n"] == 5 and s["n_flagged"] == 0
    assert s["p90"] == pytest.approx(float(torch.quantile(lam, 0.9)))
    if estimator != "blackbox":
        tol = 0.5 if estimator == "lanczos" else REL  # lanczos reports a 4-probe Hutchinson trace
        assert s["trace_mean"] == pytest.approx(float(trace_dense.mean()), rel=tol)
    shared = ctx.cache[FisherShared]
    assert isinstance(shared, FisherShared) and torch.allclose(shared.lam, lam)
    assert shared.estimator == ("exact" if estimator == "auto" else estimator)
    assert set(result.per_sample) >= {"lambda", "trace", "flag"}
    if estimator in ("lanczos", "power"):
        assert {"iterations_mean", "converged_frac", "tol", "max_iter"} <= set(s)
    if estimator == "blackbox":
        assert s["queries"] == 1 + 2 * 8 and "bb_max_mean" in s
    if estimator == "trace":
        assert {"hutchinson_mean", "hutchinson_se_mean"} <= set(s)


def test_metric_uses_the_first_n_samples_in_batches() -> None:
    model, x = tiny_resnet(), inputs((7, 3, 8, 8))
    full = FisherMetric(estimator="exact", n_samples=5, batch_size=2)(make_ctx(model, x, 10))
    one_go = FisherMetric(estimator="exact", n_samples=5, batch_size=64)(make_ctx(model, x[:5], 10))
    assert np.allclose(full.per_sample["lambda"][:5], one_go.per_sample["lambda"], rtol=1e-12)


def test_float32_model_and_data_work() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10).eval()
    x = torch.rand(4, 3, 16, 16)
    result = FisherMetric(estimator="auto")(make_ctx(model, x, 10))
    lanc = FisherMetric(estimator="lanczos", trace_probes=2)(make_ctx(model, x, 10))
    assert np.allclose(result.per_sample["lambda"], lanc.per_sample["lambda"], rtol=1e-3)
    assert result.scalars["n_flagged"] == 0 and result.scalars["mean"] > 0


def test_auroc_of_lambda_for_fooled_samples() -> None:
    model, x = tiny_resnet(), inputs((8, 3, 8, 8))
    base = FisherMetric(estimator="exact")(make_ctx(model, x, 10))
    lam = base.per_sample["lambda"]
    fooled = torch.from_numpy(lam > np.median(lam))  # perfectly predicted by λ
    ctx = make_ctx(
        model, x, 10, attack_fooled={"pgd_linf": fooled, "none_fooled": torch.zeros(8, dtype=torch.bool)}
    )
    result = FisherMetric(estimator="exact")(ctx)
    assert result.scalars["auroc_fooled/pgd_linf"] == pytest.approx(1.0)
    assert math.isnan(result.scalars["auroc_fooled/none_fooled"])


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(auroc(scores, np.ones(200, dtype=bool)))


# --- bad input ---------------------------------------------------------------------------------------------


def test_exact_refuses_a_gradient_matrix_over_the_budget() -> None:
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    metric = FisherMetric(estimator="exact", memory_budget_gb=1e-6)  # ~1 KiB; G needs 10 × 192 × 8 B
    with pytest.raises(MemoryError, match=r"estimator=lanczos.*memory_budget_gb"):
        metric(make_ctx(model, x, 10))


def test_auto_switches_to_lanczos_over_the_budget_or_class_limit(caplog: pytest.LogCaptureFixture) -> None:
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    for kwargs in ({"memory_budget_gb": 1e-6}, {"max_exact_classes": 5}):
        ctx = make_ctx(model, x, 10)
        with caplog.at_level("INFO", logger="robustdiag.metrics.fisher"):
            result = FisherMetric(estimator="auto", trace_probes=2, **kwargs)(ctx)
        shared = ctx.cache[FisherShared]
        assert (
            isinstance(shared, FisherShared)
            and shared.estimator == "lanczos"
            and "chose lanczos" in caplog.text
        )
        assert rel_err(torch.from_numpy(result.per_sample["lambda"]), dense_lambda(model, x)[0]) <= REL


def test_chunks_respect_the_memory_budget() -> None:
    model, x = tiny_resnet(), inputs((5, 3, 8, 8))
    per_sample_gb = 10 * 192 * 8 / 2**30
    metric = FisherMetric(estimator="exact", memory_budget_gb=2.5 * per_sample_gb, batch_size=64)
    estimator, chunk, batch = metric._plan(x, make_ctx(model, x, 10))
    assert (estimator, chunk, batch) == ("exact", 2, 64)
    result = metric(make_ctx(model, x, 10))
    assert rel_err(torch.from_numpy(result.per_sample["lambda"]), dense_lambda(model, x)[0]) <= REL


class NaNOnSecond(nn.Module):
    """An MLP whose logits are NaN where the first pixel is exactly 0 (a non-finite forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return torch.where(x.flatten(1)[:, :1] == 0, float("nan"), out)


class InfGradient(nn.Module):
    """Finite logits but an infinite input gradient where the first pixel is exactly 0 (√ at 0; NaN below 0,
    which is what the black-box estimator's x − hv queries hit)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + x.flatten(1)[:, :1].sqrt()


@pytest.mark.parametrize("estimator", ["exact", "lanczos", "power", "trace", "blackbox"])
@pytest.mark.parametrize("module", [NaNOnSecond, InfGradient])
def test_non_finite_samples_are_flagged_not_averaged(estimator: str, module: type[nn.Module]) -> None:
    model = module().double().eval()
    x = inputs((4, 1, 2, 6))
    x[1, 0, 0, 0] = 0.0  # sample 1: NaN logits (NaNOnSecond) or an infinite gradient (InfGradient)
    clean = FisherMetric(estimator="exact")(make_ctx(mlp(), x, 5)).per_sample["lambda"]
    with pytest.warns(UserWarning, match="1 of 4 samples"):
        result = FisherMetric(estimator=estimator, blackbox_directions=16, trace_probes=2)(
            make_ctx(model, x, 5)
        )
    assert list(result.per_sample["flag"]) == [0.0, 1.0, 0.0, 0.0]
    assert math.isnan(result.per_sample["lambda"][1])
    assert result.scalars["n_flagged"] == 1 and math.isfinite(result.scalars["mean"])
    if estimator in ("exact", "lanczos", "power") and module is NaNOnSecond:
        keep = [0, 2, 3]
        assert result.scalars["mean"] == pytest.approx(float(np.mean(clean[keep])), rel=1e-3)


def test_underflowing_probabilities_stay_finite() -> None:
    """Logits 1000 apart: p underflows to exactly 0 for most classes; log_softmax keeps every gradient finite."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 5).double()
    linear.weight.data *= 2000.0
    model = nn.Sequential(nn.Flatten(), linear).eval()
    x = inputs((3, 1, 2, 3))
    log_p, G = class_gradients(model, x)
    assert bool((log_p.exp() == 0).any())
    assert bool(torch.isfinite(G).all())
    result = FisherMetric(estimator="exact")(make_ctx(model, x, 5))
    assert result.scalars["n_flagged"] == 0 and np.isfinite(result.per_sample["lambda"]).all()


def test_train_mode_is_switched_to_eval_with_a_warning_and_restored() -> None:
    model, x = tiny_resnet(), inputs((4, 3, 8, 8))
    expected = FisherMetric(estimator="exact")(make_ctx(model, x, 10)).per_sample["lambda"]
    model.train()
    with pytest.warns(UserWarning, match="train mode"):
        result = FisherMetric(estimator="exact")(make_ctx(model, x, 10))
    assert model.training and all(m.training for m in model.modules())
    assert np.allclose(result.per_sample["lambda"], expected, rtol=1e-12)


def test_eval_mode_model_raises_no_warning() -> None:
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FisherMetric(estimator="exact")(make_ctx(model, x, 10))


def test_inputs_made_under_inference_mode_work() -> None:
    model = tiny_resnet()
    with torch.inference_mode():
        x = inputs((2, 3, 8, 8)).clone()
    assert x.is_inference()
    result = FisherMetric(estimator="exact")(make_ctx(model, x, 10))
    assert rel_err(torch.from_numpy(result.per_sample["lambda"]), dense_lambda(model, x.clone())[0]) <= REL


def test_zero_trace_probes_skip_the_hutchinson_trace() -> None:
    model, x = tiny_resnet(), inputs((2, 3, 8, 8))
    result = FisherMetric(estimator="lanczos", trace_probes=0)(make_ctx(model, x, 10))
    assert math.isnan(result.scalars["trace_mean"]) and math.isfinite(result.scalars["mean"])
    with pytest.raises(ValueError, match="trace_probes"):
        FisherMetric(trace_probes=-1)


def test_double_backward_jvps_fall_back_to_forward_mode_on_hard_activations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Hardswish(), nn.Linear(16, 16), nn.Hardsigmoid(),
                          nn.Linear(16, 5)).double().eval()  # fmt: skip
    x = inputs((4, 1, 2, 6))
    forward = FisherMetric(estimator="lanczos", jvp="forward", trace_probes=4)(make_ctx(model, x, 5))
    with pytest.warns(UserWarning, match="jvp=double_backward is not available for this model"):
        fallback = FisherMetric(estimator="lanczos", jvp="double_backward", trace_probes=4)(
            make_ctx(model, x, 5)
        )
    assert fallback.scalars["mean"] == pytest.approx(forward.scalars["mean"], rel=1e-9)
