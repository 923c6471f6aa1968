"""CPU kernels (Numba) for the two hot spots of path separation: effective-path events and JS finalisation.

On a CPU the effective-path event is bound by per-row selection, not arithmetic: ``torch.topk`` over
every (sample, output unit) row of a layer's contributions cost more than the forward pass itself, and
the contribution tensor that feeds it comes out of the batched GEMM in a transposed layout. The fused
kernel here does, per (sample, output unit) row and without materialising the contributions:

1. the row's contributions ``C[c] = sum_t W[o, t, c] * S[b, t, c]`` (the same sums as
   :func:`robustdiag.metrics.path_contrib.contributions`), clamped at 0;
2. the cover cutoff of :func:`robustdiag.metrics.path_events.cover_cutoff` by a histogram select: a
   128-bin histogram of positive mass over the float's exponent and top 4 mantissa bits (16 bins per
   octave over the 8 octaves below the row maximum; smaller values share the lowest bin), a scan from
   the top bin to the one where the cumulative mass reaches ``theta * total``, and an exact sort of
   only the values in that bin. Same set as the full sort (ties at the cutoff all included); sums are
   accumulated in float64;
3. the events ``C[c] >= cutoff``, added to the counter row of the sample's class under every labelling.

Rows are split into blocks of output units, one block per task, so no two threads write the same
counters. ``js_pair_sums`` evaluates the JS finalisation (entropy lookups over every class pair and
edge) in one pass over the counters instead of one gather per pair.

Numba compiles these on first use (a few seconds; cached on disk afterwards). ``ROBUSTDIAG_NUMBA=0``
switches to the pure-PyTorch path (same events up to float rounding; used on GPUs always).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustdiag.numba_support import DISABLE_ENV, available, numba, on_cpu
from robustdiag.numba_support import match_threads as _match_threads

if numba is not None:
    from numba import njit, prange

HISTOGRAM_BINS = 128  # 16 per octave (exponent + top 4 mantissa bits) over 8 octaves below the row max
MANTISSA_SHIFT = 19  # float32 bits >> 19 keeps sign, exponent and the top 4 mantissa bits
__all__ = ["DISABLE_ENV", "available", "effective_path_counts", "js_pair_sums", "tap_major", "usable_for"]


def usable_for(*tensors: torch.Tensor) -> bool:
    """The kernels apply: Numba available and every tensor a CPU float32/float64 tensor."""
    return on_cpu(*tensors, floats=True)


if numba is not None:

    @njit(cache=True, inline="always")
    def _bin_of(bits: int, base: int) -> int:
        return max((bits >> MANTISSA_SHIFT) - base, 0)

    @njit(cache=True)
    def _smallest(vals: Any, count: int) -> float:
        smallest = np.inf
        for i in range(count):
            smallest = min(smallest, vals[i])
        return smallest

    @njit(cache=True)
    def _cover_cutoff_row(
        vals: Any, bits: Any, count: int, theta: float, total: float, mass: Any, pending: Any
    ) -> float:
        """Cutoff of ``vals[:count]`` (all > 0) whose set covers ``theta`` of their sum ``total``.

        ``bits[:count]`` are the int32 patterns of the values rounded to float32: monotone in the value, so
        the bins are value intervals (float64 values equal in float32 share a bin and are sorted exactly).
        """
        if theta >= 1.0:  # every positive value (a cumulative sum may reach the total early by rounding)
            return _smallest(vals, count)
        top = 0
        for i in range(count):
            top = max(top, bits[i])
        base = (top >> MANTISSA_SHIFT) - (HISTOGRAM_BINS - 1)
        target = theta * total
        mass[:] = 0.0
        for i in range(count):
            mass[_bin_of(bits[i], base)] += vals[i]
        above = 0.0
        cut_bin = HISTOGRAM_BINS - 1
        while cut_bin >= 0 and above + mass[cut_bin] < target:
            above += mass[cut_bin]
            cut_bin -= 1
        if cut_bin < 0:  # rounding left the total just short of target (theta ~ 1): every positive value
            return _smallest(vals, count)
        found = 0
        for i in range(count):  # branch-free gather of the cutoff bin's values
            pending[found] = vals[i]
            found += _bin_of(bits[i], base) == cut_bin
        ordered = np.sort(pending[:found])
        for i in range(found - 1, -1, -1):
            above += ordered[i]
            if above >= target:
                return ordered[i]
        return ordered[0]

    @njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "nsz"})
    def _effective_path_kernel(
        sums: Any,  # (B, T, C) tap sums (conv) or token sums (linear, T = 1)
        weight: Any,  # (Oc, T, Cg) folded weights of this chunk of output units
        first_unit: int,  # global index of the chunk's first output unit (for its group)
        out_per_group: int,
        theta: float,
        label_rows: Any,  # (L, B) int64 counter row of each sample under each labelling
        counts: Any,  # (L*K, Oc*Cg) float32, updated in place
        fired: Any,  # (B, Oc*Cg) events out, or an empty (0, 0) array when not needed
        positive_mass: Any,  # (B, Oc) out: sum_c max(C, 0)
        units_per_task: int,
    ) -> None:
        batch, taps, _ = sums.shape
        units, _, per_group = weight.shape
        labellings = label_rows.shape[0]
        keep_fired = fired.shape[0] > 0
        tasks = (units + units_per_task - 1) // units_per_task
        for task in prange(tasks):
            u0 = task * units_per_task
            u1 = min(units, u0 + units_per_task)
            row = np.empty(per_group, dtype=sums.dtype)
            vals = np.empty(per_group, dtype=sums.dtype)
            keys = np.empty(per_group, dtype=np.float32)
            bits = keys.view(np.int32)
            pending = np.empty(per_group, dtype=sums.dtype)
            mass = np.empty(HISTOGRAM_BINS, dtype=np.float64)
            for b in range(batch):
                for u in range(u0, u1):
                    offset = ((first_unit + u) // out_per_group) * per_group  # the unit's group's inputs
                    for t in range(taps):  # 1-D slices per tap: offset arithmetic inside blocks SIMD
                        tap_sums = sums[b, t, offset : offset + per_group]
                        tap_weight = weight[u, t]
                        if t == 0:
                            for c in range(per_group):
                                row[c] = tap_weight[c] * tap_sums[c]
                        else:
                            for c in range(per_group):
                                row[c] += tap_weight[c] * tap_sums[c]
                    total = 0.0
                    for c in range(per_group):
                        v = max(row[c], 0.0)
                        row[c] = v
                        total += np.float64(v)
                    positive_mass[b, u] = total
                    column = u * per_group
                    if total <= 0.0:  # no positive contribution: the set is empty
                        if keep_fired:
                            fired[b, column : column + per_group] = 0.0
                        continue
                    count = 0
                    for c in range(per_group):  # branch-free compaction of the positive values
                        vals[count] = row[c]
                        keys[count] = np.float32(row[c])
                        count += row[c] > 0
                    cut = _cover_cutoff_row(vals, bits, count, theta, total, mass, pending)
                    for c in range(per_group):
                        row[c] = 1.0 if row[c] >= cut else 0.0
                    if keep_fired:
                        fired[b, column : column + per_group] = row
                    for r in range(labellings):
                        counter = counts[label_rows[r, b], column : column + per_group]
                        for c in range(per_group):
                            counter[c] += row[c]

    @njit(parallel=True, cache=True)
    def _js_pair_sums_kernel(counts: Any, pairs: Any, table: Any, out: Any) -> None:
        """out[l, p] += sum_e H(mid) - (H(a) + H(b)) / 2 from integer counts: (L, K, E) -> (L, P)."""
        labellings, classes, edges = counts.shape
        n_pairs = pairs.shape[0]
        for job in prange(labellings * n_pairs):
            r = job // n_pairs
            a = pairs[job % n_pairs, 0]
            b = pairs[job % n_pairs, 1]
            acc = 0.0
            for e in range(edges):
                ca = int(counts[r, a, e])
                cb = int(counts[r, b, e])
                acc += table[ca + cb] - 0.5 * (table[2 * ca] + table[2 * cb])
            out[r, job % n_pairs] = acc


def tap_major(t: torch.Tensor) -> np.ndarray:
    """The kernel's layout of tap sums (B, C, T) or weights (O, Cg, T), and of their linear forms (N, I):
    (N, T, C) contiguous, channels innermost. Weights need it once per pass, tap sums once per batch."""
    t3 = t.detach() if t.ndim == 3 else t.detach()[:, :, None]  # (N, C, T)
    return t3.transpose(1, 2).contiguous().numpy()


def effective_path_counts(
    sums: np.ndarray,
    weight: np.ndarray,
    first_unit: int,
    out_per_group: int,
    theta: float,
    label_rows: torch.Tensor,
    counts: torch.Tensor,
    *,
    keep_fired: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Count one chunk's effective-path events into ``counts`` (L*K, Oc*Cg) in place.

    ``sums``: (B, T, C) tap or token sums and ``weight``: the chunk's folded weight (Oc, T, Cg), both in
    :func:`tap_major` layout and the same dtype; ``label_rows``: (L, B) counter rows
    (:class:`~robustdiag.metrics.path_accum.BatchLabels`). Returns the events (B, Oc*Cg) when ``keep_fired``
    (naive-Bayes scoring needs them), and the positive contribution mass (B, Oc) of every unit (the
    ``neuron`` event's input).
    """
    assert numba is not None
    _match_threads()
    batch, units, per_group = sums.shape[0], weight.shape[0], weight.shape[2]
    fired = torch.empty((batch, units * per_group) if keep_fired else (0, 0), dtype=counts.dtype)
    mass = torch.from_numpy(np.empty((batch, units), dtype=sums.dtype))
    assert counts.is_contiguous() and counts.dtype == torch.float32
    per_task = max(1, min(16, units // (4 * numba.get_num_threads())))  # >= 4 tasks per thread
    _effective_path_kernel(
        sums,
        weight,
        first_unit,
        out_per_group,
        float(theta),
        label_rows.contiguous().numpy(),
        counts.numpy(),
        fired.numpy(),
        mass.numpy(),
        per_task,
    )
    return (fired if keep_fired else None), mass


def js_pair_sums(counts: torch.Tensor, pairs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Sum over edges of the JS divergence (bits) of every class pair from integer counts.

    ``counts`` (L, K, E) integer-valued floats; ``pairs`` (P, 2); ``table`` (2n + 1,) float64 H(k / 2n).
    Returns (L, P) float64.
    """
    assert numba is not None
    _match_threads()
    out = np.zeros((counts.shape[0], pairs.shape[0]), dtype=np.float64)
    _js_pair_sums_kernel(
        counts.contiguous().numpy(), pairs.to(torch.int64).contiguous().numpy(), table.numpy(), out
    )
    return torch.from_numpy(out)
