"""Training-label regimes: true labels, random labels (memorisation) and label noise in between."""

from __future__ import annotations

import torch


def corrupt_labels(labels: torch.Tensor, *, q: float, num_classes: int, seed: int) -> torch.Tensor:
    """Replace a seeded fraction ``q`` of ``labels`` by uniformly random classes.

    Follows Zhang et al. (2017): each chosen label is redrawn uniformly over all K classes (so about q/K
    of the chosen ones keep their true class by chance). ``q=0`` returns the true labels, ``q=1`` gives
    fully random labels. The choice depends only on ``seed``, so a resumed or re-evaluated run trains on
    exactly the same labels.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"train.q must be in [0, 1] (fraction of training labels randomised), got {q}")
    labels = labels.clone()
    if q == 0.0:
        return labels
    generator = torch.Generator().manual_seed(10_007 * seed + 1)
    n = labels.shape[0]
    chosen = torch.randperm(n, generator=generator)[: round(q * n)]  # (M,)
    labels[chosen] = torch.randint(num_classes, (chosen.shape[0],), generator=generator)
    return labels
