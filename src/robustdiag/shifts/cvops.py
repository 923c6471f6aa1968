"""OpenCV operations the water spatter of the benchmark uses, batched in torch and bit-compatible.

``spatter`` (Hendrycks & Dietterich's ``make_*_c.py``) shapes its water drops with ``cv2.Canny``,
``cv2.distanceTransform(DIST_L2, 5)``, ``cv2.threshold(THRESH_TRUNC)``, ``cv2.blur``, ``cv2.equalizeHist``
and ``cv2.filter2D``. These are re-implemented here on (B, H, W) maps holding 8-bit values as floats,
with OpenCV's integer arithmetic and rounding (checked against OpenCV in the tests). Every function
works on the whole batch at once; loops run over a handful of fixed iterations, never over images. On a
CPU the two fixed-point iterations (the distance transform and Canny's hysteresis) run as Numba kernels
per image instead (:mod:`robustdiag.shifts.cpu_kernels`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustdiag.shifts import cpu_kernels
from robustdiag.shifts.cpu_kernels import CANNY_SHIFT, CHAMFER_5X5, FAR, TG22


def canny(image: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``cv2.Canny(image, low, high)`` (aperture 3, L1 gradient) of 8-bit maps (B, H, W): 1.0 on edges.

    Sobel gradients with replicated borders, non-maximum suppression in OpenCV's four fixed-point
    direction sectors, then hysteresis: candidates (magnitude > low, local maximum) 8-connected to a
    strong one (magnitude > high) are edges. The hysteresis grows the strong set by dilation until it
    stops changing (at most as many steps as the longest candidate chain). Integer maths in int32 (the
    largest value, |dx| << 16, stays below 2^27).
    """
    if cpu_kernels.usable_for(image):  # CPU: Sobel, suppression and a flood fill in one pass per image
        return cpu_kernels.canny(image, int(low), int(high)).to(image.dtype)
    h, w = image.shape[-2:]
    p = F.pad(image.to(torch.float32)[:, None], (1, 1, 1, 1), mode="replicate")[:, 0].to(
        torch.int32
    )  # (B, H+2, W+2)

    def at(dr: int, dc: int) -> torch.Tensor:
        return p[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    dx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))  # (B, H, W)
    dy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    xs = dx.abs()
    mag = xs + dy.abs()  # (B, H, W) L1 magnitude
    ys = dy.abs() << CANNY_SHIFT
    tg22x = xs * TG22
    tg67x = tg22x + (xs << (CANNY_SHIFT + 1))
    padded = F.pad(mag, (1, 1, 1, 1))  # outside the image the magnitude is 0

    def nb(dr: int, dc: int) -> torch.Tensor:
        return padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    horizontal = (ys < tg22x) & (mag > nb(0, -1)) & (mag >= nb(0, 1))
    vertical = (ys > tg67x) & (mag > nb(-1, 0)) & (mag >= nb(1, 0))
    same_sign = (dx ^ dy) >= 0  # s = 1: the (-1, -1)/(+1, +1) diagonal; else (-1, +1)/(+1, -1)
    diag_same = (mag > nb(-1, -1)) & (mag > nb(1, 1))
    diag_other = (mag > nb(-1, 1)) & (mag > nb(1, -1))
    diagonal = (ys >= tg22x) & (ys <= tg67x) & torch.where(same_sign, diag_same, diag_other)
    candidate = (mag > int(low)) & (horizontal | vertical | diagonal)
    current = candidate & (mag > int(high))
    while True:  # hysteresis: grow strong edges through 8-connected candidates
        q = F.pad(current, (1, 1, 1, 1))
        grown = current.clone()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                grown |= q[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        grown &= candidate
        if torch.equal(grown, current):
            break
        current = grown
    return current.to(image.dtype)


def chamfer_distance(zero: torch.Tensor, cap: float) -> torch.Tensor:
    """``cv2.distanceTransform(src, DIST_L2, 5)`` truncated at ``cap``: the 5x5 chamfer distance (moves of
    float32 length 1, 1.4 and 2.1969, summed in float32 as OpenCV does) of every pixel to the nearest pixel
    where ``zero`` is True.

    (B, H, W) bool -> (B, H, W) float32. Outside the image counts as infinitely far, as in OpenCV. The
    shortest-path relaxation runs until nothing changes, at most ``cap`` + 2 rounds, which makes every
    distance up to ``cap`` exact (each move adds at least 1); larger ones are truncated anyway. Equal-length
    paths can round one float32 ulp apart from OpenCV's raster-order sums. On a CPU the Numba kernel runs
    OpenCV's two raster passes instead (:mod:`robustdiag.shifts.cpu_kernels`; bit for bit OpenCV's values).
    """
    if cpu_kernels.usable_for(zero):  # CPU: OpenCV's two raster passes, its values bit for bit
        return cpu_kernels.chamfer_distance(zero).clamp_max(cap)
    hv, diag, knight = (torch.tensor(m, dtype=torch.float32).item() for m in CHAMFER_5X5)
    moves = [(dr, dc, hv) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))]
    moves += [(dr, dc, diag) for dr in (-1, 1) for dc in (-1, 1)]
    moves += [
        (dr, dc, knight)
        for dr, dc in ((1, 2), (2, 1), (-1, 2), (-2, 1), (1, -2), (2, -1), (-1, -2), (-2, -1))
    ]
    h, w = zero.shape[-2:]
    dist = torch.where(zero, 0.0, FAR).to(torch.float32)  # (B, H, W)
    for _ in range(int(cap) + 2):
        padded = F.pad(dist, (2, 2, 2, 2), value=FAR)
        best = dist.clone()
        for dr, dc, cost in moves:
            torch.minimum(best, padded[:, 2 + dr : 2 + dr + h, 2 + dc : 2 + dc + w] + cost, out=best)
        if torch.equal(best, dist):
            break
        dist = best
    return dist.clamp_max(cap)


