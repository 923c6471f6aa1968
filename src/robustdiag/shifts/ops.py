"""Batched image operations the corruptions are built from (all on the input's device).

Every function takes float images of shape (B, C, H, W) and works on the whole batch at once. Border
handling is explicit because the reference implementations differ per corruption:

* ``reflect101`` -- ``d c b | a b c d | c b a`` (OpenCV's default ``BORDER_REFLECT_101``, SciPy ``mirror``)
* ``symmetric``  -- ``c b a | a b c d | d c b`` (SciPy ``reflect``)
* ``replicate``  -- ``a a a | a b c d | d d d`` (SciPy ``nearest``, ImageMagick's edge virtual pixels)

Padding is done by index maps, so pads wider than the image (large blur kernels on small images) repeat
the reflection the way OpenCV and SciPy do.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PadMode = Literal["reflect101", "symmetric", "replicate"]
PAD_MODES: tuple[str, ...] = ("reflect101", "symmetric", "replicate")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float type corruptions compute in: float64 stays float64, everything else uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def border_index(n: int, before: int, after: int, mode: PadMode, device: torch.device) -> torch.Tensor:
    """Source indices (n + before + after,) for padding a length-``n`` axis with ``mode``."""
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}")
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * (n - 1)
        i = i.remainder(period)
        return torch.where(i >= n, period - i, i)
    period = 2 * n  # symmetric
    i = i.remainder(period)
    return torch.where(i >= n, period - 1 - i, i)


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: PadMode) -> torch.Tensor:
    """Pad the last two axes of ``x`` by ``pad_h`` rows and ``pad_w`` columns on each side."""
    rows = border_index(x.shape[-2], pad_h, pad_h, mode, x.device)
    cols = border_index(x.shape[-1], pad_w, pad_w, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


SHIFT_SUM_MAX_TAPS = 49  # up to this many taps, a sum of shifted slices beats a one-channel conv2d
FFT_MIN_TAPS = 129  # 1-D kernels at least this long are applied by FFT (same result up to float rounding)


MATRIX_MIN_TAPS = 5  # 1-D correlations with at least this many taps along an axis of at most
MATRIX_MAX_SIDE = 64  # this many pixels run as one matrix product (memory passes cost more than the MACs)


def correlation_matrix(n: int, kernel: torch.Tensor, mode: PadMode) -> torch.Tensor:
    """The (n, n) float64 matrix of a 1-D correlation with ``kernel`` and ``mode`` borders: ``out = M @ line``.

    ``M[i, j]`` sums the taps of output i that read input j once the border is folded back in, so
    ``M @ line`` is :func:`correlate1d` of the line, up to float rounding.
    """
    taps = kernel.numel()
    source = border_index(n, taps // 2, taps // 2, mode, torch.device("cpu"))  # (n + taps - 1,)
    rows = torch.arange(n)[:, None].expand(n, taps)  # (n, taps) output index
    cols = source[torch.arange(n)[:, None] + torch.arange(taps)[None, :]]  # (n, taps) input each tap reads
    weights = kernel.detach().cpu().to(torch.float64).expand(n, taps)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    return matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.reshape(-1), accumulate=True)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: PadMode) -> torch.Tensor:
    """Correlate every channel of ``x`` (B, C, H, W) with one odd-sized 2-D ``kernel`` (kh, kw)."""
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    assert kh % 2 == 1 and kw % 2 == 1, "kernel sides must be odd"
    padded = pad2d(x, kh // 2, kw // 2, mode)  # (B, C, H + kh - 1, W + kw - 1)
    if kh * kw <= SHIFT_SUM_MAX_TAPS:
        out = torch.zeros_like(x)
        for (i, j), weight in zip(
            torch.cartesian_prod(torch.arange(kh), torch.arange(kw)).tolist(), kernel.flatten().tolist()
        ):
            if weight != 0.0:
                out.add_(padded[..., i : i + h, j : j + w], alpha=weight)
        return out
    out = F.conv2d(
        padded.reshape(b * c, 1, h + kh - 1, w + kw - 1), kernel.to(x)[None, None]
    )  # (B*C, 1, H, W)
    return out.reshape(b, c, h, w)


def correlate1d(x: torch.Tensor, kernel: torch.Tensor, dim: int, mode: PadMode) -> torch.Tensor:
    """Correlate every row (``dim=-1``) or column (``dim=-2``) of ``x`` (B, C, H, W) with an odd 1-D kernel.

    Short kernels run as a sum of shifted slices, medium ones as a one-channel convolution and long
    ones (e.g. the 1025-tap smoothing of ImageNet-C's elastic transform) by FFT.
    """
    assert dim in (-1, -2) and kernel.numel() % 2 == 1, "dim must be -1 or -2 and the kernel odd-sized"
    taps = kernel.numel()
    n = x.shape[dim]
    if taps >= MATRIX_MIN_TAPS and n <= MATRIX_MAX_SIDE:  # short axis: one GEMM instead of `taps` passes
        matrix = correlation_matrix(n, kernel, mode).to(x)  # (n, n)
        if dim == -1:
            return x @ matrix.T  # one (B*C*H, W) @ (W, W) product
        return matrix @ x  # (H, H) @ (B, C, H, W)
    padded = x.index_select(dim, border_index(n, taps // 2, taps // 2, mode, x.device))
    if taps <= SHIFT_SUM_MAX_TAPS:
        out = torch.zeros_like(x)
        for offset, weight in enumerate(kernel.tolist()):
            out.add_(padded.narrow(dim, offset, n), alpha=weight)
        return out
    k = kernel.to(x)
    if taps < FFT_MIN_TAPS:
        b, c = x.shape[:2]
        weight = k.view(1, 1, -1, 1) if dim == -2 else k.view(1, 1, 1, -1)
        out = F.conv2d(padded.reshape(b * c, 1, *padded.shape[-2:]), weight)
        return out.reshape(x.shape)
    lines = padded.movedim(dim, -1)  # (..., n + taps - 1)
    size = lines.shape[-1] + taps - 1
    spectrum = torch.fft.rfft(lines, size) * torch.fft.rfft(k.flip(0), size)
    full = torch.fft.irfft(spectrum, size)  # full linear convolution
    return full[..., taps - 1 : taps - 1 + n].movedim(-1, dim).contiguous()


def filter_separable(
    x: torch.Tensor, k_rows: torch.Tensor, k_cols: torch.Tensor, mode: PadMode
) -> torch.Tensor:
    """Correlate every channel with the separable kernel ``k_rows[:, None] * k_cols[None, :]``."""
    return correlate1d(correlate1d(x, k_rows, -2, mode), k_cols, -1, mode)


def gaussian_kernel1d(sigma: float, truncate: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """SciPy's ``gaussian_filter`` kernel: radius ``int(truncate * sigma + 0.5)``, normalised to sum 1."""
    if sigma <= 1e-15:  # SciPy leaves such axes unfiltered
        return torch.ones(1, dtype=dtype)
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float, mode: PadMode) -> torch.Tensor:
    """Isotropic Gaussian blur of every channel (SciPy ``gaussian_filter`` semantics)."""
    k = gaussian_kernel1d(sigma, truncate)
    return filter_separable(x, k, k, mode)


