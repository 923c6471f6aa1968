"""Spectral bounds: operator norms against dense SVDs, the composition rules, and that the bound bounds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import timm
import torch
from timm.models.vgg import VGG
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from robustdiag.metrics.bounds import (
    GELU_LIP,
    MISH_LIP,
    SILU_LIP,
    Chain,
    DenseBlockOp,
    LinearOp,
    PowerSettings,
    ResidualOp,
    SpectralBound,
    UnsupportedArchitecture,
    empirical_lambda,
    max_pool_overlap,
    network_ops,
    operator_norm,
    spectral_bound,
)
from robustdiag.metrics.fisher import FisherMetric, FisherShared
from robustdiag.metrics.fisher_linalg import dense_fisher
from robustdiag.models import Classifier, Normalize
from robustdiag.models.cifar import PreActResNet
from robustdiag.types import EvalContext, EvalSet, Metric

TIGHT = PowerSettings(max_iter=500, tol=1e-12)


def dense_norm(fn, shape: tuple[int, ...]) -> float:
    """σ_max of the linear map ``fn`` from its dense Jacobian (float64)."""
    x0 = torch.zeros(shape, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(shape)).reshape(-1), x0.reshape(-1))
    return float(torch.linalg.matrix_norm(J, 2))


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(1.0 + 0.5 * torch.randn(m.weight.shape, generator=g))  # some negative
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


def make_ctx(model: nn.Module, x: torch.Tensor, num_classes: int) -> EvalContext:
    data = EvalSet(x=x, y=torch.zeros(len(x), dtype=torch.int64), index=torch.arange(len(x)))
    return EvalContext(model=model, data=data, num_classes=num_classes, batch_size=8, seed=0)


# --- operator norms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conv", "size"),
    [
        (nn.Conv2d(2, 3, 3, padding=1), 6),
        (nn.Conv2d(2, 4, 3, stride=2, padding=1), 7),
        (nn.Conv2d(3, 2, 5, stride=2, padding=2, dilation=1), 8),
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), 6),
        (nn.Conv2d(2, 3, 1, stride=2), 5),
        (nn.Conv2d(3, 3, 7, stride=2, padding=3, bias=False), 9),
    ],
)
def test_conv_operator_norm_matches_the_dense_svd(conv: nn.Conv2d, size: int) -> None:
    """At the real input size, with stride/padding/dilation/groups: the norm of the actual operator."""
    torch.manual_seed(0)
    conv = conv.double()
    shape = (1, conv.in_channels, size, size)
    like = torch.zeros(shape, dtype=torch.float64)
    estimate, iters = operator_norm(conv, like, TIGHT)
    exact = dense_norm(lambda v: conv(v) - conv(torch.zeros_like(v)), shape)
    assert estimate == pytest.approx(exact, rel=1e-6) and iters >= 1


def test_merged_segment_folds_batchnorm_and_pooling() -> None:
    """Conv → BN(eval) → AvgPool is one operator: its norm is the composite's, not the product."""
    torch.manual_seed(0)
    seq = (
        randomise_bn(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.AvgPool2d(2)))
        .double()
        .eval()
    )
    chain = network_ops(seq)
    assert len(chain.ops) == 1 and isinstance(chain.ops[0], LinearOp)
    x = torch.rand(2, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        chain.run(x, TIGHT)
    exact = dense_norm(lambda v: seq(v) - seq(torch.zeros_like(v)), (1, 2, 6, 6))
    assert math.exp(chain.log_lip()) == pytest.approx(exact, rel=1e-6)
    product = 1.0
    for layer in seq:
        product *= dense_norm(
            lambda v, layer=layer: layer(v) - layer(torch.zeros_like(v)), (1, *_shape_into(seq, layer, x))
        )
    assert exact <= product * (1 + 1e-9)


def test_lone_batchnorm_and_linear_get_exact_norms() -> None:
    """BN(eval) alone is diag(γ/√(σ²+ε)); a Linear alone is ‖W‖₂: no iteration needed."""
    torch.manual_seed(0)
    seq = (
        randomise_bn(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4)))
        .double()
        .eval()
    )
    chain = network_ops(seq)
    chain.run(torch.rand(2, 3, 2, 2, dtype=torch.float64), TIGHT)
    bn, lin = seq[0], seq[3]
    rows = {r["type"]: r for r in chain.rows()}
    scale = (bn.weight.detach() / (bn.running_var + bn.eps).sqrt()).abs().max()
    assert rows["BatchNorm"]["norm"] == pytest.approx(float(scale)) and rows["BatchNorm"]["iterations"] == 0
    assert rows["Flatten+Linear"]["norm"] == pytest.approx(
        float(torch.linalg.matrix_norm(lin.weight.detach(), 2))
    )
    assert rows["Flatten+Linear"]["iterations"] == 0


