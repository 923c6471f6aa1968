"""Closed-form upper bounds on λ_max(F(x)) from layer operator norms (``metric=spectral_bound``, DESIGN §4.4).

λ_max(F) ≤ ‖diag p − ppᵀ‖₂ ‖J‖₂² ≤ ½ ‖J‖₂², because uᵀ(diag p − ppᵀ)u = Var_{y∼p}(u_y) ≤ (max u − min u)²/4
≤ ½ for a unit vector u. ‖J(x)‖₂ is bounded by a Lipschitz constant L composed over the network:

* **chains** multiply. Consecutive linear/affine layers (conv, eval-mode BatchNorm, linear, average pooling,
  flatten, the model's input normalisation, patch and positional embeddings, dropout in eval) are merged
  into one operator whose spectral norm is found by a Krylov power method (Lanczos on AᵀA, which converges
  far faster than plain power iteration on the flat top spectra of convolutions) applied to the actual
  composite at the model's input size (stride and padding included; the adjoint comes from autograd, i.e.
  the exact conv_transpose2d). BatchNorm is thereby folded into its conv and the normalisation (1/min std
  on its own) into the stem — each fold is at most the product of the separate norms. A lone
  ``nn.Linear`` uses the exact ``matrix_norm(W, 2)``. The iterative estimate approaches the norm from
  below; it runs until the Ritz residual is ≤ ``power_tol`` (iterations are in the per-layer rows).
* **activations**: ReLU/ReLU6/Tanh/Softplus 1, LeakyReLU/ELU/PReLU max(1, slope), GELU 1.13, SiLU/Swish
  1.1, Mish 1.09, Hardswish 1.5, Sigmoid ¼, Hardsigmoid ⅙ (max |f'|).
* **max pooling**: √c with c the largest number of windows that share one input (1 for non-overlapping
  windows such as VGG's 2×2/2; 2 for ResNet's 3×3/2 stem pool — "max-pool is 1-Lipschitz" holds only
  without overlap).
* **residual blocks** y = act(branch(x) + shortcut(x)): L_act (L_branch + L_shortcut), with L_shortcut = 1
  for the identity, i.e. (1 + ‖branch‖) (timm BasicBlock/Bottleneck without squeeze-excitation).
* **DenseNet blocks** x_l = h_l([x_0, …, x_{l−1}]) with output [x_0, …, x_L]:
  ‖Δ[x_0..x_l]‖² ≤ (1 + L_l²) ‖Δ[x_0..x_{l−1}]‖², so the block contributes Π_l √(1 + L_l²).
* **ViT** blocks x + ls(attn(LN(x))), x + ls(mlp(LN(x))) give (1 + L_ls L_attn L_LN)(1 + L_ls L_mlp L_LN).
  LayerNorm and dot-product attention are **not** globally Lipschitz, so these two factors are local:
  LN by max|γ| / σ_min with σ_min = √(var + ε) the smallest over the tokens of the evaluated inputs (or
  the stated ``layernorm_sigma_floor``); attention by
  ‖W_O‖ (max_h ‖A_h‖ ‖W_V‖ + √Σ_h c_h²), c_h = s_h ‖V_h‖ (‖W_Q^h‖ ‖K_h‖ + ‖Q_h‖ ‖W_K^h‖) / √d_h, where
  s_h = min(½, max A_h) bounds the softmax Jacobian and A_h, Q_h, K_h, V_h are measured at the evaluated
  inputs. The value term is the attention-weighted value path, the second the softmax path. For a ViT
  the result bounds ‖J(x)‖ and λ(x) at the evaluated inputs only (``local = 1``).

Everything is accumulated in log space (a deep net's product overflows float64). Every walk is checked
by re-running it as a forward pass and comparing with the model's logits, so a block whose forward the
walk does not reproduce fails loudly instead of giving a bound that does not bound.

Unsupported modules raise an error that lists the supported families; there is deliberately no fallback
"chain over every conv/linear layer", which is not an upper bound once the forward has skips or gating.

Ranking the bounds imply (randomly initialised timm models at 32 px, 10 classes; log10 bound on λ_max,
from ``python benchmarks/bench_fisher.py --bounds-only``, also recorded in conf/metric/spectral_bound.yaml):
densenet121 57.6 > vit_tiny (patch 4, local) 33.3 > resnet18 11.6 > vgg11_bn 6.3. Only "DenseNet is the
least robust" agrees with the paper's claimed robustness order DenseNet121 < VGG16 < ResNet18 ≤ ViT-B-16.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, Mlp, PatchDropout, PatchEmbed
from timm.layers.activations import GELU as TimmGELU
from timm.layers.activations import GELUTanh, HardSigmoid, HardSwish, QuickGELU, Swish
from timm.layers.activations import Mish as TimmMish
from timm.layers.adaptive_avgmax_pool import SelectAdaptivePool2d
from timm.layers.attention import Attention
from timm.layers.classifier import ClassifierHead
from timm.layers.drop import DropBlock2d, DropPath
from timm.layers.format import Format, nchw_to
from timm.layers.norm_act import BatchNormAct2d
from timm.models.densenet import DenseBlock, DenseLayer, DenseNet
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vgg import VGG, ConvMlp
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from robustdiag.metrics.fisher import (
    INPUT_SPACES,
    choose_estimator,
    class_gradients,
    lambda_max_exact,
    lanczos,
    resolve_input_space,
)
from robustdiag.models.cifar import PreActBlock, PreActResNet
from robustdiag.models.mode import evaluating
from robustdiag.progress import progress
from robustdiag.types import EvalContext, MetricNotApplicable, MetricResult, MetricRoles

log = logging.getLogger(__name__)

SUPPORTED = (
    "timm resnet* (BasicBlock/Bottleneck, no squeeze-excitation), robustdiag preact_resnet*/wrn*, "
    "vgg*/vgg*_bn, densenet*, "
    "vit_* (VisionTransformer with Block/Attention/Mlp, token or avg pooling), and nn.Sequential chains of "
    "Conv/Linear/BatchNorm/pooling/activation layers, optionally behind a robustdiag Classifier"
)

# max |f'| of elementwise activations (checked numerically in tests/metrics/test_bounds.py)
GELU_LIP = 1.13  # max of Φ(x) + xφ(x) ≈ 1.1289 (erf and tanh forms)
SILU_LIP = 1.1  # max of σ(x)(1 + x(1 − σ(x))) ≈ 1.0998 (also QuickGELU x·σ(1.702x))
MISH_LIP = 1.09  # ≈ 1.0886
ACTIVATION_LIPSCHITZ: dict[type[nn.Module], Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.Tanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.Hardsigmoid: lambda m: 1.0 / 6.0,
    nn.Hardswish: lambda m: 1.5,
    nn.GELU: lambda m: GELU_LIP,
    nn.SiLU: lambda m: SILU_LIP,
    nn.Mish: lambda m: MISH_LIP,
    nn.LeakyReLU: lambda m: max(1.0, abs(m.negative_slope)),
    nn.ELU: lambda m: max(1.0, float(m.alpha)),
    nn.PReLU: lambda m: max(1.0, float(m.weight.detach().abs().max())),
    TimmGELU: lambda m: GELU_LIP,
    GELUTanh: lambda m: GELU_LIP,
    QuickGELU: lambda m: SILU_LIP,
    Swish: lambda m: SILU_LIP,
    TimmMish: lambda m: MISH_LIP,
    HardSwish: lambda m: 1.5,
    HardSigmoid: lambda m: 1.0 / 6.0,
}
# identity maps in eval mode (Flatten: a reshape, an isometry)
IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout2d,
    DropPath,
    DropBlock2d,
    PatchDropout,
)
# linear (or affine) in eval mode: merged into one operator per run of consecutive layers
LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    LayerScale,
    *IDENTITY_MODULES,
)


class UnsupportedArchitecture(MetricNotApplicable):
    """The walk met a module it has no Lipschitz rule for."""


@dataclass
class PowerSettings:
    """Settings of the operator-norm iteration for linear segments (and the LayerNorm floor)."""

    max_iter: int = 200
    tol: float = 1e-6
    seed: int = 0
    layernorm_sigma_floor: float | None = None  # None: σ_min measured on the evaluated inputs


# ----------------------------------------------------------------------------------------------------------
# operator norms


def operator_norm(fn: Callable[[Tensor], Tensor], like: Tensor, settings: PowerSettings) -> tuple[float, int]:
    """Spectral norm of the affine map ``fn`` on inputs shaped like one sample of ``like``.

    Lanczos on AᵀA with full reorthogonalisation (it converges far faster than plain power iteration on
    the flat top spectra of convolutions): A v = fn(v) − fn(0) and Aᵀ from autograd (for a conv: the exact
    conv_transpose2d with the conv's stride and padding) at the model's real input size. The estimate is
    √θ_max, θ_max the largest Ritz value, which approaches ‖A‖ from below; it stops when the Ritz residual
    is ≤ ``settings.tol`` · θ_max, the Krylov space is exhausted, or after ``settings.max_iter`` steps.
    Returns (norm, iterations).
    """
    shape = (1, *like.shape[1:])
    n = like[0].numel()
    generator = torch.Generator(device=like.device).manual_seed(settings.seed)
    with torch.no_grad():
        offset = fn(torch.zeros(shape, dtype=like.dtype, device=like.device))

    def gram(q: Tensor) -> Tensor:  # AᵀA q, (n,) -> (n,)
        with torch.enable_grad():
            v = q.reshape(shape).requires_grad_(True)
            Av = fn(v) - offset
            (AtAv,) = torch.autograd.grad(Av, v, Av)
        return AtAv.reshape(-1)

    q = torch.randn(n, generator=generator, dtype=like.dtype, device=like.device)
    basis = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    theta, it = 0.0, 0
    for it in range(1, min(settings.max_iter, n) + 1):  # noqa: B007 (the count is reported)
        w = gram(basis[-1])
        alphas.append(float(basis[-1] @ w))
        Q = torch.stack(basis)  # (j, n)
        for _ in range(2):  # full reorthogonalisation
            w = w - Q.T @ (Q @ w)
        beta = float(w.norm())
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.diag(torch.tensor(betas, dtype=torch.float64), 1)
            T = T + off + off.T
        evals, evecs = torch.linalg.eigh(T)
        theta = max(float(evals[-1]), 0.0)
        residual = beta * abs(float(evecs[-1, -1]))
        if theta == 0.0 or residual <= settings.tol * theta or beta <= 1e-12 * max(theta, 1e-30):
            break
        betas.append(beta)
        basis.append(w / beta)
    return math.sqrt(theta), it


def max_pool_overlap(kernel: int, stride: int, dilation: int = 1) -> int:
    """Largest number of max-pool windows (along one dim) that contain the same input position."""
    span = dilation * (kernel - 1) + 1
    return max(1, min(kernel, math.ceil(span / stride)))


# ----------------------------------------------------------------------------------------------------------
# the walk: a tree of ops that both re-runs the forward and accumulates log Lipschitz factors


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


class Op:
    """One node of the walk: ``run`` re-runs the forward (and measures), ``log_lip`` is ln of its factor."""

    name: str
    kind: str
    local: bool = False  # the factor is data-dependent (valid at the evaluated inputs only)

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        raise NotImplementedError

    def log_lip(self) -> float:
        raise NotImplementedError

    def rows(self) -> list[dict[str, object]]:
        return [_row(self.name, self.kind, self.log_lip(), local=self.local)]

    def is_local(self) -> bool:
        return self.local


def _row(
    name: str, kind: str, log_lip: float, *, local: bool = False, iterations: int | None = None
) -> dict[str, object]:
    return {
        "layer": name,
        "type": kind,
        "norm": _exp(log_lip),
        "log10_norm": log_lip / math.log(10),
        "iterations": iterations,
        "local": local,
    }


def _exp(log_value: float) -> float:
    try:
        return math.exp(log_value)
    except OverflowError:
        return math.inf


class LinearOp(Op):
    """A run of linear/affine layers, merged; its norm is measured once, at the first input shape seen.

    ``exact`` is a known norm (a lone Linear, BatchNorm, LayerScale or normalisation; 1 for identity-like
    layers); it survives a merge only with identity-like layers. Otherwise the composite is iterated.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        fn: Callable[[Tensor], Tensor],
        *,
        exact: float | None = None,
        trivial: bool = False,
    ) -> None:
        self.name, self.kind = name, kind
        self.fns = [fn]
        self.trivial = trivial  # an identity map in eval (Identity, Dropout, DropPath, Flatten, ...)
        self.exact = 1.0 if trivial else exact
        self.norm: float | None = None
        self.iterations: int | None = None

    def merged(self, other: LinearOp) -> LinearOp:
        out = LinearOp(f"{self.name}+{other.name}", f"{self.kind}+{other.kind}", self.apply)
        out.fns = self.fns + other.fns
        out.trivial = self.trivial and other.trivial
        known = self.exact is not None and other.exact is not None
        out.exact = self.exact * other.exact if known and (self.trivial or other.trivial) else None
        return out

    def apply(self, h: Tensor) -> Tensor:
        for fn in self.fns:
            h = fn(h)
        return h

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        if self.norm is None:
            if self.exact is not None:
                self.norm, self.iterations = self.exact, 0
            else:
                self.norm, self.iterations = operator_norm(self.apply, h, settings)
        return self.apply(h)

    def log_lip(self) -> float:
        assert self.norm is not None, "run() before log_lip()"
        return _log(self.norm)

    def rows(self) -> list[dict[str, object]]:
        return [_row(self.name, self.kind, self.log_lip(), iterations=self.iterations)]


