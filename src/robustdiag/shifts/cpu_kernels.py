"""CPU kernels (Numba) for corruptions whose tensor form is bound by loops or gathers on a CPU.

:mod:`robustdiag.shifts.cvops` does the water spatter's OpenCV steps with batched tensor operations,
which suits a GPU; two of them are iterations to a fixed point over the whole batch and dominate on a CPU:

* the 5x5 chamfer distance transform (up to ``cap`` + 2 relaxation rounds of 16 moves), done here as
  OpenCV's own two raster passes (``distanceTransform_5x5``: forward with the 8 moves that look up and
  left, backward with the 8 that look down and right, float32 sums in OpenCV's order, so the values are
  OpenCV's bit for bit, not just to one ulp);
* Canny (Sobel, non-maximum suppression in OpenCV's fixed-point sectors, and the hysteresis, which
  takes dilation rounds until nothing changes there), done here in one pass per image with the
  hysteresis as a flood fill from the strong pixels through 8-connected candidates (the same set: every
  candidate connected to a strong pixel).

:func:`water_drops` runs the whole drop map per image (those two, then blur, equalisation, emboss, blur
and normalisation) without a batch-sized intermediate; :func:`crop_blend` does frost's crop of a photo
per image fused with its blend ``c0 x + c1 crop`` (an advanced-indexing gather over the batch costs twice
the blend itself). Each gives the tensor path's numbers bit for bit (tested).

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

CANNY_SHIFT = 15
TG22 = int(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5)  # tan(22.5 deg) in fixed point
CHAMFER_5X5 = (1.0, 1.4, 2.1969)  # DIST_L2 with maskSize 5: straight, diagonal, knight moves
FAR = 1e30  # "infinitely far": outside the image and not yet reached (also the tensor path's)


def usable_for(*tensors: torch.Tensor, floats: bool = False) -> bool:
    """The kernels apply: Numba available (not switched off), every tensor on the CPU (and, with
    ``floats``, float32 or float64: :func:`water_drops` and :func:`crop_blend` need that)."""
    return on_cpu(*tensors, floats=floats)


if numba is not None:

    @njit(cache=True)
    def _chamfer_image(zero: Any, hv: Any, diag: Any, knight: Any, far: Any, out: Any) -> None:
        """One image (H, W): OpenCV's ``distanceTransform_5x5`` passes into ``out`` (H, W) float32."""
        h, w = zero.shape
        t = np.full((h + 4, w + 4), far, dtype=np.float32)  # two border rows / columns of FAR
        for i in range(h):  # forward pass: the moves from above and from the left
            r = i + 2
            for j in range(w):
                c = j + 2
                if zero[i, j]:
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
                out[i, j] = t0

    @njit(cache=True)
    def _canny_image(image: Any, low: int, high: int, tg22: int, shift: int, out: Any) -> None:
        """One image (H, W) of integer levels: Canny edges into ``out`` (H, W) bool (all False on entry)."""
        h, w = image.shape
        mag = np.zeros((h + 2, w + 2), dtype=np.int64)  # L1 magnitude, 0 outside the image
        dxs = np.empty((h, w), dtype=np.int64)
        dys = np.empty((h, w), dtype=np.int64)
        for i in range(h):  # Sobel 3x3 with replicated borders
            up, down = max(i - 1, 0), min(i + 1, h - 1)
            for j in range(w):
                left, right = max(j - 1, 0), min(j + 1, w - 1)
                dx = (image[up, right] + 2 * image[i, right] + image[down, right]) - (
                    image[up, left] + 2 * image[i, left] + image[down, left]
                )
                dy = (image[down, left] + 2 * image[down, j] + image[down, right]) - (
                    image[up, left] + 2 * image[up, j] + image[up, right]
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
                        out[i, j] = True
                        stack[top] = i * w + j
                        top += 1
        while top > 0:  # hysteresis: flood fill from the strong pixels through candidates
            top -= 1
            i, j = divmod(stack[top], w)
            for y in range(max(i - 1, 0), min(i + 2, h)):
                for x in range(max(j - 1, 0), min(j + 2, w)):
                    if candidate[y, x] and not out[y, x]:
                        out[y, x] = True
                        stack[top] = y * w + x
                        top += 1

    @njit(parallel=True, cache=True)
    def _chamfer_kernel(zero: Any, hv: Any, diag: Any, knight: Any, far: Any, out: Any) -> None:
        for b in prange(zero.shape[0]):
            _chamfer_image(zero[b], hv, diag, knight, far, out[b])

    @njit(parallel=True, cache=True)
    def _canny_kernel(image: Any, low: int, high: int, tg22: int, shift: int, out: Any) -> None:
        for b in prange(image.shape[0]):
            _canny_image(image[b], low, high, tg22, shift, out[b])

    @njit(cache=True, inline="always")
    def _reflect101(i: int, n: int) -> int:
        """OpenCV's BORDER_REFLECT_101 index (..., 2, 1 | 0, 1, ..., n-1 | n-2, ...) for |overhang| < n."""
        if n == 1:
            return 0
        if i < 0:
            return -i
        return 2 * n - 2 - i if i >= n else i

    @njit(cache=True)
    def _box3_image(values: Any, out: Any) -> None:
        """``cv2.blur(values, (3, 3))`` (reflect-101) of one image, summed in float64, into ``out``."""
        h, w = values.shape
        for i in range(h):
            for j in range(w):
                total = 0.0
                for di in range(-1, 2):
                    row = _reflect101(i + di, h)
                    for dj in range(-1, 2):
                        total += np.float64(values[row, _reflect101(j + dj, w)])
                out[i, j] = total * (1.0 / 9)

    @njit(parallel=True, cache=True)
    def _water_drops_kernel(
        liquid: Any, scale: Any, low: int, high: int, cap: Any, emboss: Any, hv: Any, diag: Any,
        knight: Any, far: Any, tg22: int, shift: int, out: Any,
    ) -> None:  # fmt: skip
        batch, h, w = liquid.shape
        for b in prange(batch):
            level = np.empty((h, w), dtype=np.int64)
            for i in range(h):
                for j in range(w):  # (liquid * 255).astype(np.uint8): floor, wrapping above 255
                    level[i, j] = int(np.floor(liquid[b, i, j] * scale)) % 256
            edges = np.zeros((h, w), dtype=np.bool_)
            _canny_image(level, low, high, tg22, shift, edges)
            dist = np.empty((h, w), dtype=np.float32)
            _chamfer_image(edges, hv, diag, knight, far, dist)
            for i in range(h):
                for j in range(w):
                    dist[i, j] = min(dist[i, j], cap)  # THRESH_TRUNC
            blurred = np.empty((h, w), dtype=np.float64)
            _box3_image(dist, blurred)
            grey = np.empty((h, w), dtype=np.int64)
            hist = np.zeros(256, dtype=np.int64)
            for i in range(h):
                for j in range(w):  # cv2.blur in float32, then astype(np.uint8)
                    grey[i, j] = int(np.floor(np.float32(blurred[i, j])))
                    hist[grey[i, j]] += 1
            first = 0  # cv2.equalizeHist: the lowest level present maps to 0
            while hist[first] == 0:
                first += 1
            total = h * w
            lut = np.empty(256, dtype=np.int64)
            step = np.float32(255.0) / np.float32(max(total - hist[first], 1))
            cumulative = 0
            for v in range(256):
                cumulative += hist[v]
                if hist[first] == total:
                    lut[v] = first  # a flat image keeps its level
                elif v <= first:
                    lut[v] = 0
                else:
                    lut[v] = int(min(max(np.rint(np.float32(cumulative - hist[first]) * step), 0.0), 255.0))
            embossed = np.empty((h, w), dtype=np.int64)
            for i in range(h):
                for j in range(w):  # cv2.filter2D(CV_8U): integer sums, saturated
                    acc = 0
                    for di in range(-1, 2):
                        row = _reflect101(i + di, h)
                        for dj in range(-1, 2):
                            acc += emboss[di + 1, dj + 1] * lut[grey[row, _reflect101(j + dj, w)]]
                    embossed[i, j] = min(max(acc, 0), 255)
            _box3_image(embossed, blurred)
            peak = 0.0
            for i in range(h):
                for j in range(w):  # the 8-bit blur rounds half to even; drops = level * that
                    blurred[i, j] = np.float64(level[i, j]) * np.rint(blurred[i, j])
                    peak = max(peak, blurred[i, j])
            for i in range(h):
                for j in range(w):
                    out[b, i, j] = blurred[i, j] / peak if peak > 0 else 0.0


if numba is not None:

    @njit(parallel=True, cache=True)
    def _crop_blend_kernel(x: Any, pixels: Any, photo: Any, start: Any, a: Any, b: Any, out: Any) -> None:
        batch, channels, h, w = x.shape
        for i in prange(batch * channels):
            n = i // channels
            c = i - n * channels
            p, r0, c0 = photo[n], start[n, 0], start[n, 1]
            for r in range(h):
                for j in range(w):
                    out[n, c, r, j] = a * x[n, c, r, j] + b * pixels[p, r0 + r, c0 + j, c]


def crop_blend(
    x: torch.Tensor, pixels: torch.Tensor, photo: torch.Tensor, start: torch.Tensor, a: float, b: float
) -> torch.Tensor:
    """``a x + b crop`` for RGB images ``x`` (B, 3, H, W): image n's crop is ``pixels[photo[n], r0:r0+H,
    c0:c0+W]`` of the channels-last photos (N, Hmax, Wmax, 3), (r0, c0) = ``start[n]``. The products and
    the sum round in ``x``'s dtype as the tensor expression does."""
    match_threads()
    dtype = np.float32 if x.dtype == torch.float32 else np.float64
    out = np.empty(tuple(x.shape), dtype=dtype)
    _crop_blend_kernel(
        x.contiguous().numpy(),
        pixels.contiguous().numpy(),
        photo.to(torch.int64).contiguous().numpy(),
        start.to(torch.int64).contiguous().numpy(),
        dtype(a),
        dtype(b),
        out,
    )
    return torch.from_numpy(out)


def water_drops(liquid: torch.Tensor, low: int, high: int, cap: float, emboss: torch.Tensor) -> torch.Tensor:
    """The water spatter's drop map (B, H, W) float64 from its thresholded liquid layer (B, H, W): the
    steps of :func:`robustdiag.shifts.weather.water_drops` (Canny with thresholds ``low``/``high``,
    distance transform truncated at ``cap``, blur, equalisation, ``emboss``, blur, ``level * dist / max``)
    per image in one pass, the same numbers."""
    match_threads()
    values = liquid.detach().contiguous().numpy()
    out = np.empty(values.shape, dtype=np.float64)
    hv, diag, knight = (np.float32(m) for m in CHAMFER_5X5)
    _water_drops_kernel(
        values, values.dtype.type(255), int(low), int(high), np.float32(cap), emboss.to(torch.int64).numpy(),
        hv, diag, knight, np.float32(FAR), TG22, CANNY_SHIFT, out,
    )  # fmt: skip
    return torch.from_numpy(out)


def chamfer_distance(zero: torch.Tensor) -> torch.Tensor:
    """``cv2.distanceTransform(src, DIST_L2, 5)`` with ``src`` zero where ``zero`` is True: (B, H, W) bool
    -> (B, H, W) float32 distances (1e30 where no zero pixel exists in the image)."""
    match_threads()
    hv, diag, knight = (np.float32(m) for m in CHAMFER_5X5)
    out = np.empty(tuple(zero.shape), dtype=np.float32)
    _chamfer_kernel(zero.contiguous().numpy(), hv, diag, knight, np.float32(FAR), out)
    return torch.from_numpy(out)


def canny(image: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Canny edges (B, H, W) bool of 8-bit maps (B, H, W) holding integer levels (see
    :func:`robustdiag.shifts.cvops.canny` for the rule)."""
    match_threads()
    out = np.zeros(tuple(image.shape), dtype=np.bool_)
    levels = image.to(torch.int64).contiguous().numpy()
    _canny_kernel(levels, int(low), int(high), TG22, CANNY_SHIFT, out)
    return torch.from_numpy(out)
