"""What a claim test sees: the complete runs of one dataset, grouped by recorded facts, and their tables.

Groups come from what the record says about training, never from config names:

============  ============================================================================
generalise    true labels (q = 0), not adversarially trained
memorise      random labels (q = 1)
noisy         a fraction 0 < q < 1 of random labels
adversarial   true labels, trained on adversarial inputs (``train/adversarial`` = 1)
============  ============================================================================

``recipe`` (``train/recipe``) identifies the training recipe apart from the labels, so a dose-response in
q compares only runs trained the same way. Runs that did not reach their regime's goal
(``train/goal_reached`` = 0, e.g. a memorising run that never fit its labels) are left out of every
claim and listed in ``excluded``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robustdiag.records import schema


def group_of(labels: object, q: object, adversarial: object) -> str:
    """generalise | memorise | noisy | adversarial from the recorded label kind, q and adversarial flag."""
    try:
        frac = float(q)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        frac = float("nan")
    kind = str(labels)
    if kind == "random" or frac == 1.0:
        return "memorise"
    if kind == "noisy" or 0.0 < frac < 1.0:
        return "noisy"
    try:
        adv = float(adversarial)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        adv = 0.0
    return "adversarial" if adv == 1.0 else "generalise"


def run_groups(runs: pd.DataFrame) -> pd.Series:
    """:func:`group_of` of every run (row) of a records table."""
    column = runs.get
    return pd.Series(
        [
            group_of(lab, q, adv)
            for lab, q, adv in zip(
                column("labels", pd.Series("", index=runs.index)),
                column("q", pd.Series(np.nan, index=runs.index)),
                column(schema.ADVERSARIAL_KEY, pd.Series(np.nan, index=runs.index)),
            )
        ],
        index=runs.index,
        dtype=object,
    )


def run_models(runs: pd.DataFrame) -> pd.Series:
    """The architecture of every run ("model" when the records do not say)."""
    return runs["model"].astype(str) if "model" in runs.columns else pd.Series("model", index=runs.index)


def run_cells(runs: pd.DataFrame) -> pd.Series:
    """Architecture × regime cell ("<model>|<group>") of every run: the strata seeds are resampled in."""
    return run_models(runs) + "|" + run_groups(runs)


@dataclass
class ClaimData:
    """The runs of one dataset a claims family is tested on."""

    root: Path
    data: str
    runs: pd.DataFrame  # one row per included run: record columns + group, cell, pair
    excluded: list[str] = field(default_factory=list)  # "run_dir: reason"
    _per_sample: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _per_layer: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # tables that could not be read

    @classmethod
    def from_runs(cls, root: Path, data: str, complete: pd.DataFrame) -> ClaimData:
        runs = complete.copy()
        if "data" in runs.columns:
            runs = runs[runs["data"].astype(str) == data]
        runs["group"] = run_groups(runs)
        excluded = []
        if schema.GOAL_REACHED_KEY in runs.columns:
            missed = runs[schema.GOAL_REACHED_KEY].astype(float) == 0.0
            train_acc = runs.get(schema.CLEAN_TRAIN_ACC, pd.Series(np.nan, index=runs.index)).astype(float)
            excluded = [
                f"{d}: its regime did not reach its goal (train/goal_reached = 0, train accuracy {a:.3f})"
                for d, a in zip(runs.loc[missed, "run_dir"], train_acc[missed])
            ]
            runs = runs[~missed]
        runs = runs.reset_index(drop=True)
        runs["model"] = run_models(runs)
        runs["cell"] = runs["model"] + "|" + runs["group"]
        seed = runs["seed"] if "seed" in runs.columns else pd.Series(range(len(runs)))
        runs["pair"] = runs["model"] + "|s" + seed.astype(str)
        if "train/recipe" not in runs.columns:
            runs["train/recipe"] = runs.get("regime", pd.Series("unknown", index=runs.index)).astype(str)
        return cls(root=Path(root), data=data, runs=runs, excluded=excluded)

    def group(self, name: str) -> pd.DataFrame:
        return self.runs[self.runs["group"] == name]

    def has(self, key: str) -> bool:
        return key in self.runs.columns and bool(np.isfinite(self.runs[key].astype(float)).any())

    def per_sample(self, run_dir: str) -> pd.DataFrame | None:
        if run_dir not in self._per_sample:
            self._per_sample[run_dir] = self._read(run_dir, schema.PER_SAMPLE_FILE)
        return self._per_sample[run_dir]

    def per_layer(self, run_dir: str) -> pd.DataFrame | None:
        if run_dir not in self._per_layer:
            self._per_layer[run_dir] = self._read(run_dir, schema.PER_LAYER_FILE)
        return self._per_layer[run_dir]

    def _read(self, run_dir: str, name: str) -> pd.DataFrame | None:
        path = self.root / run_dir / name
        try:
            return pd.read_csv(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            self.problems.append(f"{run_dir}/{name}: unreadable ({type(err).__name__}: {err})")
            return None

    def declared(self, run: pd.Series, role_key: str) -> tuple[str, ...]:
        """The keys a run declares for a role (legacy defaults for version-1 records)."""
        return schema.declared({str(k): v for k, v in run.items()}, role_key)
