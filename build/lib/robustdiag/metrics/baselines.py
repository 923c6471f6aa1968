"""Cheap per-sample baselines a robustness diagnostic has to beat (``metric=baselines``).

A per-sample diagnostic such as the input-Fisher λ(x) earns its keep only if it flags vulnerable
inputs better than what any classifier gives for free. Every column is oriented so that **high means
more vulnerable**, like λ:

============  =============================================================================================
``msp``       1 − max softmax probability (Hendrycks & Gimpel 2017). From the logits: no extra pass.
``margin``    −(z_top1 − z_top2), the negated logit margin. From the logits.
``entropy``   entropy of the softmax in nats. From the logits.
``lips``      max_k ‖∇ₓ p_k(x)‖₂: the released code's "lips" score (local Lipschitz of the probabilities),
              K batched input-backward passes.
``clever``    −g(x) / L̂: a CLEVER-style (Weng et al. 2018) estimate of the minimum L∞ distortion, negated.
              g = z_c − z_j (c the predicted class, j the runner-up at x); L̂ = the largest ‖∇ₓ g‖₁ (the
              dual norm of L∞) over x and ``clever_points`` uniform points of the L∞ ball of radius
              ``clever_eps`` (clipped to [0, 1]). One forward + one input-backward per point. Unlike
              CLEVER it takes the sample maximum, not a reverse-Weibull fit: a cheap local estimate.
============  =============================================================================================

Scalars: ``<column>_mean`` (run-level baselines), ``lips_seconds`` and ``clever_seconds`` (wall time of
the gradient-based baselines, for runtime comparisons) and ``n``. Gradient-based columns cover the first
``n_samples`` evaluation samples (NaN after them), like the Fisher metric.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustdiag.attacks.gradients import frozen_parameters
from robustdiag.metrics.fisher_linalg import class_gradients
from robustdiag.models.mode import evaluating
from robustdiag.train import predict_logits
from robustdiag.types import EvalContext, MetricResult, MetricRoles

COLUMNS = ("msp", "margin", "entropy", "lips", "clever")


def logit_baselines(logits: Tensor) -> dict[str, Tensor]:
    """msp, margin and entropy per sample from logits (N, K); each (N,), high = more vulnerable."""
    log_p = F.log_softmax(logits.double(), dim=-1)  # (N, K)
    p = log_p.exp()
    top2 = logits.double().topk(2, dim=-1).values  # (N, 2)
    return {
        "msp": 1.0 - p.max(dim=-1).values,
        "margin": -(top2[:, 0] - top2[:, 1]),
        "entropy": -(p * log_p).nan_to_num(0.0).sum(-1),
    }


def lips_score(model: torch.nn.Module, x: Tensor) -> Tensor:
    """max_k ‖∇ₓ p_k(x)‖₂ per sample (B,): ∇p_k = p_k ∇log p_k, from K batched backward passes."""
    log_p, G = class_gradients(model, x)  # (B, K), (B, K, D)
    return (log_p.exp() * G.norm(dim=-1)).amax(-1)


def _margin_and_gradient(
    model: torch.nn.Module, x: Tensor, top: Tensor, runner_up: Tensor
) -> tuple[Tensor, Tensor]:
    """g = z_top − z_runner_up at x (B,) and its input gradient (B, D)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x)  # (B, K)
        g = z.gather(1, top[:, None]).squeeze(1) - z.gather(1, runner_up[:, None]).squeeze(1)  # (B,)
        (grad,) = torch.autograd.grad(g.sum(), x)
    return g.detach(), grad.reshape(grad.shape[0], -1)


