"""Common machinery of the computed corruptions: validation, parameter tables, random draws.

Parameter tables
----------------
Each corruption carries the per-severity parameters of Hendrycks & Dietterich's generators
(https://github.com/hendrycks/robustness, ``ImageNet-C/create_c/``):

* ``cifar``        -- ``make_cifar_c.py`` (CIFAR-10-C, 32 px); used by ``table="auto"`` when max(H, W) <= 32
* ``tinyimagenet`` -- ``make_tinyimagenet_c.py`` (Tiny-ImageNet-C, 64 px); only when asked for explicitly
* ``imagenet``     -- ``make_imagenet_c.py`` (ImageNet-C, 224 px); used by ``table="auto"`` for larger images

Parameters the benchmark defines relative to the image (elastic displacements, written as multiples of
the image side; the pixelate factor; zoom factors; the fog fractal, whose side is the next power of two
of the image side) follow the image size. Parameters in absolute pixels (defocus radius, Gaussian and
motion blur lengths) are given at the table's reference size (32, 64 or 224 px); with
``scale_spatial=True`` (default) they are multiplied by ``max(min(H, W), 32) / reference_size``. Images
at the reference size therefore get the benchmark's exact values; larger or smaller images get the same
blur relative to the image, except that images below CIFAR's 32 px keep CIFAR's pixel values (scaled
further down, a 0.4-px blur on 8-px digits would do nothing). ``scale_spatial=False`` uses every table
value literally, in pixels.

Randomness
----------
Random numbers are drawn with the given ``torch.Generator`` on *the generator's device* in float32 and
then moved to the input's device. A CPU generator therefore gives the same corrupted images on CPU and
CUDA (up to float rounding of the subsequent arithmetic); a generator on the input's device is faster.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from robustdiag.shifts.ops import compute_dtype

SEVERITY_RANGE: tuple[int, ...] = (1, 2, 3, 4, 5)
TABLES: tuple[str, ...] = ("cifar", "tinyimagenet", "imagenet")
TABLE_CHOICES: tuple[str, ...] = ("auto", *TABLES)
REFERENCE_SIZE: dict[str, int] = {"cifar": 32, "tinyimagenet": 64, "imagenet": 224}
Draws = dict[str, torch.Tensor]


def check_severity(name: str, severity: object, valid: Sequence[int] = SEVERITY_RANGE) -> int:
    """Return ``severity`` as an int, or raise ValueError naming the shift and the valid values."""
    try:
        if isinstance(severity, bool):
            raise TypeError
        value = operator.index(severity)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}: severity must be an integer in {list(valid)}, got {severity!r}") from None
    if value not in valid:
        raise ValueError(f"{name}: severity must be one of {list(valid)}, got {value}")
    return value


def check_severities(
    name: str, severities: Sequence[int], valid: Sequence[int] = SEVERITY_RANGE
) -> tuple[int, ...]:
    """Validate a configured severity list (non-empty, each in ``valid``) and return it as a tuple."""
    if isinstance(severities, str | bytes | int) or not hasattr(severities, "__iter__"):
        raise ValueError(
            f"{name}: severities must be a list of integers in {list(valid)}, got {severities!r}"
        )
    values = tuple(check_severity(name, s, valid) for s in severities)
    if not values:
        raise ValueError(f"{name}: severities must not be empty; valid values are {list(valid)}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(
            f"{name}: severities {list(values)} repeat {repeated}; each severity is measured once "
            f"(a repeat would be averaged twice into the mean corruption accuracy). Use e.g. {sorted(set(values))}"
        )
    return values


def check_images(name: str, x: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is a float (B, C, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected images of shape (B, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected float pixels in [0, 1], got dtype {x.dtype}")


CPU_CHUNK_VALUES = 1 << 19
"""On a CPU, :meth:`Corruption.apply` runs over chunks of images holding about this many values (2 MiB in
float32): a chain of whole-batch tensor operations streams every intermediate through memory, and a
224 px batch of 64 is 38 MiB per intermediate; cache-sized chunks make the same operations several
times faster. GPUs take the whole batch at once. Draws are made for the whole batch first, so the
images do not depend on the chunking."""


def images_per_chunk(x: torch.Tensor) -> int:
    """Images of ``x`` (B, C, H, W) that :meth:`Corruption.apply` takes at once (all of them on a GPU)."""
    if x.device.type != "cpu":
        return x.shape[0]
    images = max(1, CPU_CHUNK_VALUES // max(1, x[0].numel()))
    threads = torch.get_num_threads()  # a whole number of images per thread for kernels that split by image
    return -(-images // threads) * threads


def _rows_of(value: torch.Tensor, rows: slice, batch: int) -> torch.Tensor:
    """A per-image draw (leading dimension = batch) cut to ``rows``; a draw shared by the batch as it is."""
    return value[rows] if value.ndim >= 1 and value.shape[0] == batch else value


def owns_buffer(result: torch.Tensor, *others: torch.Tensor) -> bool:
    """``result`` is contiguous and shares no memory with ``others`` (so it may be written in place or
    handed on without a copy; an expanded view or the input itself may not)."""
    storage = result.untyped_storage().data_ptr()
    return result.is_contiguous() and all(t.untyped_storage().data_ptr() != storage for t in others)


def _clamped(result: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``result`` clamped to [0, 1]: in place when it is a buffer of its own (no second full-size tensor),
    else as a copy (it may be the input itself, e.g. an identity corruption, or a view of a draw)."""
    return result.clamp_(0.0, 1.0) if owns_buffer(result, *inputs) else result.clamp(0.0, 1.0)


