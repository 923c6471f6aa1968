"""One screen of benchmark figures: each ratio with its peer, its target and pass/fail, from the JSON files
the benchmarks wrote (``python benchmarks/summary.py results/benchmarks`` or a GPU check's folder).

Targets differ on CPU and GPU (``--gpu``); a figure whose JSON is missing is listed as "not run".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """A number from a benchmark's JSON, what it is compared with and what it must reach."""

    file: str
    label: str
    peer: str
    read: Callable[[dict[str, Any]], float | None]
    cpu_target: tuple[str, float] | None  # (">=" or "<=", value)
    gpu_target: tuple[str, float] | None


def _get(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    def read(data: dict[str, Any]) -> float | None:
        node: Any = data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None

    return read


def _memory_growth(data: dict[str, Any]) -> float | None:
    """Peak memory above baseline at the largest sample count over the smallest (flat = 1)."""
    rows = data.get("memory")
    if not isinstance(rows, list) or len(rows) < 2:
        return None
    rows = sorted(rows, key=lambda r: r.get("n", 0))
    low, high = rows[0].get("peak_above_baseline_mib"), rows[-1].get("peak_above_baseline_mib")
    return float(high) / float(low) if low and high else None


FIGURES = (
    Figure("bench_fisher.json", "Fisher exact: speed-up vs released per-image loop", "released code (K backward/image)",
           _get("fisher", "ratios", "exact_speedup_vs_per_sample"), None, (">=", 100.0)),
    Figure("bench_fisher.json", "Fisher exact: cost / K batched backward passes", "its own floor",
           _get("fisher", "ratios", "exact_cost_vs_floor"), ("<=", 1.5), ("<=", 1.5)),
    Figure("bench_paths.json", "path separation: time / plain forward (resnet18, 32 px)", "a forward pass",
           _get("speed", "ratio_path_over_forward"), ("<=", 2.0), ("<=", 1.5)),
    Figure("bench_paths.json", "path separation: peak memory at 10k / at 1k samples", "itself at 1k samples",
           lambda d: _memory_growth(d), ("<=", 1.25), ("<=", 1.25)),
    Figure("bench_attack.json", "PGD-20: time / 20 x (forward + input-backward)", "its own floor",
           _get("ratio_pgd_over_k_forward_backward"), ("<=", 1.2), ("<=", 1.2)),
    Figure("bench_attack.json", "PGD-20: torchattacks time / robustdiag time (early stop, as configured)",
           "torchattacks PGD", _get("torchattacks", "ratio_torchattacks_over_robustdiag_median"),
           (">=", 1.0), (">=", 1.0)),
    Figure("bench_attack.json", "PGD-20: torchattacks time / robustdiag time (every sample, every step)",
           "torchattacks PGD", _get("torchattacks", "ratio_torchattacks_over_robustdiag_every_step_median"),
           None, None),
    Figure("bench_shifts.json", "corruptions: median speed-up vs per-image reference", "per-image NumPy/PIL/OpenCV",
           _get("speedup_median"), (">=", 10.0), (">=", 10.0)),
    Figure("bench_shifts.json", "corruptions: slowest speed-up vs per-image reference", "per-image NumPy/PIL/OpenCV",
           _get("speedup_min"), (">=", 1.0), (">=", 1.0)),
    Figure("bench_shifts_224.json", "corruptions at 224 px: median speed-up vs per-image reference",
           "per-image NumPy/PIL/OpenCV", _get("speedup_median"), None, None),
    Figure("bench_shifts_224.json", "corruptions at 224 px: slowest speed-up vs per-image reference",
           "per-image NumPy/PIL/OpenCV", _get("speedup_min"), (">=", 1.0), (">=", 1.0)),
    Figure("bench_train.json", "training: device loader / DataLoader images/s", "torch DataLoader + v2 transforms",
           _get("ratio_train"), (">=", 0.95), (">=", 1.0)),
    Figure("bench_train.json", "training: robustdiag fit / minimal loop, epoch time", "a minimal hand-written loop",
           _get("loop", "ratio_fit_over_minimal_time_median"), ("<=", 1.05), ("<=", 1.05)),
)  # fmt: skip


def evaluate(folder: Path, gpu: bool) -> list[tuple[Figure, float | None, tuple[str, float] | None, str]]:
    rows = []
    for figure in FIGURES:
        path = folder / figure.file
        target = figure.gpu_target if gpu else figure.cpu_target
        if not path.is_file():
            rows.append((figure, None, target, "not run"))
            continue
        value = figure.read(json.loads(path.read_text()))
        if value is None:
            rows.append((figure, None, target, "not measured"))
            continue
        if target is None:
            rows.append((figure, value, target, "-"))  # reported for context, no target
            continue
        ok = value >= target[1] if target[0] == ">=" else value <= target[1]
        rows.append((figure, value, target, "pass" if ok else "FAIL"))
    return rows


def machine_of(folder: Path, file: str) -> str:
    """Where a figure was measured, from its JSON (hardware, threads, commit)."""
    path = folder / file
    if not path.is_file():
        return "-"
    data = json.loads(path.read_text())
    info = data.get("machine") or data.get("fisher", {}).get("machine") or {}
    if not isinstance(info, dict) or not info:
        return "-"
    threads = info.get("torch_threads")
    commit = str(info.get("commit", ""))[:7]
    parts = [str(info.get("run/hardware", "?")), f"{threads} threads" if threads else "", commit]
    return ", ".join(p for p in parts if p)


def markdown(folder: Path, gpu: bool = False) -> str:
    """The README's benchmark table: every figure from the JSON in ``folder``, with its peer and target."""
    lines = ["| figure | measured | peer | target | result | machine, commit |", "|---|---|---|---|---|---|"]
    for figure, value, target, verdict in evaluate(folder, gpu):
        shown = f"{value:.3g}" if value is not None else "-"
        goal = f"{target[0]} {target[1]:g}" if target else "-"
        lines.append(
            f"| {figure.label} | {shown} | {figure.peer} | {goal} | {verdict} | {machine_of(folder, figure.file)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder with bench_*.json")
    parser.add_argument("--gpu", action="store_true", help="use the GPU targets")
    parser.add_argument("--markdown", action="store_true", help="print the README table instead")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(args.folder, args.gpu))
        return 0
    rows = evaluate(args.folder, args.gpu)
    width = max(len(f.label) for f, *_ in rows)
    print(f"{'figure':{width}s}  {'value':>9s}  target     result   peer")
    for figure, value, target, verdict in rows:
        shown = f"{value:9.3g}" if value is not None else f"{'-':>9s}"
        goal = f"{target[0]} {target[1]:g}" if target else "-"
        print(f"{figure.label:{width}s}  {shown}  {goal:9s}  {verdict:7s}  {figure.peer}")
    return 1 if any(v == "FAIL" for *_, v in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
