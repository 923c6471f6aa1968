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

import torch

EDGE_EVENTS = ("effective_path", "positive")
UNIT_EVENTS = ("neuron", "activation")
PATH_EVENTS = ("effective_path", "positive", "neuron")


def cover_mask(values: torch.Tensor, theta: float) -> torch.Tensor:
    """Smallest set along the last dim whose values cover ``theta`` of the row total. (..., n) bool.

    ``values`` must be >= 0 (pass positive parts). Rows with total 0 select nothing.
    """
    ordered = torch.sort(values, dim=-1, descending=True).values  # (..., n)
    cumulative = ordered.cumsum(-1)  # (..., n)
    target = theta * cumulative[..., -1:]  # (..., 1)
    count = torch.searchsorted(cumulative, target, side="left") + 1  # (..., 1) items needed
    count = count.clamp(max=values.shape[-1])
    cutoff = ordered.gather(-1, count - 1)  # (..., 1) smallest selected value
    return (values >= cutoff) & (values > 0)


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