def box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean with reflect-101 borders (``cv2.blur(x, (3, 3))``), summed in float64. (B, H, W)

    The inputs are 8-bit levels or float32 distances, whose sums of nine are exact in float64, so
    summing rows then columns gives the same values as any order."""
    p = F.pad(x.to(torch.float64)[:, None], (1, 1, 1, 1), mode="reflect")[:, 0]  # reflect-101
    h, w = x.shape[-2:]
    rows = p[:, 0:h] + p[:, 1 : h + 1] + p[:, 2 : h + 2]  # (B, H, W + 2)
    return (rows[:, :, 0:w] + rows[:, :, 1 : w + 1] + rows[:, :, 2 : w + 2]) * (1.0 / 9)


def equalize_hist(image: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` of 8-bit maps (B, H, W), each image with its own histogram."""
    b = image.shape[0]
    values = image.reshape(b, -1).long()  # (B, N)
    hist = torch.zeros(b, 256, dtype=torch.int64, device=image.device).scatter_add_(
        1, values, torch.ones_like(values)
    )  # (B, 256)
    total = values.shape[1]
    first = (hist > 0).to(torch.int64).argmax(dim=1)  # (B,) lowest grey level present
    first_count = hist.gather(1, first[:, None])[:, 0]
    scale = (255.0 / (total - first_count).clamp_min(1).to(torch.float32))[:, None]  # float as OpenCV
    cumulative = hist.cumsum(1)  # (B, 256)
    levels = torch.arange(256, device=image.device)[None, :]
    lut = torch.round((cumulative - first_count[:, None]).to(torch.float32) * scale).clamp(0, 255)
    lut = torch.where(levels <= first[:, None], 0.0, lut)
    uniform = (first_count == total)[:, None]
    lut = torch.where(uniform, first[:, None].to(torch.float32), lut)  # a flat image keeps its level
    return lut.gather(1, values).reshape(image.shape).to(image.dtype)


def filter2d_u8(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``cv2.filter2D(image, CV_8U, kernel)`` (correlation, reflect-101 borders, rounded and saturated)."""
    kh, kw = kernel.shape
    p = F.pad(image.to(torch.float32)[:, None], (kw // 2,) * 2 + (kh // 2,) * 2, mode="reflect")[
        :, 0
    ]  # exact ints
    h, w = image.shape[-2:]
    total = torch.zeros_like(p[:, :h, :w])
    for r in range(kh):
        for c in range(kw):
            if float(kernel[r, c]) != 0.0:
                total = total + float(kernel[r, c]) * p[:, r : r + h, c : c + w]
    return torch.round(total).clamp(0, 255).to(image.dtype)  # sums of integers: exact in float32