class ConstOp(Op):
    """A nonlinearity with a known Lipschitz constant."""

    def __init__(self, name: str, kind: str, lip: float, fn: Callable[[Tensor], Tensor]) -> None:
        self.name, self.kind, self.lip, self.fn = name, kind, lip, fn

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        return self.fn(h)

    def log_lip(self) -> float:
        return _log(self.lip)


class MaxPoolOp(Op):
    """Max pooling: √(max windows sharing an input), from the kernel/stride (or adaptive windows)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name, self.kind, self.module = name, type(module).__name__, module
        self.lip = 1.0

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        out = self.module(h)
        m = self.module
        if isinstance(m, nn.MaxPool2d | nn.MaxPool1d):
            ks, st, dl = (_pair(getattr(m, a), h.ndim - 2) for a in ("kernel_size", "stride", "dilation"))
            count = math.prod(max_pool_overlap(k, s, d) for k, s, d in zip(ks, st, dl))
        else:  # adaptive: windows [floor(i n / o), ceil((i + 1) n / o))
            count = math.prod(_adaptive_overlap(n, o) for n, o in zip(h.shape[2:], _spatial(out, h.ndim - 2)))
        self.lip = max(self.lip, math.sqrt(count))
        return out

    def log_lip(self) -> float:
        return _log(self.lip)


def _pair(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (int(value),) * ndim


def _spatial(out: Tensor, ndim: int) -> tuple[int, ...]:
    return tuple(out.shape[2:]) if out.ndim == ndim + 2 else (1,) * ndim


def _adaptive_overlap(n: int, o: int) -> int:
    count = [0] * n
    for i in range(o):
        for j in range((i * n) // o, -((-(i + 1) * n) // o)):
            count[j] += 1
    return max(count)


class LayerNormOp(Op):
    """LayerNorm: ‖J‖ ≤ max|γ| / σ with σ = √(var + ε) of the token (local: σ_min over evaluated tokens)."""

    local = True

    def __init__(self, name: str, module: nn.LayerNorm) -> None:
        self.name, self.kind, self.module = name, "LayerNorm", module
        self.sigma_min = math.inf
        self.gamma_max = float(module.weight.detach().abs().max()) if module.weight is not None else 1.0
        self.floor: float | None = None

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        dims = tuple(range(-len(self.module.normalized_shape), 0))
        sigma = (h.var(dim=dims, unbiased=False) + self.module.eps).sqrt()
        self.sigma_min = min(self.sigma_min, float(sigma.min()))
        self.floor = settings.layernorm_sigma_floor
        return self.module(h)

    def log_lip(self) -> float:
        sigma = self.floor if self.floor is not None else self.sigma_min
        return _log(self.gamma_max) - _log(sigma)


class AttentionOp(Op):
    """timm multi-head self-attention; local bound (see the module docstring), max over evaluated inputs."""

    local = True

    def __init__(self, name: str, module: Attention) -> None:
        for attr in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(module, attr), nn.Identity):
                raise UnsupportedArchitecture(f"{name}.{attr} is not Identity; supported: {SUPPORTED}")
        if getattr(module, "gate", None) is not None:
            raise UnsupportedArchitecture(f"{name} is gated attention; supported: {SUPPORTED}")
        self.name, self.kind, self.module = name, "Attention", module
        H, hd, a = module.num_heads, module.head_dim, module.attn_dim
        W = module.qkv.weight.detach()  # (3a, C)
        per_head = W.reshape(3, H, hd, -1)  # (3, H, hd, C)
        self.wq = torch.linalg.matrix_norm(per_head[0], 2)  # (H,)
        self.wk = torch.linalg.matrix_norm(per_head[1], 2)
        self.wv = float(torch.linalg.matrix_norm(W[2 * a :], 2))
        self.wo = float(torch.linalg.matrix_norm(module.proj.weight.detach(), 2))
        self.lip = 0.0

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        m = self.module
        B, N, _ = h.shape
        qkv = m.qkv(h).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, hd) each
        A = (q * m.scale @ k.transpose(-2, -1)).softmax(-1)  # (B, H, N, N)
        # (B, H) ‖A_h‖₂: exact for small N, else ‖A‖₂ ≤ √(‖A‖₁ ‖A‖_∞) with rows summing to 1
        a_norm = torch.linalg.matrix_norm(A, 2) if N <= 256 else A.sum(-2).amax(-1).sqrt()
        s = A.amax(dim=(-2, -1)).clamp_max(0.5)  # (B, H) bound on the softmax Jacobian norm
        qn, kn, vn = (torch.linalg.matrix_norm(t, 2) for t in (q, k, v))  # (B, H)
        c = s * vn * (self.wq * kn + qn * self.wk) * m.scale  # (B, H)
        lip = self.wo * (a_norm.amax(-1) * self.wv + c.square().sum(-1).sqrt())  # (B,)
        self.lip = max(self.lip, float(lip.max()))
        return m(h)

    def log_lip(self) -> float:
        return _log(self.lip)


class Chain(Op):
    """Ops applied in sequence; consecutive LinearOps are merged into one operator."""

    def __init__(self, name: str, ops: Sequence[Op]) -> None:
        self.name, self.kind = name, "chain"
        merged: list[Op] = []
        for op in ops:
            if isinstance(op, LinearOp) and merged and isinstance(merged[-1], LinearOp):
                merged[-1] = merged[-1].merged(op)
            else:
                merged.append(op)
        self.ops = merged

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        for op in self.ops:
            h = op.run(h, settings)
        return h

    def log_lip(self) -> float:
        return sum((op.log_lip() for op in self.ops), 0.0)

    def rows(self) -> list[dict[str, object]]:
        return [r for op in self.ops for r in op.rows()]

    def is_local(self) -> bool:
        return any(op.is_local() for op in self.ops)


class ResidualOp(Op):
    """y = post(branch(x) + shortcut(x)): L_post · (L_branch + L_shortcut); identity shortcut = 1."""

    def __init__(self, name: str, branch: Chain, shortcut: Chain | None, post: Chain) -> None:
        self.name, self.kind = name, "residual"
        self.branch, self.shortcut, self.post = branch, shortcut, post

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        b = self.branch.run(h, settings)
        s = self.shortcut.run(h, settings) if self.shortcut is not None else h
        return self.post.run(b + s, settings)

    def log_lip(self) -> float:
        short = self.shortcut.log_lip() if self.shortcut is not None else 0.0
        return self.post.log_lip() + _logaddexp(self.branch.log_lip(), short)

    def rows(self) -> list[dict[str, object]]:
        inner = self.branch.rows() + (self.shortcut.rows() if self.shortcut else []) + self.post.rows()
        return inner + [
            _row(self.name, "residual: L_post·(L_branch + L_shortcut)", self.log_lip(), local=self.is_local())
        ]

    def is_local(self) -> bool:
        parts = [self.branch, self.post] + ([self.shortcut] if self.shortcut else [])
        return any(p.is_local() for p in parts)


class DenseBlockOp(Op):
    """DenseNet block: output [x_0, …, x_L] with x_l = h_l([x_0..x_{l−1}]): Π_l √(1 + L_l²)."""

    def __init__(self, name: str, layers: list[Chain]) -> None:
        self.name, self.kind, self.layers = name, "dense_block", layers

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        features = [h]
        for layer in self.layers:
            features.append(layer.run(torch.cat(features, 1), settings))
        return torch.cat(features, 1)

    def log_lip(self) -> float:
        return sum((0.5 * _softplus(2.0 * layer.log_lip()) for layer in self.layers), 0.0)

    def rows(self) -> list[dict[str, object]]:
        inner = [r for layer in self.layers for r in layer.rows()]
        return inner + [_row(self.name, "dense block: Π √(1 + L_l²)", self.log_lip())]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _softplus(t: float) -> float:
    """ln(1 + eᵗ), stable."""
    return t + math.log1p(math.exp(-t)) if t > 0 else math.log1p(math.exp(t))


# ----------------------------------------------------------------------------------------------------------
# module -> ops


def _call(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The module as a function; in-place modules get a copy so the walk never overwrites a shared input."""
    if getattr(module, "inplace", False):
        return lambda h: module(h.clone())
    return module


