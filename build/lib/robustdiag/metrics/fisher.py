"""``metric=fisher``: the input-Fisher spectral norm λ(x) = λ_max(F(x)) per sample (Zhang et al.,
arXiv 2606.04767; DESIGN §4.4), with the estimator chosen by ``estimator`` (see
:mod:`robustdiag.metrics.fisher_linalg` for what each one computes and costs).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from robustdiag.metrics.fisher_linalg import (
    INPUT_SPACES,
    JVP_MODES,
    PROBES,
    Logits,
    blackbox,
    class_gradients,
    lambda_max_exact,
    lanczos,
    power_iteration,
    resolve_input_space,
    srp_maxrq,
    trace_exact,
    trace_hutchinson,
)
from robustdiag.models.mode import evaluating
from robustdiag.progress import progress
from robustdiag.types import EvalContext, MetricResult, MetricRoles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FisherShared:
    """What ``metric=fisher`` leaves for the other metrics of the same condition, under the key
    ``FisherShared`` in ``EvalContext.cache`` (the spectral bound reuses λ instead of recomputing it)."""

    lam: Tensor  # (n,) float64 on the CPU: λ of the first n evaluation samples
    input_space: str
    estimator: str  # the estimator that produced it ("auto" resolved)

    @property
    def targets_lambda_max(self) -> bool:
        """Whether ``lam`` estimates λ_max itself (not a trace, a random-probe or a black-box value)."""
        return self.estimator in ("exact", "lanczos", "power")


ESTIMATORS = ("exact", "lanczos", "power", "srp_maxrq", "trace", "blackbox", "auto")
_NEEDS_G = ("exact", "power", "srp_maxrq", "trace")  # estimators that materialise G (B, K, D)


# ----------------------------------------------------------------------------------------------------------
# the metric


@dataclass
class FisherEstimate:
    """Per-sample output of one estimator on one chunk of samples."""

    lam: Tensor  # (B,)
    trace: Tensor  # (B,) NaN where the estimator gives none
    log_p: Tensor  # (B, K)
    extra: dict[str, Tensor] = field(default_factory=dict)  # per-sample diagnostics, (B,) each


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of ``scores`` for ``positive`` (ties count one half); NaN if one class is absent. The one
    implementation is :func:`robustdiag.analysis.stats.weighted_auroc` (the analysis bootstraps it)."""
    from robustdiag.analysis.stats import weighted_auroc

    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if pos.all() or not pos.any():
        return float("nan")
    return float(weighted_auroc(s, pos, np.ones((1, s.size)))[0])


def choose_estimator(
    num_classes: int, input_dim: int, bytes_per_value: int, budget_bytes: float, max_exact_classes: int
) -> str:
    """``auto``: ``exact`` when K ≤ max_exact_classes and one sample's G (K×D) fits the budget, else lanczos."""
    if num_classes <= max_exact_classes and num_classes * input_dim * bytes_per_value <= budget_bytes:
        return "exact"
    return "lanczos"


