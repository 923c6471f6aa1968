"""End to end through the real CLI (`robustdiag`), as a subprocess, on shrunk versions of the real config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def robustdiag(
    tmp_path: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "ROBUSTDIAG_CACHE": str(tmp_path / "cache"),
        "ROBUSTDIAG_PROGRESS": "0",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **(env or {}),
    }
    return subprocess.run(
        [str(BIN / "robustdiag"), *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("metrics.json"))]


def test_help_explains_groups_and_examples(tmp_path: Path) -> None:
    out = robustdiag(tmp_path, "--help")
    assert out.returncode == 0
    for word in ("model", "data", "train", "shift", "attack", "metric", "experiment=quickstart"):
        assert word in out.stdout


def test_quickstart_sweep_end_to_end(tmp_path: Path) -> None:
    """The embedded demonstration, shrunk (2 epochs, few samples), through the real multirun."""
    out = robustdiag(
        tmp_path,
        "-m",
        "experiment=quickstart",
        "train.epochs=2",
        "eval.n_samples=50",
        "shift.severities=[1]",
        "attack.pgd_linf.steps=2",
        "metric.fisher.n_samples=20",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "][quickstart#0][" in out.stdout + out.stderr  # every job's log lines say which job they are from
    runs = records(tmp_path / "sweep")
    assert len(runs) == 8
    assert {r["status"] for r in runs} == {"complete"}
    assert {(r["model"], r["regime"], r["seed"]) for r in runs} == {
        (m, t, s) for m in ("test_resnet", "test_byobnet") for t in ("generalise", "memorise") for s in (0, 1)
    }
    for r in runs:
        for key in ("clean/train_acc", "clean/test_acc", "attack/pgd_linf/acc", "shift/contrast/1/acc",
                    "metric/fisher/mean", "metric/path_separation/excess", "metric/activation_separation/excess",
                    "run/commit", "run/hardware", "seed"):  # fmt: skip
            assert key in r, key
        assert r["labels"] == ("random" if r["regime"] == "memorise" else "true")
    assert "grid points" in out.stdout  # the table of runs
    assert (tmp_path / "sweep" / "analysis" / "report.md").exists()
    assert (tmp_path / "sweep" / "analysis" / "correlations.csv").exists()
    assert "Spearman" in out.stdout  # the correlation table
    check_wandb_offline_files(tmp_path / "sweep")


def check_wandb_offline_files(sweep: Path) -> None:
    """The quickstart logs W&B offline: one run per grid point plus one analysis run, same group."""
    from wandb_offline import find_offline_runs, read_offline_run

    runs = [read_offline_run(path) for path in find_offline_runs(sweep)]
    grid = [r for r in runs if r.run.get("job_type") in ("generalise", "memorise")]  # job_type = regime
    analysis = [r for r in runs if r.run.get("job_type") == "analysis"]
    assert len(grid) == 8 and len(analysis) == 1
    assert {r.run.get("group") for r in runs} == {sweep.name}
    for run in grid:
        config = flatten(run.config)
        assert (
            "experiment=quickstart" in config["hydra/overrides"]
            and config["hydra/experiment"] == "quickstart"
        )
        assert config["hydra/choices/model"] in (
            "tiny_resnet",
            "tiny_byobnet",
        )  # the preset, not only model.name
        epochs = [row for row in run.history if "train/loss" in row]
        assert len(epochs) >= 2 and {"train/acc", "train/lr"} <= set(epochs[0])  # curves per epoch
        assert any(a.startswith("run-record:") for a in run.artifacts) and "metrics.json" in run.artifacts
        flat = flatten(run.summary)
        for key in (
            "clean/test_acc",
            "attack/pgd_linf/acc",
            "metric/fisher/mean",
            "metric/path_separation/excess",
        ):
            assert key in flat, (key, sorted(flat)[:20])
        assert run.exit_code == 0
    assert any("correlations" in f for f in analysis[0].files), analysis[0].files


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and "_type" not in value:
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def test_rerun_skips_complete_record_and_reuses_checkpoint(tmp_path: Path) -> None:
    args = ("data=synthetic", "data.n_train=200", "data.n_test=100", "data.image_size=8", "train.epochs=1",
            "eval.n_samples=50", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    first = robustdiag(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    second = robustdiag(tmp_path, *args)
    assert second.returncode == 0
    assert "skipping" in second.stdout + second.stderr
    third = robustdiag(  # new dir, recomputed (not copied from the first record): the model comes from the cache
        tmp_path, *args[:-1], "skip_complete=false", f"hydra.run.dir={tmp_path / 'run2'}"
    )
    record = records(tmp_path / "run2")[0]
    assert third.returncode == 0 and record["train/cached"] is True


def test_nan_loss_stops_with_failed_record(tmp_path: Path) -> None:
    out = robustdiag(
        tmp_path, "data=synthetic", "data.n_train=200", "data.n_test=100", "data.image_size=8",
        "train.epochs=2", "train.schedule.warmup=0", "train.optimizer.lr=1e30", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert out.returncode != 0
    assert "NonFiniteLossError" in out.stderr and "lr" in out.stderr
    record = records(tmp_path / "run")[0]
    assert record["status"] == "failed" and "NonFiniteLossError" in record["error"]


def test_failed_grid_point_does_not_stop_the_sweep(tmp_path: Path) -> None:
    out = robustdiag(
        tmp_path, "-m", "data=synthetic", "data.n_train=200", "data.n_test=100", "data.image_size=8",
        "train.epochs=2", "train.schedule.warmup=0", "eval.n_samples=50", "train.optimizer.lr=0.05,1e30",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]  # the sweep goes on, then says it failed
    assert "1 of 2 grid points failed" in out.stderr and "launch.allow_failures=true" in out.stderr
    statuses = sorted(r["status"] for r in records(tmp_path / "sweep"))
    assert statuses == ["complete", "failed"]
    again = robustdiag(
        tmp_path, "-m", "data=synthetic", "data.n_train=200", "data.n_test=100", "data.image_size=8",
        "train.epochs=2", "train.schedule.warmup=0", "eval.n_samples=50", "train.optimizer.lr=0.05,1e30",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "launch.allow_failures=true",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]


def test_hub_dataset_without_network_says_how_to_use_a_local_copy(tmp_path: Path) -> None:
    out = robustdiag(tmp_path, "data=cifar10", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert "data.path" in out.stderr


def test_unknown_model_name_suggests_timm_names(tmp_path: Path) -> None:
    out = robustdiag(tmp_path, "model.name=resnet_18", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert "resnet18" in out.stderr


def test_unknown_group_option_lists_valid_ones(tmp_path: Path) -> None:
    out = robustdiag(tmp_path, "train=memorize")
    assert out.returncode != 0
    assert "memorise" in out.stderr and "generalise" in out.stderr


def test_a_bad_value_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = robustdiag(tmp_path, "data=synthetic", "train.stop_train_acc=15", f"hydra.run.dir={run_dir}")
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[0] == (
        "robustdiag: error: train: train.stop_train_acc=15 must be a fraction in (0, 1] (0.99, not 99) or null"
    )
    assert f"traceback in {run_dir / 'traceback.txt'}" in lines[1] and len(lines) == 2
    assert "Traceback" in (run_dir / "traceback.txt").read_text()
    assert records(run_dir)[0]["status"] == "failed"  # the failure is recorded too
    full = robustdiag(
        tmp_path, "data=synthetic", "train.stop_train_acc=15", f"hydra.run.dir={run_dir}",
        env={"HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_optuna_search_over_the_learning_rate_runs_on_digits(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    out = robustdiag(
        tmp_path, "hparams_search=lr_digits", "hydra.sweeper.n_trials=2", "train.epochs=1", "eval.n_samples=50",
        f"hydra.sweep.dir={tmp_path / 'search'}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    import yaml

    result = yaml.safe_load((tmp_path / "search" / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"train.optimizer.lr", "train.optimizer.weight_decay"}
    assert 0.0 <= result["best_value"] <= 1.0
    values = sorted(r["attack/pgd_linf/acc"] for r in records(tmp_path / "search"))
    assert len(values) == 2 and result["best_value"] == pytest.approx(values[-1])  # the app returned it


def test_hydra_verbose_turns_on_robustdiag_debug_lines(tmp_path: Path) -> None:
    args = ("data=synthetic", "data.n_train=100", "data.n_test=50", "data.image_size=8", "train.epochs=1",
            "eval.n_samples=20", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    quiet = robustdiag(tmp_path, *args)
    verbose = robustdiag(  # skip_complete=false: in a clean checkout the first record would be reused
        tmp_path,
        *args[:-1],
        f"hydra.run.dir={tmp_path / 'run2'}",
        "hydra.verbose=robustdiag",
        "skip_complete=false",
    )
    assert quiet.returncode == 0 and verbose.returncode == 0, verbose.stderr[-2000:]
    assert "[DEBUG]" not in quiet.stdout + quiet.stderr
    debug = [line for line in (verbose.stdout + verbose.stderr).splitlines() if "[DEBUG]" in line]
    assert any("built train.regime" in line for line in debug) and any(
        "torch threads" in line for line in debug
    )


def test_version_and_python_dash_m(tmp_path: Path) -> None:
    import robustdiag as package

    out = robustdiag(tmp_path, "--version")
    assert out.returncode == 0 and out.stdout.startswith(f"robustdiag {package.__version__}")
    assert f"torch {torch.__version__}" in out.stdout and f"timm {timm.__version__}" in out.stdout
    assert "hydra-core 1." in out.stdout and "robustdiag/conf" in out.stdout
    module = subprocess.run(
        [sys.executable, "-m", "robustdiag", "--cfg", "job", "seed=7"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert module.returncode == 0 and "seed: 7" in module.stdout, module.stderr[-2000:]
