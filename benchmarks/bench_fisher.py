"""Input-Fisher λ_max: speed, accuracy and memory of every estimator on one model, plus the bound ranking.

One run, same model / data / machine (issue 4, "Performance"). Methods, each on the same inputs:

* ``exact``        batched: K backward passes over the batch give G, then batched K×K ``eigvalsh``;
* ``floor``        the K batched backward passes alone (the floor for an exact answer; nothing stored);
* ``per_sample``   what the released code does: batch size 1, forward, K backward passes of log(softmax)_k
                   with ``retain_graph`` (``autograd.grad`` w.r.t. the input only — the reference's most
                   favourable reading), Q (d×K) materialised, then the K×K eigenproblem;
* ``dense``        ``torch.func.jacrev`` → dense F = Jᵀ(diag p − ppᵀ)J (d×d) → ``eigvalsh`` (the reference λ);
* ``lanczos``      matrix-free JVP/VJP Lanczos (tol 1e-6); ``power``, ``srp_maxrq`` on G;
* ``blackbox``     forward queries only, m = 100 directions (1 + 2m queries per image).

Reported: images/s (median over repeats, after a warm-up), relative error of λ versus ``dense`` on the
samples ``dense`` ran on, and peak memory (CUDA: max allocated; CPU: the largest resident-set growth over
the pre-method baseline, sampled every 2 ms, with glibc's mmap threshold fixed so freed memory leaves
the resident set). Targets: exact ≤ 1.5× floor; on CUDA also exact ≥ 100× per_sample. On a CPU the
speed-up over per_sample is reported without a target: both do the same K backward passes per image, so
it is whatever batching buys the backward pass on that CPU (1.8× with the CIFAR stem on 2 cores).
Section ``bound_ranking``: the spectral bound of randomly initialised vgg11_bn, resnet18, densenet121 and
a ViT at 32 px (width-reduced with ``--quick``), the ranking it implies, and the empirical λ beside it.

    python benchmarks/bench_fisher.py                 # resnet18 (CIFAR stem), 32 px, 10 classes
    python benchmarks/bench_fisher.py --quick         # smoke run
    python benchmarks/bench_fisher.py --small-input-stem false --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import timm
import torch
from timm.models.vgg import VGG
from torch import Tensor, nn

from common import machine, sync
from robustdiag.metrics.bounds import PowerSettings, empirical_lambda, spectral_bound
from robustdiag.metrics.fisher_linalg import (
    blackbox,
    class_gradients,
    dense_fisher,
    lambda_max_exact,
    lanczos,
    power_iteration,
    srp_maxrq,
)
from robustdiag.models import build_model
from robustdiag.records.provenance import git_commit

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
TARGET_VS_PER_SAMPLE_CUDA = 100.0  # on a GPU; on a CPU the speed-up is what batching buys the backward pass
TARGET_VS_FLOOR = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="any timm name (default: resnet18)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument(
        "--small-input-stem",
        choices=["auto", "true", "false"],
        default="auto",
        help="auto: the project's default (CIFAR stem at <= 64 px)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images for the batched methods")
    parser.add_argument(
        "--per-sample-images", type=int, default=8, help="images for the per-sample reference"
    )
    parser.add_argument("--dense-images", type=int, default=2, help="images for the dense jacrev reference")
    parser.add_argument("--blackbox-images", type=int, default=2)
    parser.add_argument("--directions", type=int, default=100, help="blackbox directions m")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bounds", action="store_true", help="skip the bound_ranking section")
    parser.add_argument("--bounds-only", action="store_true", help="only the bound_ranking section")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny batches, 1 repeat, small models"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_fisher.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.per_sample_images, args.dense_images, args.blackbox_images = 4, 2, 1, 1
        args.repeats = 1
    return args


# --- measurement helpers -----------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device, out: dict[str, float]) -> Iterator[None]:
    """Peak memory growth (MiB) during the block: CUDA max allocated, else sampled RSS over the baseline."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield
        out["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        out["peak_mib"] = (max(peak[0], _rss_bytes()) - base) / 2**20


def measure(
    fn: Callable[[], Tensor], n_images: int, repeats: int, device: torch.device
) -> tuple[Tensor, dict[str, float]]:
    """Warm-up (memory measured there), then ``repeats`` timed runs: (λ of the last run, stats)."""
    stats: dict[str, float] = {"images": n_images}
    with peak_memory(device, stats):
        lam = fn()
        sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        lam = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    stats.update(seconds=median, images_per_s=n_images / median, seconds_per_image=median / n_images)
    return lam.detach().double().cpu(), stats


# --- the methods -------------------------------------------------------------------------------------------


def exact(model: nn.Module, x: Tensor) -> Tensor:
    log_p, G = class_gradients(model, x)
    return lambda_max_exact(log_p.exp(), G)


def floor(model: nn.Module, x: Tensor) -> Tensor:
    """K batched backward passes (after one forward), gradients discarded: the cost floor of ``exact``."""
    x = x.detach().requires_grad_(True)
    log_p = torch.log_softmax(model(x), -1)
    K = log_p.shape[1]
    for k in range(K):
        torch.autograd.grad(log_p[:, k].sum(), x, retain_graph=k < K - 1)
    return torch.zeros(x.shape[0])


def per_sample_reference(model: nn.Module, x: Tensor) -> Tensor:
    """The released code's white-box path, one image at a time (a Python loop on purpose)."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].detach().requires_grad_(True)
        probs = torch.softmax(model(xi), -1)  # the code takes log(softmax), not log_softmax
        cols = []
        for k in range(probs.shape[1]):
            (g,) = torch.autograd.grad(torch.log(probs[0, k]), xi, retain_graph=True)
            cols.append(g.reshape(-1))
        Q = torch.stack(cols, 1)  # (d, K)
        s = probs[0].detach().sqrt()
        B = s[:, None] * (Q.T @ Q) * s[None, :]  # Λ^½ QᵀQ Λ^½ (K, K)
        out.append(torch.linalg.eigvalsh(B)[-1])
    return torch.stack(out)


def dense(model: nn.Module, x: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(dense_fisher(model, x))[:, -1]


def rel_errors(lam: Tensor, reference: Tensor) -> dict[str, float]:
    n = min(len(lam), len(reference))
    err = ((lam[:n] - reference[:n]).abs() / reference[:n].abs()).double()
    return {"rel_err_max": float(err.max()), "rel_err_mean": float(err.mean()), "rel_err_n": n}


def fisher_section(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    stem = {"auto": None, "true": True, "false": False}[args.small_input_stem]
    torch.manual_seed(args.seed)
    model = (
        build_model(
            args.model,
            num_classes=args.num_classes,
            in_chans=3,
            img_size=args.image_size,
            mean=CIFAR_MEAN,
            std=CIFAR_STD,
            small_input_stem=stem,
        )
        .to(device)
        .eval()
    )
    g = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    def fisher_lanczos() -> Tensor:
        return lanczos(model, x, generator=gen, tol=1e-6).lam

    def fisher_power() -> Tensor:
        log_p, G = class_gradients(model, x)
        return power_iteration(log_p.exp(), G)[0]

    def fisher_srp() -> Tensor:
        log_p, G = class_gradients(model, x)
        return srp_maxrq(log_p.exp(), G, generator=gen)

    xb = x[: args.blackbox_images]

    def fisher_blackbox() -> Tensor:
        return blackbox(model, xb, generator=gen, n_directions=args.directions, query_batch=256).rayleigh_ritz

    methods: dict[str, tuple[Callable[[], Tensor], int]] = {
        "dense": (lambda: dense(model, x[: args.dense_images]), args.dense_images),
        "exact": (lambda: exact(model, x), args.batch_size),
        "floor": (lambda: floor(model, x), args.batch_size),
        "per_sample": (
            lambda: per_sample_reference(model, x[: args.per_sample_images]),
            args.per_sample_images,
        ),
        "lanczos": (fisher_lanczos, args.batch_size),
        "power": (fisher_power, args.batch_size),
        "srp_maxrq": (fisher_srp, args.batch_size),
        "blackbox": (fisher_blackbox, args.blackbox_images),
    }
    results: dict[str, dict[str, float]] = {}
    lams: dict[str, Tensor] = {}
    for name, (fn, n) in methods.items():
        print(f"[bench_fisher] {name} on {n} images ...", flush=True)
        lams[name], results[name] = measure(fn, n, args.repeats, device)
    for name in methods:
        if name not in ("dense", "floor"):
            results[name].update(rel_errors(lams[name], lams["dense"]))
    ratios = {
        "exact_speedup_vs_per_sample": results["per_sample"]["seconds_per_image"]
        / results["exact"]["seconds_per_image"],
        "exact_cost_vs_floor": results["exact"]["seconds_per_image"] / results["floor"]["seconds_per_image"],
        "exact_speedup_vs_dense": results["dense"]["seconds_per_image"]
        / results["exact"]["seconds_per_image"],
        "lanczos_cost_vs_exact": results["lanczos"]["seconds_per_image"]
        / results["exact"]["seconds_per_image"],
        "blackbox_cost_vs_exact": results["blackbox"]["seconds_per_image"]
        / results["exact"]["seconds_per_image"],
    }
    targets = {f"exact <= {TARGET_VS_FLOOR}x floor": ratios["exact_cost_vs_floor"] <= TARGET_VS_FLOOR}
    if device.type == "cuda":
        targets[f"exact >= {TARGET_VS_PER_SAMPLE_CUDA}x per_sample"] = (
            ratios["exact_speedup_vs_per_sample"] >= TARGET_VS_PER_SAMPLE_CUDA
        )
    config = {
        "model": args.model,
        "image_size": args.image_size,
        "num_classes": args.num_classes,
        "small_input_stem": args.small_input_stem,
        "batch_size": args.batch_size,
        "per_sample_images": args.per_sample_images,
        "dense_images": args.dense_images,
        "blackbox_images": args.blackbox_images,
        "directions": args.directions,
        "repeats": args.repeats,
        "input_dim": x[0].numel(),
        "dtype": str(x.dtype),
    }
    return {"config": config, "methods": results, "ratios": ratios, "targets_met": targets}


# --- bound ranking -----------------------------------------------------------------------------------------


def ranking_models(quick: bool) -> dict[str, Callable[[], nn.Module]]:
    """Randomly initialised families at 32 px; --quick shrinks their widths (same topology)."""
    if quick:
        return {
            "vgg11_bn": lambda: VGG(
                [8, "M", 16, "M", 32, 32, "M", 32, 32, "M", 32, 32, "M"],
                num_classes=10,
                norm_layer=nn.BatchNorm2d,
                mlp_ratio=1 / 128,
            ),
            "resnet18": lambda: timm.create_model(
                "resnet18", num_classes=10, channels=(8, 16, 32, 32), stem_width=8, zero_init_last=False
            ),
            "densenet121": lambda: timm.create_model("densenet121", num_classes=10, growth_rate=4),
            "vit": lambda: timm.create_model(
                "vit_tiny_patch16_224",
                num_classes=10,
                img_size=32,
                patch_size=8,
                depth=4,
                embed_dim=48,
                num_heads=3,
            ),
        }
    return {
        "vgg11_bn": lambda: timm.create_model("vgg11_bn", num_classes=10),
        "resnet18": lambda: timm.create_model("resnet18", num_classes=10, zero_init_last=False),
        "densenet121": lambda: timm.create_model("densenet121", num_classes=10),
        "vit_tiny_p4": lambda: timm.create_model(
            "vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4
        ),
    }


def bound_section(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    x = torch.rand(
        4 if not args.quick else 2, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed)
    ).to(device)
    settings = PowerSettings(
        max_iter=100 if args.quick else 200, tol=1e-4 if args.quick else 1e-6, seed=args.seed
    )
    rows = {}
    for name, build in ranking_models(args.quick).items():
        print(f"[bench_fisher] bound for {name} ...", flush=True)
        torch.manual_seed(args.seed)
        model = build().to(device).eval()
        start = time.perf_counter()
        result = spectral_bound(model, x, settings=settings, batch_size=len(x))
        seconds = time.perf_counter() - start
        lam = empirical_lambda(model, x, input_space="pixel", batch_size=len(x), seed=args.seed)
        rows[name] = {
            "log10_bound": result.log10_bound,
            "log10_lipschitz": result.log_lipschitz / 2.302585092994046,
            "local": result.local,
            "empirical_mean": float(lam.mean()),
            "log10_ratio": result.log10_bound - float(torch.log10(lam.mean())),
            "bounded": bool((lam <= result.bound).all()),
            "seconds": seconds,
            "params": sum(p.numel() for p in model.parameters()),
        }
    ranking = sorted(rows, key=lambda n: rows[n]["log10_bound"], reverse=True)
    return {
        "note": "randomly initialised, 32 px, 10 classes; largest bound first (= least robust by the bound)",
        "n_inputs": len(x),
        "models": rows,
        "ranking_largest_bound_first": ranking,
    }


def exec_with_honest_rss() -> None:
    """Re-run this script with a fixed glibc mmap threshold, so freed tensors leave the resident set.

    With glibc's default (dynamic) threshold, memory freed by one method stays resident and hides the
    next method's allocations from the RSS peak.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and os.name == "posix":
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    warnings.filterwarnings("ignore", category=FutureWarning)
    commit, dirty = git_commit()
    report: dict[str, object] = {
        "benchmark": "bench_fisher",
        "quick": args.quick,
        "machine": machine(device),
        "commit": commit,
        "dirty": dirty,
    }
    if not args.bounds_only:
        report["fisher"] = fisher_section(args, device)
    if not args.skip_bounds:
        report["bound_ranking"] = bound_section(args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        json.dumps({k: report[k] for k in report if k in ("fisher", "bound_ranking")}, indent=2, default=str)
    )
    print(f"[bench_fisher] wrote {args.out}")
    return report


if __name__ == "__main__":
    exec_with_honest_rss()
    main()
