"""The robustdiag-analyze command: help, exit codes, console table, warnings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from analysis_records import base_record, write_job

from robustdiag.analyze import main


def test_help_lists_the_outputs_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "sweep_dir",
        "--out",
        "--bootstrap",
        "--seed",
        "--wandb, --no-wandb",
        "correlations.csv",
        "report.md",
        "exit status",
    ):
        assert text in out


def test_help_does_not_import_the_heavy_stack() -> None:
    code = "import sys, robustdiag.analyze as a; a.build_parser(); print('scipy' in sys.modules, 'matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "False"]


def test_analysis_prints_table_and_paths_and_warns_about_mixed_commits(
    make_sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    root, runs = make_sweep(tables=False)
    write_job(root / "12", runs[0].record | {"seed": 5, "run/commit": "ffff999"}, overrides=["seed=5"])
    out_dir = root.parent / "results"

    code = main([str(root), "--out", str(out_dir), "--bootstrap", "50", "--seed", "3", "--no-wandb"])

    captured = capsys.readouterr()
    assert code == 0
    assert "13 complete runs" in captured.out
    assert (
        "WARNING: records from 2 different commits" in captured.out and "ffff999: 1 run (12)" in captured.out
    )
    assert "fisher/mean" in captured.out and "-1.00 [-1.00, -1.00] n=13" in captured.out
    assert f"report:  {out_dir / 'report.md'}" in captured.out
    report = (out_dir / "report.md").read_text()
    assert "## Warnings" in report and "ffff999" in report
    assert "--bootstrap 50 --seed 3 --no-wandb" in report  # the command is in the provenance
    assert not (out_dir / "wandb").exists()


def test_empty_directory_exits_nonzero_with_an_explanation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert "nothing to analyse" in err and "metrics.json" in err and ".hydra" in err
    assert main([str(tmp_path / "missing"), "--no-wandb"]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_only_failed_runs_exit_nonzero_and_name_the_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_job(
        tmp_path / "0", base_record("m", "generalise", 0) | {"status": "failed", "error": "out of memory"}
    )
    write_job(tmp_path / "1", None)
    assert main([str(tmp_path), "--no-wandb"]) == 1
    err = capsys.readouterr().err
    assert "1 failed" in err and "out of memory" in err and "1 missing" in err


def test_negative_bootstrap_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--bootstrap", "-5"]) == 2
    assert "--bootstrap must be >= 0" in capsys.readouterr().err
