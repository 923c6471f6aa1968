"""The contracts between the evaluation stages.

A run evaluates one trained model on a fixed, class-balanced set of test samples. Every stage below
receives plain tensors and objects (never the Hydra config):

* a :class:`Shift` turns clean pixels into shifted pixels,
* an :class:`Attack` turns clean pixels into adversarial pixels for a given model,
* a :class:`Metric` turns an :class:`EvalContext` into a :class:`MetricResult`.

All images are float pixels in [0, 1] with shape (B, C, H, W); models normalise internally and return
logits of shape (B, K).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@dataclass
class EvalSet:
    """A fixed set of evaluation samples under one condition ("clean" or "<shift>/<severity>")."""

    x: torch.Tensor  # (N, C, H, W) float32 pixels in [0, 1], on the model's device
    y: torch.Tensor  # (N,) int64 true labels
    index: torch.Tensor  # (N,) int64 position of each sample in its split (for per-sample joins)
    y_trained: torch.Tensor | None = None  # (N,) labels the model was trained on (train split only)
    condition: str = "clean"

    def __post_init__(self) -> None:
        assert self.x.ndim == 4, f"x must be (N, C, H, W), got {tuple(self.x.shape)}"
        assert self.x.shape[0] == self.y.shape[0] == self.index.shape[0]

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class EvalContext:
    """Everything a metric may need. Built once per condition by the run pipeline."""

    model: nn.Module  # eval mode, on device; pixels in [0, 1] -> logits (B, K)
    data: EvalSet  # test-split evaluation samples under the current condition
    num_classes: int
    batch_size: int
    seed: int
    logits: torch.Tensor | None = None  # (N, K) logits of `data`, computed once by the pipeline
    train_data: EvalSet | None = None  # class-balanced train-split samples with the labels trained on
    attack_fooled: dict[str, torch.Tensor] = field(default_factory=dict)  # attack name -> (N,) bool
    clean: EvalSet | None = None  # the clean samples when `data` is shifted (same order), else None
    input_mean: tuple[float, ...] = ()  # per-channel normalisation the model applies inside (pixel units)
    input_std: tuple[float, ...] = ()
    # Work shared between the metrics of one condition, under keys the producing metric defines (e.g.
    # "fisher/lambda", or ("robustdiag.paths", condition, settings, request)); fresh per condition.
    cache: dict[Hashable, object] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.data.x.device


@dataclass
class MetricResult:
    """What a metric returns for one condition.

    ``scalars`` become ``metric/<name>/<stat>`` on clean data and
    ``metric/<name>/<shift>/<severity>/<stat>`` under a shift. ``per_sample`` columns have length N and
    are joined on the sample index; ``per_layer`` rows go to ``per_layer.csv`` with the metric name and
    condition added by the pipeline.
    """

    scalars: dict[str, float]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    per_layer: list[dict[str, object]] = field(default_factory=list)


class MetricNotApplicable(ValueError):  # noqa: N818 - an outcome, recorded as such
    """Raised by a metric that does not apply to this model (e.g. no spectral-bound rule for its blocks).

    The run records ``metric/<name>/not_applicable`` with the message and completes; analyses use what
    exists. Anything else a metric raises still fails the run.
    """


@dataclass(frozen=True)
class MetricRoles:
    """Which of a metric's outputs are diagnostics and which are baselines (declared, never guessed).

    Names are relative to the metric: a scalar stat (``mean`` -> ``metric/fisher/mean``) or a per-sample
    column (``lambda`` -> ``metric/fisher/lambda``). The run record lists them under the
    ``record/...`` role keys of :mod:`robustdiag.records.schema`; the analysis reads only those.
    Anything not listed (sample counts, timings, estimator diagnostics, checks) is never analysed as a
    diagnostic.
    """

    diagnostics: tuple[str, ...] = ()  # run-level scalars that are diagnostics
    baselines: tuple[str, ...] = ()  # run-level scalars that are cheap baselines
    per_sample_diagnostics: tuple[str, ...] = ()  # per-sample columns (high = more vulnerable)
    per_sample_baselines: tuple[str, ...] = ()


@runtime_checkable
class Metric(Protocol):
    name: str  # record key, e.g. "fisher"
    under_shift: bool  # recompute under every configured shift
    roles: MetricRoles  # what the analysis may treat as a diagnostic or a baseline

    def __call__(self, ctx: EvalContext) -> MetricResult: ...


@runtime_checkable
class SharesWork(Protocol):
    """A metric that can compute other metrics' results in its own pass (path/activation separation and
    their variants share one forward pass). The engine introduces the metrics of a run to each other once,
    with :func:`share_work`; nothing is shared through globals."""

    def share_with(self, metrics: Sequence[Metric]) -> None: ...


def share_work(metrics: Iterable[Metric]) -> None:
    """Introduce the metrics of one run to each other (see :class:`SharesWork`)."""
    chosen = list(metrics)
    for metric in chosen:
        if isinstance(metric, SharesWork):
            metric.share_with(chosen)


@runtime_checkable
class Shift(Protocol):
    """A distribution shift of the input pixels. Only shifts that declare ``adversarial = True`` (see
    :class:`ModelShift`) receive the labels and the model; a corruption never needs them."""

    name: str  # record key, e.g. "gaussian_noise"
    severities: Sequence[int]

    def __call__(
        self,
        x: torch.Tensor,  # (B, C, H, W) in [0, 1]
        severity: int,
        *,
        generator: torch.Generator,  # CPU or x.device; a CPU generator gives identical CPU/CUDA results
        index: torch.Tensor | None = None,  # (B,) sample positions in the test split
    ) -> torch.Tensor: ...  # (B, C, H, W) in [0, 1], same dtype and device


@runtime_checkable
class ModelShift(Protocol):
    """A shift that depends on the model under evaluation (the adversarial shift); left out of the mean
    corruption accuracy."""

    name: str
    severities: Sequence[int]
    adversarial: bool  # True

    def __call__(
        self,
        x: torch.Tensor,  # (B, C, H, W) in [0, 1]
        severity: int,
        *,
        generator: torch.Generator,
        index: torch.Tensor | None = None,
        y: torch.Tensor | None = None,  # (B,) labels
        model: nn.Module | None = None,  # the model under evaluation
    ) -> torch.Tensor: ...


def needs_model(shift: Shift | ModelShift) -> bool:
    """Whether ``shift`` is a :class:`ModelShift` (gets ``y`` and ``model``)."""
    return bool(getattr(shift, "adversarial", False))


@runtime_checkable
class Attack(Protocol):
    """An attack and its threat model: every result is checked against ``norm`` and ``eps`` (ε-ball,
    pixel range). An optional ``strength`` (float) orders attacks for the weaker-vs-stronger check."""

    name: str  # record key, e.g. "pgd_linf"
    norm: str  # threat model: "linf", "l2" or "l1"
    eps: float  # radius in [0, 1] pixel units

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,  # (B, C, H, W) in [0, 1]
        y: torch.Tensor,  # (B,)
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...  # (B, C, H, W) adversarial pixels in [0, 1]
