"""CPU kernels (Numba) for the two loop-bound OpenCV operations of the water spatter.

:mod:`robustdiag.shifts.cvops` does everything with batched tensor operations, which suits a GPU; two
steps there are iterations to a fixed point over the whole batch and dominate on a CPU:

* the 5x5 chamfer distance transform (up to ``cap`` + 2 relaxation rounds of 16 moves), done here as
  OpenCV's own two raster passes (``distanceTransform_5x5``: forward with the 8 moves that look up and
  left, backward with the 8 that look down and right, float32 sums in OpenCV's order, so the values are
  OpenCV's bit for bit, not just to one ulp);
* Canny (Sobel, non-maximum suppression in OpenCV's fixed-point sectors, and the hysteresis, which
  takes dilation rounds until nothing changes there), done here in one pass per image with the
  hysteresis as a flood fill from the strong pixels through 8-connected candidates (the same set: every
  candidate connected to a strong pixel).

Images are independent tasks (``prange``); threads follow torch's. ``ROBUSTDIAG_NUMBA=0`` or a GPU
tensor uses the tensor path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustdiag.numba_support import match_threads, numba, on_cpu

if numba is not None:
    from numba import njit, prange

CHAMFER_5X5 = (1.0, 1.4, 2.1969)  # DIST_L2 with maskSize 5: straight, diagonal, knight moves
FAR = np.float32(1e30)  # "infinitely far": outside the image and not yet reached


def usable_for(*tensors: torch.Tensor) -> bool:
    """The kernels apply: Numba available (not switched off) and every tensor on the CPU."""
    return on_cpu(*tensors)


if numba is not None:

    @njit(parallel=True, cache=True)
    def _chamfer_kernel(zero: Any, hv: Any, diag: Any, knight: Any, far: Any, out: Any) -> None:
        batch, h, w = zero.shape
        for b in prange(batch):
            t = np.full((h + 4, w + 4), far, dtype=np.float32)  # two border rows / columns of FAR
            for i in range(h):  # forward pass: the moves from above and from the left
                r = i + 2
                for j in range(w):
                    c = j + 2
                    if zero[b, i, j]:
                        t[r, c] = 0.0
                        continue
                    t0 = t[r - 2, c - 1] + knight
                    t0 = min(t0, t[r - 2, c + 1] + knight)
                    t0 = min(t0, t[r - 1, c - 2] + knight)
                    t0 = min(t0, t[r - 1, c - 1] + diag)
                    t0 = min(t0, t[r - 1, c] + hv)
                    t0 = min(t0, t[r - 1, c + 1] + diag)
                    t0 = min(t0, t[r - 1, c + 2] + knight)
                    t0 = min(t0, t[r, c - 1] + hv)
                    t[r, c] = t0
            for i in range(h - 1, -1, -1):  # backward pass: from below and from the right
                r = i + 2
                for j in range(w - 1, -1, -1):
                    c = j + 2
                    t0 = t[r, c]
                    if t0 > hv:
                        t0 = min(t0, t[r + 2, c + 1] + knight)
                        t0 = min(t0, t[r + 2, c - 1] + knight)
                        t0 = min(t0, t[r + 1, c + 2] + knight)
                        t0 = min(t0, t[r + 1, c + 1] + diag)
                        t0 = min(t0, t[r + 1, c] + hv)
                        t0 = min(t0, t[r + 1, c - 1] + diag)
                        t0 = min(t0, t[r + 1, c - 2] + knight)
                        t0 = min(t0, t[r, c + 1] + hv)
                        t[r, c] = t0
                    out[b, i, j] = t0

    @njit(parallel=True, cache=True)
    def _canny_kernel(image: Any, low: int, high: int, tg22: int, shift: int, out: Any) -> None:
        batch, h, w = image.shape
        for b in prange(batch):
            mag = np.zeros((h + 2, w + 2), dtype=np.int64)  # L1 magnitude, 0 outside the image
            dxs = np.empty((h, w), dtype=np.int64)
            dys = np.empty((h, w), dtype=np.int64)
            for i in range(h):  # Sobel 3x3 with replicated borders
                up, down = max(i - 1, 0), min(i + 1, h - 1)
                for j in range(w):
                    left, right = max(j - 1, 0), min(j + 1, w - 1)
                    dx = (image[b, up, right] + 2 * image[b, i, right] + image[b, down, right]) - (
                        image[b, up, left] + 2 * image[b, i, left] + image[b, down, left]
                    )
                    dy = (image[b, down, left] + 2 * image[b, down, j] + image[b, down, right]) - (
                        image[b, up, left] + 2 * image[b, up, j] + image[b, up, right]
                    )
                    dxs[i, j], dys[i, j] = dx, dy
                    mag[i + 1, j + 1] = abs(dx) + abs(dy)
            candidate = np.zeros((h, w), dtype=np.bool_)
            stack = np.empty(h * w, dtype=np.int64)
            top = 0
            for i in range(h):  # non-maximum suppression in OpenCV's fixed-point sectors
                r = i + 1
                for j in range(w):
                    c = j + 1
                    m = mag[r, c]
                    if m <= low:
                        continue
                    dx, dy = dxs[i, j], dys[i, j]
                    xs = abs(dx)
                    ys = abs(dy) << shift
                    tg22x = xs * tg22
                    tg67x = tg22x + (xs << (shift + 1))
                    if ys < tg22x:
                        keep = m > mag[r, c - 1] and m >= mag[r, c + 1]
                    elif ys > tg67x:
                        keep = m > mag[r - 1, c] and m >= mag[r + 1, c]
                    elif (dx ^ dy) >= 0:
                        keep = m > mag[r - 1, c - 1] and m > mag[r + 1, c + 1]
                    else:
                        keep = m > mag[r - 1, c + 1] and m > mag[r + 1, c - 1]
                    if keep:
                        candidate[i, j] = True
                        if m > high:
                            out[b, i, j] = True
                            stack[top] = i * w + j
                            top += 1
            while top > 0:  # hysteresis: flood fill from the strong pixels through candidates
                top -= 1
                i, j = divmod(stack[top], w)
                for y in range(max(i - 1, 0), min(i + 2, h)):
                    for x in range(max(j - 1, 0), min(j + 2, w)):
                        if candidate[y, x] and not out[b, y, x]:
                            out[b, y, x] = True
                            stack[top] = y * w + x
                            top += 1


def chamfer_distance(zero: torch.Tensor) -> torch.Tensor:
    """``cv2.distanceTransform(src, DIST_L2, 5)`` with ``src`` zero where ``zero`` is True: (B, H, W) bool
    -> (B, H, W) float32 distances (1e30 where no zero pixel exists in the image)."""
    match_threads()
    hv, diag, knight = (np.float32(m) for m in CHAMFER_5X5)
    out = np.empty(tuple(zero.shape), dtype=np.float32)
    _chamfer_kernel(zero.contiguous().numpy(), hv, diag, knight, FAR, out)
    return torch.from_numpy(out)


def canny(image: torch.Tensor, low: int, high: int, tg22: int, shift: int) -> torch.Tensor:
    """Canny edges (B, H, W) bool of 8-bit maps (B, H, W) holding integer levels (see
    :func:`robustdiag.shifts.cvops.canny` for the rule; ``tg22`` is tan(22.5 deg) in ``shift``-bit fixed
    point)."""
    match_threads()
    out = np.zeros(tuple(image.shape), dtype=np.bool_)
    levels = image.to(torch.int64).contiguous().numpy()
    _canny_kernel(levels, int(low), int(high), int(tg22), int(shift), out)
    return torch.from_numpy(out)
