"""Corruption throughput: batched torch shifts on the device vs per-image NumPy / SciPy / Pillow.

For each corruption, images/s of the batched torch implementation (``robustdiag.shifts``, one call per
batch, generator on the device; on CUDA also with the default CPU generator of ``apply_shift``) against
the same corruption done one image at a time by ``tests/shifts/reference.py`` (NumPy/SciPy/Pillow
re-implementations of Hendrycks & Dietterich's per-image code, drawing their own random numbers; spatter
and frost call OpenCV itself, as the benchmark does). The
``imagecorruptions`` package is the usual per-image reference, but it does not import with current
setuptools/scikit-image (``pkg_resources`` and ``multichannel`` are gone); the JSON records the reason.
Both sides are warmed up, timed alternately in one process, and reported as medians of the repeats.

    python benchmarks/bench_shifts.py                      # 32 px (CIFAR tables), batch 512, all corruptions
    python benchmarks/bench_shifts.py --quick              # smoke run (seconds)
    python benchmarks/bench_shifts.py --image-size 224 --batch-size 128 --device cuda   # ImageNet-C tables
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL
import scipy
import torch
import torch.nn.functional as F

from common import REPO, machine, pick_device, sync
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
    parser.add_argument("--reference-images", type=int, default=64, help="images per reference repeat")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--corruptions", default="all", help="comma-separated names (default: all)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: batch 16, 4 reference images, 1 repeat"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_shifts.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.reference_images, args.repeats = 16, 4, 1
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


def median_seconds(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``run`` over ``repeats`` calls (after one warm-up call)."""
    run()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    """Throughputs of one corruption: torch (device RNG, and CPU RNG on CUDA) and the per-image reference."""
    device = x.device
    size = x.shape[-1]
    shift = make_shift(name, size)
    result: dict[str, float] = {}
    seconds = median_seconds(
        lambda: apply_shift(shift, x, args.severity, seed=0, batch_size=len(x), generator_device=None),
        args.repeats,
        device,
    )
    result["torch_images_per_s"] = len(x) / seconds
    if device.type == "cuda":
        cpu_rng = median_seconds(
            lambda: apply_shift(shift, x, args.severity, seed=0, batch_size=len(x)), args.repeats, device
        )
        result["torch_cpu_rng_images_per_s"] = len(x) / cpu_rng
    param = shift.resolved_param(args.severity, size, size)
    reference = frost_reference(shift, size) if name == "frost" else REFERENCES[name]
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    per_image = median_seconds(
        lambda: [reference(image, param, rng) for image in references], args.repeats, cpu
    )
    result["reference_images_per_s"] = len(references) / per_image
    result["speedup"] = result["torch_images_per_s"] / result["reference_images_per_s"]
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    device = pick_device(args.device)
    names = sorted(CORRUPTIONS) if args.corruptions == "all" else args.corruptions.split(",")
    unknown = sorted(set(names) - set(CORRUPTIONS))
    if unknown:
        raise SystemExit(f"unknown corruptions {unknown}; valid: {sorted(CORRUPTIONS)}")
    x = test_images(args.batch_size, args.image_size).to(device)
    references = (
        test_images(args.reference_images, args.image_size, seed=1).permute(0, 2, 3, 1).double().numpy()
    )
    results = {}
    for name in names:
        results[name] = bench_one(name, x, references, args)
        print(
            f"{name:18s} torch {results[name]['torch_images_per_s']:12.0f} img/s   "
            f"reference {results[name]['reference_images_per_s']:9.0f} img/s   "
            f"x{results[name]['speedup']:.1f}",
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
