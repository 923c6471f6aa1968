"""Class-balanced, seeded index subsets (the evaluation samples of a run)."""

from __future__ import annotations

import warnings

import torch


def balanced_subset(
    labels: torch.Tensor, n: int, seed: int, *, num_classes: int | None = None
) -> torch.Tensor:
    """Indices of ``n // K`` samples of each of the K classes, chosen with ``seed``, in ascending order.

    K is ``num_classes`` or ``labels.max() + 1``. When ``n`` is not divisible by K it is rounded down to
    ``(n // K) * K`` with a warning. Raises ValueError when a class has fewer samples than asked.
    Returns an int64 tensor on ``labels.device``.
    """
    labels_cpu = labels.detach().to("cpu", torch.int64)  # (N,)
    num_classes = int(labels_cpu.max()) + 1 if num_classes is None else num_classes
    per_class = n // num_classes
    if per_class < 1:
        raise ValueError(
            f"eval.n_samples={n} is smaller than the number of classes ({num_classes}); "
            f"use at least {num_classes} (one sample per class)"
        )
    if n % num_classes:
        warnings.warn(
            f"eval.n_samples={n} is not divisible by the {num_classes} classes; using {per_class} per class "
            f"({per_class * num_classes} samples)",
            stacklevel=2,
        )
    counts = torch.bincount(labels_cpu, minlength=num_classes)  # (K,)
    short = torch.nonzero(counts[:num_classes] < per_class).flatten()
    if short.numel():
        cls = int(short[0])
        largest = int(counts[:num_classes].min()) * num_classes
        raise ValueError(
            f"class {cls} has {int(counts[cls])} samples but {per_class} per class were asked "
            f"(n={n}, {num_classes} classes); use a smaller eval.n_samples (at most {largest})"
        )
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(labels_cpu.shape[0], generator=generator)  # (N,) random order
    grouped = shuffled[torch.sort(labels_cpu[shuffled], stable=True).indices]  # (N,) by class, random within
    starts = torch.cumsum(counts, 0) - counts  # (K',) first position of each class in `grouped`
    rank = torch.arange(labels_cpu.shape[0]) - starts[labels_cpu[grouped]]  # (N,) position within class
    keep = (rank < per_class) & (labels_cpu[grouped] < num_classes)
    return torch.sort(grouped[keep]).values.to(labels.device)