def _linear(name: str, module: nn.Module) -> list[Op]:
    exact: float | None = None
    if isinstance(module, nn.Linear):
        exact = float(torch.linalg.matrix_norm(module.weight.detach().double(), 2))
    elif isinstance(module, LayerScale):
        exact = float(module.gamma.detach().abs().max())
    trivial = isinstance(module, IDENTITY_MODULES)
    return [LinearOp(name, type(module).__name__, _call(module), exact=exact, trivial=trivial)]


def _batchnorm(name: str, bn: nn.modules.batchnorm._BatchNorm) -> list[Op]:
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedArchitecture(
            f"{name}: BatchNorm without running statistics normalises with batch statistics"
        )

    def affine(h: Tensor) -> Tensor:
        return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    scale = (bn.running_var.detach().double() + bn.eps).rsqrt()  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    ops: list[Op] = [LinearOp(name, "BatchNorm", affine, exact=float(scale.abs().max()))]
    if isinstance(bn, BatchNormAct2d):
        ops += module_ops(f"{name}.drop", bn.drop) + module_ops(f"{name}.act", bn.act)
    return ops


def _activation(name: str, module: nn.Module) -> list[Op]:
    lip = next(rule(module) for cls, rule in ACTIVATION_LIPSCHITZ.items() if isinstance(module, cls))
    return [ConstOp(name, type(module).__name__, lip, _call(module))]


