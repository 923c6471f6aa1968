"""Corruption throughput: batched torch shifts on the device vs per-image NumPy / SciPy / Pillow.

For each corruption, images/s of the batched torch implementation (``robustdiag.shifts``, one call per
batch, generator on the device; on CUDA also with the default CPU generator of ``apply_shift``) against
the same corruption done to the same images one at a time by ``tests/shifts/reference.py`` (NumPy/SciPy/Pillow
re-implementations of Hendrycks & Dietterich's per-image code, drawing their own random numbers; spatter
and frost call OpenCV itself, as the benchmark does). The
``imagecorruptions`` package is the usual per-image reference, but it does not import with current
setuptools/scikit-image (``pkg_resources`` and ``multichannel`` are gone); the JSON records the reason.
Both sides are warmed up, then timed in interleaved paired rounds (which side goes first alternates);
each round gives one ratio of throughputs, and the figure is the median of the per-round ratios with
their min and max. Torch runs with the threads it is given (``--threads``, default 2, recorded); the
references run NumPy/SciPy/Pillow single-threaded and OpenCV with the same thread count. The process keeps
freed memory for reuse as a run does (``reuse_freed_memory``; both sides benefit: without it every
batch-sized tensor above glibc's 32 MiB mmap threshold is faulted in afresh).

    python benchmarks/bench_shifts.py                      # 32 px (CIFAR tables), batch 512, all corruptions
    python benchmarks/bench_shifts.py --quick              # smoke run (seconds)
    python benchmarks/bench_shifts.py --image-size 224 --batch-size 64    # ImageNet-C tables
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import PIL
import scipy
import torch
import torch.nn.functional as F

from common import REPO, machine, pick_device, sync
from robustdiag.allocator import reuse_freed_memory
from robustdiag.records.provenance import git_commit
from robustdiag.shifts import CORRUPTIONS, apply_shift

# The per-image NumPy/PIL references live with the tests that check every batched corruption against them.
sys.path.insert(0, str(REPO / "tests" / "shifts"))
from reference import REFERENCES, frost_photo_crop  # noqa: E402

FROST_PHOTOS = REPO / "benchmarks" / "out" / "frost_photos"  # generated stand-ins for the benchmark's photos


def frost_photos(size: int) -> Path:
    """Five smooth random 'photos' big enough for ``size``-px crops at the table's resize factor (the
    benchmark's own photos are not shipped; the cost does not depend on their content)."""
    from PIL import Image

    side = 400 if size <= 32 else 1100
    FROST_PHOTOS.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        path = FROST_PHOTOS / f"frost{i + 1}.png"
        if not path.exists():
            Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(path)
    return FROST_PHOTOS


def make_shift(name: str, size: int):
    """The corruption as benchmarked: frost with photos (the benchmark's procedure), the rest as configured."""
    if name == "frost":
        return CORRUPTIONS[name](images=str(frost_photos(size)))
    return CORRUPTIONS[name]()


def frost_reference(shift, size: int):
    """Per image: pick a photo, cv2.resize it, crop at random, blend (the benchmark's frost)."""
    photos = [photo.permute(1, 2, 0).numpy() for photo in shift.photos]  # (h, w, 3) as the shift read them
    factor = shift.resize_factor(shift.geometry(size, size))

    def run(image: np.ndarray, param, rng: np.random.Generator) -> np.ndarray:
        photo = photos[int(rng.integers(len(photos)))]
        h = int(round(photo.shape[0] * factor)) - size
        w = int(round(photo.shape[1] * factor)) - size
        crop = frost_photo_crop(photo, factor, (int(rng.integers(h)), int(rng.integers(w))), size, size)
        return np.clip(param[0] * image + param[1] * crop, 0, 1)

    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image-size", type=int, default=32, help="pixels per side (default: 32, CIFAR tables)"
    )
    parser.add_argument("--batch-size", type=int, default=512, help="images per torch call")
    parser.add_argument(
        "--reference-images",
        type=int,
        default=None,
        help="images per reference call, the first of the batch (default: the whole batch, as the torch side)",
    )
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="paired rounds; the median ratio is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch (and OpenCV) threads")
    parser.add_argument(
        "--round-seconds", type=float, default=0.25, help="each side's time per round (repeated calls)"
    )
    parser.add_argument("--corruptions", default="all", help="comma-separated names (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch 16, 4 reference images, 1 repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_shifts.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.reference_images, args.repeats, args.round_seconds = 16, 4, 1, 0.0
    if args.reference_images is None:
        args.reference_images = args.batch_size
    if not 1 <= args.reference_images <= args.batch_size:
        parser.error(
            f"--reference-images must be in 1..--batch-size ({args.batch_size}), got {args.reference_images}"
        )
    return args


def test_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) natural-ish images in [0, 1]: smooth shading plus a random straight edge."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(torch.rand(batch, 3, 4, 4, generator=g), size=(size, size), mode="bicubic")
    t = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    angle = torch.rand(batch, 1, 1, 1, generator=g) * 2 * torch.pi
    edge = ((xx * torch.cos(angle) + yy * torch.sin(angle)) > 0.1).float()
    return (0.6 * smooth + 0.4 * edge).clamp(0, 1)