def draw_uniform(
    shape: Sequence[int], generator: torch.Generator, like: torch.Tensor, low: float = 0.0, high: float = 1.0
) -> torch.Tensor:
    """Uniform(low, high) numbers drawn on the generator's device, returned on ``like``'s device and dtype."""
    u = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def draw_normal(shape: Sequence[int], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal numbers drawn on the generator's device, returned on ``like``'s device and dtype."""
    z = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


POISSON_BLOCK_VALUES = 1 << 16
"""A CPU generator draws Poisson counts in blocks of this many values, each block from its own generator
seeded from the caller's, on the run's torch threads: ``torch.poisson`` is sequential on a CPU (about
50 ns a value), the blocks run in parallel, and the numbers do not depend on the thread count."""


def draw_poisson(rate: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson counts with the given rates, drawn on the generator's device, returned like ``rate``."""
    rates = rate.to(device=generator.device, dtype=torch.float32)
    if generator.device.type != "cpu" or rates.numel() <= POISSON_BLOCK_VALUES:
        counts = torch.poisson(rates, generator=generator)
    else:
        counts = _poisson_in_blocks(rates.reshape(-1), generator).view(rates.shape)
    return counts.to(device=rate.device, dtype=rate.dtype)


def _poisson_in_blocks(rates: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson counts of flat CPU ``rates`` (N,), block by block on a thread pool (torch releases the GIL)."""
    blocks = rates.split(POISSON_BLOCK_VALUES)
    seeds = torch.randint(0, 2**62, (len(blocks),), generator=generator).tolist()  # one per block
    counts = torch.empty_like(rates)
    parts = counts.split(POISSON_BLOCK_VALUES)

    def draw(i: int) -> None:
        parts[i].copy_(torch.poisson(blocks[i], generator=torch.Generator().manual_seed(seeds[i])))

    threads = max(1, torch.get_num_threads())
    if threads == 1:
        for i in range(len(blocks)):
            draw(i)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(draw, range(len(blocks))))
    return counts


BERNOULLI_MARGIN_SD = 6.0
"""Gaps drawn per round beyond the expected count, in standard deviations: one round almost always."""


def draw_bernoulli_positions(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Where ``n`` independent Bernoulli(``p``) trials succeed: sorted flat positions (K,) in [0, n), int64,
    on the generator's device.

    Drawn as geometric gaps between successes (``floor(log(V) / log(1 - p)) + 1`` with V uniform on
    (0, 1], float64), which is the same law as one uniform number per trial with about ``n p`` random
    numbers instead of ``n``: a salt-and-pepper mask at 9 % costs a tenth of the uniforms."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"draw_bernoulli_positions: p must be in [0, 1], got {p}")
    device = generator.device
    if p == 0.0 or n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if p == 1.0:
        return torch.arange(n, dtype=torch.int64, device=device)
    log_q = math.log1p(-p)
    parts, last = [], -1  # the last position drawn so far
    while True:
        remaining = n - 1 - last
        expected = remaining * p
        count = max(1, int(expected + BERNOULLI_MARGIN_SD * math.sqrt(expected * (1.0 - p)) + 16))
        u = torch.rand(count, generator=generator, device=device, dtype=torch.float64)  # [0, 1)
        gaps = torch.floor(torch.log1p(-u) / log_q) + 1  # (count,) geometric on 1, 2, ...: V = 1 - u
        positions = (last + torch.cumsum(gaps, 0)).to(torch.int64)  # exact: integers below 2^53
        inside = positions[positions < n]
        parts.append(inside)
        if len(inside) < count:  # a position passed the end: every success in [0, n) is drawn
            return torch.cat(parts)
        last = int(inside[-1])


@dataclass(frozen=True)
class Geometry:
    """Which parameter table applies to an image size and how pixel-unit parameters scale."""

    table: str
    scale: float  # multiplier for parameters in absolute pixels (blur radii and lengths)
    relative: float  # image side / reference side, for parameters the benchmark defines per image size
    height: int
    width: int


class Corruption:
    """Base class of the computed corruptions (satisfies :class:`robustdiag.types.Shift`).

    Subclasses set ``name``, ``PARAMS`` (per table, one entry per severity 1-5) and implement
    :meth:`apply` (deterministic given the draws) and, when random, :meth:`sample`.
    """

    name: str = ""
    PARAMS: ClassVar[Mapping[str, Sequence[Any]]] = {}
    COLOUR_ONLY: ClassVar[bool] = False  # needs C == 3 (or C == 1 with a documented grey-scale rule)
    CPU_CHUNKS: ClassVar[bool] = True  # apply() in cache-sized chunks on a CPU (off for per-position loops)

    def __init__(
        self,
        severities: Sequence[int] = SEVERITY_RANGE,
        *,
        table: str = "auto",
        scale_spatial: bool = True,
        name: str | None = None,
    ) -> None:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
            self.name = name
        self.severities = check_severities(self.name, severities)
        if table not in TABLE_CHOICES:
            raise ValueError(f"{self.name}: table must be one of {list(TABLE_CHOICES)}, got {table!r}")
        self.table = table
        self.scale_spatial = bool(scale_spatial)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, severities={list(self.severities)}, "
            f"table={self.table!r}, scale_spatial={self.scale_spatial})"
        )

    def geometry(self, height: int, width: int) -> Geometry:
        """The parameter table and pixel-unit scale used for images of this size."""
        if self.table == "auto":
            table = "cifar" if max(height, width) <= REFERENCE_SIZE["cifar"] else "imagenet"
        else:
            table = self.table
        side, reference = min(height, width), REFERENCE_SIZE[table]
        if not self.scale_spatial:
            return Geometry(table=table, scale=1.0, relative=1.0, height=height, width=width)
        scale = max(side, REFERENCE_SIZE["cifar"]) / reference
        return Geometry(table=table, scale=scale, relative=side / reference, height=height, width=width)

    def params(self, severity: int, height: int, width: int) -> Any:
        """The table entry for ``severity`` at this image size (before spatial scaling)."""
        severity = check_severity(self.name, severity)
        return self.PARAMS[self.geometry(height, width).table][severity - 1]

    def pixel_param(self, param: Any, geom: Geometry) -> Any:
        """The table entry with pixel parameters scaled to the image (identity when nothing scales)."""
        return param

    def resolved_param(self, severity: int, height: int, width: int) -> Any:
        """What :meth:`apply` uses at ``severity`` for images of this size (table entry, spatially scaled)."""
        geom = self.geometry(height, width)
        return self.pixel_param(self.params(severity, height, width), geom)

    def sample(self, x: torch.Tensor, param: Any, geom: Geometry, generator: torch.Generator) -> Draws:
        """Random draws for one batch (none for deterministic corruptions)."""
        return {}

    def apply(self, x: torch.Tensor, param: Any, geom: Geometry, draws: Draws) -> torch.Tensor:
        """Corrupt ``x`` (B, C, H, W) given the table entry and the draws; may return values outside [0, 1]."""
        raise NotImplementedError

    def check_channels(self, x: torch.Tensor) -> None:
        """Colour corruptions accept RGB (C=3) or grey-scale (C=1) images only."""
        if self.COLOUR_ONLY and x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: needs RGB (C=3) or grey-scale (C=1) images, got C={x.shape[1]}")

    def __call__(
        self,
        x: torch.Tensor,
        severity: int,
        *,
        generator: torch.Generator,
        index: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        model: nn.Module | None = None,
    ) -> torch.Tensor:
        """Corrupt a batch (B, C, H, W) in [0, 1] at ``severity``; same shape, dtype and device, in [0, 1]."""
        severity = check_severity(self.name, severity)
        check_images(self.name, x)
        self.check_channels(x)
        geom = self.geometry(x.shape[-2], x.shape[-1])
        param = self.PARAMS[geom.table][severity - 1]
        with torch.no_grad():
            xc = x.detach().to(compute_dtype(x.dtype))
            draws = self.sample(xc, param, geom, generator)  # the whole batch's: chunking changes no number
            per_chunk = images_per_chunk(xc) if self.CPU_CHUNKS else xc.shape[0]
            if per_chunk >= xc.shape[0]:
                result = self.apply(xc, param, geom, draws)
                return _clamped(result, [x, xc, *draws.values()]).to(x.dtype)
            out = torch.empty_like(x)
            for start in range(0, xc.shape[0], per_chunk):
                rows = slice(start, start + per_chunk)
                part = {key: _rows_of(value, rows, xc.shape[0]) for key, value in draws.items()}
                out[rows] = self.apply(xc[rows], param, geom, part).clamp(0.0, 1.0)
            return out