def clever_score(
    model: torch.nn.Module, x: Tensor, *, eps: float, points: int, generator: torch.Generator
) -> Tensor:
    """−g(x) / L̂ per sample (B,) (see the module docstring); high = small distortion suffices."""
    with torch.no_grad():
        top2 = model(x).topk(2, dim=-1).indices  # (B, 2)
    top, runner_up = top2[:, 0], top2[:, 1]
    g0, grad0 = _margin_and_gradient(model, x, top, runner_up)
    lipschitz = grad0.abs().sum(-1)  # (B,) ‖∇g‖₁ at x
    for _ in range(points):
        noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        xp = (x + (2 * noise.to(x.device) - 1) * eps).clamp(0.0, 1.0)  # (B, C, H, W) in the ball
        _, grad = _margin_and_gradient(model, xp, top, runner_up)
        lipschitz = torch.maximum(lipschitz, grad.abs().sum(-1))
    return -(g0 / lipschitz.clamp_min(torch.finfo(lipschitz.dtype).tiny))


class Baselines:
    """``metric=baselines``: the per-sample baselines of the module docstring, in one pass each.

    Args:
        n_samples: gradient-based columns (lips, clever) on the first n evaluation samples.
        clever_eps: L∞ radius of the CLEVER-style sampling ball, in [0, 1] pixel units (8/255).
        clever_points: random points in the ball (each: one forward + one input-backward).
        batch_size: samples per pass; None = the run's batch size.
        under_shift: recompute under every configured shift.
        seed: seed of the CLEVER points; None = the run seed.
    """

    name = "baselines"

    def __init__(
        self,
        n_samples: int = 500,
        clever_eps: float = 8 / 255,
        clever_points: int = 10,
        batch_size: int | None = None,
        under_shift: bool = False,
        seed: int | None = None,
    ) -> None:
        if n_samples < 1:
            raise ValueError(f"metric.baselines.n_samples must be >= 1, got {n_samples}")
        if not 0.0 < clever_eps <= 1.0:
            raise ValueError(
                f"metric.baselines.clever_eps={clever_eps} must lie in (0, 1] pixel units (8/255 ≈ 0.0314)"
            )
        if clever_points < 0:
            raise ValueError(f"metric.baselines.clever_points must be >= 0, got {clever_points}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"metric.baselines.batch_size must be >= 1 or null, got {batch_size}")
        self.n_samples, self.clever_eps, self.clever_points = n_samples, clever_eps, clever_points
        self.batch_size, self.under_shift, self.seed = batch_size, under_shift, seed
        self.roles = MetricRoles(baselines=tuple(f"{c}_mean" for c in COLUMNS), per_sample_baselines=COLUMNS)

    def __call__(self, ctx: EvalContext) -> MetricResult:
        N = len(ctx.data)
        batch = self.batch_size or ctx.batch_size
        logits = (
            ctx.logits if ctx.logits is not None else predict_logits(ctx.model, ctx.data.x, batch_size=batch)
        )
        columns = {k: v.cpu() for k, v in logit_baselines(logits).items()}
        n = min(self.n_samples, N)
        x = ctx.data.x[:n]
        generator = torch.Generator(device=x.device).manual_seed(ctx.seed if self.seed is None else self.seed)
        with evaluating(ctx.model, "metric.baselines"), frozen_parameters(ctx.model):
            tic = time.perf_counter()
            lips = torch.cat([lips_score(ctx.model, xb) for xb in x.split(batch)])
            lips_seconds = time.perf_counter() - tic
            tic = time.perf_counter()
            clever = torch.cat(
                [
                    clever_score(
                        ctx.model, xb, eps=self.clever_eps, points=self.clever_points, generator=generator
                    )
                    for xb in x.split(batch)
                ]
            )
            clever_seconds = time.perf_counter() - tic
        columns["lips"] = _pad(lips, N)
        columns["clever"] = _pad(clever, N)
        per_sample = {k: v.double().numpy() for k, v in columns.items()}
        scalars = {f"{k}_mean": float(np.nanmean(v)) for k, v in per_sample.items()}
        scalars.update(lips_seconds=lips_seconds, clever_seconds=clever_seconds, n=float(n))
        return MetricResult(scalars=scalars, per_sample=per_sample)


def _pad(values: Tensor, length: int) -> Tensor:
    out = torch.full((length,), float("nan"), dtype=torch.float64)
    out[: values.numel()] = values.detach().double().cpu()
    return out