def _sequential(name: str, module: nn.Module) -> list[Op]:
    return [
        op
        for child_name, child in module.named_children()
        for op in module_ops(f"{name}.{child_name}", child)
    ]


def _children(name: str, module: nn.Module, attrs: Sequence[str]) -> list[Op]:
    """Ops of the named attributes in forward order (None attributes are skipped)."""
    ops: list[Op] = []
    for attr in attrs:
        child = getattr(module, attr, None)
        if child is not None:
            ops += module_ops(f"{name}.{attr}" if name else attr, child)
    return ops


def _resnet_block(name: str, block: nn.Module) -> list[Op]:
    if block.se is not None and not isinstance(block.se, nn.Identity):
        raise UnsupportedArchitecture(f"{name}.se (squeeze-excitation) has no rule; supported: {SUPPORTED}")
    if isinstance(block, BasicBlock):
        branch_attrs = ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "drop_path")
        post_attr = "act2"
    else:
        branch_attrs = (
            "conv1",
            "bn1",
            "act1",
            "conv2",
            "bn2",
            "drop_block",
            "act2",
            "aa",
            "conv3",
            "bn3",
            "drop_path",
        )
        post_attr = "act3"
    branch = Chain(f"{name}.branch", _children(name, block, branch_attrs))
    shortcut = (
        Chain(f"{name}.downsample", module_ops(f"{name}.downsample", block.downsample))
        if block.downsample is not None
        else None
    )
    post = Chain(f"{name}.{post_attr}", module_ops(f"{name}.{post_attr}", getattr(block, post_attr)))
    return [ResidualOp(name, branch, shortcut, post)]


