"""Run a shift over a large tensor in batches with reproducible, per-batch seeding."""

from __future__ import annotations

import operator
import zlib
from typing import cast

import torch
from torch import nn

from robustdiag.progress import progress
from robustdiag.shifts.base import owns_buffer
from robustdiag.types import ModelShift, Shift, needs_model


def shift_seed(seed: int, name: str, severity: int, batch: int) -> int:
    """The generator seed of one batch: CRC-32 of ``"<seed>/<name>/<severity>/<batch>"`` (stable across runs)."""
    return zlib.crc32(f"{seed}/{name}/{severity}/{batch}".encode())


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(seed)
    return generator


def apply_shift(
    shift: Shift,
    x: torch.Tensor,
    severity: int,
    *,
    seed: int,
    batch_size: int,
    index: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    model: nn.Module | None = None,
    generator_device: torch.device | str | None = "cpu",
) -> torch.Tensor:
    """Apply ``shift`` at ``severity`` to ``x`` (N, C, H, W) in batches; returns (N, C, H, W) on x's device.

    Batch ``b`` (rows ``b * batch_size`` onwards) gets a fresh generator seeded with
    :func:`shift_seed` ``(seed, shift.name, severity, b)``, so the result is a pure function of
    (x, seed, severity, batch_size): the same call gives the same images, and a re-run of one batch does
    not depend on the batches before it. Random corruptions do depend on ``batch_size``.

    ``generator_device`` is where random numbers are drawn: ``"cpu"`` (default) gives identical
    corrupted images on CPU and CUDA; ``None`` uses ``x``'s device (faster on a GPU, different numbers).
    ``index`` and ``y`` (N,) are sliced alongside ``x`` (published files need ``index``; the adversarial
    shift needs ``y`` and ``model``).
    """
    seed = operator.index(seed)
    if isinstance(batch_size, bool) or operator.index(batch_size) < 1:
        raise ValueError(f"apply_shift: batch_size must be a positive integer, got {batch_size!r}")
    n = x.shape[0]
    for key, value in (("index", index), ("y", y)):
        if value is not None and value.shape[0] != n:
            raise ValueError(f"apply_shift: {key} has {value.shape[0]} entries for {n} images")
    device = x.device if generator_device is None else torch.device(generator_device)
    out: torch.Tensor | None = None  # made when a second batch comes: one batch is returned as it is
    starts = range(0, n, batch_size)
    for batch, start in enumerate(progress(starts, desc=f"shift {shift.name}/{severity}", unit="batch")):
        rows = slice(start, start + batch_size)
        generator = make_generator(shift_seed(seed, shift.name, severity, batch), device)
        rows_index = None if index is None else index[rows]
        if needs_model(shift):  # only the adversarial shift sees the labels and the model
            shifted = cast(ModelShift, shift)(
                x[rows],
                severity,
                generator=generator,
                index=rows_index,
                y=None if y is None else y[rows],
                model=model,
            )
        else:
            shifted = shift(x[rows], severity, generator=generator, index=rows_index)
        shifted = shifted.detach()
        if n <= batch_size and _fresh_like(shifted, x):
            return shifted  # one batch: no second copy of the images (a fresh buffer costs page faults)
        if out is None:
            out = torch.empty_like(x)
        out[rows] = shifted
    return out if out is not None else torch.empty_like(x)  # (no images: nothing to shift)


def _fresh_like(shifted: torch.Tensor, x: torch.Tensor) -> bool:
    """``shifted`` is a new contiguous tensor with ``x``'s shape, dtype and device (not a view of ``x``)."""
    like = shifted.shape == x.shape and shifted.dtype == x.dtype and shifted.device == x.device
    return like and owns_buffer(shifted, x)