def opencv_gaussian_kernel1d(ksize: int, sigma: float) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(ksize, sigma)`` for ``sigma > 0`` (float64, sums to 1)."""
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Anti-aliased disk used by defocus blur (after ``disk`` in Hendrycks' ``make_*_c.py``).

    A binary disk ``x^2 + y^2 <= r^2`` on the grid [-8, 8]^2 (or [-ceil r, ceil r]^2 for r > 8; the reference
    uses ``arange(-r, r + 1)``, which is off-centre for non-integer r), normalised, then blurred by a 3x3
    (5x5 for r > 8) Gaussian of std ``alias_blur`` with reflect-101 borders as ``cv2.GaussianBlur`` does.
    Rows and columns that are exactly zero are trimmed. Returns (k, k) float64.
    """
    half = 8 if radius <= 8 else math.ceil(radius)
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    g = opencv_gaussian_kernel1d(ksize, alias_blur)
    kernel = filter_separable(disk[None, None], g, g, "reflect101")[0, 0]
    nonzero = (kernel != 0).nonzero()
    lo = int(nonzero.min().item())
    hi = int(nonzero.max().item())
    lo, hi = min(lo, 2 * half - hi), max(hi, 2 * half - lo)  # keep it centred
    return kernel[lo : hi + 1, lo : hi + 1]


def pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates of every pixel centre: two (H, W) tensors."""
    r = torch.arange(h, device=device, dtype=dtype)
    c = torch.arange(w, device=device, dtype=dtype)
    rows, cols = torch.meshgrid(r, c, indexing="ij")
    return rows, cols


def sample_at(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *, border: Literal["reflect101", "symmetric"]
) -> torch.Tensor:
    """Bilinear samples of each image at its own pixel coordinates ``rows``, ``cols`` (B, H, W).

    ``reflect101`` reflects coordinates about the outer pixel centres (OpenCV ``BORDER_REFLECT_101``),
    ``symmetric`` about the image edges (SciPy ``map_coordinates(mode="reflect")``).
    """
    _, _, h, w = x.shape
    if border == "reflect101":
        gx = 2 * cols / max(w - 1, 1) - 1
        gy = 2 * rows / max(h - 1, 1) - 1
        align = True
    else:
        gx = (2 * cols + 1) / w - 1
        gy = (2 * rows + 1) / h - 1
        align = False
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)  # (B, H, W, 2) as (x, y)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align)


def gather_shifted(x: torch.Tensor, d_rows: torch.Tensor, d_cols: torch.Tensor) -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, clamp(i + d_rows[b]), clamp(j + d_cols[b])]`` with per-image integer shifts."""
    b, c, h, w = x.shape
    r = (torch.arange(h, device=x.device)[None, :] + d_rows[:, None]).clamp(0, h - 1)  # (B, H)
    q = (torch.arange(w, device=x.device)[None, :] + d_cols[:, None]).clamp(0, w - 1)  # (B, W)
    idx = (r[:, :, None] * w + q[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return x.reshape(b, c, h * w).gather(2, idx).reshape(b, c, h, w)


def pil_box_weights(in_size: int, out_size: int) -> torch.Tensor:
    """Resampling matrix (out_size, in_size) of Pillow's ``Image.resize(..., Image.BOX)`` along one axis.

    Follows Pillow's ``precompute_coeffs``: the box filter (support 0.5, widened by the scale when
    downsampling) is evaluated at input pixel centres and each row is normalised.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for o in range(out_size):  # size-sized setup loop, not per image
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            weights[o, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        total = weights[o].sum()
        if total > 0:
            weights[o] /= total
    return weights


def resize_matrices(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply a separable linear resampling: ``rows`` (H', H) and ``cols`` (W', W); returns (B, C, H', W')."""
    return rows.to(x) @ x @ cols.to(x).T


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1) (scikit-image's ``rgb2hsv`` conventions)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    delta = v - x.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = torch.where(r == v, (g - b) / safe, torch.zeros_like(v))
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)  # later channels win ties, as in scikit-image
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.where(delta > 0, (h / 6.0).remainder(1.0), torch.zeros_like(h))
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: (B, 3, H, W) HSV -> RGB."""
    h, s, v = hsv.unbind(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * h[:, None]).remainder(6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return v[:, None] - v[:, None] * s[:, None] * ramp


def next_power_of_two(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (max(n, 1) - 1).bit_length()