def _preact_block(name: str, block: PreActBlock) -> list[Op]:
    """relu(bn1(x)) feeds both conv1 and a projection shortcut; the identity shortcut takes x itself."""
    pre = [*module_ops(f"{name}.bn1", block.bn1), ConstOp(f"{name}.relu1", "relu", 1.0, F.relu)]
    body = [
        *module_ops(f"{name}.conv1", block.conv1),
        *module_ops(f"{name}.bn2", block.bn2),
        ConstOp(f"{name}.relu2", "relu", 1.0, F.relu),
        *module_ops(f"{name}.conv2", block.conv2),  # dropout between: identity in eval
    ]
    if block.shortcut is None:
        return [ResidualOp(name, Chain(f"{name}.branch", pre + body), None, Chain(name, []))]
    shortcut = Chain(f"{name}.shortcut", module_ops(f"{name}.shortcut", block.shortcut))
    return pre + [ResidualOp(name, Chain(f"{name}.branch", body), shortcut, Chain(name, []))]


def _preact_resnet(name: str, model: PreActResNet) -> list[Op]:
    return [
        *_children(name, model, ("stem", "stages", "bn")),
        ConstOp(f"{name}.relu", "relu", 1.0, F.relu),
        LinearOp(f"{name}.pool", "mean(H, W)", lambda h: h.mean(dim=(2, 3))),
        *module_ops(f"{name}.head", model.head),
    ]


