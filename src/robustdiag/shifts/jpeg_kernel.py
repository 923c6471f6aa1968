"""CPU kernel (Numba) for the JPEG round trip with libjpeg's integer DCT (``dct="islow"``).

The batched tensor version in :mod:`robustdiag.shifts.jpeg` (the definition, and what a GPU runs) streams
a dozen full-size int64 intermediates per step through memory; on a CPU that is ten times slower than
Pillow's libjpeg-turbo on one image at a time. This kernel runs the same steps per image, an 8x8 block
at a time in registers: fixed-point RGB -> YCbCr, edge replication to whole MCUs, 2x2 chroma
downsampling with libjpeg's alternating bias, ``jpeg_fdct_islow``, quantisation (halves away from zero)
and dequantisation, ``jpeg_idct_islow``, "fancy" chroma upsampling and YCbCr -> RGB. Integer arithmetic
throughout (int64), so it equals the tensor version bit for bit (tested), and with it Pillow on the
images in the tests. Images are independent tasks (``prange``); threads follow torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robustdiag.numba_support import match_threads, numba, on_cpu

if numba is not None:
    from numba import njit, prange


def usable_for(x: torch.Tensor, dct: str) -> bool:
    """The kernel applies: Numba available, ``x`` a CPU float32/float64 tensor, the integer DCT requested."""
    return dct == "islow" and on_cpu(x, floats=True)


if numba is not None:

    @njit(cache=True, inline="always")
    def _descale(x: int, bits: int) -> int:
        return (x + (1 << (bits - 1))) >> bits

    @njit(cache=True, inline="always")
    def _odd_part(a: int, b: int, c: int, d: int) -> tuple[int, int, int, int]:
        z1, z2, z3, z4 = a + d, b + c, a + c, b + d
        z5 = (z3 + z4) * 9633
        z1, z2 = z1 * -7373, z2 * -20995
        z3, z4 = z3 * -16069 + z5, z4 * -3196 + z5
        return a * 2446 + z1 + z3, b * 16819 + z2 + z4, c * 25172 + z2 + z3, d * 12299 + z1 + z4

    @njit(cache=True, inline="always")
    def _fdct_1d(
        d0: int, d1: int, d2: int, d3: int, d4: int, d5: int, d6: int, d7: int, first: bool
    ) -> tuple[int, int, int, int, int, int, int, int]:
        """One pass of ``jpeg_fdct_islow`` over 8 values."""
        t0, t7, t1, t6 = d0 + d7, d0 - d7, d1 + d6, d1 - d6
        t2, t5, t3, t4 = d2 + d5, d2 - d5, d3 + d4, d3 - d4
        t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
        bits = 11 if first else 15
        if first:
            out0, out4 = (t10 + t11) << 2, (t10 - t11) << 2
        else:
            out0, out4 = _descale(t10 + t11, 2), _descale(t10 - t11, 2)
        z1 = (t12 + t13) * 4433
        out2, out6 = _descale(z1 + t13 * 6270, bits), _descale(z1 - t12 * 15137, bits)
        o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
        return (
            out0, _descale(o1, bits), out2, _descale(o3, bits), out4, _descale(o5, bits), out6, _descale(o7, bits)
        )  # fmt: skip

    @njit(cache=True, inline="always")
    def _idct_1d(
        d0: int, d1: int, d2: int, d3: int, d4: int, d5: int, d6: int, d7: int, first: bool
    ) -> tuple[int, int, int, int, int, int, int, int]:
        """One pass of ``jpeg_idct_islow`` over 8 values."""
        z1 = (d2 + d6) * 4433
        t2, t3 = z1 - d6 * 15137, z1 + d2 * 6270
        t0, t1 = (d0 + d4) << 13, (d0 - d4) << 13
        t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
        o0, o1, o2, o3 = _odd_part(d7, d5, d3, d1)
        bits = 11 if first else 18
        return (
            _descale(t10 + o3, bits), _descale(t11 + o2, bits), _descale(t12 + o1, bits), _descale(t13 + o0, bits),
            _descale(t13 - o0, bits), _descale(t12 - o1, bits), _descale(t11 - o2, bits), _descale(t10 - o3, bits),
        )  # fmt: skip

    @njit(cache=True)
    def _roundtrip_plane(plane: Any, table: Any) -> None:
        """Code every 8x8 block of ``plane`` (H, W multiples of 8, levels 0..255) in place."""
        h, w = plane.shape
        k = np.empty((8, 8), dtype=np.int64)  # the block being coded
        for by in range(0, h, 8):
            for bx in range(0, w, 8):
                for r in range(8):  # forward: rows (level-shifted), then columns
                    p = plane[by + r]
                    (k[r, 0], k[r, 1], k[r, 2], k[r, 3], k[r, 4], k[r, 5], k[r, 6], k[r, 7]) = _fdct_1d(
                        p[bx] - 128, p[bx + 1] - 128, p[bx + 2] - 128, p[bx + 3] - 128,
                        p[bx + 4] - 128, p[bx + 5] - 128, p[bx + 6] - 128, p[bx + 7] - 128, True,
                    )  # fmt: skip
                for c in range(8):
                    (k[0, c], k[1, c], k[2, c], k[3, c], k[4, c], k[5, c], k[6, c], k[7, c]) = _fdct_1d(
                        k[0, c], k[1, c], k[2, c], k[3, c], k[4, c], k[5, c], k[6, c], k[7, c], False
                    )
                for r in range(8):  # quantise (halves away from zero) and dequantise
                    for c in range(8):
                        q = table[r, c]
                        value = k[r, c]
                        level = (abs(value) + q * 4) // (q * 8)
                        k[r, c] = (level if value >= 0 else -level) * q
                for c in range(8):  # inverse: columns, then rows
                    (k[0, c], k[1, c], k[2, c], k[3, c], k[4, c], k[5, c], k[6, c], k[7, c]) = _idct_1d(
                        k[0, c], k[1, c], k[2, c], k[3, c], k[4, c], k[5, c], k[6, c], k[7, c], True
                    )
                for r in range(8):
                    values = _idct_1d(
                        k[r, 0], k[r, 1], k[r, 2], k[r, 3], k[r, 4], k[r, 5], k[r, 6], k[r, 7], False
                    )
                    p = plane[by + r]
                    for c in range(8):
                        p[bx + c] = min(max(values[c] + 128, 0), 255)

    @njit(cache=True, inline="always")
    def _level(value: float) -> int:
        """An input pixel as an 8-bit level: ``floor(clamp(x, 0, 1) * 255 + 0.5)`` in float64."""
        return int(np.floor(min(max(np.float64(value), 0.0), 1.0) * 255.0 + 0.5))

    @njit(parallel=True, cache=True)
    def _jpeg_kernel(pixels: Any, luma_table: Any, chroma_table: Any, subsample: bool, out: Any) -> None:
        batch, channels, h, w = pixels.shape
        scale = np.arange(256) / 255.0  # level -> pixel value, in float64 as the tensor path divides
        for b in prange(batch):
            if channels == 1:
                hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
                plane = np.empty((hp, wp), dtype=np.int64)
                for r in range(hp):
                    for c in range(wp):
                        plane[r, c] = _level(pixels[b, 0, min(r, h - 1), min(c, w - 1)])
                _roundtrip_plane(plane, luma_table)
                for r in range(h):
                    for c in range(w):
                        out[b, 0, r, c] = scale[plane[r, c]]
                continue
            mcu, vs = (16, 2) if subsample else (8, 1)
            h2, wp = -(-h // vs) * vs, -(-w // mcu) * mcu  # rows to a row group, columns to whole MCUs
            hy = -(-h2 // mcu) * mcu
            luma = np.empty((hy, wp), dtype=np.int64)
            cb = np.empty((h2, wp), dtype=np.int64)
            cr = np.empty((h2, wp), dtype=np.int64)
            for r in range(h2):  # JFIF in 16-bit fixed point on edge-replicated levels
                red, green, blue = (
                    pixels[b, 0, min(r, h - 1)],
                    pixels[b, 1, min(r, h - 1)],
                    pixels[b, 2, min(r, h - 1)],
                )
                for c in range(w):
                    lr, lg, lb = _level(red[c]), _level(green[c]), _level(blue[c])
                    luma[r, c] = (19595 * lr + 38470 * lg + 7471 * lb + 32768) >> 16
                    cb[r, c] = (-11059 * lr - 21709 * lg + 32768 * lb + 8421375) >> 16
                    cr[r, c] = (32768 * lr - 27439 * lg - 5329 * lb + 8421375) >> 16
                for c in range(w, wp):
                    luma[r, c], cb[r, c], cr[r, c] = luma[r, w - 1], cb[r, w - 1], cr[r, w - 1]
            for r in range(h2, hy):  # the rest of the last MCU row repeats the last row
                for c in range(wp):
                    luma[r, c] = luma[h2 - 1, c]
            _roundtrip_plane(luma, luma_table)
            ch, cw = h2 // vs, wp // (2 if subsample else 1)
            hc = -(-ch // 8) * 8
            planes = np.empty((2, hc, cw), dtype=np.int64)
            for r in range(ch):
                for c in range(cw):
                    if subsample:  # 2x2 sums with the alternating bias 1, 2, 1, 2 ...
                        bias = 1 + (c & 1)
                        r0, c0 = 2 * r, 2 * c
                        planes[0, r, c] = (
                            cb[r0, c0] + cb[r0, c0 + 1] + cb[r0 + 1, c0] + cb[r0 + 1, c0 + 1] + bias
                        ) >> 2
                        planes[1, r, c] = (
                            cr[r0, c0] + cr[r0, c0 + 1] + cr[r0 + 1, c0] + cr[r0 + 1, c0 + 1] + bias
                        ) >> 2
                    else:
                        planes[0, r, c], planes[1, r, c] = cb[r, c], cr[r, c]
            for r in range(ch, hc):
                for c in range(cw):
                    planes[0, r, c], planes[1, r, c] = planes[0, ch - 1, c], planes[1, ch - 1, c]
            _roundtrip_plane(planes[0], chroma_table)
            _roundtrip_plane(planes[1], chroma_table)
            rows_c, cols_c = (h + 1) // 2, (w + 1) // 2  # the real chroma samples
            narrow = cols_c <= 2  # libjpeg replicates instead of interpolating such narrow planes
            colsum = np.empty((2, cols_c), dtype=np.int64)
            up = np.empty((2, cols_c * 2), dtype=np.int64)  # one row of upsampled chroma
            for r in range(h):
                for p in range(2):
                    if not subsample:
                        for c in range(w):
                            up[p, c] = planes[p, r, c]
                    elif narrow:
                        for c in range(w):
                            up[p, c] = planes[p, r // 2, c // 2]
                    else:  # "fancy" triangle filter, rounded (16 v + 8) >> 4 / (16 v + 7) >> 4
                        k = r // 2
                        near = max(k - 1, 0) if r % 2 == 0 else min(k + 1, rows_c - 1)
                        for c in range(cols_c):
                            colsum[p, c] = 3 * planes[p, k, c] + planes[p, near, c]
                        for c in range(cols_c):
                            mid = 3 * colsum[p, c]
                            up[p, 2 * c] = (mid + colsum[p, max(c - 1, 0)] + 8) >> 4
                            up[p, 2 * c + 1] = (mid + colsum[p, min(c + 1, cols_c - 1)] + 7) >> 4
                for c in range(w):
                    y, u, v = luma[r, c], up[0, c] - 128, up[1, c] - 128
                    out[b, 0, r, c] = scale[min(max(y + ((91881 * v + 32768) >> 16), 0), 255)]
                    out[b, 1, r, c] = scale[min(max(y + ((-22554 * u + 32768 - 46802 * v) >> 16), 0), 255)]
                    out[b, 2, r, c] = scale[min(max(y + ((116130 * u + 32768) >> 16), 0), 255)]


def jpeg_roundtrip(
    x: torch.Tensor, luma: torch.Tensor, chroma: torch.Tensor, subsample: bool
) -> torch.Tensor:
    """JPEG round trip of pixels (B, C, H, W) in [0, 1] (float32 or float64; C in {1, 3}) with quantisation
    tables (8, 8): the decoded 8-bit levels / 255 (computed in float64) in ``x``'s dtype."""
    match_threads()
    pixels = x.detach().contiguous().numpy()
    out = np.empty(pixels.shape, dtype=pixels.dtype)
    luma_table, chroma_table = (t.to(torch.int64).contiguous().numpy() for t in (luma, chroma))
    _jpeg_kernel(pixels, luma_table, chroma_table, bool(subsample), out)
    return torch.from_numpy(out)