def _shape_into(seq: nn.Sequential, target: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    h = x[:1]
    for layer in seq:
        if layer is target:
            return tuple(h.shape[1:])
        h = layer(h)
    raise AssertionError


def test_normalisation_contributes_inverse_std() -> None:
    torch.manual_seed(0)
    model = Classifier(
        nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), Normalize((0.5, 0.5, 0.5), (0.2, 0.4, 0.5)), "t"
    )
    model = model.double().eval()
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64)
    result = spectral_bound(model, x, settings=TIGHT)
    W = model.net[1].weight.detach()
    s_inv = (1 / model.normalize.std).expand(1, 3, 2, 2).reshape(-1)
    assert math.exp(result.log_lipschitz) == pytest.approx(
        float(torch.linalg.matrix_norm(W * s_inv, 2)), rel=1e-6
    )
    assert math.exp(result.log_lipschitz) <= float(torch.linalg.matrix_norm(W, 2)) / 0.2 * (1 + 1e-9)
    normalized = spectral_bound(model, x, input_space="normalized", settings=TIGHT)
    assert math.exp(normalized.log_lipschitz) == pytest.approx(
        float(torch.linalg.matrix_norm(W, 2)), rel=1e-9
    )


# --- composition rules -------------------------------------------------------------------------------------


