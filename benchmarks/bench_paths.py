"""Speed and memory of path separation (DESIGN 4.3; issue 5).

Speed: images/s of ``path_separation`` (default event effective_path, every conv/linear layer,
5 permutations, JS) on resnet18 (``build_model``: 32 px, CIFAR stem, 10 classes) against a plain forward
pass over the same batches. Target: path separation takes at most 2x the forward time on CPU (1.5x on a
GPU). Per layer: the layer's own forward time (hooks around the module in a plain forward) next to the
time its events and counters take for the same batch, so the cost can be traced to a layer.

Memory: the peak for 1k and 10k evaluation samples, each measured in a fresh subprocess (CPU: peak RSS
minus the RSS after data and model are in place, the peak reset through /proc/self/clear_refs; GPU: ``torch.cuda.max_memory_allocated`` minus the
allocation before the metric). Counters are streamed, so the peak must not grow with the sample count.

    python benchmarks/bench_paths.py [--quick] [--device cpu|cuda] [--out benchmarks/out/bench_paths.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import machine, sync
from robustdiag.metrics import path_kernels
from robustdiag.metrics.path_accum import BatchLabels
from robustdiag.metrics.path_contrib import LayerProbe, output_ranges
from robustdiag.metrics.path_layers import discover_layers
from robustdiag.metrics.paths import (
    COUNTER_DTYPE,
    EventFamily,
    PathSeparation,
    _layer_state,
    _update_layer,
    label_permutations,
)
from robustdiag.models import build_model
from robustdiag.types import EvalContext, EvalSet

NUM_CLASSES = 10
IMG = 32
TARGET = {"cpu": 2.0, "cuda": 1.5}  # path separation time / forward time
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def make_model(device: torch.device) -> torch.nn.Module:
    """resnet18 with trained-looking BatchNorm statistics and scales.

    timm initialises each residual block's last BN scale to 0 (``zero_init_last``), which makes every
    contribution of half the 3x3 convs exactly 0 until training moves it: their rows are empty, so an
    untrained model understates the event cost. Seeded BN scales in [0.5, 1.5], shifts and running means
    ~ N(0, 0.1), running variances in [0.5, 1.5] give every layer a trained model's share of positive
    contributions.
    """
    model = build_model(
        "resnet18", num_classes=NUM_CLASSES, in_chans=3, img_size=IMG, mean=CIFAR_MEAN, std=CIFAR_STD
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                channels = module.num_features
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
    return model.to(device).eval()


def make_ctx(model: torch.nn.Module, n: int, batch_size: int, device: torch.device) -> EvalContext:
    """``n`` random images with balanced labels (content is irrelevant to speed and memory)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, IMG, IMG, generator=generator).to(device)
    y = (torch.arange(n) % NUM_CLASSES).to(device)
    data = EvalSet(x=x, y=y, index=torch.arange(n, device=device))
    return EvalContext(model=model, data=data, num_classes=NUM_CLASSES, batch_size=batch_size, seed=0)


def time_forward(ctx: EvalContext, repeats: int) -> list[float]:
    """Seconds for a plain forward pass over the same batches the metric uses."""
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            sync(ctx.device)
            start = time.perf_counter()
            for chunk in ctx.data.x.split(ctx.batch_size):
                ctx.model(chunk)
            sync(ctx.device)
            times.append(time.perf_counter() - start)
    return times


def time_metric(ctx: EvalContext, repeats: int) -> tuple[list[float], dict[str, float]]:
    """Seconds for ``path_separation`` (fresh cache each time, so every repeat does the full pass)."""
    metric = PathSeparation()
    times, scalars = [], {}
    for _ in range(repeats):
        ctx.cache.clear()
        sync(ctx.device)
        start = time.perf_counter()
        scalars = metric(ctx).scalars
        sync(ctx.device)
        times.append(time.perf_counter() - start)
    return times, scalars


