"""Paper 2's protocol checks on a trained model (``metric=fisher_checks``), on the first n samples.

* **Identity.** F(x) = Σ_k p_k g_k g_kᵀ (g_k = ∇ₓ log p_k) equals Jᵀ(diag p − ppᵀ)J (J the logit
  Jacobian). Both sides are built from independent autograd passes (log-softmax vs logits) in float64
  on a float64 copy of the model; ``identity_rel_err_max`` is the largest relative Frobenius error
  ‖F₁ − F₂‖ / ‖F₂‖ over the samples (dense D×D when D ≤ ``dense_max_dim``, else the equivalent
  gradient-level identity G = (I − 1pᵀ)J).
* **Local KL** (float64: at small ε the KL is ~1e-6, below float32 resolution of the log-probabilities).
  KL(p(x) ‖ p(x+δ)) against ½ δᵀF(x)δ for each ε of ``kl_eps`` (pixel units), with δ
  uniform in the L∞ ε-ball (the released code's check) and δ along F's top eigenvector scaled to
  ‖δ‖∞ = ε. Per ε and direction: median and mean of |KL − ½δᵀFδ| / KL over samples
  (``kl_<random|top>_e<ε·255>_rel_err_median``), and the median ratio KL(top) / KL(random)
  (``kl_top_over_random_e<ε·255>``). Inputs are not clipped to [0, 1]: this checks a Taylor expansion
  of the function.
* **Estimator fidelity.** Every estimator of :mod:`robustdiag.metrics.fisher` against ``exact`` on the
  same samples: ``fidelity_<estimator>_ratio_median`` (estimate / exact), ``_spearman`` (rank agreement
  across samples) and ``_seconds``. ``exact_seconds`` is the exact estimator's time.

Nothing here is a diagnostic (``roles`` is empty): these are checks of the paper's claims.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from robustdiag.metrics.fisher_linalg import (
    blackbox,
    class_gradients,
    fisher_gram,
    lambda_max_exact,
    lanczos,
    power_iteration,
    srp_maxrq,
    trace_exact,
)
from robustdiag.models.mode import evaluating
from robustdiag.types import EvalContext, MetricResult, MetricRoles

FIDELITY_ESTIMATORS = ("power", "srp_maxrq", "lanczos", "blackbox", "trace")


def logit_jacobian(model: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """J (B, K, D): K batched backward passes of the logits."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x)  # (B, K)
        B, K = z.shape
        J = x.new_empty(B, K, x[0].numel())
        for k in range(K):
            (g,) = torch.autograd.grad(z[:, k].sum(), x, retain_graph=k < K - 1)
            J[:, k] = g.reshape(B, -1)
    return J


def identity_errors(model: nn.Module, x: Tensor, dense_max_dim: int) -> Tensor:
    """Relative error of F = Σ p_k g_k g_kᵀ against Jᵀ(diag p − ppᵀ)J per sample (B,), in float64."""
    model64 = copy.deepcopy(model).double().eval()
    x64 = x.detach().double()
    log_p, G = class_gradients(model64, x64)  # (B, K), (B, K, D)
    J = logit_jacobian(model64, x64)  # (B, K, D)
    p = log_p.exp()
    if G.shape[-1] <= dense_max_dim:
        F1 = torch.einsum("bk,bki,bkj->bij", p, G, G)  # (B, D, D)
        C = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)  # (B, K, K)
        F2 = J.transpose(1, 2) @ C @ J  # (B, D, D)
        return ((F1 - F2).flatten(1).norm(dim=1) / F2.flatten(1).norm(dim=1)).float()
    centred = J - (p.unsqueeze(1) @ J)  # (B, K, D): rows Jᵀ(e_k − p)
    return ((G - centred).flatten(1).norm(dim=1) / centred.flatten(1).norm(dim=1)).float()


