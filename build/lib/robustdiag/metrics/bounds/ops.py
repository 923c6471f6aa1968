"""The operator algebra of the spectral bound: ops that carry a log-Lipschitz constant and compose.

An :class:`Op` is one step of the walk through a network (a merged run of linear layers, an activation,
a pooling, a residual block, ...). Ops know how to run forward (the walk is re-run as a forward pass and
checked against the model) and how to bound their Lipschitz constant, in log space. Converters in
:mod:`.registry`, :mod:`.layers` and :mod:`.families` turn modules into ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustdiag.types import MetricNotApplicable

_SUPPORTED: list[str] = []  # one line per registered family (registry.register(..., supports=...))


def supported() -> str:
    """What the walk supports, as registered by the layer rules and architecture families."""
    return "; ".join(_SUPPORTED) or "no architecture family is registered"


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
        out.exact = None
        if self.exact is not None and other.exact is not None and (self.trivial or other.trivial):
            out.exact = self.exact * other.exact
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
