"""Corruption accuracy by severity and family, and CE / mCE / relative mCE against a named baseline, checked
against hand computation; bad baselines refused; the pipeline writes the tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_records import SHIFT

from robustdiag.analysis import analyze_sweep
from robustdiag.analysis.corruption import Baseline, corruption_accuracy, corruption_errors, load_baseline

RUNS = pd.DataFrame(
    {
        "run_dir": ["a", "b"],
        "model": ["m1", "m2"],
        "regime": ["generalise", "generalise"],
        "seed": [0, 0],
        "eval/clean_acc": [0.9, 0.8],
        "shift/gaussian_noise/1/acc": [0.8, 0.6],
        "shift/gaussian_noise/2/acc": [0.7, 0.5],
        "shift/contrast/1/acc": [0.85, 0.7],
        "shift/contrast/2/acc": [0.75, 0.6],
        "shift/adversarial/1/acc": [0.1, 0.1],  # never a corruption
    }
)
BASELINE = Baseline(
    "hand",
    {("gaussian_noise", 1): 0.4, ("gaussian_noise", 2): 0.6, ("contrast", 1): 0.3, ("contrast", 2): 0.5},
    clean=0.2,
)


def test_accuracy_table_has_every_corruption_severity_and_family() -> None:
    table = corruption_accuracy(RUNS)
    assert len(table) == 8 and set(table["corruption"]) == {"gaussian_noise", "contrast"}
    assert set(zip(table["corruption"], table["family"])) == {
        ("gaussian_noise", "noise"),
        ("contrast", "digital"),
    }


def test_ce_and_relative_ce_by_hand() -> None:
    per_corruption, per_run = corruption_errors(corruption_accuracy(RUNS), RUNS, BASELINE)
    a = per_corruption[per_corruption["run_dir"] == "a"].set_index("corruption")
    # gaussian noise: errors 0.2, 0.3 over baseline 0.4, 0.6; relative: (0.1 + 0.2) / (0.2 + 0.4)
    assert a.loc["gaussian_noise", "ce"] == pytest.approx(0.5 / 1.0)
    assert a.loc["gaussian_noise", "relative_ce"] == pytest.approx(0.3 / 0.6)
    # contrast: errors 0.15, 0.25 over 0.3, 0.5; relative: (0.05 + 0.15) / (0.1 + 0.3)
    assert a.loc["contrast", "ce"] == pytest.approx(0.4 / 0.8)
    assert a.loc["contrast", "relative_ce"] == pytest.approx(0.2 / 0.4)
    row = per_run.set_index("run_dir").loc["a"]
    assert row["mce"] == pytest.approx(0.5) and row["relative_mce"] == pytest.approx(0.5)
    assert row["set"] == "2 corruptions" and row["severities"] == "1,2"
    b = per_run.set_index("run_dir").loc["b"]
    assert b["mce"] == pytest.approx(np.mean([0.9 / 1.0, 0.7 / 0.8]))


def test_baseline_from_csv_and_from_a_run_record(tmp_path: Path) -> None:
    csv = tmp_path / "baseline.csv"
    pd.DataFrame(
        {
            "corruption": ["clean", "gaussian_noise", "gaussian_noise"],
            "severity": [0, 1, 2],
            "error": [0.2, 0.4, 0.6],
        }
    ).to_csv(csv, index=False)
    baseline = load_baseline(csv)
    assert baseline.clean == pytest.approx(0.2) and baseline.errors[("gaussian_noise", 2)] == pytest.approx(
        0.6
    )
    job = tmp_path / "job"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"eval/clean_acc": 0.75, "shift/contrast/3/acc": 0.5}))
    from_record = load_baseline(job)
    assert from_record.clean == pytest.approx(0.25) and from_record.errors == {("contrast", 3): 0.5}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            {"corruption": ["fog"], "severity": [1], "error": [45.2]},
            "not a fraction in \\[0, 1\\]; give errors as fractions",
        ),
        ({"corruption": ["fog"], "severity": [1]}, "columns \\['error'\\] missing"),
        ({"corruption": ["fog", "fog"], "severity": [1, 1], "error": [0.2, 0.3]}, "rows repeat"),
    ],
)
def test_bad_baseline_csvs_are_refused(tmp_path: Path, rows: dict, message: str) -> None:
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match=message):
        load_baseline(tmp_path / "b.csv")


def test_pipeline_writes_corruption_tables_and_figures(make_sweep, tmp_path: Path) -> None:
    sweep, runs = make_sweep()
    baseline = tmp_path / "baseline.csv"
    pd.DataFrame(
        {"corruption": ["clean"] + [SHIFT] * 3, "severity": [0, 1, 2, 3], "error": [0.1, 0.3, 0.4, 0.5]}
    ).to_csv(baseline, index=False)
    result = analyze_sweep(sweep, n_bootstrap=50, claim_sets=[], ce_baseline=baseline)
    assert (result.out_dir / "corruption_accuracy.csv").is_file() and (result.out_dir / "mce.csv").is_file()
    assert len(result.mce) == len(runs) and result.mce["mce"].notna().all()
    assert (
        "corruption_severity" in result.figures
        and "## Corruption errors (mCE)" in result.report_path.read_text()
    )
