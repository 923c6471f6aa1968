"""The W&B summary run: an offline round trip read back from the run files, failures, and the mode."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pytest

from robustdiag.analysis import analyze_sweep
from robustdiag.analysis.wandb_summary import log_summary
from robustdiag.records.wandb_logger import resolve_mode
from wandb_offline import find_offline_runs, iter_payloads, read_offline_run

ADV_KEY = "corr/fisher.mean~pgd_linf.acc"


def test_offline_summary_run_round_trip(make_sweep, tmp_path: Path) -> None:
    root, _ = make_sweep()
    logger = functools.partial(log_summary, project="robustdiag-test", mode="offline", dir=tmp_path / "wb")
    result = analyze_sweep(root, n_bootstrap=50, wandb_logger=logger)

    (run_dir,) = find_offline_runs(tmp_path / "wb")
    assert result.wandb_run == str(run_dir)
    run = read_offline_run(run_dir)
    assert (
        run.run["group"] == "sweep"
        and run.run["job_type"] == "analysis"
        and run.run["project"] == "robustdiag-test"
    )
    assert run.exit_code == 0  # finished
    assert run.config["n_bootstrap"] == 50

    correlations = pd.read_csv(result.out_dir / "correlations.csv")
    fisher = correlations[
        (correlations["diagnostic"] == "metric/fisher/mean")
        & (correlations["target"] == "attack/pgd_linf/acc")
    ].iloc[0]
    assert run.summary[f"{ADV_KEY}/spearman"] == pytest.approx(fisher["spearman"])
    assert run.summary[f"{ADV_KEY}/spearman_ci_low"] == pytest.approx(fisher["spearman_ci_low"])
    assert run.summary[f"{ADV_KEY}/n"] == 12
    assert run.summary["runs/complete"] == 12
    assert run.summary["separability/path_separation.excess/auroc"] == pytest.approx(1.0)

    logged = {key: value for step in run.history for key, value in step.items()}
    table_ref = logged["tables/correlations"]
    assert table_ref["_type"] == "table-file" and table_ref["nrows"] == len(correlations)
    table = json.loads(run.file(table_ref["path"]).read_text())
    assert table["columns"] == list(correlations.columns) and len(table["data"]) == len(correlations)
    row = next(r for r in table["data"] if r[0] == "metric/fisher/mean" and r[1] == "attack/pgd_linf/acc")
    assert row[table["columns"].index("spearman")] == pytest.approx(fisher["spearman"])
    assert {"tables/separability", "tables/per_sample_auroc", "tables/ranking"} <= set(logged)
    assert "scatter/fisher.mean~pgd_linf.acc_table" in logged  # the data behind wandb.plot.scatter
    assert "fisher.mean~pgd_linf.acc" in json.dumps(run.config["_wandb"]["visualize"])
    images = [f for f in run.files if f.startswith("media/images/figures/")]
    assert len(images) == len(result.figures) >= 5
    assert all(run.file(f).read_bytes()[:4] == b"\x89PNG" for f in images)
    assert f"W&B summary run: `{run_dir}`" in result.report_path.read_text()


class _BrokenRun:
    """A run whose logging fails; records whether it was finished."""

    def __init__(self) -> None:
        self.finished = False
        self.dir = "/nonexistent"

    def log(self, *_: object, **__: object) -> None:
        raise ConnectionError("network unreachable")

    def finish(self) -> None:
        self.finished = True


def test_wandb_failures_warn_finish_the_run_and_keep_local_files(
    make_sweep, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    root, _ = make_sweep(tables=False)

    def crash(_: object) -> str:
        raise OSError("disk full")

    with pytest.warns(UserWarning, match="W&B summary logging failed.*disk full"):
        result = analyze_sweep(root, n_bootstrap=20, wandb_logger=crash)
    assert result.wandb_run is None
    assert result.report_path.stat().st_size > 0 and (result.out_dir / "correlations.csv").exists()

    broken = _BrokenRun()
    monkeypatch.setattr(wandb, "init", lambda **_: broken)
    with pytest.warns(UserWarning, match="W&B summary run failed.*network unreachable"):
        assert log_summary(result, mode="offline") is None
    assert broken.finished  # finished although logging failed

    def refuse(**_: object) -> None:
        raise RuntimeError("wandb-core did not start")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.warns(UserWarning, match="wandb-core did not start"):
        assert log_summary(result, mode="offline") is None


def test_mode_is_offline_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc here
    monkeypatch.delenv("NETRC", raising=False)
    assert resolve_mode(None) == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password not-a-real-key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode(None) == "online"
    assert resolve_mode("offline") == "offline"  # forced
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled"
    with pytest.raises(ValueError, match="valid modes: online, offline, disabled"):
        resolve_mode("sometimes")


def test_api_key_in_environment_means_online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(None) == "online"


def test_record_log_reader_rejects_other_files_and_spans_blocks() -> None:
    with pytest.raises(ValueError, match="not a W&B record log"):
        list(iter_payloads(b"PK\x03\x04 not wandb"))
    # a record split over two 32 KiB blocks: FIRST at the end of block 0, LAST in block 1
    import struct

    header = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    first_len = 32768 - 7 - 7
    payload = bytes(range(256)) * 200  # 51200 bytes
    blob = header + struct.pack("<IHB", 0, first_len, 2) + payload[:first_len]
    rest = payload[first_len:]
    blob += struct.pack("<IHB", 0, len(rest), 4) + rest
    assert list(iter_payloads(blob)) == [payload]
