"""``metric=spectral_bound``: the bound of the walk against the empirical λ of the same samples."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from robustdiag.metrics.bounds.ops import PowerSettings, UnsupportedArchitecture, _exp, supported
from robustdiag.metrics.bounds.registry import network_ops
from robustdiag.metrics.fisher import FisherShared, choose_estimator
from robustdiag.metrics.fisher_linalg import (
    INPUT_SPACES,
    class_gradients,
    lambda_max_exact,
    lanczos,
    resolve_input_space,
)
from robustdiag.models.mode import evaluating
from robustdiag.progress import progress
from robustdiag.types import EvalContext, MetricResult, MetricRoles

log = logging.getLogger(__name__)

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
            f"the model has a block this walk does not model. Supported: {supported()}."
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
    local. The empirical λ is reused from ``ctx.cache[FisherShared]`` when ``metric=fisher`` ran first in
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
        shared = ctx.cache.get(FisherShared)
        if (
            isinstance(shared, FisherShared)
            and shared.lam.numel() >= n
            and shared.input_space == self.input_space
            and shared.targets_lambda_max
        ):
            return shared.lam[:n]
        return empirical_lambda(ctx.model, x, input_space=self.input_space, batch_size=batch, seed=seed)
