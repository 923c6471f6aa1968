"""Separation between per-class Bernoulli tables, and permutation-null summaries.

Per layer, ``probs[r, k, e]`` is the fraction of class-k samples whose event e fired under labelling r
(r = 0: the real labels, r >= 1: permuted labels). A separation is the mean over (sampled) class pairs
(a, b) of the mean over edges of a per-edge divergence between Bern(p_a) and Bern(p_b):

* ``js``: Jensen-Shannon divergence, in **bits** (log base 2), so it lies in [0, 1];
* ``tv``: total variation |p_a - p_b|, in [0, 1];
* ``sym_kl``: KL(a||b) + KL(b||a) = (p_a - p_b)(logit p_a - logit p_b) in nats, with both p clipped to
  [eps, 1 - eps] (default eps 1e-3) so that deterministic edges stay finite;
* ``bhattacharyya``: -ln(sqrt(p_a p_b) + sqrt((1-p_a)(1-p_b))) in nats, p clipped likewise;
* ``jaccard``: per pair, 1 - |P_a n P_b| / |P_a u P_b| with class paths P_k = {e : p_k,e > tau}
  (default tau 0.5: edges on the path of most class-k samples); 0 when both paths are empty;
* ``naive_bayes``: not a pair average; held-out accuracy of a Bernoulli naive Bayes over the layer's
  events (see :mod:`robustdiag.metrics.path_accum`).
"""

from __future__ import annotations

import math
import warnings

import torch

from robustdiag.metrics import path_kernels

