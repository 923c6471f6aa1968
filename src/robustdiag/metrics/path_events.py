"""Bernoulli events of path and activation separation, batched over samples and units.

* ``effective_path`` (edge): for output unit i, the smallest set of inputs j whose positive contributions
  cover a fraction theta of i's positive total sum_j max(C_ij, 0) (sort descending, cumulative sum);
  B_ij = 1 for j in the set. Units with no positive contribution have an empty set. Ties at the
  threshold value are all included (deterministic, independent of the sort's tie order).
* ``positive`` (edge): B_ij = 1[C_ij > 0].
* ``neuron`` (unit, Ptolemy-style forward extraction with cumulative thresholding, Gan et al. 2020):
  unit i of the layer is "important" if it belongs to the smallest set of the layer's units whose
  positive incoming contribution mass P_i = sum_j max(C_ij, 0) covers theta of sum_i P_i, i.e. the
  effective-path rule applied to units instead of edges. Measured on the layer's output units.
* ``activation`` (unit, the activation-space analogue): 1[the unit's pre-activation, summed over
  positions/tokens, > 0] with eval-mode BN folded. For a linear layer on (B, I) inputs this is exactly
  the ReLU (or GELU) on/off pattern; for a conv channel it is "on" when its mean pre-activation over
  positions is positive. Measured on the same layers' output units as ``neuron``.
"""

from __future__ import annotations

import math

import torch

EDGE_EVENTS = ("effective_path", "positive")
PATH_EVENTS = ("effective_path", "positive", "neuron")


def _full_cutoff(values: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cutoff and count by a full descending sort. ``values`` (R, n) >= 0, ``target`` (R, 1)."""
    ordered = torch.sort(values, dim=-1, descending=True).values  # (R, n)
    cumulative = ordered.cumsum(-1)  # (R, n)
    count = torch.searchsorted(cumulative, target, side="left") + 1  # (R, 1) items needed
    cutoff = ordered.gather(-1, count.clamp(max=values.shape[-1]) - 1)  # (R, 1)
    short = count > values.shape[-1]  # rounding left the cumulative sum just below target (theta ~ 1)
    if bool(short.any()):
        smallest_positive = torch.where(values > 0, values, torch.inf).amin(-1, keepdim=True)
        cutoff = torch.where(short, smallest_positive, cutoff)
        count = torch.where(short, (values > 0).sum(-1, keepdim=True), count)
    return cutoff, count


def cover_cutoff(
    values: torch.Tensor, theta: float, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``values`` (..., n) >= 0: the smallest selected value and the selected count. (..., 1) each.

    The selected set is the smallest one whose values cover ``theta`` of the row total, i.e. every value
    >= cutoff. Rows with total 0 select nothing (cutoff +inf, count 0). ``k`` is a hint: rows whose set
    fits in their top k are solved from ``torch.topk`` (several times cheaper than a full sort); the
    others fall back to a full sort. The result does not depend on ``k``.
    """
    lead, n = values.shape[:-1], values.shape[-1]
    flat = values.reshape(-1, n)  # (R, n)
    total = flat.sum(-1, keepdim=True)  # (R, 1)
    target = theta * total
    if theta >= 1:  # every positive value (a cumulative sum may reach the total early by rounding)
        cutoff = torch.where(flat > 0, flat, torch.inf).amin(-1, keepdim=True)
        count = (flat > 0).sum(-1, keepdim=True)
    elif k is None or k >= n:
        cutoff, count = _full_cutoff(flat, target)
    else:
        top = torch.topk(flat, k, dim=-1, sorted=True).values  # (R, k) descending
        count = torch.searchsorted(top.cumsum(-1), target, side="left") + 1  # (R, 1)
        cutoff = top.gather(-1, count.clamp(max=k) - 1)
        unresolved = torch.nonzero(count[:, 0] > k).flatten()  # (U,) rows needing more than k items
        if unresolved.numel():
            more_cutoff, more_count = _full_cutoff(flat[unresolved], target[unresolved])
            cutoff = cutoff.index_copy(0, unresolved, more_cutoff)
            count = count.index_copy(0, unresolved, more_count)
    empty = total <= 0
    cutoff = cutoff.masked_fill(empty, torch.inf)
    count = count.masked_fill(empty, 0)
    return cutoff.reshape(*lead, 1), count.reshape(*lead, 1)


def cover_mask(values: torch.Tensor, theta: float, k: int | None = None) -> torch.Tensor:
    """Smallest set along the last dim whose values cover ``theta`` of the row total. (..., n) bool.

    ``values`` must be >= 0 (pass positive parts). Rows with total 0 select nothing.
    """
    cutoff, _ = cover_cutoff(values, theta, k)
    return values >= cutoff


def initial_topk_hint(n: int) -> int:
    """``k`` for a layer's first batch: 1/6 of its inputs (effective paths at theta 0.5 took 5-12 % of the
    inputs in resnet18; rows needing more fall back to a full sort, so this only affects speed)."""
    return min(n, max(16, math.ceil(n / 6)))


def next_topk_hint(count: torch.Tensor, n: int, quantile: float = 0.99) -> int:
    """A ``k`` for the next batch: the ``quantile`` of this batch's selected counts plus 25 %."""
    flat = count.flatten().float()
    rank = max(1, min(flat.numel(), int(math.ceil(quantile * flat.numel()))))
    typical = float(torch.kthvalue(flat.cpu(), rank).values)
    return int(min(n, max(8, math.ceil(1.25 * typical) + 1)))


def effective_path_events(contrib: torch.Tensor, theta: float) -> torch.Tensor:
    """Effective-path membership of each edge. ``contrib`` (B, O, I) -> (B, O, I) bool."""
    return cover_mask(contrib.clamp(min=0), theta)


def positive_events(contrib: torch.Tensor) -> torch.Tensor:
    """1[C_ij > 0]. (B, O, I) bool."""
    return contrib > 0


def neuron_events(positive_totals: torch.Tensor, theta: float) -> torch.Tensor:
    """Ptolemy-style important units from positive incoming mass ``positive_totals`` (B, O) -> (B, O) bool."""
    return cover_mask(positive_totals, theta)


def activation_events(preactivation_sums: torch.Tensor) -> torch.Tensor:
    """1[pre-activation summed over positions > 0]. (B, O) bool."""
    return preactivation_sums > 0
