"""Bernoulli path separation and its activation-space analogue (Khaitan & Banerjee 2026; DESIGN 4.3).

For every conv/linear layer (BatchNorm folded), each evaluation sample turns the layer's
weight-activation interactions into Bernoulli events (:mod:`path_events`); per-class Bernoulli parameters
are streamed as counters (:mod:`path_accum`) for the real labels and for R label permutations in the
same pass; class separation (:mod:`path_stats`) is reported per layer and as the model mean, with the
permutation null's mean and spread: ``excess = raw - null_mean`` and ``z = excess / null_std``.

``PathSeparation`` and ``ActivationSeparation`` share one forward pass: the engine introduces the metrics
of a run to each other (``types.share_work``); whichever runs first also computes the events of every
sibling with the same pass settings (labels, samples, layers, permutations, seed, batch size) and leaves
their results in ``ctx.cache``; the others reuse them. The results do not depend on the order.

Under a shift the pipeline calls the metric again on the shifted samples (same order, so the same
balanced selection and permutations); the drop from clean is left to the pipeline, which has both
``metric/<name>/excess`` and ``metric/<name>/<shift>/<severity>/excess``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn

from robustdiag.metrics import path_kernels
from robustdiag.metrics.path_accum import BatchLabels, EventCounters
from robustdiag.metrics.path_contrib import LayerProbe, LayerSums, contributions, output_ranges
from robustdiag.metrics.path_events import (
    EDGE_EVENTS,
    PATH_EVENTS,
    activation_events,
    cover_cutoff,
    initial_topk_hint,
    neuron_events,
    next_topk_hint,
)
from robustdiag.metrics.path_layers import ProbeLayer, discover_layers
from robustdiag.metrics.path_stats import (
    SEPARATIONS,
    class_pairs,
    model_summary,
    null_summary,
    pair_separation,
)
from robustdiag.models.mode import evaluating, parameter_dtype
from robustdiag.progress import progress
from robustdiag.types import EvalContext, Metric, MetricResult, MetricRoles

LABEL_SOURCES = ("true", "trained", "predicted")
COUNTER_DTYPE = torch.float32  # exact counts below 2**24 samples per class
CHECK_TOLERANCE = 1e-2  # contributions vs the layer's own output, relative to the sum of |contributions|


@dataclass(frozen=True)
class PassSettings:
    """Everything that must agree for two separation metrics to share one forward pass."""

    layers: tuple[str, ...] | None
    labels: str
    samples_per_class: int | None
    permutations: int
    seed: int | None
    batch_size: int | None
    chunk_elements: int


@dataclass(frozen=True)
class EventFamily:
    """One Bernoulli event definition (theta only matters for effective_path and neuron)."""

    event: str
    theta: float = 0.0

    @property
    def per_edge(self) -> bool:
        return self.event in EDGE_EVENTS


@dataclass(frozen=True)
class Request:
    """What one metric asks of a pass: its event, its separation and its memory budget."""

    metric: str
    family: EventFamily
    separation: str
    eps: float
    jaccard_threshold: float
    max_class_pairs: int | None
    memory_budget_gb: float


@dataclass
class Selection:
    """The balanced evaluation samples, their order (fit half first) and every labelling."""

    x: torch.Tensor  # (N, C, H, W) all candidate samples
    order: torch.Tensor  # (n,) indices into x: fit half, then test half
    fit_end: int  # position in `order` where the test half starts
    per_class: int
    labellings: torch.Tensor  # (L, n) labels of order[i] under the real labels (row 0) and permutations


@dataclass
class LayerState:
    """Per-layer working state of a pass."""

    layer: ProbeLayer
    weight: torch.Tensor  # folded weight
    bias: torch.Tensor  # (O,) folded bias
    scale: torch.Tensor  # (O,) BN scale applied to the layer's raw output
    shift: torch.Tensor  # (O,) BN shift
    ranges: list[tuple[int, int]]  # output-unit chunks, fixed for the pass (one counter block each)
    counters: dict[EventFamily, EventCounters] = field(default_factory=dict)
    tap_major_weight: np.ndarray | None = None  # folded weight in the CPU kernel's layout, made once
    topk_hints: dict[EventFamily, int] = field(default_factory=dict)  # effective_path: k for torch.topk
    checked: bool = False


# --------------------------------------------------------------------------------------------- samples
def evaluation_labels(ctx: EvalContext, source: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels)`` for ``labels=source``: test samples with true/predicted labels, or train samples."""
    if source == "true":
        return ctx.data.x, ctx.data.y
    if source == "trained":
        train = ctx.train_data
        if train is None or train.y_trained is None:
            raise ValueError(
                "labels='trained' needs ctx.train_data with y_trained (class-balanced train samples and the "
                "labels the model was trained on); the pipeline did not provide them. Use labels='true'."
            )
        if ctx.data.condition != "clean" and train.condition == "clean":
            warnings.warn(
                f"labels='trained' under condition {ctx.data.condition!r}: ctx.train_data is clean, so this "
                "condition's separation is measured on unshifted train samples.",
                stacklevel=3,
            )
        return train.x, train.y_trained
    if source == "predicted":
        logits = ctx.logits
        if logits is None or logits.shape[0] != len(ctx.data):
            with torch.no_grad():
                logits = torch.cat([ctx.model(chunk) for chunk in ctx.data.x.split(batch_size)])
        return ctx.data.x, logits.argmax(-1)
    raise ValueError(f"labels={source!r} is not valid; valid: {', '.join(LABEL_SOURCES)}")


