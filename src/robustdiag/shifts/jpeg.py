"""JPEG compression as a batched torch re-implementation of libjpeg (what Pillow's ``save("JPEG")`` runs).

The benchmark (``jpeg_compression`` in Hendrycks' ``make_*_c.py``) round-trips each image through
Pillow at quality q. Here the baseline JPEG pipeline runs on whole batches, following libjpeg(-turbo):

1. 8-bit levels, RGB -> YCbCr (JFIF) in libjpeg's 16-bit fixed point;
2. padding to whole MCUs as libjpeg does (columns and odd rows at full resolution, the remaining rows
   by repeating each component's last row);
3. 4:2:0 chroma subsampling (Pillow's default): 2x2 sums with libjpeg's alternating rounding bias;
4. level shift by -128, 8x8 block forward DCT, quantisation by the Annex K tables scaled with
   libjpeg's ``jpeg_quality_scaling`` (baseline, 1..255), rounding half away from zero;
5. dequantisation, inverse DCT, +128, clip to 0..255;
6. libjpeg's "fancy" (triangle-filter) chroma upsampling with its rounding, YCbCr -> RGB in fixed point.

``dct="islow"`` (default) reproduces libjpeg's default integer DCTs (``jfdctint.c`` / ``jidctint.c``,
13-bit constants, two passes) in int64; ``dct="float"`` uses the exact orthonormal DCT instead. With
``islow`` the output equals Pillow's (libjpeg-turbo) bit for bit on the images in the tests, but it
remains an approximation of "libjpeg" in general: other builds (e.g. IJG libjpeg 9, which upsamples
chroma with scaled DCTs) or SIMD paths that deviate from the C code give slightly different images.
Entropy coding is lossless and skipped. Grey-scale images (C=1) are coded as a single luma component,
as Pillow does. On a CPU the ``islow`` steps run per image in a Numba kernel
(:mod:`robustdiag.shifts.jpeg_kernel`, the same integers; ``ROBUSTDIAG_NUMBA=0`` keeps the tensor path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import ClassVar

import torch
import torch.nn.functional as F

from robustdiag.shifts import jpeg_kernel
from robustdiag.shifts.base import SEVERITY_RANGE, Corruption, Draws, Geometry

LUMA_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip


def quality_table(base: tuple[int, ...], quality: int) -> torch.Tensor:
    """libjpeg's quality-scaled quantisation table (8, 8) for ``quality`` in 1..100 (baseline, 1..255)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    values = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(values, dtype=torch.float64).view(8, 8)