def _resnet(name: str, model: ResNet) -> list[Op]:
    attrs = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc")
    return _children(name, model, attrs)


def _vgg(name: str, model: VGG) -> list[Op]:
    return _children(name, model, ("features", "pre_logits", "head"))


def _conv_mlp(name: str, mlp: ConvMlp) -> list[Op]:
    size = mlp.input_kernel_size

    def resize(h: Tensor) -> Tensor:  # ConvMlp upsamples maps smaller than its kernel (linear)
        if h.shape[-2] < size or h.shape[-1] < size:
            return F.adaptive_avg_pool2d(h, (max(size, h.shape[-2]), max(size, h.shape[-1])))
        return h

    resize_op = LinearOp(f"{name}.resize", "adaptive_avg_pool2d", resize)
    return [resize_op] + _children(name, mlp, ("fc1", "act1", "drop", "fc2", "act2"))


def _classifier_head(name: str, head: ClassifierHead) -> list[Op]:
    return _children(name, head, ("global_pool", "drop", "fc", "flatten"))


def _select_pool(name: str, pool: SelectAdaptivePool2d) -> list[Op]:
    if pool.pool_type in ("avg", ""):
        return _linear(name, pool)
    if pool.pool_type == "max":
        return [MaxPoolOp(name, pool)]
    raise UnsupportedArchitecture(f"{name}: global pool {pool.pool_type!r} has no rule (avg, max, '' have)")


def _densenet(name: str, model: DenseNet) -> list[Op]:
    return _children(name, model, ("features", "global_pool", "head_drop", "classifier"))


def _dense_block(name: str, block: DenseBlock) -> list[Op]:
    layers = [Chain(f"{name}.{n}", _dense_layer(f"{name}.{n}", layer)) for n, layer in block.items()]
    return [DenseBlockOp(name, layers)]


def _dense_layer(name: str, layer: DenseLayer) -> list[Op]:
    return _children(name, layer, ("norm1", "conv1", "norm2", "conv2"))  # dropout: identity in eval


def _vit(name: str, model: VisionTransformer) -> list[Op]:
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg", ""):
        raise UnsupportedArchitecture(
            f"{name}: ViT pooling {model.global_pool!r}/attn_pool has no rule; token and avg have"
        )
    ops = _children(name, model, ("patch_embed",))
    ops.append(LinearOp(f"{name}._pos_embed", "pos_embed", model._pos_embed, exact=1.0))
    ops += _children(name, model, ("patch_drop", "norm_pre", "blocks", "norm"))
    ops.append(LinearOp(f"{name}.pool", f"pool[{model.global_pool}]", _vit_pool(model)))
    return ops + _children(name, model, ("fc_norm", "head_drop", "head"))


def _vit_pool(model: VisionTransformer) -> Callable[[Tensor], Tensor]:
    """The ViT's token pooling (linear: class token or mean of the patch tokens)."""

    def pool(h: Tensor) -> Tensor:
        if model.global_pool == "token":
            return h[:, 0]
        if model.global_pool == "avg":
            return (
                h if getattr(model, "pool_include_prefix", False) else h[:, model.num_prefix_tokens :]
            ).mean(1)
        return h

    return pool


def _patch_embed(name: str, pe: PatchEmbed) -> list[Op]:
    def embed(h: Tensor) -> Tensor:  # PatchEmbed.forward without its norm (linear)
        if pe.dynamic_img_pad:
            ph = (pe.patch_size[0] - h.shape[-2] % pe.patch_size[0]) % pe.patch_size[0]
            pw = (pe.patch_size[1] - h.shape[-1] % pe.patch_size[1]) % pe.patch_size[1]
            h = F.pad(h, (0, pw, 0, ph))
        h = pe.proj(h)
        if pe.flatten:
            return h.flatten(2).transpose(1, 2)  # NCHW -> NLC
        return nchw_to(h, pe.output_fmt) if pe.output_fmt != Format.NCHW else h

    return [LinearOp(f"{name}.proj", "PatchEmbed", embed)] + module_ops(f"{name}.norm", pe.norm)


def _vit_block(name: str, block: Block) -> list[Op]:
    attn = Chain(f"{name}.attn_branch", _children(name, block, ("norm1", "attn", "ls1", "drop_path1")))
    mlp = Chain(f"{name}.mlp_branch", _children(name, block, ("norm2", "mlp", "ls2", "drop_path2")))
    return [
        ResidualOp(f"{name}.attn_residual", attn, None, Chain(name, [])),
        ResidualOp(f"{name}.mlp_residual", mlp, None, Chain(name, [])),
    ]