def balanced_order(
    labels: torch.Tensor, num_classes: int, per_class: int | None, *, metric: str, source: str
) -> tuple[torch.Tensor, int, int]:
    """First ``per_class`` samples of each class in data order, as (order, fit_end, per_class).

    ``order`` lists the fit half (per_class // 2 of each class) before the test half. ``per_class=None``
    takes the size of the smallest class.
    """
    if num_classes < 2:
        raise ValueError(f"{metric}: separation between classes needs num_classes >= 2, got {num_classes}")
    labels = labels.detach().cpu().long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{metric}: labels ({source}) must lie in [0, {num_classes}); got {labels.unique().tolist()}"
        )
    counts = torch.bincount(labels, minlength=num_classes)  # (K,)
    n = int(counts.min()) if per_class is None else int(per_class)
    short = [(k, int(counts[k])) for k in range(num_classes) if counts[k] < max(n, 1)]
    if short:
        shown = ", ".join(f"class {k} has {c}" for k, c in short[:10])
        raise ValueError(
            f"{metric}: samples_per_class={n if per_class is not None else 'null (smallest class)'} but "
            f"{shown}{' ...' if len(short) > 10 else ''} (labels={source!r}, {labels.numel()} samples). Lower "
            "`samples_per_class` or evaluate more samples per class"
            + (" (predicted classes can be empty or rare)." if source == "predicted" else ".")
        )
    per_class_idx = [torch.nonzero(labels == k).flatten()[:n] for k in range(num_classes)]
    fit = torch.cat([idx[: n // 2] for idx in per_class_idx]).sort().values
    test = torch.cat([idx[n // 2 :] for idx in per_class_idx]).sort().values
    return torch.cat([fit, test]), int(fit.numel()), n


def label_permutations(
    labels: torch.Tensor, permutations: int, seed: int, *, split: int | None = None
) -> torch.Tensor:
    """Real labels (row 0) and ``permutations`` seeded shuffles of them. (1 + R, n).

    ``split``: shuffle positions [0, split) and [split, n) separately, so every permutation keeps the
    class balance of both halves. The naive-Bayes separation fits on the first half and tests on the
    second; shuffling across the halves unbalances the fit and biases its null (excess +0.03 and 13% of
    z > 2 with no class structure).
    """
    generator = torch.Generator().manual_seed(seed)
    n = labels.numel()

    def shuffle() -> torch.Tensor:
        if split is None:
            return torch.randperm(n, generator=generator)
        first = torch.randperm(split, generator=generator)
        return torch.cat([first, split + torch.randperm(n - split, generator=generator)])

    return torch.stack([labels] + [labels[shuffle()] for _ in range(permutations)])


def select_samples(
    ctx: EvalContext, settings: PassSettings, metric: str, batch_size: int, *, stratify: bool = False
) -> Selection:
    """Balanced samples and labellings for a pass (deterministic: same samples under every shift).

    ``stratify`` permutes within the fit and test halves (needed by naive Bayes)."""
    x, labels = evaluation_labels(ctx, settings.labels, batch_size)
    order, fit_end, per_class = balanced_order(
        labels, ctx.num_classes, settings.samples_per_class, metric=metric, source=settings.labels
    )
    seed = ctx.seed if settings.seed is None else settings.seed
    labellings = label_permutations(
        labels.detach().cpu().long()[order], settings.permutations, seed, split=fit_end if stratify else None
    )
    return Selection(x, order.to(x.device), fit_end, per_class, labellings.to(x.device))


# ---------------------------------------------------------------------------------------------- memory
def family_width(layer: ProbeLayer, family: EventFamily) -> int:
    """Bernoulli variables of one layer: edges for edge events, output units for unit events."""
    return layer.edges if family.per_edge else layer.out_units


def counter_bytes(layers: Sequence[ProbeLayer], request: Request, num_classes: int, permutations: int) -> int:
    """Bytes of a request's counters: variables x classes x (1 + R) x 4 (x 2 for naive Bayes weights)."""
    width = sum(family_width(layer, request.family) for layer in layers)
    factor = 2 if request.separation == "naive_bayes" else 1
    itemsize = torch.empty((), dtype=COUNTER_DTYPE).element_size()
    return width * num_classes * (1 + permutations) * itemsize * factor


def _human_bytes(size: float) -> str:
    """``480 B``, ``1.5 MiB``, ``3.20 GiB``."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def check_memory(layers: Sequence[ProbeLayer], request: Request, num_classes: int, permutations: int) -> None:
    """Raise if the counters exceed ``memory_budget_gb``, naming the size and what reduces it."""
    need = counter_bytes(layers, request, num_classes, permutations)
    budget = request.memory_budget_gb * 2**30
    if need <= budget:
        return
    largest = sorted(layers, key=lambda layer: family_width(layer, request.family), reverse=True)[:3]
    biggest = ", ".join(f"{layer.name} ({family_width(layer, request.family):,})" for layer in largest)
    nb = " x 2 (naive_bayes weights)" if request.separation == "naive_bayes" else ""
    raise MemoryError(
        f"{request.metric}: the streamed counters need {_human_bytes(need)} ({len(layers)} layers, "
        f"{sum(family_width(layer, request.family) for layer in layers):,} Bernoulli variables x {num_classes} "
        f"classes x {1 + permutations} labellings x 4 bytes{nb}) but memory_budget_gb={request.memory_budget_gb}. "
        f"Reduce it with `layers` (largest: {biggest}), fewer `permutations` (cost scales with 1 + permutations)"
        + (", or `event=neuron` (counts units, not edges)" if request.family.per_edge else "")
        + "; or raise `memory_budget_gb` if the device has room. `max_class_pairs` does not reduce counters."
    )


# -------------------------------------------------------------------------------------------- the pass
def _layer_state(
    layer: ProbeLayer,
    families: set[EventFamily],
    nb: set[EventFamily],
    rows: int,
    dtype: torch.dtype,
    ranges: list[tuple[int, int]],
) -> LayerState:
    """Folded weights and fresh counters of one layer (edge counters in one block per output range)."""
    scale, shift = layer.bn_affine(dtype)
    weight, bias = layer.folded_weight(dtype).detach(), layer.folded_bias(dtype).detach()
    state = LayerState(layer, weight, bias, scale, shift, ranges)
    device = weight.device
    edge_widths = [(o1 - o0) * layer.in_per_group for o0, o1 in ranges]
    for family in families:
        widths = edge_widths if family.per_edge else [layer.out_units]
        state.counters[family] = EventCounters(
            rows, widths, naive_bayes=family in nb, device=device, dtype=COUNTER_DTYPE
        )
    return state


def _check_contributions(
    layer: ProbeLayer, edge_sum: torch.Tensor, edge_abs: torch.Tensor, preact: torch.Tensor
) -> None:
    """Warn when a layer's contributions (+ bias) do not add up to its own (BN-folded) output."""
    error = (edge_sum - preact).abs()  # (B, O)
    if bool((error > CHECK_TOLERANCE * edge_abs + 1e-6).any()):
        worst = float((error / (edge_abs + 1e-12)).max())
        warnings.warn(
            f"path separation: contributions of layer {layer.name!r} ({type(layer.module).__name__}) do not sum "
            f"to its output (relative error {worst:.3g}); it may transform its weight or input in a way this "
            "metric does not model. Its separation may be unreliable; exclude it with `layers`.",
            stacklevel=4,
        )


def _edge_events(positive: torch.Tensor, family: EventFamily, state: LayerState) -> torch.Tensor:
    """Edge events of a chunk as counter-dtype 0/1 values. ``positive`` (B, Oc, Ig) -> (B, Oc*Ig)."""
    fired = torch.empty(positive.shape, dtype=COUNTER_DTYPE, device=positive.device)
    if family.event == "positive":
        torch.gt(positive, 0, out=fired)
    else:
        hint = state.topk_hints.get(family, initial_topk_hint(positive.shape[-1]))
        cutoff, count = cover_cutoff(positive, family.theta, hint)  # (B, Oc, 1) each
        torch.ge(positive, cutoff, out=fired)
        state.topk_hints[family] = next_topk_hint(count, positive.shape[-1])
    return fired.reshape(positive.shape[0], -1)


def _kernel_families(state: LayerState, sums: LayerSums) -> list[EventFamily]:
    """Edge families counted by the fused CPU kernel (:mod:`path_kernels`): effective paths on CPU."""
    if not path_kernels.usable_for(sums.inputs, state.weight):
        return []
    return [f for f in state.counters if f.event == "effective_path"]


def _update_layer(state: LayerState, sums: LayerSums, labels: BatchLabels) -> None:
    """Events of one batch for every family of one layer, added to the counters."""
    layer = state.layer
    fused = _kernel_families(state, sums)
    edge_families = [f for f in state.counters if f.per_edge and f not in fused]
    neuron_families = [f for f in state.counters if f.event == "neuron"]
    preact = state.scale * sums.outputs + state.shift * sums.positions  # (B, O) true pre-activation sums
    check = not state.checked and any(f.event != "activation" for f in state.counters)
    if edge_families or neuron_families or fused:
        edge_sum = torch.zeros_like(preact)  # (B, O) contributions summed, checked once against preact
        edge_abs = torch.zeros_like(preact)
        positive_mass = torch.zeros_like(preact)  # (B, O) sum_j max(C_ij, 0)
        materialise = bool(edge_families) or check or (bool(neuron_families) and not fused)
        if fused and state.tap_major_weight is None:
            state.tap_major_weight = path_kernels.tap_major(state.weight)  # (O, T, Cg)
        tap_major_sums = path_kernels.tap_major(sums.inputs) if fused else None  # (B, T, C)
        for block, (o0, o1) in enumerate(state.ranges):
            for family in fused:
                assert tap_major_sums is not None and state.tap_major_weight is not None
                counters = state.counters[family]
                fired, mass = path_kernels.effective_path_counts(
                    tap_major_sums,
                    state.tap_major_weight[o0:o1],
                    o0,
                    layer.out_units // layer.groups,
                    family.theta,
                    labels.rows,
                    counters.blocks[block],
                    keep_fired=counters.scoring,
                )  # counted in place; (B, Oc*Ig) events only while naive Bayes scores a test batch
                if fired is not None:
                    counters.score(fired, block)
                positive_mass[:, o0:o1] = mass
            if not materialise:
                continue
            contrib = contributions(layer, sums.inputs, state.weight, o0, o1)  # (B, Oc, Ig)
            if check:
                edge_sum[:, o0:o1] = contrib.sum(-1)
                edge_abs[:, o0:o1] = contrib.abs().sum(-1)
            positive = contrib.clamp_(min=0)  # (B, Oc, Ig)
            for family in edge_families:
                fired = _edge_events(positive, family, state)  # (B, Oc*Ig)
                state.counters[family].add(labels, fired, block)
            if neuron_families and not fused:
                positive_mass[:, o0:o1] = positive.sum(-1)
        for family in neuron_families:
            state.counters[family].add(labels, neuron_events(positive_mass, family.theta))
        if check:
            bias = state.bias * sums.positions  # (O,)
            _check_contributions(layer, edge_sum + bias, edge_abs + bias.abs(), preact)
            state.checked = True
    for family, counters in state.counters.items():
        if family.event == "activation":
            counters.add(labels, activation_events(preact))


def _called_layers(states: list[LayerState], sums: dict[str, LayerSums], *, first: bool) -> list[LayerState]:
    """Drop (with a warning) layers the forward pass never calls; they must not vanish later."""
    missing = [state.layer.name for state in states if state.layer.name not in sums]
    if not missing:
        return states
    if not first:
        raise RuntimeError(
            f"path separation: layers {missing} were called for earlier batches but not this one"
        )
    warnings.warn(
        f"path separation: layers {missing} are never called in the forward pass; they are left out.",
        stacklevel=3,
    )
    kept = [state for state in states if state.layer.name in sums]
    if not kept:
        raise ValueError("path separation: none of the selected layers is called in the forward pass")
    return kept


def _batch_ranges(total: int, fit_end: int, batch_size: int) -> list[tuple[int, int]]:
    """Batches over [0, total) that never straddle the fit/test boundary."""
    ranges = [(s, min(s + batch_size, fit_end)) for s in range(0, fit_end, batch_size)]
    return ranges + [(s, min(s + batch_size, total)) for s in range(fit_end, total, batch_size)]


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The precision events are computed in: float64 for float64 models (exact tests), else float32
    (half-precision models are measured in float32)."""
    return torch.float64 if parameter_dtype(model) == torch.float64 else torch.float32


def run_pass(
    ctx: EvalContext, settings: PassSettings, requests: Sequence[Request], layers: Sequence[ProbeLayer]
) -> dict[Request, MetricResult]:
    """One forward pass over the balanced samples; returns every request's result."""
    batch_size = settings.batch_size or ctx.batch_size
    names = "+".join(sorted({r.metric for r in requests}))
    naive_bayes = any(r.separation == "naive_bayes" for r in requests)
    selection = select_samples(ctx, settings, names, batch_size, stratify=naive_bayes)
    if any(r.separation == "naive_bayes" for r in requests) and selection.per_class < 2:
        raise ValueError(
            f"separation='naive_bayes' needs samples_per_class >= 2 (fit and test halves); got {selection.per_class}"
        )
    num_classes, labellings = ctx.num_classes, selection.labellings.shape[0]
    families = {r.family for r in requests}
    nb_families = {r.family for r in requests if r.separation == "naive_bayes"}
    dtype = _model_dtype(ctx.model)
    rows = labellings * num_classes
    states = [
        _layer_state(
            layer,
            families,
            nb_families,
            rows,
            dtype,
            output_ranges(layer, batch_size, settings.chunk_elements),
        )
        for layer in layers
    ]
    probe = LayerProbe(list(layers), dtype)
    class_counts = torch.zeros(labellings * num_classes, dtype=COUNTER_DTYPE, device=selection.x.device)
    total = selection.order.numel()
    boundary = selection.fit_end if nb_families else total  # NB needs the fit half done before testing
    batches = _batch_ranges(total, boundary, batch_size)
    with torch.no_grad(), probe.attached(), evaluating(ctx.model, names):
        for start, end in progress(batches, desc=names, unit="batch"):
            if nb_families and start == selection.fit_end:
                for state in states:
                    for counters in state.counters.values():
                        counters.fit_naive_bayes(class_counts)
            _, sums = probe.run(ctx.model, selection.x[selection.order[start:end]])
            states = _called_layers(states, sums, first=start == 0)
            labels = BatchLabels(selection.labellings[:, start:end], num_classes, COUNTER_DTYPE)
            class_counts += labels.onehot.sum(1)
            for state in states:
                for counters in state.counters.values():
                    counters.begin_batch(labels.size)
                _update_layer(state, sums[state.layer.name], labels)
                for counters in state.counters.values():
                    counters.end_batch(labels)
    seed = ctx.seed if settings.seed is None else settings.seed
    return {r: _finalize(r, states, class_counts, selection, num_classes, seed, settings) for r in requests}


def _finalize(
    request: Request,
    states: Sequence[LayerState],
    class_counts: torch.Tensor,
    selection: Selection,
    num_classes: int,
    seed: int,
    settings: PassSettings,
) -> MetricResult:
    """Per-layer and model-level separation of one request from the finished counters."""
    labellings = selection.labellings.shape[0]
    assert bool((class_counts == selection.per_class).all()), (
        "balanced labellings keep every class at per_class"
    )
    pairs = class_pairs(num_classes, request.max_class_pairs, seed)
    rows, values = [], []
    for state in states:
        counters = state.counters[request.family]
        if request.separation == "naive_bayes":
            per_labelling = counters.nb_accuracy()
        else:
            per_labelling = pair_separation(
                counters.counts.reshape(labellings, num_classes, -1),
                pairs,
                request.separation,
                trials=selection.per_class,
                eps=request.eps,
                jaccard_threshold=request.jaccard_threshold,
                chunk_elements=settings.chunk_elements,
            )
        values.append(per_labelling.double().cpu())
        layer = state.layer
        rows.append(
            {
                "layer": layer.name,
                "type": layer.kind,
                "edges": family_width(layer, request.family),
                **null_summary(per_labelling),
                "units": layer.out_units,
                "groups": layer.groups,
                "bn_folded": layer.bn_name or "",
                "event": request.family.event,
                "separation": request.separation,
            }
        )
    scalars = model_summary(torch.stack(values))
    total_edges = 0.0
    for row in rows:
        total_edges += float(cast(float, row["edges"]))
    scalars.update(
        n=float(selection.order.numel()),
        per_class=float(selection.per_class),
        n_layers=float(len(states)),
        edges=total_edges,
        permutations=float(labellings - 1),
        class_pairs=float(0 if request.separation == "naive_bayes" else pairs.shape[0]),
    )
    return MetricResult(scalars=scalars, per_layer=rows)


# ------------------------------------------------------------------------------------------- metrics


def _check_choice(key: str, value: object, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not valid; valid: {', '.join(valid)}")


class _SeparationMetric:
    """Shared machinery of :class:`PathSeparation` and :class:`ActivationSeparation`."""

    name = "separation"
    under_shift = True

    def __init__(
        self,
        *,
        event: str,
        theta: float,
        separation: str,
        labels: str | bool,
        samples_per_class: int | None,
        permutations: int,
        max_class_pairs: int | None,
        eps: float,
        jaccard_threshold: float,
        layers: str | Sequence[str] | None,
        seed: int | None,
        batch_size: int | None,
        memory_budget_gb: float,
        chunk_elements: int,
        under_shift: bool,
        name: str | None = None,
    ) -> None:
        if name is not None:
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"name={name!r} must be a non-empty record key without '/'")
            self.name = name  # a variant (e.g. path_separation_positive) records under its own key
        self.roles = MetricRoles(diagnostics=("excess",))
        self.under_shift = bool(under_shift)
        labels = "true" if labels is True else labels  # `labels=true` on a Hydra command line is a bool
        _check_choice("separation", separation, SEPARATIONS)
        _check_choice("labels", labels, LABEL_SOURCES)
        if not 0.0 < theta <= 1.0:
            raise ValueError(f"theta={theta} must lie in (0, 1]")
        if permutations < 0:
            raise ValueError(f"permutations={permutations} must be >= 0")
        if samples_per_class is not None and samples_per_class < 1:
            raise ValueError(f"samples_per_class={samples_per_class} must be >= 1 or null (smallest class)")
        if max_class_pairs is not None and max_class_pairs < 1:
            raise ValueError(f"max_class_pairs={max_class_pairs} must be >= 1 or null (all pairs)")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps={eps} must lie in (0, 0.5)")
        patterns = (layers,) if isinstance(layers, str) else (tuple(layers) if layers else None)
        self.settings = PassSettings(
            layers=patterns,
            labels=str(labels),
            samples_per_class=samples_per_class,
            permutations=int(permutations),
            seed=seed,
            batch_size=batch_size,
            chunk_elements=int(chunk_elements),
        )
        keep_theta = event in ("effective_path", "neuron")
        self.request = Request(
            metric=self.name,
            family=EventFamily(event, float(theta) if keep_theta else 0.0),
            separation=separation,
            eps=float(eps),
            jaccard_threshold=float(jaccard_threshold),
            max_class_pairs=max_class_pairs,
            memory_budget_gb=float(memory_budget_gb),
        )
        self._siblings: list[_SeparationMetric] = []

    def _cache_key(self, ctx: EvalContext) -> tuple[object, ...]:
        return ("robustdiag.paths", ctx.data.condition, self.settings, self.request)

    def __call__(self, ctx: EvalContext) -> MetricResult:
        """Separation on ``ctx.data`` (reusing a result a sibling metric left in ``ctx.cache``)."""
        key = self._cache_key(ctx)
        cached = ctx.cache.get(key)
        if isinstance(cached, MetricResult):
            return cached
        with evaluating(ctx.model, self.name):  # BN folding and the pass both see the eval-mode model
            layers = discover_layers(ctx.model, self.settings.layers)
            check_memory(layers, self.request, ctx.num_classes, self.settings.permutations)
            requests = [self.request, *self._sibling_requests(ctx, layers)]
            results = run_pass(ctx, self.settings, requests, layers)
        for request, result in results.items():
            ctx.cache[("robustdiag.paths", ctx.data.condition, self.settings, request)] = result
        return results[self.request]

    def share_with(self, metrics: Sequence[Metric]) -> None:
        """The run's other separation metrics: their requests ride along on this metric's pass."""
        self._siblings = [m for m in metrics if isinstance(m, _SeparationMetric) and m is not self]

    def _sibling_requests(self, ctx: EvalContext, layers: Sequence[ProbeLayer]) -> list[Request]:
        """Requests of sibling metrics that can ride along on this pass (within their own budgets)."""
        siblings: list[Request] = []
        for other in self._siblings:
            if other is self or other.settings != self.settings or other.request in siblings:
                continue
            if other.request == self.request or other._cache_key(ctx) in ctx.cache:
                continue
            need = counter_bytes(layers, other.request, ctx.num_classes, self.settings.permutations)
            if need <= other.request.memory_budget_gb * 2**30:
                siblings.append(other.request)
        return siblings


class PathSeparation(_SeparationMetric):
    """Bernoulli path separation: class separation of per-edge weight x activation events.

    Args:
        event: ``effective_path`` (default), ``positive`` or ``neuron`` (see :mod:`path_events`).
        theta: coverage fraction of the effective-path / neuron rule, in (0, 1].
        separation: ``js`` (bits), ``tv``, ``sym_kl``, ``bhattacharyya``, ``jaccard`` or ``naive_bayes``.
        labels: class labels: ``true`` (test samples), ``trained`` (train samples with the labels the model
            was trained on) or ``predicted`` (argmax of the logits).
        samples_per_class: balanced samples per class (first ones in data order); None = smallest class.
        permutations: label permutations for the null (seeded, same pass).
        max_class_pairs: a seeded sample of this many class pairs when there are more; None = all pairs.
        eps: probability clipping of ``sym_kl`` and ``bhattacharyya``.
        jaccard_threshold: class path of ``jaccard`` = edges with p > this.
        layers: glob patterns (or ``re:`` regexes) of layer names; None = every conv and linear layer.
        seed: seed of permutations and pair sampling; None = the run's seed.
        batch_size: samples per forward pass; None = the run's batch size.
        memory_budget_gb: limit on the streamed counters (checked before the pass).
        chunk_elements: contributions per chunk (batch x output units x inputs) bounding transient memory.
        under_shift: recompute under every configured shift (the pipeline reads this attribute).
        name: record key (default ``path_separation``); variants with other settings need their own.
    """

    name = "path_separation"

    def __init__(
        self,
        event: str = "effective_path",
        theta: float = 0.5,
        separation: str = "js",
        labels: str | bool = "true",
        samples_per_class: int | None = None,
        permutations: int = 5,
        max_class_pairs: int | None = 200,
        eps: float = 1e-3,
        jaccard_threshold: float = 0.5,
        layers: str | Sequence[str] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        memory_budget_gb: float = 4.0,
        chunk_elements: int = 1 << 24,
        under_shift: bool = True,
        name: str | None = None,
    ) -> None:
        _check_choice("event", event, PATH_EVENTS)
        super().__init__(
            name=name,
            event=event,
            theta=theta,
            separation=separation,
            labels=labels,
            samples_per_class=samples_per_class,
            permutations=permutations,
            max_class_pairs=max_class_pairs,
            eps=eps,
            jaccard_threshold=jaccard_threshold,
            layers=layers,
            seed=seed,
            batch_size=batch_size,
            memory_budget_gb=memory_budget_gb,
            chunk_elements=chunk_elements,
            under_shift=under_shift,
        )


class ActivationSeparation(_SeparationMetric):
    """Activation-space analogue: the same pipeline with the event 1[unit pre-activation > 0].

    Units are the output neurons/channels of the same layers path separation measures (conv channels: the
    pre-activation summed over positions, BN folded). Arguments as :class:`PathSeparation`, minus the event.
    """

    name = "activation_separation"

    def __init__(
        self,
        separation: str = "js",
        labels: str | bool = "true",
        samples_per_class: int | None = None,
        permutations: int = 5,
        max_class_pairs: int | None = 200,
        eps: float = 1e-3,
        jaccard_threshold: float = 0.5,
        layers: str | Sequence[str] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        memory_budget_gb: float = 4.0,
        chunk_elements: int = 1 << 24,
        under_shift: bool = True,
        name: str | None = None,
    ) -> None:
        super().__init__(
            name=name,
            event="activation",
            theta=0.5,
            separation=separation,
            labels=labels,
            samples_per_class=samples_per_class,
            permutations=permutations,
            max_class_pairs=max_class_pairs,
            eps=eps,
            jaccard_threshold=jaccard_threshold,
            layers=layers,
            seed=seed,
            batch_size=batch_size,
            memory_budget_gb=memory_budget_gb,
            chunk_elements=chunk_elements,
            under_shift=under_shift,
        )


__all__ = ["ActivationSeparation", "PathSeparation"]
