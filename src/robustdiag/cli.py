"""``robustdiag``: the Hydra app. ``robustdiag --help`` lists the config groups and examples."""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from robustdiag.config import CONFIG_DIR, PACKAGE_CONFIG_DIR
from robustdiag.errors import describe, save_traceback
from robustdiag.launch import register_resolvers

log = logging.getLogger("robustdiag")
register_resolvers()


def optimized_value(record: dict[str, Any], key: str | None) -> float | None:
    """The record value an optimising sweeper (e.g. Optuna) minimises or maximises; None when unset."""
    if not key:
        return None
    if key not in record:
        close = difflib.get_close_matches(key, [k for k in record if isinstance(record[k], int | float)], n=5)
        hint = f" Close keys: {', '.join(close)}." if close else ""
        raise ValueError(f"optimized_metric={key!r} is not a key of the run record.{hint}")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"optimized_metric={key!r} holds {value!r}, not a number")
    return float(value)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def app(cfg: DictConfig) -> float | None:
    """Run one grid point; in a multirun a failed point is recorded and the sweep goes on.

    Returns the record's ``optimized_metric`` (null by default), which optimising sweepers read.
    """
    from robustdiag.run import run  # heavy imports after Hydra has parsed --help / --cfg

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        record = run(cfg, out_dir)
        return optimized_value(record, cfg.get("optimized_metric"))
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        trace = save_traceback(out_dir, err)
        where = f"traceback in {trace}; " if trace else ""
        if hydra_cfg.mode == RunMode.MULTIRUN:  # recorded; the sweep goes on and lists it at the end
            log.error(
                "grid point %s failed: %s (%srecord in %s)", out_dir.name, describe(err), where, out_dir
            )
            return None
        _log_to_files_only(logging.ERROR, f"run failed: {describe(err)}")  # the terminal gets it once, below
        print(
            f"robustdiag: error: {describe(err)}\n({where}HYDRA_FULL_ERROR=1 prints it)",
            file=sys.stderr,
        )
        sys.exit(1)


def _log_to_files_only(level: int, message: str) -> None:
    """Put ``message`` in the job's log file(s) without echoing it on the console handler."""
    record = log.makeRecord(log.name, level, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def version_line() -> str:
    """robustdiag's version and the versions of what it runs on, and where its configs are."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    import robustdiag

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    parts = [f"robustdiag {robustdiag.__version__}", f"torch {torch.__version__} ({cuda})"]
    for dist in ("timm", "hydra-core", "omegaconf", "wandb", "datasets", "numba"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return f"{parts[0]} ({', '.join(parts[1:])}); python {sys.version.split()[0]}; config: {CONFIG_DIR}"


def main() -> None:
    if "--version" in sys.argv[1:] or "-V" in sys.argv[1:]:  # before Hydra, which would print its own
        print(version_line())
        return
    if not Path(CONFIG_DIR, "config.yaml").exists():  # only a wrong ROBUSTDIAG_CONFIG_DIR gets here
        sys.exit(
            f"robustdiag: error: ROBUSTDIAG_CONFIG_DIR={CONFIG_DIR} holds no config.yaml; unset it to use the "
            f"configs shipped with robustdiag ({PACKAGE_CONFIG_DIR}), and add your own groups with "
            "--config-dir <folder> or hydra.searchpath=[file:///abs/folder]"
        )
    app()


if __name__ == "__main__":
    main()