def _mlp(name: str, mlp: Mlp) -> list[Op]:
    return _children(name, mlp, ("fc1", "act", "drop1", "norm", "fc2", "drop2"))


# isinstance order matters: subclasses first
CONVERTERS: list[tuple[type | tuple[type, ...], Callable[[str, nn.Module], list[Op]]]] = [
    (ResNet, _resnet),
    (PreActResNet, _preact_resnet),
    (PreActBlock, _preact_block),
    ((BasicBlock, Bottleneck), _resnet_block),
    (VGG, _vgg),
    (ConvMlp, _conv_mlp),
    (DenseNet, _densenet),
    (DenseBlock, _dense_block),
    (DenseLayer, _dense_layer),
    (VisionTransformer, _vit),
    (Block, _vit_block),
    (PatchEmbed, _patch_embed),
    (Attention, lambda n, m: [AttentionOp(n, m)]),
    (Mlp, _mlp),
    (ClassifierHead, _classifier_head),
    (SelectAdaptivePool2d, _select_pool),
    (nn.LayerNorm, lambda n, m: [LayerNormOp(n, m)]),
    ((nn.BatchNorm1d, nn.BatchNorm2d), _batchnorm),
    (
        (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d),
        lambda n, m: [MaxPoolOp(n, m)],
    ),
    (LINEAR_MODULES, _linear),
    (tuple(ACTIVATION_LIPSCHITZ), _activation),
    (nn.Sequential, _sequential),
]


def module_ops(name: str, module: nn.Module) -> list[Op]:
    """The ops of one module, or an error naming it and the supported families."""
    for cls, convert in CONVERTERS:
        if isinstance(module, cls):
            return convert(name, module)
    raise UnsupportedArchitecture(
        f"spectral_bound: no Lipschitz rule for `{name or 'model'}` ({type(module).__module__}."
        f"{type(module).__name__}). Supported: {SUPPORTED}."
    )


def network_ops(model: nn.Module, input_space: str = "pixel") -> Chain:
    """The walk for a whole model: the Classifier's normalisation (pixel space only) then its network."""
    if input_space not in INPUT_SPACES:
        raise ValueError(f"input_space={input_space!r} is not one of {list(INPUT_SPACES)}")
    normalize, net = getattr(model, "normalize", None), getattr(model, "net", None)
    if isinstance(normalize, nn.Module) and isinstance(net, nn.Module):
        ops = module_ops("net", net)
        if input_space == "pixel":  # affine by the Classifier contract: (x − mean) / std
            std = getattr(normalize, "std", None)
            exact = float(1.0 / std.detach().double().abs().min()) if isinstance(std, Tensor) else None
            ops = [LinearOp("normalize", "Normalize", normalize, exact=exact)] + ops
        return Chain("model", ops)
    if input_space == "normalized":
        raise ValueError("input_space='normalized' needs a Classifier with `.normalize` and `.net`")
    return Chain("model", module_ops("", model))


# ----------------------------------------------------------------------------------------------------------
# the bound and the metric


@dataclass
class BoundResult:
    log_lipschitz: float  # ln of the bound on ‖J‖₂
    log_bound: float  # ln of the bound on λ_max(F) = ln ½ + 2 ln L
    local: bool  # data-dependent factors: valid at the evaluated inputs only
    rows: list[dict[str, object]] = field(default_factory=list)

    @property
    def log10_bound(self) -> float:
        return self.log_bound / math.log(10)

    @property
    def bound(self) -> float:
        return _exp(self.log_bound)


def spectral_bound(
    model: nn.Module,
    x: Tensor,
    *,
    input_space: str = "pixel",
    settings: PowerSettings | None = None,
    batch_size: int = 256,
    check_forward: bool = True,
) -> BoundResult:
    """Upper bound on λ_max(F(x)) (for every x; for the evaluated x when the walk has local factors).

    ``x`` are pixels in [0, 1] (B, C, H, W); the walk is run over them in batches (for the shapes the
    operator norms need and the data-dependent factors), and its output is checked against the logits.
    """
    settings = settings or PowerSettings()
    chain = network_ops(model, input_space)
    fn, inputs = resolve_input_space(model, x, input_space)
    with evaluating(model, "metric.spectral_bound"), torch.no_grad():
        for chunk in progress(inputs.split(batch_size), desc="spectral_bound", unit="batch"):
            out = chain.run(chunk, settings)
            if check_forward:
                _check_forward(out, fn(chunk))
    log_lip = chain.log_lip()
    return BoundResult(log_lip, math.log(0.5) + 2.0 * log_lip, chain.is_local(), chain.rows())


def _check_forward(out: Tensor, logits: Tensor) -> None:
    scale = float(logits.abs().max()) or 1.0
    err = float((out - logits).abs().max())
    if not err <= 1e-4 * scale + 1e-6:
        raise UnsupportedArchitecture(
            f"spectral_bound: the layer walk does not reproduce the model's forward (max |Δlogit| = {err:.3g}); "
            f"the model has a block this walk does not model. Supported: {SUPPORTED}."
        )


