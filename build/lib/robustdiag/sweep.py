"""What happens when a multirun ends: a table of its grid points, then the sweep analysis.

Configured as a Hydra callback (``hydra.callbacks.summary`` in ``robustdiag/conf/config.yaml``); it runs in the
launching process after every job has finished, locally or on Slurm.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from robustdiag.analysis.reader import read_overrides
from robustdiag.records import METRICS_FILE, read_json
from robustdiag.records.schema import FAILED, is_set_aside

log = logging.getLogger("robustdiag")

TABLE_COLUMNS = {
    "model": "model",
    "regime": "regime",
    "q": "q",
    "seed": "seed",
    "status": "status",
    "clean/train_acc": "train acc",
    "clean/test_acc": "test acc",
    "shift/mean_corruption_acc": "corrupt acc",
    "metric/fisher/mean": "fisher λ",
    "metric/path_separation/excess": "path sep",
    "metric/activation_separation/excess": "act sep",
}


def runs_table(sweep_dir: Path) -> pd.DataFrame:
    """One row per job directory under ``sweep_dir`` with the headline numbers of its record."""
    rows = []
    paths = (p for p in sweep_dir.rglob(METRICS_FILE) if not is_set_aside(p))
    overrides: list[dict[str, str]] = []
    for path in sorted(paths, key=lambda p: _job_order(p.parent.name)):
        record = read_json(path) or {"status": "unreadable"}
        row: dict[str, Any] = {"job": path.parent.relative_to(sweep_dir).as_posix()}
        for key, label in TABLE_COLUMNS.items():
            if key in record:
                row[label] = record[key]
        for key, value in record.items():
            if key.startswith("attack/") and key.endswith("/acc"):
                row[f"{key.split('/')[1]} acc"] = value
        rows.append(row)
        pairs = (o.split("=", 1) for o in read_overrides(path.parent) or () if "=" in o)
        overrides.append({key.lstrip("+~"): value for key, value in pairs})
    swept = [
        k for k in dict.fromkeys(k for o in overrides for k in o) if len({o.get(k) for o in overrides}) > 1
    ]
    shown = {"model", "train", "seed", "train.q"}  # already columns (model, regime, seed, q)
    for row, job_overrides in zip(rows, overrides, strict=True):  # every swept key, so rows never look alike
        row.update({key: job_overrides.get(key, "-") for key in swept if key not in row and key not in shown})
    return pd.DataFrame(rows)


def failed_points(sweep_dir: Path) -> list[tuple[str, str]]:
    """(job dir, error) of every record with status failed under ``sweep_dir``."""
    out = []
    for path in sorted(sweep_dir.rglob(METRICS_FILE), key=lambda p: _job_order(p.parent.name)):
        record = read_json(path)
        if record and record.get("status") == FAILED and not is_set_aside(path):
            out.append(
                (path.parent.relative_to(sweep_dir).as_posix(), str(record.get("error") or "no message"))
            )
    return out


def format_table(table: pd.DataFrame) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


def _job_order(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (10**9, name)


class SweepSummary(Callback):
    """Prints the runs of a finished multirun and analyses the sweep (``robustdiag-analyze``)."""

    def __init__(self, analyze: bool = True, n_bootstrap: int = 1000, allow_failures: bool = False) -> None:
        self.analyze = analyze
        self.n_bootstrap = n_bootstrap
        self.allow_failures = allow_failures

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        table = runs_table(sweep_dir)
        if table.empty:
            log.warning("no run records under %s", sweep_dir)
            return
        print(f"\n== {len(table)} grid points in {sweep_dir} ==\n{format_table(table)}\n", flush=True)
        failed = failed_points(sweep_dir)
        if self.analyze and len(failed) < len(table):
            self._analyze(sweep_dir, config)
        if failed:
            lines = "\n".join(f"  {job}: {error}  (log: {sweep_dir / job})" for job, error in failed)
            print(f"{len(failed)} of {len(table)} grid points failed:\n{lines}", file=sys.stderr, flush=True)
            if not self.allow_failures:
                # SystemExit passes through Hydra's callback guard: Slurm, CI and shell scripts see the failure
                raise SystemExit(
                    f"robustdiag: {len(failed)} grid point(s) failed (listed above); the others' records and the "
                    "analysis are complete. Relaunch the same command to retry them, or set "
                    "launch.allow_failures=true to exit 0 anyway."
                )

    def _analyze(self, sweep_dir: Path, config: DictConfig) -> None:
        from robustdiag.analysis import analyze_sweep
        from robustdiag.analysis.wandb_summary import log_summary

        uses_wandb = _is_wandb_logger(config.get("logger"))
        wandb_logger = None
        if uses_wandb:
            project = config.logger.get("project") or os.environ.get("WANDB_PROJECT") or "robustdiag"
            wandb_logger = functools.partial(
                log_summary,
                project=project,
                mode=config.logger.get("mode", "auto"),
                dir=sweep_dir / "analysis",
            )
        try:
            analyze_sweep(
                sweep_dir, sweep_dir / "analysis", n_bootstrap=self.n_bootstrap, seed=0,
                wandb_logger=wandb_logger, verbose=True,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - the runs are safe on disk; say how to retry
            log.error(
                "sweep analysis failed (%s: %s); rerun: robustdiag-analyze %s",
                type(err).__name__,
                err,
                sweep_dir,
            )


def _is_wandb_logger(node: Any) -> bool:
    """Whether the ``logger`` config builds a :class:`WandbLogger` (by its class, not its name)."""
    target = node.get("_target_") if hasattr(node, "get") else None
    if not target:
        return False
    from hydra.utils import get_class

    from robustdiag.records.wandb_logger import WandbLogger

    try:
        return issubclass(get_class(str(target)), WandbLogger)
    except Exception:  # noqa: BLE001 - an unimportable target is not W&B (the runs said why already)
        return False