def seconds(run: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Wall time per call of ``calls`` back-to-back calls of ``run`` (GPU work finished)."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        run()
    sync(device)
    return (time.perf_counter() - start) / calls


def calls_for(per_call: float, round_seconds: float) -> int:
    """Calls that make one side of a round last about ``round_seconds`` (millisecond calls jitter)."""
    return max(1, round(round_seconds / max(per_call, 1e-6)))


def imagecorruptions_status() -> str:
    """Whether the ``imagecorruptions`` package imports here (it is not used either way; see the docstring)."""
    try:
        import imagecorruptions  # noqa: F401
    except Exception as error:  # ImportError, or its own import-time errors with modern dependencies
        return f"not usable: {type(error).__name__}: {error}"
    return "importable (not used: its skimage calls fail with scikit-image >= 0.19)"


def bench_one(
    name: str, x: torch.Tensor, references: np.ndarray, args: argparse.Namespace
) -> dict[str, float]:
    """One corruption: paired rounds of the batched torch shift (device RNG) against the per-image reference."""
    device = x.device
    size = x.shape[-1]
    shift = make_shift(name, size)
    param = shift.resolved_param(args.severity, size, size)
    reference = frost_reference(shift, size) if name == "frost" else REFERENCES[name]
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")

    def run_batched() -> object:
        return apply_shift(shift, x, args.severity, seed=0, batch_size=len(x), generator_device=None)

    def run_per_image() -> object:
        return [reference(image, param, rng) for image in references]

    run_batched(), run_per_image()  # warm-up: allocator, kernels, caches
    batched_calls = calls_for(seconds(run_batched, device), args.round_seconds)
    per_image_calls = calls_for(seconds(run_per_image, cpu), args.round_seconds)

    def batched() -> float:
        return len(x) / seconds(run_batched, device, batched_calls)

    def per_image() -> float:
        return len(references) / seconds(run_per_image, cpu, per_image_calls)

    torch_rates, reference_rates, ratios = [], [], []
    for round_ in range(args.repeats):
        first, second = (batched, per_image) if round_ % 2 == 0 else (per_image, batched)
        a, b = first(), second()
        torch_rate, reference_rate = (a, b) if first is batched else (b, a)
        torch_rates.append(torch_rate)
        reference_rates.append(reference_rate)
        ratios.append(torch_rate / reference_rate)
    result = {
        "torch_images_per_s": statistics.median(torch_rates),
        "reference_images_per_s": statistics.median(reference_rates),
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "rounds": float(args.repeats),
    }
    if device.type == "cuda":
        cpu_rng = [
            len(x) / seconds(lambda: apply_shift(shift, x, args.severity, seed=0, batch_size=len(x)), device)
            for _ in range(args.repeats)
        ]
        result["torch_cpu_rng_images_per_s"] = statistics.median(cpu_rng)
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    reused = reuse_freed_memory(True)  # as a run sets the process up (config key reuse_freed_memory)
    device = pick_device(args.device)
    names = sorted(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        raise SystemExit(f"unknown corruptions {unknown}; valid: {sorted(CORRUPTIONS)}")
    x = test_images(args.batch_size, args.image_size).to(device)
    # the reference corrupts the same images, one at a time, in its own layout (H, W, C) float64: a few
    # images reused would stay in the CPU cache, which a pass over a dataset never does
    references = x[: args.reference_images].cpu().permute(0, 2, 3, 1).double().numpy()
    results = {}
    for name in names:
        results[name] = bench_one(name, x, references, args)
        print(
            f"{name:18s} torch {results[name]['torch_images_per_s']:12.0f} img/s   "
            f"reference {results[name]['reference_images_per_s']:9.0f} img/s   "
            f"x{results[name]['speedup']:.1f} ({results[name]['speedup_min']:.1f}-{results[name]['speedup_max']:.1f})",
            flush=True,
        )
    speedups = [r["speedup"] for r in results.values()]
    commit, dirty = git_commit()
    report = {
        "benchmark": "bench_shifts",
        "settings": {
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "reference_images": args.reference_images,
            "severity": args.severity,
            "repeats": args.repeats,
            "quick": args.quick,
            "dtype": "float32 (torch), float64 (reference)",
            "threads": args.threads,
            "reuse_freed_memory": reused,
            "round_seconds": args.round_seconds,
            "method": "interleaved paired rounds after a warm-up; median of per-round throughput ratios",
        },
        "machine": {
            **machine(device),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pillow": PIL.__version__,
        },
        "reference": "tests/shifts/reference.py (per image, NumPy/SciPy/Pillow; OpenCV for spatter and frost)",
        "imagecorruptions": imagecorruptions_status(),
        "results": results,
        "speedup_median": statistics.median(speedups),
        "speedup_min": min(speedups),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"median speedup x{report['speedup_median']:.1f} (min x{report['speedup_min']:.1f}); wrote {args.out}"
    )
    return report


if __name__ == "__main__":
    main()