class FisherMetric:
    """``metric=fisher``: per-sample λ(x) = λ_max(F(x)) on the first ``n_samples`` evaluation samples.

    Scalars: mean, median, p90, max, inv_mean (1/mean), trace_mean, n, n_flagged, estimator diagnostics
    (iterations_mean/max and converged_frac for lanczos/power, queries for blackbox, bb_max_mean and
    bb_trace_mean for blackbox, hutchinson_mean/hutchinson_se_mean for trace) and, for every attack in
    ``ctx.attack_fooled``, auroc_fooled/<attack> (AUROC of λ for predicting that the attack fools the
    sample). Per sample (length N, NaN beyond n): lambda, trace, flag (1 = non-finite, excluded; 0 = ok),
    and the estimator's diagnostics. λ of the first n samples is left in ``ctx.cache[FisherShared]``.

    Memory: estimators that hold G (exact, power, srp_maxrq, trace) process chunks of at most
    ``memory_budget_gb`` / (K·D·bytes) samples. When one sample's G does not fit, an explicitly requested
    G-based estimator raises an error naming the memory it needs (it does not switch silently); ``auto``
    switches to ``lanczos`` and logs why.
    """

    def __init__(
        self,
        estimator: str = "auto",
        n_samples: int = 500,
        input_space: str = "pixel",
        batch_size: int | None = None,
        memory_budget_gb: float = 4.0,
        max_exact_classes: int = 100,
        lanczos_tol: float = 1e-6,
        lanczos_max_iter: int = 64,
        power_tol: float = 1e-6,
        power_max_iter: int = 100,
        srp_probes: int = 100,
        srp_distribution: str = "gaussian",
        trace_probes: int = 16,
        blackbox_directions: int = 100,
        blackbox_step: float = 1e-3,
        jvp: str = "forward",
        under_shift: bool = False,
        seed: int | None = None,
    ) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"metric.fisher.estimator={estimator!r} is not one of {list(ESTIMATORS)}")
        if input_space not in INPUT_SPACES:
            raise ValueError(f"metric.fisher.input_space={input_space!r} is not one of {list(INPUT_SPACES)}")
        if jvp not in JVP_MODES:
            raise ValueError(f"metric.fisher.jvp={jvp!r} is not one of {list(JVP_MODES)}")
        if srp_distribution not in PROBES:
            raise ValueError(
                f"metric.fisher.srp_distribution={srp_distribution!r} is not one of {list(PROBES)}"
            )
        for key, value, least in (
            ("n_samples", n_samples, 1),
            ("srp_probes", srp_probes, 1),
            ("trace_probes", trace_probes, 0),
        ):
            if value < least:
                raise ValueError(f"metric.fisher.{key} must be ≥ {least}, got {value}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"metric.fisher.batch_size must be ≥ 1 or null, got {batch_size}")
        self.name = "fisher"
        self.under_shift = under_shift
        self.roles = MetricRoles(diagnostics=("mean",), per_sample_diagnostics=("lambda",))
        self.estimator = estimator
        self.n_samples = n_samples
        self.input_space = input_space
        self.batch_size = batch_size
        self.memory_budget_gb = memory_budget_gb
        self.max_exact_classes = max_exact_classes
        self.lanczos_tol, self.lanczos_max_iter = lanczos_tol, lanczos_max_iter
        self.power_tol, self.power_max_iter = power_tol, power_max_iter
        self.srp_probes, self.srp_distribution = srp_probes, srp_distribution
        self.trace_probes = trace_probes
        self.blackbox_directions, self.blackbox_step = blackbox_directions, blackbox_step
        self.jvp = jvp
        self.seed = seed
        self._estimators: dict[str, Callable[[Logits, Tensor, torch.Generator, int], FisherEstimate]] = {
            "exact": self._exact,
            "lanczos": self._lanczos,
            "power": self._power,
            "srp_maxrq": self._srp_maxrq,
            "trace": self._trace,
            "blackbox": self._blackbox,
        }

    # --- the Metric protocol ------------------------------------------------------------------------------

    def __call__(self, ctx: EvalContext) -> MetricResult:
        """Estimate λ on the first n samples of ``ctx.data`` and summarise it."""
        n = min(self.n_samples, len(ctx.data))
        seed = ctx.seed if self.seed is None else self.seed
        with evaluating(ctx.model, "metric.fisher"):
            fn, x = resolve_input_space(ctx.model, ctx.data.x[:n], self.input_space)
            estimator, chunk, batch = self._plan(x, ctx)
            generator = torch.Generator(device=x.device).manual_seed(seed)
            run = self._estimators[estimator]
            chunks = x.split(chunk)
            parts = [
                run(fn, xc, generator, batch)
                for xc in progress(chunks, desc=f"fisher[{estimator}]", unit="batch")
            ]
        est = FisherEstimate(
            lam=torch.cat([e.lam for e in parts]),
            trace=torch.cat([e.trace for e in parts]),
            log_p=torch.cat([e.log_p for e in parts]),
            extra={k: torch.cat([e.extra[k] for e in parts]) for k in parts[0].extra},
        )
        flag = self._flags(est)
        lam = torch.where(flag, torch.full_like(est.lam, float("nan")), est.lam)
        ctx.cache[FisherShared] = FisherShared(lam.detach().double().cpu(), self.input_space, estimator)
        scalars = self._scalars(lam, est, flag, estimator)
        scalars.update(self._aurocs(ctx, lam, flag))
        N = len(ctx.data)
        per_sample = {
            "lambda": _pad(lam, N),
            "trace": _pad(est.trace, N),
            "flag": _pad(flag.to(lam.dtype), N),
        }
        per_sample.update({k: _pad(v.to(torch.float64), N) for k, v in est.extra.items()})
        return MetricResult(scalars=scalars, per_sample=per_sample)

    # --- planning and bookkeeping -------------------------------------------------------------------------

    def _plan(self, x: Tensor, ctx: EvalContext) -> tuple[str, int, int]:
        """Resolve ``auto``, the chunk of samples per estimator call and the forward batch size.

        Refuses a G-based estimator whose G does not fit ``memory_budget_gb`` for even one sample.
        """
        K = ctx.num_classes
        D = x[0].numel()
        bytes_per_value = x.element_size()
        budget = self.memory_budget_gb * 2**30
        batch = self.batch_size or ctx.batch_size
        estimator = self.estimator
        if estimator == "auto":
            estimator = choose_estimator(K, D, bytes_per_value, budget, self.max_exact_classes)
            if estimator != "exact":
                log.info(
                    "metric.fisher: estimator=auto chose lanczos (K=%d, max_exact_classes=%d, "
                    "G needs %.2f GiB per sample, memory_budget_gb=%g)",
                    K,
                    self.max_exact_classes,
                    K * D * bytes_per_value / 2**30,
                    self.memory_budget_gb,
                )
        per_sample = {
            "blackbox": self.blackbox_directions * D * bytes_per_value * 4,  # V, the ± queries and slack
        }.get(estimator, K * D * bytes_per_value if estimator in _NEEDS_G else 0)
        if per_sample > budget:
            raise MemoryError(
                f"metric.fisher.estimator={estimator} needs {per_sample / 2**30:.2f} GiB per sample "
                f"(K={K} classes × D={D} inputs × {bytes_per_value} bytes for the gradient matrix G), above "
                f"metric.fisher.memory_budget_gb={self.memory_budget_gb}. Use metric.fisher.estimator=lanczos "
                "(matrix-free) or raise metric.fisher.memory_budget_gb."
            )
        chunk = max(1, min(batch, int(budget // per_sample))) if per_sample else batch
        return estimator, chunk, batch

    def _flags(self, est: FisherEstimate) -> Tensor:
        """Samples with non-finite log-probabilities or estimates: excluded from every statistic."""
        flag = ~torch.isfinite(est.log_p).all(-1) | ~torch.isfinite(est.lam)
        n_flagged = int(flag.sum())
        if n_flagged:
            warnings.warn(
                f"metric.fisher: {n_flagged} of {flag.numel()} samples have non-finite gradients or "
                "probabilities; they are flagged (per-sample `flag`) and excluded from the statistics.",
                stacklevel=3,
            )
        return flag

    def _scalars(self, lam: Tensor, est: FisherEstimate, flag: Tensor, estimator: str) -> dict[str, float]:
        ok = ~flag
        values = lam[ok].double()
        mean = float(values.mean()) if values.numel() else float("nan")
        stats = {
            "mean": mean,
            "median": float(values.median()) if values.numel() else float("nan"),
            "p90": float(torch.quantile(values, 0.9)) if values.numel() else float("nan"),
            "max": float(values.max()) if values.numel() else float("nan"),
            "inv_mean": 1.0 / mean if mean > 0 else float("nan"),
            "trace_mean": _nanmean(est.trace[ok]),
            "n": float(flag.numel()),
            "n_flagged": float(flag.sum()),
        }
        extra = {k: v[ok] for k, v in est.extra.items()}
        if "iterations" in extra:
            stats["iterations_mean"] = _nanmean(extra["iterations"])
            stats["iterations_max"] = float(extra["iterations"].max()) if extra["iterations"].numel() else 0.0
            stats["converged_frac"] = _nanmean(extra["converged"])
            stats["tol"] = self.lanczos_tol if estimator == "lanczos" else self.power_tol
            stats["max_iter"] = float(
                self.lanczos_max_iter if estimator == "lanczos" else self.power_max_iter
            )
        if estimator == "blackbox":
            stats["queries"] = (
                float(est.extra["queries"][0]) if est.extra["queries"].numel() else float("nan")
            )
            stats["bb_max_mean"] = _nanmean(extra["bb_max"])
            stats["bb_trace_mean"] = _nanmean(est.trace[ok])
        if estimator == "trace":
            stats["hutchinson_mean"] = _nanmean(extra["trace_hutchinson"])
            stats["hutchinson_se_mean"] = _nanmean(extra["trace_hutchinson_se"])
            stats["hutchinson_ci_coverage"] = _nanmean(
                extra["trace_hutchinson_covers"]
            )  # of the 95% intervals
        if estimator == "lanczos":
            stats["trace_probes"] = float(self.trace_probes)
        return stats

    def _aurocs(self, ctx: EvalContext, lam: Tensor, flag: Tensor) -> dict[str, float]:
        """auroc_fooled/<attack>: how well λ (high = fragile) predicts that the attack fools a sample."""
        out: dict[str, float] = {}
        n = lam.numel()
        ok = (~flag).cpu().numpy()
        scores = lam.double().cpu().numpy()[ok]
        for attack, fooled in ctx.attack_fooled.items():
            if fooled.numel() < n:
                log.warning(
                    "metric.fisher: attack_fooled[%s] has %d < %d entries; skipped", attack, fooled.numel(), n
                )
                continue
            labels = fooled[:n].bool().cpu().numpy()[ok]
            value = auroc(scores, labels)
            if math.isnan(value):
                log.info("metric.fisher: auroc_fooled/%s is NaN: only one class (all or none fooled)", attack)
            out[f"auroc_fooled/{attack}"] = value
        return out

    # --- estimators on one chunk --------------------------------------------------------------------------

    def _exact(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        log_p, G, p = self._gradients(fn, x)
        return FisherEstimate(lambda_max_exact(p, G), trace_exact(p, G), log_p)

    def _power(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        log_p, G, p = self._gradients(fn, x)
        lam, iters, converged = power_iteration(p, G, tol=self.power_tol, max_iter=self.power_max_iter)
        extra = {"iterations": iters.to(lam.dtype), "converged": converged.to(lam.dtype)}
        return FisherEstimate(lam, trace_exact(p, G), log_p, extra)

    def _srp_maxrq(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        log_p, G, p = self._gradients(fn, x)
        lam = srp_maxrq(p, G, n_probes=self.srp_probes, generator=generator, probes=self.srp_distribution)
        return FisherEstimate(lam, trace_exact(p, G), log_p)

    def _trace(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        log_p, G, p = self._gradients(fn, x)
        tr = trace_exact(p, G)
        nan = torch.full_like(tr, float("nan"))
        extra = {"trace_hutchinson": nan, "trace_hutchinson_se": nan, "trace_hutchinson_covers": nan}
        if self.trace_probes:
            hutch = trace_hutchinson(fn, x, n_probes=self.trace_probes, generator=generator, jvp=self.jvp)
            covers = ((hutch.ci_low <= tr) & (tr <= hutch.ci_high)).to(tr.dtype)  # against the exact trace
            extra = {
                "trace_hutchinson": hutch.estimate,
                "trace_hutchinson_se": hutch.se,
                "trace_hutchinson_covers": covers,
            }
        return FisherEstimate(tr, tr, log_p, extra)

    def _lanczos(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        res = lanczos(
            fn, x, generator=generator, tol=self.lanczos_tol, max_iter=self.lanczos_max_iter, jvp=self.jvp
        )
        tr = torch.full_like(res.lam, float("nan"))  # trace_probes = 0: no trace (saves its JVPs)
        if self.trace_probes:
            tr = trace_hutchinson(
                fn, x, n_probes=self.trace_probes, generator=generator, jvp=self.jvp
            ).estimate
        extra = {"iterations": res.iterations.to(res.lam.dtype), "converged": res.converged.to(res.lam.dtype)}
        return FisherEstimate(res.lam, tr, res.log_p, extra)

    def _blackbox(self, fn: Logits, x: Tensor, generator: torch.Generator, batch: int) -> FisherEstimate:
        res = blackbox(
            fn,
            x,
            generator=generator,
            n_directions=self.blackbox_directions,
            step=self.blackbox_step,
            query_batch=batch,
        )
        queries = torch.full_like(res.rayleigh_ritz, float(res.queries))
        return FisherEstimate(
            res.rayleigh_ritz, res.trace, res.log_p, {"bb_max": res.max_quadratic, "queries": queries}
        )

    @staticmethod
    def _gradients(fn: Logits, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log_p, G, p) with non-finite gradient rows zeroed so one bad sample cannot break eigvalsh."""
        log_p, G = class_gradients(fn, x)
        bad = ~torch.isfinite(G).all(-1).all(-1) | ~torch.isfinite(log_p).all(-1)  # (B,)
        if bool(bad.any()):
            G[bad] = 0.0
            log_p = log_p.clone()
            log_p[bad] = float("nan")  # flagged downstream
        p = torch.where(bad.unsqueeze(-1), torch.zeros_like(log_p), log_p.exp())
        return log_p, G, p


def _pad(values: Tensor, length: int) -> np.ndarray:
    """float64 numpy column of ``length`` with NaN after the evaluated samples."""
    out = np.full(length, np.nan)
    out[: values.numel()] = values.detach().double().cpu().numpy()
    return out


def _nanmean(values: Tensor) -> float:
    values = values.double()
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else float("nan")