NULL_SPREAD_RTOL = 1e-10  # a null spread below this fraction of the values is float rounding, not spread
PAIR_SEPARATIONS = ("js", "tv", "sym_kl", "bhattacharyya", "jaccard")
SEPARATIONS = (*PAIR_SEPARATIONS, "naive_bayes")


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in bits."""
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p)) / math.log(2)


def edge_divergence(p: torch.Tensor, q: torch.Tensor, kind: str, eps: float = 1e-3) -> torch.Tensor:
    """Per-edge divergence between Bern(p) and Bern(q) (elementwise, same shape) for a pair separation."""
    if kind == "js":
        return _entropy_bits((p + q) / 2) - (_entropy_bits(p) + _entropy_bits(q)) / 2
    if kind == "tv":
        return (p - q).abs()
    if kind == "sym_kl":
        p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
        return (p - q) * (torch.logit(p) - torch.logit(q))
    if kind == "bhattacharyya":
        p, q = p.clamp(eps, 1 - eps), q.clamp(eps, 1 - eps)
        return -torch.log(torch.sqrt(p * q) + torch.sqrt((1 - p) * (1 - q)))
    raise ValueError(
        f"separation={kind!r} is not an edge divergence; valid: {', '.join(PAIR_SEPARATIONS[:-1])}"
    )


def class_pairs(num_classes: int, max_pairs: int | None, seed: int) -> torch.Tensor:
    """All class pairs (a < b), or a seeded sample of ``max_pairs`` of them. (P, 2) int64."""
    pairs = torch.combinations(torch.arange(num_classes), r=2)  # (K(K-1)/2, 2)
    if max_pairs is not None and pairs.shape[0] > max_pairs:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(pairs.shape[0], generator=generator)[:max_pairs].sort().values
        pairs = pairs[keep]
    return pairs


def _pair_terms(
    p: torch.Tensor, q: torch.Tensor, kind: str, eps: float, jaccard_threshold: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-pair sums over a chunk of edges: (L, P) divergence sums (jaccard: intersections, unions)."""
    if kind == "jaccard":
        on_p, on_q = p > jaccard_threshold, q > jaccard_threshold
        return (on_p & on_q).sum(-1).double(), (on_p | on_q).sum(-1).double()
    return edge_divergence(p, q, kind, eps).sum(-1), None


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for an int32 index (index_select: about twice as fast as int64 fancy indexing)."""
    return table.index_select(0, index.flatten()).view(index.shape)


def _js_from_counts(counts: torch.Tensor, pairs: torch.Tensor, trials: int, step: int) -> torch.Tensor:
    """Mean-over-edges JS (bits) per pair from integer counts out of ``trials``: (L, K, E) -> (L, P).

    JS = H((p+q)/2) - (H(p) + H(q))/2; with p = c/n every entropy is a lookup in a table of H(k / 2n).
    """
    labellings, _, edges = counts.shape
    levels = torch.arange(2 * trials + 1, dtype=torch.float64, device=counts.device) / (2 * trials)
    table = _entropy_bits(levels)  # (2n + 1,) H(k / 2n)
    if path_kernels.usable_for(counts):  # CPU: one pass over the counters for every pair
        return path_kernels.js_pair_sums(counts, pairs, table) / edges
    class_entropy = torch.zeros(labellings, counts.shape[1], dtype=torch.float64, device=counts.device)
    mid_entropy = torch.zeros(labellings, pairs.shape[0], dtype=torch.float64, device=counts.device)
    for e0 in range(0, edges, step):
        chunk = counts[:, :, e0 : e0 + step].int()  # (L, K, Ec) exact integer counts
        class_entropy += _lookup(table, 2 * chunk).sum(-1)
        mid_entropy += _lookup(table, chunk[:, pairs[:, 0]] + chunk[:, pairs[:, 1]]).sum(-1)  # (L, P)
    own = (class_entropy[:, pairs[:, 0]] + class_entropy[:, pairs[:, 1]]) / 2  # (L, P)
    return (mid_entropy - own) / edges


def pair_separation(
    table: torch.Tensor,
    pairs: torch.Tensor,
    kind: str,
    *,
    trials: int | None = None,
    eps: float = 1e-3,
    jaccard_threshold: float = 0.5,
    chunk_elements: int = 1 << 24,
) -> torch.Tensor:
    """Mean over ``pairs`` of the mean-over-edges divergence, per labelling. ``table`` (L, K, E) -> (L,).

    ``table`` holds probabilities, or, with ``trials`` = n, integer event counts out of n samples per class
    (exact JS through an entropy lookup table: no logarithm per pair and edge). Computed in float64, in
    chunks of edges so that (L, pairs, edges) stays near ``chunk_elements``.
    """
    labellings, _, edges = table.shape
    pairs = pairs.to(table.device)
    step = max(1, chunk_elements // max(labellings * pairs.shape[0], 1))  # edges per chunk
    if kind == "js" and trials is not None:
        return _js_from_counts(table, pairs, trials, step).mean(-1)
    totals = torch.zeros(labellings, pairs.shape[0], dtype=torch.float64, device=table.device)  # (L, P)
    unions = torch.zeros_like(totals)
    for e0 in range(0, edges, step):
        chunk = table[:, :, e0 : e0 + step].double()  # (L, K, Ec)
        if trials is not None:
            chunk = chunk / trials
        part, union = _pair_terms(chunk[:, pairs[:, 0]], chunk[:, pairs[:, 1]], kind, eps, jaccard_threshold)
        totals += part
        if union is not None:
            unions += union
    if kind == "jaccard":
        per_pair = torch.where(unions > 0, 1 - totals / unions.clamp(min=1), torch.zeros_like(totals))
    else:
        per_pair = totals / edges
    return per_pair.mean(-1)


def null_summary(values: torch.Tensor) -> dict[str, float]:
    """raw, null_mean, null_std, excess, z of (L,) values: index 0 real labels, the rest permutations.

    null_std uses ddof=1; z = excess / null_std (NaN when the null has fewer than 2 draws or no spread).
    A spread at float64 rounding level (below ``NULL_SPREAD_RTOL`` of the largest |value|: labellings
    that give the same separation up to summation order) is no spread: null_std 0 and z NaN, instead
    of a ratio of two rounding errors.
    """
    values = values.double().cpu()
    raw = float(values[0])
    null = values[1:]
    null_mean = float(null.mean()) if null.numel() else math.nan
    null_std = float(null.std(unbiased=True)) if null.numel() > 1 else math.nan
    if null_std <= NULL_SPREAD_RTOL * float(values.abs().max()):
        null_std = 0.0
    excess = raw - null_mean
    z = excess / null_std if null_std > 0 else math.nan
    return {"raw": raw, "null_mean": null_mean, "null_std": null_std, "excess": excess, "z": z}


def model_summary(per_layer: torch.Tensor) -> dict[str, float]:
    """Model-level statistics from per-layer values (n_layers, L).

    raw, null_mean, excess: means over layers. null_std and z: of the layer-mean statistic across the
    permutations (the model mean's own null). z_layer_mean: the mean of the per-layer z-scores.
    """
    summary = null_summary(per_layer.double().mean(0))
    layer_z = torch.tensor([null_summary(row)["z"] for row in per_layer.double()])
    finite = layer_z[torch.isfinite(layer_z)]
    summary["z_layer_mean"] = float(finite.mean()) if finite.numel() else math.nan
    if per_layer.shape[1] < 3:
        warnings.warn(
            f"path separation: {per_layer.shape[1] - 1} label permutation(s) give no usable null spread; "
            "z is NaN. Use permutations >= 2 (default 5).",
            stacklevel=3,
        )
    return summary
