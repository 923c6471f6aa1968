"""Weights & Biases adapter for one grid point.

W&B is a mirror of the local record, never its only copy: every call here catches its own failures and
turns them into a warning, and :meth:`WandbLogger.finish` always runs (the run pipeline calls it in a
``finally``). Without credentials the run is written offline under ``<output dir>/wandb`` and can be
uploaded later with ``wandb sync``. API keys are never read into the config or the record.
"""

from __future__ import annotations

import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

VALID_MODES = ("auto", "online", "offline", "disabled")


def has_credentials() -> bool:
    """Whether W&B could authenticate (API key in the environment or a netrc entry for its host).

    Only the presence is checked: the key is never read into the config, the record or a log.
    """
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


WandbMode = Literal["online", "offline", "disabled"]
_LEGACY_MODES: dict[str, WandbMode] = {"dryrun": "offline", "run": "online"}  # spellings W&B still accepts


def resolve_mode(mode: str | None = "auto", key: str = "logger.mode") -> WandbMode:
    """The one rule for every W&B run robustdiag writes (per grid point and the sweep's analysis run).

    An explicit ``online``/``offline``/``disabled`` wins; ``auto`` (or None) takes ``WANDB_MODE`` from the
    environment, else ``online`` when credentials are configured, else ``offline``."""
    chosen = mode if mode not in (None, "auto") else os.environ.get("WANDB_MODE") or None
    if chosen is None:
        return "online" if has_credentials() else "offline"
    chosen = _LEGACY_MODES.get(chosen, chosen)
    if chosen not in ("online", "offline", "disabled"):
        raise ValueError(
            f"{key}={chosen!r} is not a W&B mode; valid modes: online, offline, disabled (or auto)"
        )
    return cast(WandbMode, chosen)


class NullLogger:
    """``logger=none``: the local record only."""

    def start(self, *, config: dict[str, Any], name: str, group: str, directory: Path) -> None: ...

    def log_summary(self, values: dict[str, Any]) -> None: ...

    def log_table(self, key: str, table: pd.DataFrame) -> None: ...

    def log_histogram(self, key: str, values: np.ndarray) -> None: ...

    def finish(self, *, failed: bool) -> None: ...


class WandbLogger(NullLogger):
    """``logger=wandb``: one W&B run per grid point, grouped by sweep."""

    def __init__(
        self,
        project: str = "robustdiag",
        entity: str | None = None,
        mode: str = "auto",
        tags: list[str] | None = None,
        job_type: str = "grid-point",
    ) -> None:
        self.project = project
        self.entity = entity
        self.mode = resolve_mode(mode)
        self.tags = list(tags or [])
        self.job_type = job_type
        self.run: Any = None

    def start(self, *, config: dict[str, Any], name: str, group: str, directory: Path) -> None:
        try:
            import wandb

            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                mode=self.mode,
                name=name,
                group=group,
                job_type=self.job_type,
                tags=self.tags,
                config=config,
                dir=str(directory),
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, console="off"),
            )
            log.info("W&B run %s (%s mode) in %s", name, self.mode, directory / "wandb")
        except Exception as err:  # noqa: BLE001 - W&B must never take the run down
            self._warn("start", err)
            self.run = None

    def log_summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in values.items():
                self.run.summary[key] = value
        except Exception as err:  # noqa: BLE001
            self._warn("log_summary", err)

    def log_table(self, key: str, table: pd.DataFrame) -> None:
        if self.run is None or table.empty:
            return
        try:
            import wandb

            self.run.log({key: wandb.Table(dataframe=table.reset_index(drop=True))})
        except Exception as err:  # noqa: BLE001
            self._warn("log_table", err)

    def log_histogram(self, key: str, values: np.ndarray) -> None:
        if self.run is None:
            return
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return
        try:
            import wandb

            self.run.log({key: wandb.Histogram(finite)})
        except Exception as err:  # noqa: BLE001
            self._warn("log_histogram", err)

    def finish(self, *, failed: bool) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as err:  # noqa: BLE001
            self._warn("finish", err)
        finally:
            self.run = None

    def _warn(self, what: str, err: BaseException) -> None:
        warnings.warn(
            f"W&B {what} failed ({type(err).__name__}: {err}); the local record is unaffected",
            stacklevel=3,
        )