def per_layer_costs(ctx: EvalContext, repeats: int, chunk_elements: int = 1 << 24) -> list[dict[str, object]]:
    """Milliseconds per batch of each layer: its forward, and its effective-path events + counters."""
    model, x = ctx.model, ctx.data.x[: ctx.batch_size]
    layers = discover_layers(model)
    forward_ms: dict[str, list[float]] = {layer.name: [] for layer in layers}
    started: dict[str, float] = {}

    def before(name: str):  # noqa: ANN202 - hook factory
        def hook(*_: object) -> None:
            sync(ctx.device)
            started[name] = time.perf_counter()

        return hook

    def after(name: str):  # noqa: ANN202 - hook factory
        def hook(*_: object) -> None:
            sync(ctx.device)
            forward_ms[name].append(1e3 * (time.perf_counter() - started[name]))

        return hook

    handles = [h for layer in layers for h in (layer.module.register_forward_pre_hook(before(layer.name)),
                                              layer.module.register_forward_hook(after(layer.name)))]  # fmt: skip
    with torch.no_grad():
        for _ in range(repeats + 1):
            model(x)
    for handle in handles:
        handle.remove()
    probe = LayerProbe(layers, torch.float32)
    with torch.no_grad(), probe.attached():
        _, sums = probe.run(model, x)
    labellings = label_permutations(ctx.data.y[: ctx.batch_size], 5, seed=0)
    labels = BatchLabels(labellings, NUM_CLASSES, COUNTER_DTYPE)
    family = EventFamily("effective_path", 0.5)
    rows = []
    for layer in layers:
        state = _layer_state(layer, {family}, set(), labellings.shape[0] * NUM_CLASSES, torch.float32,
                             output_ranges(layer, x.shape[0], chunk_elements))  # fmt: skip
        state.checked = True  # the one-off contribution check of the first batch is not per-batch cost
        times = []
        for _ in range(repeats + 1):  # the first call compiles/warms the kernels and lays out the weights
            sync(ctx.device)
            start = time.perf_counter()
            _update_layer(state, sums[layer.name], labels)
            sync(ctx.device)
            times.append(1e3 * (time.perf_counter() - start))
        forward = statistics.median(forward_ms[layer.name][1:])
        events = statistics.median(times[1:])
        rows.append({"layer": layer.name, "edges": layer.edges, "forward_ms": forward, "events_ms": events,
                     "events_over_forward": events / forward if forward > 0 else None})  # fmt: skip
    return rows


def speed(device: torch.device, n: int, batch_size: int, repeats: int) -> dict[str, object]:
    model = make_model(device)
    ctx = make_ctx(model, n, batch_size, device)
    warm = make_ctx(model, 2 * NUM_CLASSES, batch_size, device)
    time_forward(warm, 1)  # warm-up: allocator, kernels, fx trace of the layer discovery
    time_metric(warm, 1)
    forward = time_forward(ctx, repeats)
    path, scalars = time_metric(ctx, repeats)
    t_forward, t_path = statistics.median(forward), statistics.median(path)
    return {
        "n": n,
        "batch_size": batch_size,
        "repeats": repeats,
        "forward_s": forward,
        "path_s": path,
        "forward_images_per_s": n / t_forward,
        "path_images_per_s": n / t_path,
        "ratio_path_over_forward": t_path / t_forward,
        "target_ratio": TARGET[device.type],
        "meets_target": t_path / t_forward <= TARGET[device.type],
        "edges": scalars.get("edges"),
        "n_layers": scalars.get("n_layers"),
        "event_kernel": "numba (fused CPU kernel)"
        if device.type == "cpu" and path_kernels.available()
        else "torch",
        "per_layer_one_batch": per_layer_costs(ctx, repeats),
    }


def peak_memory_child(device: torch.device, n: int, batch_size: int) -> dict[str, float]:
    """Runs in a fresh process: the metric's peak memory above data + model."""
    model = make_model(device)
    ctx = make_ctx(model, n, batch_size, device)
    PathSeparation(samples_per_class=2, permutations=5)(make_ctx(model, 2 * NUM_CLASSES, batch_size, device))
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        PathSeparation()(ctx)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = reset_peak_rss()
        PathSeparation()(ctx)
        peak = peak_rss() - base
    return {"n": n, "peak_above_baseline_mib": peak / 2**20, "seconds": time.perf_counter() - start}


def _status_kib(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` value of /proc/self/status in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` 5) and return it in bytes.

    Falls back to the lifetime peak (``ru_maxrss``) where the kernel does not allow the reset.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def peak_rss() -> int:
    """Peak RSS in bytes since the last reset."""
    try:
        return _status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory(device: torch.device, n: int, batch_size: int) -> dict[str, float]:
    """``peak_memory_child`` in a subprocess, so earlier work does not hold the high-water mark."""
    command = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "--device",
        device.type,
        "--batch-size",
        str(batch_size),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ.copy()).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_paths.json"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("ROBUSTDIAG_PROGRESS", "0")
    device = torch.device(args.device)
    batch_size = args.batch_size or (512 if device.type == "cuda" else 128 if not args.quick else 50)
    if args.child is not None:
        print(json.dumps(peak_memory_child(device, args.child, batch_size)))
        return
    sizes = (100, 200) if args.quick else (1000, 10000)
    speed_n, repeats = (100, 1) if args.quick else (2000, 3)
    result = {
        "benchmark": "bench_paths",
        "command": " ".join([sys.executable, *sys.argv]),
        "quick": args.quick,
        "model": f"resnet18 (build_model, {IMG} px, CIFAR stem, {NUM_CLASSES} classes)",
        "metric": "path_separation(event=effective_path, separation=js, permutations=5, all layers)",
        "machine": machine(device),
        "speed": speed(device, speed_n, batch_size, repeats),
        "memory": [peak_memory(device, n, batch_size) for n in sizes],
    }
    mem = result["memory"]
    result["memory_growth_mib"] = mem[-1]["peak_above_baseline_mib"] - mem[0]["peak_above_baseline_mib"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
