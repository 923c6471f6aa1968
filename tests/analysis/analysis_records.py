"""Hand-made run records with planted relations, in the run-record layout of docs/architecture.md."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

SHIFT = "gaussian_noise"
SEVERITIES = (1, 2, 3)
ATTACK = "pgd_linf"
MODELS = ("resnet18", "vit_tiny")
REGIMES = ("generalise", "memorise")
SEEDS = (0, 1, 2)
N_SAMPLES = 60
LAYERS = ("stem", "layer1", "layer2", "head")
# what the planted records declare as diagnostics (record version 2): everything the analysis may use
DECLARED_DIAGNOSTICS = ",".join(
    (
        "metric/fisher/mean",
        "metric/fisher/median",
        "metric/probe/value",
        "metric/constant/value",
        "metric/path_separation/excess",
        "metric/activation_separation/excess",
        "metric/spectral_bound/log10_bound",
    )
)


@dataclass
class PlantedRun:
    """One grid point of the synthetic sweep and the values planted in it."""

    model: str
    regime: str
    seed: int
    index: int
    record: dict[str, object] = field(default_factory=dict)


def write_job(
    job_dir: Path,
    record: dict[str, object] | str | None,
    *,
    overrides: Iterable[str] = (),
    per_sample: pd.DataFrame | None = None,
    per_layer: pd.DataFrame | None = None,
) -> Path:
    """A Hydra job dir: .hydra/{config,overrides}.yaml and, when given, the record and its tables.

    ``record`` may be a string to write verbatim (corrupt JSON) or None (no metrics.json).
    """
    hydra = job_dir / ".hydra"
    hydra.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides)
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (hydra / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "model": {"name": "x"}}))
    if isinstance(record, str):
        (job_dir / "metrics.json").write_text(record)
    elif record is not None:
        (job_dir / "metrics.json").write_text(json.dumps(record, indent=1))
    if per_sample is not None:
        per_sample.to_csv(job_dir / "per_sample.csv", index=False)
    if per_layer is not None:
        per_layer.to_csv(job_dir / "per_layer.csv", index=False)
    return job_dir


def base_record(model: str, regime: str, seed: int, *, commit: str = "abc1234") -> dict[str, object]:
    """The identity and provenance part of a complete record."""
    return {
        "status": "complete",
        "error": None,
        "record_version": 2,
        "model": model,
        "data": "synthetic",
        "regime": regime,
        "labels": "random" if regime == "memorise" else "true",
        "q": 1.0 if regime == "memorise" else 0.0,
        "seed": seed,
        "train/hash": f"{model}-{regime}-{seed}",
        "run/commit": commit,
        "run/dirty": False,
        "run/version": "0.1.0",
        "run/hardware": "test machine, 2 cores",
        "run/device": "cpu",
        "run/started": "2026-01-01T00:00:00",
        "run/finished": "2026-01-01T00:01:00",
    }


def planted_runs(seed: int = 0) -> list[PlantedRun]:
    """12 runs (2 models x 2 regimes x 3 seeds) with known relations:

    * attack acc = 0.9 - 0.08 * fisher_mean exactly (no noise): Spearman = Kendall = -1, Pearson = -1;
    * metric/probe/value is independent noise;
    * path_separation/excess: generalise ~0.30, memorise ~0.10 (perfect AUROC);
      activation_separation/excess: same distribution in both regimes;
    * vit_tiny has larger fisher_mean than resnet18 in every regime (ranking: vit less robust);
    * separation decreases with shift severity, accuracy too.
    """
    rng = np.random.default_rng(seed)
    runs = []
    for index, (model, regime, s) in enumerate((m, r, s) for m in MODELS for r in REGIMES for s in SEEDS):
        fisher_mean = 1.0 + index * 0.37 + (3.0 if model == "vit_tiny" else 0.0) + rng.uniform(0, 0.05)
        adv = 0.9 - 0.08 * fisher_mean
        clean = 0.95 - 0.01 * index
        path = (0.30 if regime == "generalise" else 0.10) + rng.normal(0, 0.02)
        act = 0.2 + rng.normal(0, 0.02)
        record = base_record(model, regime, s)
        record |= {
            "clean/train_acc": 1.0,
            "clean/test_acc": clean,
            "eval/n": N_SAMPLES,
            "eval/clean_acc": clean,
            f"attack/{ATTACK}/acc": adv,
            "metric/fisher/mean": fisher_mean,
            "metric/fisher/median": fisher_mean * 0.8 + rng.normal(0, 0.01),
            "metric/probe/value": float(rng.normal()),
            "metric/constant/value": 1.0,
            "metric/path_separation/excess": path,
            "metric/activation_separation/excess": act,
            "metric/spectral_bound/log10_bound": 2.0
            + (1.0 if model == "vit_tiny" else 0.0)
            + rng.normal(0, 0.05),
            "record/diagnostics": DECLARED_DIAGNOSTICS,
            "record/per_sample_diagnostics": "metric/fisher/lambda",
        }
        shifted = []
        for sev in SEVERITIES:
            acc = clean - 0.1 * sev - 0.02 * index * sev / 3
            record[f"shift/{SHIFT}/{sev}/acc"] = acc
            record[f"metric/path_separation/{SHIFT}/{sev}/excess"] = path - 0.03 * sev
            record[f"metric/activation_separation/{SHIFT}/{sev}/excess"] = (
                act - 0.01 * sev + rng.normal(0, 0.002)
            )
            shifted.append(acc)
        record["shift/mean_corruption_acc"] = float(np.mean(shifted))
        runs.append(PlantedRun(model, regime, s, index, record))
    return runs


def per_sample_table(run: PlantedRun, rng: np.random.Generator) -> pd.DataFrame:
    """Samples with lambda higher for fooled samples (some overlap), and a few clean errors."""
    n = N_SAMPLES
    correct = (np.arange(n) % 10 != 0).astype(int)  # 10% clean errors
    fooled = rng.random(n) < 0.4
    lam = np.exp(rng.normal(0.0, 0.5, n) + 1.2 * fooled + run.index * 0.1)
    robust = (~fooled & (correct == 1)).astype(int)
    lam[-3:] = np.nan  # Fisher computed on the first n - 3 samples only
    y = np.arange(n) % 5
    return pd.DataFrame(
        {
            "index": np.arange(n) * 7,
            "y": y,
            "pred": np.where(correct == 1, y, (y + 1) % 5),
            "correct": correct,
            f"shift/{SHIFT}/1/correct": correct,
            f"attack/{ATTACK}/robust": robust,
            "metric/fisher/lambda": lam,
        }
    )


def per_layer_table(run: PlantedRun, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for metric, level in (
        ("path_separation", 0.3 if run.regime == "generalise" else 0.1),
        ("activation_separation", 0.2),
    ):
        for condition in ("clean", f"{SHIFT}/1"):
            for depth, layer in enumerate(LAYERS):
                raw = level + 0.05 * depth + rng.normal(0, 0.01) - (0.05 if condition != "clean" else 0.0)
                rows.append(
                    {
                        "metric": metric,
                        "condition": condition,
                        "layer": layer,
                        "type": "conv" if depth < 3 else "linear",
                        "edges": 64 * (depth + 1),
                        "raw": raw + 0.02,
                        "null_mean": 0.02,
                        "null_std": 0.005,
                        "excess": raw,
                        "z": raw / 0.005,
                    }
                )
    return pd.DataFrame(rows)


def build_sweep(root: Path, *, tables: bool = True, multirun: bool = True, seed: int = 0) -> list[PlantedRun]:
    """Write the planted sweep under ``root`` as a Hydra multirun directory; returns the planted runs."""
    rng = np.random.default_rng(seed + 100)
    runs = planted_runs(seed)
    for job, run in enumerate(runs):
        write_job(
            root / str(job),
            run.record,
            overrides=[f"model={run.model}", f"train={run.regime}", f"seed={run.seed}"],
            per_sample=per_sample_table(run, rng) if tables else None,
            per_layer=per_layer_table(run, rng) if tables else None,
        )
    if multirun:
        task = [
            f"model={','.join(MODELS)}",
            f"train={','.join(REGIMES)}",
            f"seed={','.join(map(str, SEEDS))}",
        ]
        (root / "multirun.yaml").write_text(
            yaml.safe_dump({"hydra": {"overrides": {"task": task}}, "seed": 0})
        )
    return runs