def test_max_pool_overlap_factor_is_attained() -> None:
    """3×3/2 max-pool: an input shared by 4 windows moves 4 outputs, so the ℓ2 Lipschitz constant is √4 = 2."""
    assert max_pool_overlap(3, 2) == 2 and max_pool_overlap(2, 2) == 1 and max_pool_overlap(3, 1) == 3
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    y = x.clone()
    y[0, 0, 1, 1] = 1.0  # an odd position: inside 2 × 2 windows
    ratio = float((pool(y) - pool(x)).norm() / (y - x).norm())
    assert ratio == pytest.approx(2.0)
    chain = network_ops(nn.Sequential(pool))
    chain.run(x, TIGHT)
    assert math.exp(chain.log_lip()) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("act", "lip"),
    [
        (nn.GELU(), GELU_LIP),
        (nn.GELU(approximate="tanh"), GELU_LIP),
        (nn.SiLU(), SILU_LIP),
        (nn.Mish(), MISH_LIP),
        (nn.Hardswish(), 1.5),
        (nn.Sigmoid(), 0.25),
        (nn.Tanh(), 1.0),
        (nn.ELU(alpha=1.5), 1.5),
        (nn.LeakyReLU(0.2), 1.0),
    ],
)
def test_activation_constants_bound_the_derivative(act: nn.Module, lip: float) -> None:
    t = torch.linspace(-10, 10, 200001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(act(t).sum(), t)
    slope = float(grad.abs().max())
    assert slope <= lip + 1e-9 and slope >= 0.99 * lip


def test_dense_concatenation_rule_is_exact_for_a_linear_layer() -> None:
    """x ↦ [x, Wx] has norm √(1 + ‖W‖²)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 1).double()
    block = DenseBlockOp("d", [Chain("l", [LinearOp("conv", "Conv2d", conv)])])
    x = torch.rand(2, 2, 3, 3, dtype=torch.float64)
    block.run(x, TIGHT)
    exact = dense_norm(lambda v: torch.cat([v, conv(v) - conv(torch.zeros_like(v))], 1), (1, 2, 3, 3))
    assert math.exp(block.log_lip()) == pytest.approx(exact, rel=1e-6)


# --- the bound bounds --------------------------------------------------------------------------------------


def tiny_vgg() -> nn.Module:
    return VGG([4, "M", 8, "M"], num_classes=5, norm_layer=nn.BatchNorm2d, mlp_ratio=1 / 512)


FAMILIES = {
    "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.GELU(), nn.Linear(16, 5)), 4),
    "cnn": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
            nn.Conv2d(4, 4, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 5),
        ),
        8,
    ),
    "resnet": (lambda: timm.create_model("test_resnet", num_classes=5), 16),  # BasicBlock + Bottleneck
    "vgg": (tiny_vgg, 8),
    "densenet": (
        lambda: timm.create_model("densenet121", growth_rate=4, block_config=(2, 2), num_classes=5),
        16,
    ),
    "vit": (lambda: timm.create_model("test_vit", num_classes=5, img_size=8, patch_size=4), 8),
    "vit_layerscale": (lambda: timm.create_model("test_vit2", num_classes=5, img_size=8, patch_size=4), 8),
    "preact": (lambda: PreActResNet(widths=(4, 8), depths=(1, 1), num_classes=5), 8),
}


def jacobian_norms(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel([SDPBackend.MATH]):  # the only attention kernel with vmap rules
        J = torch.func.vmap(torch.func.jacrev(lambda xi: model(xi.unsqueeze(0)).squeeze(0)))(
            x
        )  # (B, K, C, H, W)
    return torch.linalg.matrix_norm(J.flatten(2), 2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bound_is_above_the_jacobian_norm_and_lambda(family: str) -> None:
    build, size = FAMILIES[family]
    torch.manual_seed(0)
    model = (
        Classifier(randomise_bn(build()), Normalize((0.4, 0.5, 0.6), (0.25, 0.2, 0.3)), family)
        .double()
        .eval()
    )
    x = torch.rand(3, 3, size, size, dtype=torch.float64)
    result = spectral_bound(model, x, settings=PowerSettings(max_iter=300, tol=1e-10))
    lip = math.exp(result.log_lipschitz)
    norms = jacobian_norms(model, x)
    assert bool((norms > 0).all()) and bool((norms <= lip).all())
    lam = torch.linalg.eigvalsh(dense_fisher(model, x))[:, -1]
    assert bool((lam <= result.bound).all())
    assert result.local == family.startswith("vit")
    assert result.rows and all({"layer", "type", "norm", "log10_norm"} <= set(r) for r in result.rows)


def test_resnet_uses_one_plus_branch_factors() -> None:
    """Identity-shortcut blocks contribute L_act·(1 + Π branch norms); projection blocks L_act·(L_b + L_s)."""
    torch.manual_seed(0)
    model = randomise_bn(timm.create_model("test_resnet", num_classes=5)).double().eval()
    chain = network_ops(model)
    with torch.no_grad():
        chain.run(torch.rand(2, 3, 16, 16, dtype=torch.float64), TIGHT)
    blocks = [op for stage in chain.ops if isinstance(stage, ResidualOp) for op in [stage]]
    assert len(blocks) == 4
    for block in blocks:
        branch = math.prod(math.exp(op.log_lip()) for op in block.branch.ops)
        short = 1.0 if block.shortcut is None else math.exp(block.shortcut.log_lip())
        assert math.exp(block.log_lip()) == pytest.approx(branch + short, rel=1e-12)  # ReLU after the sum: 1
    assert any(b.shortcut is None for b in blocks) and any(b.shortcut is not None for b in blocks)


def test_layernorm_floor_replaces_the_observed_sigma() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=5, img_size=8, patch_size=4).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    observed = spectral_bound(model, x)
    floored = spectral_bound(model, x, settings=PowerSettings(layernorm_sigma_floor=1e-3))
    assert floored.log_bound > observed.log_bound  # a small floor is a looser (input-independent) LN factor
    ln_rows = [r for r in floored.rows if r["type"] == "LayerNorm"]
    assert ln_rows and all(r["norm"] > 100 for r in ln_rows)


def test_unsupported_architecture_names_the_module_and_the_families() -> None:
    model = timm.create_model("test_efficientnet", num_classes=5).eval()
    with pytest.raises(UnsupportedArchitecture, match=r"Supported: .*timm resnet\*.*vgg.*vit"):
        spectral_bound(model, torch.rand(1, 3, 16, 16))


class SkipSequential(nn.Sequential):
    """Looks like a chain but adds a skip: the walk must refuse rather than under-bound."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + x.flatten(1)[:, :3]


def test_a_walk_that_does_not_reproduce_the_forward_is_refused() -> None:
    model = SkipSequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(UnsupportedArchitecture, match="does not reproduce"):
        spectral_bound(model, torch.rand(2, 3, 2, 2))


# --- the metric --------------------------------------------------------------------------------------------


def test_metric_reports_bound_empirical_and_ratio() -> None:
    torch.manual_seed(0)
    model = Classifier(
        randomise_bn(timm.create_model("test_resnet", num_classes=5)), Normalize((0.5,) * 3, (0.25,) * 3), "r"
    ).eval()
    x = torch.rand(6, 3, 16, 16)
    metric = SpectralBound(n_samples=4)
    assert isinstance(metric, Metric) and metric.name == "spectral_bound" and not metric.under_shift
    result = metric(make_ctx(model, x, 5))
    s = result.scalars
    assert {
        "bound",
        "log10_bound",
        "log10_lipschitz",
        "empirical_mean",
        "ratio",
        "log10_ratio",
        "violations",
    } <= set(s)
    assert s["violations"] == 0 and s["local"] == 0 and s["n"] == 4
    assert s["ratio"] == pytest.approx(s["bound"] / s["empirical_mean"], rel=1e-9)
    assert s["log10_bound"] == pytest.approx(math.log10(s["bound"]))
    assert s["log10_bound"] == pytest.approx(math.log10(0.5) + 2 * s["log10_lipschitz"])
    assert result.per_layer and result.per_layer[0]["layer"].startswith("normalize")
    # the empirical λ is reused from metric=fisher when it ran first in the same input space
    ctx = make_ctx(model, x, 5)
    fisher = FisherMetric(estimator="exact", n_samples=4)(ctx)
    shared = ctx.cache[FisherShared]
    assert isinstance(shared, FisherShared)
    ctx.cache[FisherShared] = dataclasses.replace(shared, lam=shared.lam * 2)  # marker: proves reuse
    reused = SpectralBound(n_samples=4)(ctx).scalars["empirical_mean"]
    assert reused == pytest.approx(2 * fisher.scalars["mean"]) and s["empirical_mean"] == pytest.approx(
        fisher.scalars["mean"]
    )


def test_metric_validates_keys() -> None:
    with pytest.raises(ValueError, match="input_space"):
        SpectralBound(input_space="logits")
    with pytest.raises(ValueError, match="layernorm_sigma_floor"):
        SpectralBound(layernorm_sigma_floor=0.0)


def test_huge_bounds_stay_finite_in_log_space() -> None:
    """A 60-layer chain of norm-10 layers: the bound overflows float64 but log10_bound is exact."""
    layers: list[nn.Module] = []
    for _ in range(200):
        lin = nn.Linear(4, 4, bias=False)
        lin.weight.data = 30.0 * torch.eye(4)
        layers += [lin, nn.ReLU()]
    model = nn.Sequential(nn.Flatten(), *layers[:-1]).double().eval()
    result = spectral_bound(model, torch.rand(2, 1, 2, 2, dtype=torch.float64))
    assert result.bound == math.inf
    assert result.log10_bound == pytest.approx(math.log10(0.5) + 2 * 200 * math.log10(30.0))


def test_ranking_of_small_random_families_at_32px() -> None:
    """The ranking the bounds imply (recorded in conf/metric/spectral_bound.yaml): every bound bounds."""
    torch.manual_seed(0)
    models = {
        "vgg": VGG(
            [8, "M", 16, "M", 32, 32, "M", 32, 32, "M", 32, 32, "M"],
            num_classes=10,
            norm_layer=nn.BatchNorm2d,
            mlp_ratio=1 / 128,
        ),
        "resnet": timm.create_model(
            "resnet18", num_classes=10, channels=(8, 16, 32, 32), stem_width=8, zero_init_last=False
        ),
        "densenet": timm.create_model("densenet121", num_classes=10, growth_rate=4),
        "vit": timm.create_model(
            "vit_tiny_patch16_224",
            num_classes=10,
            img_size=32,
            patch_size=8,
            depth=4,
            embed_dim=48,
            num_heads=3,
        ),
    }
    x = torch.rand(2, 3, 32, 32)
    bounds = {}
    for name, model in models.items():
        model.eval()
        result = spectral_bound(model, x, settings=PowerSettings(max_iter=50, tol=1e-3))
        lam = empirical_lambda(model, x, input_space="pixel", batch_size=2, seed=0)
        bounds[name] = result.log10_bound
        assert math.isfinite(result.log10_bound) and bool((lam <= result.bound).all())
    ranking = sorted(bounds, key=bounds.get, reverse=True)  # largest bound = least robust first
    assert ranking[0] == "densenet"  # the concatenation product dominates, as the paper's ranking says