@lru_cache(maxsize=1)
def dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix D (8, 8): coefficients = D @ block @ D.T (JPEG's FDCT scaling)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    d[0] /= math.sqrt(2)
    return d


# libjpeg's islow DCT constants: FIX(c) = round(c * 2^13)
CONST_BITS, PASS1_BITS = 13, 2
C0_298, C0_390, C0_541, C0_765 = 2446, 3196, 4433, 6270
C0_899, C1_175, C1_501, C1_847 = 7373, 9633, 12299, 15137
C1_961, C2_053, C2_562, C3_072 = 16069, 16819, 20995, 25172


def descale(x: torch.Tensor, bits: int) -> torch.Tensor:
    """libjpeg's ``DESCALE``: divide by 2^bits rounding halves up (arithmetic shift)."""
    return torch.div(x + (1 << (bits - 1)), 1 << bits, rounding_mode="floor")


def _odd_part(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The shared odd-part rotation of the islow DCTs on inputs (a, b, c, d); returns four sums."""
    z1, z2, z3, z4 = a + d, b + c, a + c, b + d
    z5 = (z3 + z4) * C1_175
    z1, z2 = z1 * -C0_899, z2 * -C2_562
    z3, z4 = z3 * -C1_961 + z5, z4 * -C0_390 + z5
    return a * C0_298 + z1 + z3, b * C2_053 + z2 + z4, c * C3_072 + z2 + z3, d * C1_501 + z1 + z4


def fdct_islow_1d(v: torch.Tensor, first_pass: bool) -> torch.Tensor:
    """One pass of libjpeg's ``jpeg_fdct_islow`` along the last axis of int64 ``v`` (..., 8)."""
    d = v.unbind(-1)
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    bits = CONST_BITS - PASS1_BITS if first_pass else CONST_BITS + PASS1_BITS
    if first_pass:
        out0, out4 = (t10 + t11) * (1 << PASS1_BITS), (t10 - t11) * (1 << PASS1_BITS)
    else:
        out0, out4 = descale(t10 + t11, PASS1_BITS), descale(t10 - t11, PASS1_BITS)
    z1 = (t12 + t13) * C0_541
    out2, out6 = descale(z1 + t13 * C0_765, bits), descale(z1 - t12 * C1_847, bits)
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    out = [out0, descale(o1, bits), out2, descale(o3, bits), out4, descale(o5, bits), out6, descale(o7, bits)]
    return torch.stack(out, dim=-1)


def idct_islow_1d(v: torch.Tensor, first_pass: bool) -> torch.Tensor:
    """One pass of libjpeg's ``jpeg_idct_islow`` along the last axis of int64 ``v`` (..., 8)."""
    d = v.unbind(-1)
    z1 = (d[2] + d[6]) * C0_541
    t2, t3 = z1 - d[6] * C1_847, z1 + d[2] * C0_765
    t0, t1 = (d[0] + d[4]) * (1 << CONST_BITS), (d[0] - d[4]) * (1 << CONST_BITS)
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    bits = CONST_BITS - PASS1_BITS if first_pass else CONST_BITS + PASS1_BITS + 3
    out = [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]
    return descale(torch.stack(out, dim=-1), bits)


def quantise_islow(blocks: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Integer DCT, quantisation and dequantisation of level-shifted int64 blocks (..., 8, 8)."""
    coeffs = fdct_islow_1d(fdct_islow_1d(blocks, True).transpose(-1, -2), False).transpose(
        -1, -2
    )  # 8x scaled
    divisor = table.to(torch.int64) * 8
    levels = torch.sign(coeffs) * torch.div(coeffs.abs() + divisor // 2, divisor, rounding_mode="floor")
    dequant = levels * table.to(torch.int64)
    # libjpeg's inverse runs columns first, then rows
    cols = idct_islow_1d(dequant.transpose(-1, -2), True).transpose(-1, -2)
    return idct_islow_1d(cols, False)


def quantise_float(blocks: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Exact orthonormal DCT, quantisation, dequantisation and inverse DCT of float blocks (..., 8, 8)."""
    d = dct_matrix().to(blocks)
    coeffs = round_half_away((d @ blocks @ d.T) / table.to(blocks)) * table.to(blocks)
    return round_half_up(d.T @ coeffs @ d)


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves upwards (libjpeg's ``+ ONE_HALF`` then truncate)."""
    return torch.floor(x + 0.5)


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves away from zero (libjpeg's coefficient quantiser)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


SCALE = 65536.0  # libjpeg's colour conversion works in 16-bit fixed point (SCALEBITS = 16)


def fix(value: float) -> float:
    """libjpeg's ``FIX(x)``: the fixed-point constant ``round(x * 2^16)``."""
    return float(int(value * SCALE + 0.5))


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """JFIF conversion of (B, 3, H, W) integer levels 0..255 with libjpeg's fixed-point rounding.

    All intermediate values are integers below 2^25, so float32/float64 arithmetic is exact.
    """
    r, g, b = rgb.unbind(1)
    half = SCALE / 2
    y = fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + half
    cb = -fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + 128 * SCALE + half - 1
    cr = fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + 128 * SCALE + half - 1
    return torch.floor(torch.stack([y, cb, cr], dim=1) / SCALE)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """JFIF conversion back to RGB (B, 3, H, W) levels with libjpeg's fixed-point rounding, clipped to 0..255."""
    y, cb, cr = ycc.unbind(1)
    cb, cr = cb - 128, cr - 128
    half = SCALE / 2
    r = y + torch.floor((fix(1.402) * cr + half) / SCALE)
    g = y + torch.floor((-fix(0.34414) * cb + half - fix(0.71414) * cr) / SCALE)
    b = y + torch.floor((fix(1.772) * cb + half) / SCALE)
    return torch.stack([r, g, b], dim=1).clamp(0, 255)


def downsample_chroma(planes: torch.Tensor) -> torch.Tensor:
    """libjpeg's 2x2 box downsampling of (B, 2, H, W) levels, with its alternating 1, 2 rounding bias."""
    total = F.avg_pool2d(planes, 2) * 4  # (B, 2, H/2, W/2) integer sums
    bias = 1.0 + (torch.arange(total.shape[-1], device=planes.device) % 2).to(planes.dtype)  # 1, 2, 1, 2 ...
    return torch.floor((total + bias) / 4)


def upsample_chroma(planes: torch.Tensor) -> torch.Tensor:
    """libjpeg's "fancy" 2x upsampling (triangle filter = bilinear with half-pixel centres, edge clamp).

    Outputs are rounded as libjpeg does: ``(16 v + 8) >> 4`` on even columns, ``(16 v + 7) >> 4`` on odd.
    """
    if planes.shape[-1] <= 2:  # libjpeg falls back to plain replication for such narrow planes
        return planes.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    up = F.interpolate(planes, scale_factor=2, mode="bilinear", align_corners=False)  # (B, 2, 2H, 2W)
    bias = torch.where(torch.arange(up.shape[-1], device=up.device) % 2 == 0, 8.0, 7.0).to(up.dtype)
    return torch.floor((up * 16 + bias) / 16)


def blockwise_dct_roundtrip(plane: torch.Tensor, table: torch.Tensor, dct: str = "islow") -> torch.Tensor:
    """JPEG-code one channel plane (B, H, W) of levels 0..255, H and W multiples of 8; returns levels."""
    b, h, w = plane.shape
    blocks = (plane - 128).reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)  # (B, h/8, w/8, 8, 8)
    if dct == "islow":
        samples = quantise_islow(blocks.to(torch.int64), table).to(plane.dtype)
    else:
        samples = quantise_float(blocks, table)
    samples = (samples + 128).clamp(0, 255)
    return samples.transpose(2, 3).reshape(b, h, w)


def pad_to_multiple(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Repeat the last row / column of (B, C, H, W) until H is a multiple of ``rows`` and W of ``cols``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % rows, (-w) % cols
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


DCT_METHODS: tuple[str, ...] = ("islow", "float")


def jpeg_roundtrip(
    x: torch.Tensor, quality: int, *, subsample_chroma: bool = True, dct: str = "islow"
) -> torch.Tensor:
    """Compress and decompress (B, C, H, W) pixels in [0, 1], C in {1, 3}; returns 8-bit levels / 255.

    Computes in float64 (levels and fixed-point colour sums are exact there) and returns ``x``'s dtype.
    """
    if dct not in DCT_METHODS:
        raise ValueError(f"jpeg_compression: dct must be one of {list(DCT_METHODS)}, got {dct!r}")
    luma_q = quality_table(LUMA_TABLE, quality)
    if jpeg_kernel.usable_for(x, dct):  # CPU: the same integer steps per image, block by block
        return jpeg_kernel.jpeg_roundtrip(x, luma_q, quality_table(CHROMA_TABLE, quality), subsample_chroma)
    dtype = x.dtype
    x = x.to(torch.float64)
    h, w = x.shape[-2:]
    levels = round_half_up(x.clamp(0, 1) * 255)
    if x.shape[1] == 1:
        plane = pad_to_multiple(levels, 8, 8)[:, 0]
        return (blockwise_dct_roundtrip(plane, luma_q, dct)[:, None, :h, :w] / 255).to(dtype)
    chroma_q = quality_table(CHROMA_TABLE, quality)
    mcu = 16 if subsample_chroma else 8
    # libjpeg pads columns at full resolution before downsampling, but rows only to a whole row group
    # (2 rows); the remaining rows of an MCU repeat the last row of each (downsampled) component
    ycc = rgb_to_ycbcr(pad_to_multiple(levels, mcu // 8, mcu))  # (B, 3, H2, W')
    luma = blockwise_dct_roundtrip(pad_to_multiple(ycc[:, :1], mcu, 1)[:, 0], luma_q, dct)  # (B, H', W')
    chroma = ycc[:, 1:]
    if subsample_chroma:
        chroma = downsample_chroma(chroma)  # (B, 2, H2/2, W'/2)
    chroma = pad_to_multiple(chroma, 8, 8)
    b, _, ch, cw = chroma.shape
    chroma = blockwise_dct_roundtrip(chroma.reshape(b * 2, ch, cw), chroma_q, dct).reshape(b, 2, ch, cw)
    if subsample_chroma:
        # the decoder upsamples the real chroma samples only, clamping at their last row and column
        chroma = upsample_chroma(chroma[:, :, : (h + 1) // 2, : (w + 1) // 2])  # (B, 2, >= H, >= W)
    rgb = ycbcr_to_rgb(torch.cat([luma[:, None, :h, :w], chroma[:, :, :h, :w]], dim=1))
    return (rgb / 255).to(dtype)


class JpegCompression(Corruption):
    """JPEG round trip at quality q (see the module docstring for how it approximates libjpeg)."""

    CPU_CHUNKS = False  # measured slower in chunks (per-call work outweighs the cache gain)
    name = "jpeg_compression"
    COLOUR_ONLY = True
    PARAMS: ClassVar = {
        "cifar": (80, 65, 58, 50, 40),
        "tinyimagenet": (65, 58, 50, 40, 25),
        "imagenet": (25, 18, 15, 10, 7),
    }

    def __init__(
        self,
        severities: Sequence[int] = SEVERITY_RANGE,
        *,
        table: str = "auto",
        scale_spatial: bool = True,
        name: str | None = None,
        subsample_chroma: bool = True,
        dct: str = "islow",
    ) -> None:
        super().__init__(severities, table=table, scale_spatial=scale_spatial, name=name)
        if dct not in DCT_METHODS:
            raise ValueError(f"{self.name}: dct must be one of {list(DCT_METHODS)}, got {dct!r}")
        self.subsample_chroma = bool(subsample_chroma)  # 4:2:0 as Pillow's default; False = 4:4:4
        self.dct = dct

    def apply(self, x: torch.Tensor, param: int, geom: Geometry, draws: Draws) -> torch.Tensor:
        return jpeg_roundtrip(x, param, subsample_chroma=self.subsample_chroma, dct=self.dct)
