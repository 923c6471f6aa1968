"""Training throughput: the device-resident loader against a conventional per-image DataLoader, and
robustdiag's training loop against a minimal hand-written one.

Both sides train the same model (same initial weights) on the same data (synthetic, 32 px, 10 classes,
5000 images by default) with the same augmentation (random crop with 4 px reflect padding + horizontal
flip) and the same minimal SGD step (forward, cross-entropy, backward, step), so the difference is the
cost of getting augmented batches to the device:

* ``device_loader``: :class:`robustdiag.data.DeviceLoader`: uint8 data on the device, one gather per
  batch, crop and flip as batched tensor ops (``Augment``).
* ``dataloader``: ``torch.utils.data.DataLoader`` over a ``Dataset`` of uint8 tensors with
  torchvision ``transforms.v2`` applied per image in worker processes, pinned memory, then a copy to the
  device (the conventional path; it even skips PIL decoding, which favours it).

Each timed repeat is one epoch (``n // batch_size`` steps) of each side, alternating; the first epoch
of each side is an untimed warm-up. Reported: median images/s of training and of the loader alone
(iterating without a model), and the ratios device_loader / dataloader.

The loop comparison runs one epoch of ``robustdiag.train.fit`` (as a run does: its checkpoint written at
the end of the epoch, running loss/accuracy, the schedule) against a minimal hand-written loop over the
same model, the same on-device batches and augmentation, optimiser (SGD, Nesterov, weight decay) and
cosine schedule; each side builds its loader, optimiser and schedule inside the timed region. Paired
rounds, interleaved with alternating order after a warm-up round, threads pinned (``--threads``);
reported as the median of the per-round ratios fit / minimal with min and max (target <= 1.05).

    python benchmarks/bench_train.py                      # resnet18, 5000 images, batch 256
    python benchmarks/bench_train.py --quick              # smoke run
    python benchmarks/bench_train.py --model convnext_atto --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from common import machine, pick_device
from robustdiag.data import Augment, DeviceLoader, Synthetic
from robustdiag.models import build_model
from robustdiag.records.provenance import git_commit
from robustdiag.train import CheckpointStore, Regime, fit
from robustdiag.train.schedules import Cosine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="resnet18", help="any timm name (default: resnet18, small-input stem)"
    )
    parser.add_argument("--n", type=int, default=5000, help="training images")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed epochs per side; the median is reported"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--skip-loader", action="store_true", help="only the loop comparison")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 128 images of 16 px, batch 32, 2 repeats"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_train.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.image_size, args.batch_size, args.repeats = 128, 16, 32, 2
    return args


class PerImageDataset(Dataset):
    """uint8 (C, H, W) images transformed one at a time, as torchvision pipelines do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def conventional_loader(
    images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace, device: torch.device
) -> DataLoader:
    transform = v2.Compose(
        [
            v2.RandomCrop(args.image_size, padding=4, padding_mode="reflect"),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    return DataLoader(
        PerImageDataset(images, labels, transform),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )


def to_device(batches: Iterable, device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for x, y in batches:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, device: torch.device
) -> int:
    """One epoch of minimal SGD steps; returns the number of images seen."""
    seen = 0
    model.train()
    for x, y in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += int(y.shape[0])
    return seen


def drain(batches: Iterable) -> int:
    """Iterate the loader without a model (the loader's own cost)."""
    seen = 0
    last = None
    for x, y in batches:
        seen += int(y.shape[0])
        last = x
    if last is not None:
        float(last[0, 0, 0, 0])  # wait for the last batch to exist
    return seen


def images_per_second(fn: Callable[[], int], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    seen = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def minimal_epoch(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, args, device: torch.device
) -> int:
    """The hand-written loop: the same loader, augmentation, optimiser and schedule as the regime below."""
    loader = DeviceLoader(images, labels, args.batch_size, shuffle=True, drop_last=True, augment=Augment(),
                          device=device, seed=args.seed)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = Cosine(warmup=0.05)
    total = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step / total))
    model.train()
    seen = 0
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += int(y.shape[0])
    return seen


def fit_epoch(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, args, device: torch.device, root: Path
) -> int:
    """One epoch of robustdiag's loop with its checkpoint store, as a run trains."""
    regime = Regime(
        name="bench", epochs=1, batch_size=args.batch_size,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
        schedule=Cosine(warmup=0.05), augment=Augment(),
    )  # fmt: skip
    store = CheckpointStore(Path(tempfile.mkdtemp(dir=root)))  # fresh: fit would otherwise find it done
    result = fit(model, images, labels, regime, device=device, seed=args.seed, store=store)
    shutil.rmtree(store.root, ignore_errors=True)
    assert result.epochs_run == 1
    return (args.n // args.batch_size) * args.batch_size


def loop_comparison(
    base: nn.Module, images: torch.Tensor, labels: torch.Tensor, args, device: torch.device
) -> dict:
    ours, theirs = copy.deepcopy(base).to(device), copy.deepcopy(base).to(device)
    root = Path(tempfile.mkdtemp(prefix="bench_train_"))
    sides = {
        "fit": lambda: fit_epoch(ours, images, labels, args, device, root),
        "minimal": lambda: minimal_epoch(theirs, images, labels, args, device),
    }
    for fn in sides.values():  # warm-up round
        images_per_second(fn, device)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    ratios = []
    for r in range(args.repeats):
        order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
        for name, fn in order:
            rates[name].append(images_per_second(fn, device))
        ratios.append(rates["minimal"][-1] / rates["fit"][-1])  # time(fit) / time(minimal)
        print(f"round {r + 1}: fit / minimal time {ratios[-1]:.3f}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)
    return {
        "what": "one epoch of robustdiag.train.fit (checkpoint included) vs a minimal hand-written loop",
        "rounds": args.repeats,
        "images_per_s": rates,
        "ratio_fit_over_minimal_time_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target": "<= 1.05",
        "meets_target": statistics.median(ratios) <= 1.05,
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    bundle = Synthetic(
        num_classes=args.num_classes, n_train=args.n, n_test=args.num_classes, image_size=args.image_size
    ).load(Path("."))
    images, labels = bundle.train.images, bundle.train.labels
    base = build_model(
        args.model,
        num_classes=bundle.num_classes,
        in_chans=bundle.channels,
        img_size=bundle.image_size,
        mean=bundle.mean,
        std=bundle.std,
    )
    loop = loop_comparison(base, images, labels, args, device)
    if args.skip_loader:
        return {"benchmark": "bench_train", "config": vars(args) | {"out": str(args.out)}, "machine": machine(device),
                "loop": loop, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}  # fmt: skip
    fast = DeviceLoader(
        images,
        labels,
        args.batch_size,
        shuffle=True,
        drop_last=True,
        augment=Augment(),
        device=device,
        seed=args.seed,
    )
    slow = conventional_loader(images, labels, args, device)
    sides = {
        "device_loader": (copy.deepcopy(base).to(device), lambda: fast),
        "dataloader": (copy.deepcopy(base).to(device), lambda: to_device(slow, device)),
    }
    optimizers = {
        name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, (m, _) in sides.items()
    }
    train: dict[str, list[float]] = {name: [] for name in sides}
    loader_only: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
        for name, (model, batches) in sides.items():
            rate = images_per_second(
                lambda m=model, b=batches, n=name: train_epoch(m, optimizers[n], b(), device), device
            )
            drain_rate = images_per_second(lambda b=batches: drain(b()), device)
            if repeat > 0:
                train[name].append(rate)
                loader_only[name].append(drain_rate)
        print(
            f"{'warm-up' if repeat == 0 else f'repeat {repeat}'}: "
            + "  ".join(f"{n} {train[n][-1]:.0f} img/s" for n in sides if repeat > 0),
            file=sys.stderr,
        )
    median = {name: statistics.median(values) for name, values in train.items()}
    median_loader = {name: statistics.median(values) for name, values in loader_only.items()}
    commit, dirty = git_commit()
    return {
        "benchmark": "bench_train",
        "what": "training images/s: DeviceLoader (on-device batched crop+flip) vs DataLoader (per-image v2 transforms)",
        "config": {
            "model": args.model,
            "n": args.n,
            "image_size": args.image_size,
            "num_classes": args.num_classes,
            "batch_size": args.batch_size,
            "steps_per_epoch": args.n // args.batch_size,
            "workers": args.workers,
            "repeats": args.repeats,
            "amp_bf16": device.type == "cuda",
            "quick": args.quick,
        },
        "machine": machine(device),
        "train_images_per_s": {"median": median, "all": train},
        "loader_only_images_per_s": {"median": median_loader, "all": loader_only},
        "ratio_train": median["device_loader"] / median["dataloader"],
        "ratio_loader_only": median_loader["device_loader"] / median_loader["dataloader"],
        "loop": loop,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    loop = result["loop"]
    if "ratio_train" in result:
        print(
            f"train: device_loader / dataloader = {result['ratio_train']:.2f}x   loader only: {result['ratio_loader_only']:.2f}x"
        )
    print(
        f"loop: fit / minimal time = {loop['ratio_fit_over_minimal_time_median']:.3f} (min {loop['ratio_min']:.3f}, "
        f"max {loop['ratio_max']:.3f}, {loop['rounds']} paired rounds, {torch.get_num_threads()} threads) -> {args.out}"
    )


if __name__ == "__main__":
    main()
