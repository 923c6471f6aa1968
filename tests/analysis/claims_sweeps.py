"""Synthetic sweeps for the claims tests: the design (regime) drives robustness, and a diagnostic either
only encodes the design (the negative control) or truly tracks vulnerability (the planted positive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from robustdiag.analysis.claims import ClaimData

MODELS = ("net_a", "net_b")
GROUPS = {"generalise": (0.0, "true"), "memorise": (1.0, "random")}
SEEDS = tuple(range(5))
N = 200  # samples per run
SHIFTS = ("noise/1", "noise/3", "noise/5")


def sweep(root: Path, rng: np.random.Generator, *, planted: bool) -> ClaimData:
    """20 runs (2 models × {generalise, memorise} × 5 seeds) written under ``root``.

    ``metric/fake/value`` and the per-sample ``metric/fake/score`` are the regime label plus noise
    (planted=False), or (planted=True) track the run's robust accuracy within each cell and each
    sample's vulnerability. Robust accuracy is set by the regime: ~0.8 generalising, ~0.05 memorising.
    Baselines are noise around the regime label too.
    """
    rows = []
    for model in MODELS:
        for group, (q, labels) in GROUPS.items():
            for seed in SEEDS:
                run_dir = f"{model}-{group}-{seed}"
                is_mem = float(group == "memorise")
                wobble = rng.normal(0, 0.03)
                robust = (0.05 if is_mem else 0.8) + wobble
                fake = is_mem + (-5.0 * wobble if planted else rng.normal(0, 0.1))
                row = {
                    "run_dir": run_dir, "status": "complete", "model": model, "data": "synthetic",
                    "regime": group, "labels": labels, "q": q, "seed": seed, "train/adversarial": 0.0,
                    "train/goal_reached": 1.0, "train/recipe": "r", "eval/clean_acc": 0.95 - 0.85 * is_mem,
                    "attack/pgd_linf/acc": robust, "metric/fake/value": fake,
                    "metric/fake/excess": fake, "metric/baselines/msp_mean": is_mem + rng.normal(0, 0.1),
                    "record/diagnostics": "metric/fake/value",
                    "record/baselines": "metric/baselines/msp_mean",
                    "record/per_sample_diagnostics": "metric/fake/score",
                    "record/per_sample_baselines": "metric/baselines/msp",
                }  # fmt: skip
                for k, condition in enumerate(SHIFTS):
                    acc_drop = 0.1 * (k + 1) + rng.normal(0, 0.02)
                    row[f"shift/{condition}/acc"] = row["eval/clean_acc"] - acc_drop
                    drop = 0.5 * acc_drop if planted else rng.normal(0, 0.1)
                    row[f"metric/fake/{condition}/excess"] = fake - drop
                rows.append(row)
                write_per_sample(root / run_dir, rng, is_mem=is_mem, planted=planted)
    return ClaimData.from_runs(root, "synthetic", pd.DataFrame(rows))


def write_per_sample(directory: Path, rng: np.random.Generator, *, is_mem: float, planted: bool) -> None:
    correct = rng.random(N) < 0.9
    vulnerability = rng.random(N)
    fooled = correct & (vulnerability > 0.6)
    score = vulnerability + rng.normal(0, 0.05, N) if planted else is_mem + rng.normal(0, 0.1, N)
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "correct": correct.astype(int),
            "attack/pgd_linf/robust": (correct & ~fooled).astype(int),
            "shift/noise/3/correct": (correct & (vulnerability < 0.7)).astype(int),
            "metric/fake/score": score,
            "metric/baselines/msp": rng.random(N),
        }
    ).to_csv(directory / "per_sample.csv", index=False)
