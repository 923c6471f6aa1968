"""Corruption accuracy by severity and family, and the benchmark's corruption errors (CE, mCE, relative mCE).

Definitions (Hendrycks & Dietterich 2019, ImageNet-C), with errors E = 1 - accuracy as fractions, on the
evaluation samples (``eval/clean_acc`` is the clean accuracy on the same samples the shifts use):

* ``CE_c = sum_s E_{s,c} / sum_s E^base_{s,c}``: the model's error on corruption c summed over severities,
  normalised by a baseline model's (AlexNet in the paper; any model the user names here);
* ``relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)``: the *degradation*
  relative to the baseline's;
* ``mCE`` and ``relative mCE``: their means over the corruptions, reported with the set they average
  (``standard15`` when all 15 standard corruptions are present) and the severities summed (those both the
  run and the baseline have).

The baseline is a run record (a job directory with ``metrics.json``) or a CSV of published errors with
columns ``corruption, severity, error`` (a row ``clean, 0, <error>`` gives the clean error, needed for the
relative mCE). Errors are fractions in [0, 1]; percentages are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from robustdiag.records import schema
from robustdiag.shifts.suites import EXTRA_4, STANDARD_15, family

CLEAN = "clean"


def corruption_accuracy(complete: pd.DataFrame) -> pd.DataFrame:
    """One row per run x corruption x severity of the computed/published corruptions (natural shifts and
    the adversarial shift excluded): run_dir, model, regime, seed, corruption, family, severity, acc."""
    rows = []
    identity = [c for c in ("run_dir", "model", "regime", "seed") if c in complete.columns]
    for column in complete.columns:
        parsed = schema.parse_shift_acc_key(column)
        if parsed is None or parsed[0] == "adversarial" or not parsed[1].isdigit():
            continue
        name, severity = parsed
        info = schema.shift_kind_key(name)
        natural = info in complete.columns and complete[info].astype(str).eq(schema.NATURAL_SHIFT_KIND).any()
        if natural:
            continue
        part = complete[identity].copy()
        part["corruption"], part["family"], part["severity"] = name, family(name), int(severity)
        part["acc"] = pd.to_numeric(complete[column], errors="coerce")
        rows.append(part)
    if not rows:
        return pd.DataFrame()
    return pd.concat(rows, ignore_index=True).dropna(subset=["acc"])


@dataclass(frozen=True)
class Baseline:
    """A baseline model's errors: ``errors[(corruption, severity)]`` and its clean error (None if unknown)."""

    source: str
    errors: dict[tuple[str, int], float]
    clean: float | None


def load_baseline(path: str | Path) -> Baseline:
    """Errors from a run record (its job directory or metrics.json) or a CSV corruption,severity,error."""
    path = Path(path).expanduser()
    record_file = path / schema.METRICS_FILE if path.is_dir() else path
    if record_file.suffix == ".json" or path.is_dir():
        if not record_file.is_file():
            raise ValueError(
                f"--ce-baseline {path}: no {schema.METRICS_FILE} there (give a job directory or a CSV)"
            )
        record = json.loads(record_file.read_text())
        errors = {}
        for key, value in record.items():
            parsed = schema.parse_shift_acc_key(key)
            if parsed and parsed[1].isdigit() and isinstance(value, int | float):
                errors[(parsed[0], int(parsed[1]))] = 1.0 - float(value)
        clean = record.get(schema.EVAL_CLEAN_ACC)
        if not errors:
            raise ValueError(
                f"--ce-baseline {path}: the record has no shift/<corruption>/<severity>/acc keys"
            )
        return Baseline(str(path), errors, None if clean is None else 1.0 - float(clean))
    if not path.is_file():
        raise ValueError(f"--ce-baseline {path}: no such file or directory")
    table = pd.read_csv(path)
    missing = {"corruption", "severity", "error"} - set(table.columns)
    if missing:
        raise ValueError(
            f"--ce-baseline {path}: columns {sorted(missing)} missing; a baseline CSV has corruption,severity,error "
            "(errors as fractions; a row clean,0,<error> for the clean error)"
        )
    err = pd.to_numeric(table["error"], errors="coerce")
    bad = table[err.isna() | (err < 0) | (err > 1)]
    if not bad.empty:
        example = bad.iloc[0]
        raise ValueError(
            f"--ce-baseline {path}: error {example['error']!r} ({example['corruption']}, severity {example['severity']}) "
            "is not a fraction in [0, 1]; give errors as fractions (divide percentages by 100)"
        )
    keys = list(zip(table["corruption"].astype(str), pd.to_numeric(table["severity"], errors="coerce")))
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise ValueError(
            f"--ce-baseline {path}: rows repeat {duplicated[:3]}; give each (corruption, severity) once"
        )
    errors = {(c, int(s)): float(e) for (c, s), e in zip(keys, err) if c != CLEAN}
    clean_rows = [float(e) for (c, _), e in zip(keys, err) if c == CLEAN]
    return Baseline(str(path), errors, clean_rows[0] if clean_rows else None)


def corruption_errors(
    accuracy: pd.DataFrame, complete: pd.DataFrame, baseline: Baseline
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per run x corruption: error, CE, relative CE; per run: mCE, relative mCE with the set they average)."""
    if accuracy.empty:
        return pd.DataFrame(), pd.DataFrame()
    clean = (
        1.0 - pd.to_numeric(complete.set_index("run_dir")[schema.EVAL_CLEAN_ACC], errors="coerce")
        if schema.EVAL_CLEAN_ACC in complete.columns
        else pd.Series(dtype=float)
    )
    per_corruption, per_run = [], []
    for run_dir, run in accuracy.groupby("run_dir", sort=False):
        rows = []
        for key, group in run.groupby("corruption", sort=False):
            corruption = str(key)
            severities = [int(s) for s in group["severity"] if (corruption, int(s)) in baseline.errors]
            if not severities:
                continue
            ours = 1.0 - group.set_index("severity").loc[severities, "acc"].astype(float)
            theirs = np.array([baseline.errors[(corruption, s)] for s in severities])
            e_clean = float(clean.get(run_dir, np.nan))
            relative_den = (theirs - baseline.clean).sum() if baseline.clean is not None else np.nan
            rows.append(
                {
                    "run_dir": run_dir, "corruption": corruption, "family": family(corruption),
                    "severities": ",".join(map(str, severities)), "error": float(ours.mean()),
                    "baseline_error": float(theirs.mean()),
                    "ce": float(ours.sum() / theirs.sum()) if theirs.sum() > 0 else np.nan,
                    "relative_ce": float((ours - e_clean).sum() / relative_den) if relative_den and relative_den > 0 else np.nan,
                }
            )  # fmt: skip
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        per_corruption.append(frame)
        names = set(frame["corruption"])
        label = "standard15" if names == set(STANDARD_15) else "extra4" if names == set(EXTRA_4) else None
        if label is None and set(STANDARD_15) <= names:
            frame, label = frame[frame["corruption"].isin(STANDARD_15)], "standard15"
        label = label or f"{len(names)} corruptions"
        identity = {c: run[c].iloc[0] for c in ("model", "regime", "seed") if c in run.columns}
        per_run.append(
            {
                "run_dir": run_dir, **identity, "set": label, "n_corruptions": len(frame),
                "severities": ",".join(sorted(set(",".join(frame["severities"]).split(",")))),
                "mce": float(frame["ce"].mean()), "relative_mce": float(frame["relative_ce"].mean()),
                "mean_error": float(frame["error"].mean()), "baseline": baseline.source,
            }
        )  # fmt: skip
    if not per_run:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(per_corruption, ignore_index=True), pd.DataFrame(per_run)