def top_eigenvector(p: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    """λ_max (B,) and the unit top eigenvector of F = Gᵀ diag(p) G in input space (B, D)."""
    evals, evecs = torch.linalg.eigh(fisher_gram(p, G))  # (B, K), (B, K, K)
    u = evecs[..., -1]  # (B, K)
    v = (G.transpose(1, 2) @ (p.sqrt() * u).unsqueeze(-1)).squeeze(-1)  # (B, D) ∝ top eigenvector
    return evals[..., -1], v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


def kl_relative_errors(
    model: Callable[[Tensor], Tensor], x: Tensor, delta: Tensor, p: Tensor, G: Tensor
) -> tuple[Tensor, Tensor]:
    """(|KL − ½δᵀFδ| / KL, KL) per sample for perturbations ``delta`` (B, C, H, W)."""
    with torch.no_grad():
        log_q = F.log_softmax(model(x + delta), dim=-1)  # (B, K)
    log_p = p.clamp_min(torch.finfo(p.dtype).tiny).log()
    kl = (p * (log_p - log_q)).sum(-1)  # (B,)
    gd = (G @ delta.reshape(delta.shape[0], -1, 1)).squeeze(-1)  # (B, K) g_k · δ
    quad = 0.5 * (p * gd.square()).sum(-1)
    return (kl - quad).abs() / kl.clamp_min(torch.finfo(kl.dtype).tiny), kl


def _eps_tag(eps: float) -> str:
    return f"e{eps * 255:g}".replace(".", "p")


class FisherChecks:
    """``metric=fisher_checks``: identity, local-KL and estimator-fidelity checks (module docstring).

    Args:
        n_samples: first n evaluation samples checked.
        kl_eps: L∞ radii of the KL check in [0, 1] pixel units (default 1, 2, 4 and 8 / 255).
        estimators: estimators compared with ``exact`` (subset of power, srp_maxrq, lanczos, blackbox, trace).
        identity_samples: samples of the float64 identity check (D×D each when D ≤ dense_max_dim).
        dense_max_dim: largest input dimension D for the dense identity check.
        seed: probes, directions and start vectors; None = the run seed.
    """

    name = "fisher_checks"
    under_shift = False

    def __init__(
        self,
        n_samples: int = 64,
        kl_eps: Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
        estimators: Sequence[str] = FIDELITY_ESTIMATORS,
        identity_samples: int = 4,
        dense_max_dim: int = 4096,
        seed: int | None = None,
    ) -> None:
        unknown = [e for e in estimators if e not in FIDELITY_ESTIMATORS]
        if unknown:
            raise ValueError(
                f"metric.fisher_checks.estimators has {unknown}; valid values: {list(FIDELITY_ESTIMATORS)}"
            )
        if len(set(estimators)) != len(list(estimators)):
            raise ValueError(f"metric.fisher_checks.estimators lists an estimator twice: {list(estimators)}")
        bad = [e for e in kl_eps if not 0.0 < float(e) <= 1.0]
        if bad or len(set(kl_eps)) != len(list(kl_eps)):
            raise ValueError(
                f"metric.fisher_checks.kl_eps={list(kl_eps)} must be distinct radii in (0, 1] pixel units "
                "(8/255 ≈ 0.0314, not 8)"
            )
        for key, value in (("n_samples", n_samples), ("identity_samples", identity_samples)):
            if value < 1:
                raise ValueError(f"metric.fisher_checks.{key} must be >= 1, got {value}")
        self.n_samples, self.kl_eps, self.estimators = (
            n_samples,
            tuple(float(e) for e in kl_eps),
            tuple(estimators),
        )
        self.identity_samples, self.dense_max_dim, self.seed = identity_samples, dense_max_dim, seed
        self.roles = MetricRoles()

    def __call__(self, ctx: EvalContext) -> MetricResult:
        n = min(self.n_samples, len(ctx.data))
        x = ctx.data.x[:n].detach().float()
        seed = ctx.seed if self.seed is None else self.seed
        generator = torch.Generator(device=x.device).manual_seed(seed)
        scalars: dict[str, float] = {"n": float(n)}
        with evaluating(ctx.model, "metric.fisher_checks"):
            model = ctx.model
            errors = identity_errors(model, x[: self.identity_samples], self.dense_max_dim)
            scalars["identity_rel_err_max"] = float(errors.max())
            tic = time.perf_counter()
            log_p, G = class_gradients(model, x)  # (n, K), (n, K, D)
            p = log_p.exp()
            exact = lambda_max_exact(p, G)
            scalars["exact_seconds"] = time.perf_counter() - tic
            model64 = (
                copy.deepcopy(model).double().eval()
            )  # KL at small ε is ~1e-6: float32 round-off dominates
            x64 = x.double()
            log_p64, G64 = class_gradients(model64, x64)
            scalars.update(self._kl(model64, x64, log_p64.exp(), G64, generator))
            scalars.update(self._fidelity(model, x, p, G, exact, generator))
        return MetricResult(scalars=scalars)

    def _kl(
        self, model: nn.Module, x: Tensor, p: Tensor, G: Tensor, generator: torch.Generator
    ) -> dict[str, float]:
        _, v_top = top_eigenvector(p, G)  # (n, D)
        v_top = v_top / v_top.abs().amax(-1, keepdim=True)  # ‖v‖∞ = 1
        out: dict[str, float] = {}
        for eps in self.kl_eps:
            tag = _eps_tag(eps)
            noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
            random_delta = (2 * noise.to(x.device, x.dtype) - 1) * eps  # (n, C, H, W) uniform in the L∞ ball
            top_delta = (eps * v_top).reshape(x.shape)
            err_r, kl_r = kl_relative_errors(model, x, random_delta, p, G)
            err_t, kl_t = kl_relative_errors(model, x, top_delta, p, G)
            out[f"kl_random_{tag}_rel_err_median"] = float(err_r.median())
            out[f"kl_random_{tag}_rel_err_mean"] = float(err_r.mean())
            out[f"kl_top_{tag}_rel_err_median"] = float(err_t.median())
            out[f"kl_top_{tag}_rel_err_mean"] = float(err_t.mean())
            ratio = kl_t / kl_r.clamp_min(torch.finfo(kl_r.dtype).tiny)
            out[f"kl_top_over_random_{tag}"] = float(ratio.median())
        return out

    def _fidelity(
        self, model: nn.Module, x: Tensor, p: Tensor, G: Tensor, exact: Tensor, generator: torch.Generator
    ) -> dict[str, float]:
        runs: dict[str, Callable[[], Tensor]] = {
            "power": lambda: power_iteration(p, G)[0],
            "srp_maxrq": lambda: srp_maxrq(p, G, generator=generator),
            "lanczos": lambda: lanczos(model, x, generator=generator).lam,
            "blackbox": lambda: blackbox(model, x, generator=generator).rayleigh_ritz,
            "trace": lambda: trace_exact(p, G),
        }
        out: dict[str, float] = {}
        reference = exact.double().cpu().numpy()
        for name in self.estimators:
            tic = time.perf_counter()
            estimate = runs[name]().double().cpu().numpy()
            out[f"fidelity_{name}_seconds"] = time.perf_counter() - tic
            ok = np.isfinite(estimate) & np.isfinite(reference) & (reference > 0)
            out[f"fidelity_{name}_ratio_median"] = (
                float(np.median(estimate[ok] / reference[ok])) if ok.any() else float("nan")
            )
            rho = stats.spearmanr(estimate[ok], reference[ok]).statistic if ok.sum() >= 3 else float("nan")
            out[f"fidelity_{name}_spearman"] = float(rho)
        return out
