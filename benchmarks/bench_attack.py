"""PGD overhead: PGD-k wall time over k × (one forward + one input-backward) on the same batch, and
side by side with torchattacks' PGD (what a user would otherwise run).

Each PGD step should cost one forward and one input-backward and nothing else; the ratio measures
everything else (projection, clipping, the worst-case bookkeeping, the one extra forward per restart
that scores the last iterate, Python). Target: ratio ≤ 1.2. Both sides run with the parameters
frozen, exactly as the attack takes its gradients, and are timed alternately in one process
(warm-up first, then the median of the repeats).

Against torchattacks both sides produce what an evaluation needs, adversarial examples *and* their
robust-accuracy predictions: torchattacks' ``PGD(...)(x, y)`` followed by one forward on its output, vs
robustdiag's ``PGD.attack_with_logits`` (its last forward scores the result), as the ``attack`` group runs it
(``early_stop``: a fooled sample takes no further steps) and with every sample taking every step (the same
work as torchattacks). The labels are the model's own clean predictions, so every sample starts correctly
classified, as the correct samples of a trained model do (with random labels 90% start fooled and early
stopping would have nothing to do); the JSON records the fraction of passes each side ran. Same model, batch, eps,
step size, steps and random start; interleaved paired rounds after a warm-up; threads pinned
(``--threads``); reported as the median of the per-round ratios (torchattacks / robustdiag, > 1 means
robustdiag is faster) with min and max. torchattacks is not a dependency (it pins an old ``requests``):
``pip install --no-deps torchattacks`` into the benchmark's environment; without it that part is skipped.

    python benchmarks/bench_attack.py                       # resnet18, 32 px, batch 128, PGD-20
    python benchmarks/bench_attack.py --quick               # smoke run (seconds)
    python benchmarks/bench_attack.py --model convnext_atto --batch-size 256 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from common import machine, pick_device
from robustdiag.attacks import FGSM, PGD
from robustdiag.attacks.gradients import frozen_parameters, loss_and_input_gradient
from robustdiag.models import build_model
from robustdiag.records.provenance import git_commit

TARGET_RATIO = 1.2
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18", help="any timm name (default: resnet18)")
    parser.add_argument("--image-size", type=int, default=32, help="pixels per side (default: 32, CIFAR)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="PGD steps k (default: 20)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--rounds", type=int, default=None, help="paired rounds vs torchattacks (default: repeats)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 3 steps, 2 repeats")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_attack.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats, args.warmup = 8, 3, 2, 1
    return args


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, synchronising the GPU before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def forward_input_backward_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
    """k forward + input-backward passes, the way PGD takes its gradients (parameters frozen)."""
    with frozen_parameters(model):
        for _ in range(k):
            loss_and_input_gradient(model, x, y)


def forwarded_fraction(model: nn.Module, attack: PGD, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """Samples that went through the model over batch x (steps + 1): 1 without early stopping."""
    seen = [0]
    handle = model.register_forward_hook(lambda _m, args, _o: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    try:
        attack.attack_with_logits(model, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
    finally:
        handle.remove()
    return seen[0] / (x.shape[0] * (attack.steps + 1) * attack.restarts)


def against_torchattacks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pgd: PGD,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, object]:
    """Paired rounds: torchattacks PGD + the accuracy forward vs robustdiag's PGD with its own scoring, as
    configured (``attack=pgd_linf``: early stop) and with every sample taking every step (the same work)."""
    try:
        import torchattacks
    except ImportError as err:
        return {"skipped": f"torchattacks not installed ({err}); pip install --no-deps torchattacks"}
    theirs = torchattacks.PGD(model, eps=pgd.eps, alpha=pgd.step_size, steps=pgd.steps, random_start=True)
    ours = {
        "robustdiag": PGD(
            norm="linf", eps=pgd.eps, step_size=pgd.step_size, steps=pgd.steps, early_stop=True
        ),
        "robustdiag_every_step": pgd,
    }
    generator = torch.Generator(device=device).manual_seed(args.seed)

    def torchattacks_side() -> float:
        adv = theirs(x, y)
        with torch.no_grad():
            return float((model(adv).argmax(1) == y).float().mean())

    def robustdiag_side(attack: PGD) -> Callable[[], float]:
        def side() -> float:
            _, logits = attack.attack_with_logits(model, x, y, generator=generator)
            return float((logits.argmax(1) == y).float().mean())

        return side

    sides = {"torchattacks": torchattacks_side, **{name: robustdiag_side(a) for name, a in ours.items()}}
    for _ in range(args.warmup):
        for fn in sides.values():
            timed(fn, device)
    rounds = args.rounds or args.repeats
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):  # interleaved, rotating which side goes first
        order = list(sides.items())
        order = order[r % len(order) :] + order[: r % len(order)]
        for name, fn in order:
            times[name].append(timed(fn, device))
    summary: dict[str, object] = {
        "torchattacks_version": getattr(torchattacks, "__version__", "?"),
        "rounds": rounds,
        "labels": "the model's clean predictions (every sample starts correctly classified)",
        "target": ">= 1 (robustdiag at least as fast)",
        "robust_acc_torchattacks": torchattacks_side(),
        "samples_s": times,
    }
    for name, attack in ours.items():
        ratios = [a / b for a, b in zip(times["torchattacks"], times[name])]
        suffix = "" if name == "robustdiag" else "_every_step"
        summary[f"ratio_torchattacks_over_robustdiag{suffix}_median"] = statistics.median(ratios)
        summary[f"ratio{suffix}_min"], summary[f"ratio{suffix}_max"] = min(ratios), max(ratios)
        summary[f"robust_acc_{name}"] = robustdiag_side(attack)()
        summary[f"forwarded_fraction_{name}"] = forwarded_fraction(model, attack, x, y, args.seed)
    summary["meets_target"] = summary["ratio_torchattacks_over_robustdiag_median"] >= 1.0  # type: ignore[operator]
    return summary


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(
        args.model,
        num_classes=args.num_classes,
        in_chans=3,
        img_size=args.image_size,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )
    model = model.to(device).eval()
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)  # (B, 3, H, W)
    with torch.no_grad():  # labels = the model's predictions: every sample starts correctly classified,
        y = model(x).argmax(1)  # (B,) as the correct samples of a trained model (random labels start fooled)
    pgd = PGD(
        norm="linf", eps=8 / 255, step_size=2 / 255, steps=args.steps
    )  # every step: the overhead figure
    fgsm = FGSM(eps=8 / 255)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    k = args.steps

    sides: dict[str, Callable[[], object]] = {
        "fb_k": lambda: forward_input_backward_steps(model, x, y, k),
        "pgd": lambda: pgd(model, x, y, generator=generator),
        "fb_1": lambda: forward_input_backward_steps(model, x, y, 1),
        "fgsm": lambda: fgsm(model, x, y),
    }
    for _ in range(args.warmup):
        for fn in sides.values():
            timed(fn, device)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):  # alternate the sides so drifts in machine load hit both
        for name, fn in sides.items():
            samples[name].append(timed(fn, device))
    median = {name: statistics.median(values) for name, values in samples.items()}
    ratio = median["pgd"] / median["fb_k"]
    peer = against_torchattacks(model, x, y, pgd, args, device)
    commit, dirty = git_commit()
    return {
        "benchmark": "attack",
        "command": " ".join(sys.argv),
        "commit": commit,
        "dirty": dirty,
        "quick": args.quick,
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": k,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "pgd_s_median": median["pgd"],
        "forward_input_backward_s_median": median["fb_k"] / k,
        "ratio_pgd_over_k_forward_backward": ratio,
        "ratio_fgsm_over_forward_backward": median["fgsm"] / median["fb_1"],
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "samples_s": samples,
        "torchattacks": peer,
        "machine": machine(device),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['model']} {result['image_size']}px batch {result['batch_size']}: PGD-{result['steps']} "
        f"{result['pgd_s_median']:.3f} s, forward+input-backward {result['forward_input_backward_s_median']:.4f} s, "
        f"ratio {result['ratio_pgd_over_k_forward_backward']:.3f} (target <= {TARGET_RATIO}); "
        f"FGSM ratio {result['ratio_fgsm_over_forward_backward']:.3f} -> {args.out}"
    )
    peer = result["torchattacks"]
    if "skipped" in peer:
        print(f"torchattacks: skipped ({peer['skipped']})")
    else:
        print(
            f"torchattacks/robustdiag time: median {peer['ratio_torchattacks_over_robustdiag_median']:.3f} "
            f"(min {peer['ratio_min']:.3f}, max {peer['ratio_max']:.3f}; early stop, "
            f"{peer['forwarded_fraction_robustdiag']:.2f} of the passes), every step "
            f"{peer['ratio_torchattacks_over_robustdiag_every_step_median']:.3f} "
            f"({peer['rounds']} paired rounds, {result['machine']['torch_threads']} threads); robust acc "
            f"{peer['robust_acc_torchattacks']:.3f} vs {peer['robust_acc_robustdiag']:.3f}"
        )


if __name__ == "__main__":
    main()