def empirical_lambda(model: nn.Module, x: Tensor, *, input_space: str, batch_size: int, seed: int) -> Tensor:
    """λ(x) per sample (B,): exact for ≤ 100 classes (K×D gradient matrix per sample ≤ 4 GiB), else lanczos."""
    with evaluating(model, "metric.spectral_bound"):
        fn, inputs = resolve_input_space(model, x, input_space)
        generator = torch.Generator(device=inputs.device).manual_seed(seed)
        out = []
        for chunk in inputs.split(batch_size):
            K = fn(chunk[:1]).shape[-1]
            if choose_estimator(K, chunk[0].numel(), chunk.element_size(), 4 * 2**30, 100) == "exact":
                log_p, G = class_gradients(fn, chunk)
                out.append(lambda_max_exact(log_p.exp(), G))
            else:
                out.append(lanczos(fn, chunk, generator=generator).lam)
    return torch.cat(out).detach().double().cpu()


class SpectralBound:
    """``metric=spectral_bound``: ½·(product of layer operator norms) against the empirical mean λ.

    Scalars: bound, log10_bound, log10_lipschitz, empirical_mean, ratio (bound / empirical_mean),
    log10_ratio, violations (samples with λ > bound: must be 0), local (1 when LayerNorm/attention make
    the bound valid at the evaluated inputs only), n. Per layer: layer, type, norm, log10_norm, iterations,
    local. The empirical λ is reused from ``ctx.cache["fisher/lambda"]`` when ``metric=fisher`` ran first in
    the same input space with an estimator that targets λ_max (exact, lanczos, power), else computed exactly.
    """

    def __init__(
        self,
        n_samples: int = 500,
        input_space: str = "pixel",
        power_iters: int = 200,
        power_tol: float = 1e-6,
        layernorm_sigma_floor: float | None = None,
        batch_size: int | None = None,
        check_forward: bool = True,
        under_shift: bool = False,
        seed: int | None = None,
    ) -> None:
        if input_space not in INPUT_SPACES:
            raise ValueError(
                f"metric.spectral_bound.input_space={input_space!r} is not one of {list(INPUT_SPACES)}"
            )
        if n_samples < 1:
            raise ValueError(f"metric.spectral_bound.n_samples must be ≥ 1, got {n_samples}")
        if layernorm_sigma_floor is not None and layernorm_sigma_floor <= 0:
            raise ValueError(
                f"metric.spectral_bound.layernorm_sigma_floor must be > 0 or null, got {layernorm_sigma_floor}"
            )
        self.name = "spectral_bound"
        self.under_shift = under_shift
        self.roles = MetricRoles(diagnostics=("log10_bound",))
        self.n_samples, self.input_space = n_samples, input_space
        self.power_iters, self.power_tol = power_iters, power_tol
        self.layernorm_sigma_floor = layernorm_sigma_floor
        self.batch_size, self.check_forward, self.seed = batch_size, check_forward, seed

    def __call__(self, ctx: EvalContext) -> MetricResult:
        """Bound on the first n samples' λ, with the empirical λ and their ratio."""
        n = min(self.n_samples, len(ctx.data))
        x = ctx.data.x[:n]
        seed = ctx.seed if self.seed is None else self.seed
        batch = self.batch_size or ctx.batch_size
        settings = PowerSettings(self.power_iters, self.power_tol, seed, self.layernorm_sigma_floor)
        result = spectral_bound(
            ctx.model,
            x,
            input_space=self.input_space,
            settings=settings,
            batch_size=batch,
            check_forward=self.check_forward,
        )
        lam = self._empirical(ctx, x, n, batch, seed)
        finite = lam[torch.isfinite(lam)]
        emp = float(finite.mean()) if finite.numel() else float("nan")
        log_ratio = result.log_bound - math.log(emp) if emp > 0 else float("nan")
        violations = int((finite > result.bound * (1 + 1e-6)).sum())
        if violations:
            log.warning(
                "metric.spectral_bound: %d samples have λ above the bound (power iteration undershoot?)",
                violations,
            )
        scalars = {
            "bound": result.bound,
            "log10_bound": result.log10_bound,
            "log10_lipschitz": result.log_lipschitz / math.log(10),
            "empirical_mean": emp,
            "ratio": _exp(log_ratio) if math.isfinite(log_ratio) else float("nan"),
            "log10_ratio": log_ratio / math.log(10),
            "violations": float(violations),
            "local": float(result.local),
            "n": float(n),
        }
        return MetricResult(scalars=scalars, per_layer=result.rows)

    def _empirical(self, ctx: EvalContext, x: Tensor, n: int, batch: int, seed: int) -> Tensor:
        cached = ctx.cache.get("fisher/lambda")
        if (
            isinstance(cached, Tensor)
            and cached.numel() >= n
            and ctx.cache.get("fisher/input_space") == self.input_space
            and ctx.cache.get("fisher/estimator") in ("exact", "lanczos", "power")
        ):
            return cached[:n]
        return empirical_lambda(ctx.model, x, input_space=self.input_space, batch_size=batch, seed=seed)
