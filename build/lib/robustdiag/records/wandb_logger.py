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

    def start(
        self, *, config: dict[str, Any], name: str, group: str, directory: Path, job_type: str, run_id: str
    ) -> None: ...

    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    def log_summary(self, values: dict[str, Any]) -> None: ...

    def log_table(self, key: str, table: pd.DataFrame) -> None: ...

    def log_histogram(self, key: str, values: np.ndarray) -> None: ...

    def log_record(self, name: str, files: list[Path], checkpoint: Path | None) -> None: ...

    def finish(self, *, failed: bool) -> None: ...


def _tags(tags: Any) -> list[str]:
    """``logger.tags`` as a list of strings; a plain string is refused (it would become one tag per letter)."""
    if tags is None:
        env = os.environ.get("WANDB_TAGS", "")
        return [t.strip() for t in env.split(",") if t.strip()]
    if isinstance(tags, str):
        raise ValueError(
            f"logger.tags={tags!r} must be a list, e.g. logger.tags=[{tags}] (or WANDB_TAGS=a,b)"
        )
    return [str(t) for t in tags]


class WandbLogger(NullLogger):
    """``logger=wandb``: one W&B run per grid point, following W&B's conventions.

    Unset (null) settings fall back to W&B's environment variables, then to robustdiag's defaults:
    ``project`` ($WANDB_PROJECT, else "robustdiag"), ``entity`` ($WANDB_ENTITY), ``name`` ($WANDB_NAME,
    else model-regime-q-seed), ``group`` ($WANDB_RUN_GROUP, else the sweep), ``job_type`` ($WANDB_JOB_TYPE,
    else the training regime), ``tags`` ($WANDB_TAGS, comma-separated). Training curves stream per epoch,
    the console is captured, the record files are logged as a ``run-record`` artifact (and the trained
    checkpoint as a ``model`` artifact with ``log_checkpoint=true``, up to ``checkpoint_max_mb``). A run
    that resumes after a kill continues the same W&B run (its id is derived from the job folder and config).
    """

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        mode: str = "auto",
        tags: list[str] | None = None,
        job_type: str | None = None,
        name: str | None = None,
        group: str | None = None,
        console: str = "auto",
        log_checkpoint: bool = False,
        checkpoint_max_mb: float = 200.0,
    ) -> None:
        self.project = project or os.environ.get("WANDB_PROJECT") or "robustdiag"
        self.entity = entity or os.environ.get("WANDB_ENTITY") or None
        self.mode = resolve_mode(mode)
        self.tags = _tags(tags)
        self.job_type = job_type or os.environ.get("WANDB_JOB_TYPE") or None
        self.name = name or os.environ.get("WANDB_NAME") or None
        self.group = group or os.environ.get("WANDB_RUN_GROUP") or None
        if console not in ("auto", "off", "wrap", "redirect"):
            raise ValueError(
                f"logger.console={console!r} is not valid; valid values: auto, off, wrap, redirect"
            )
        self.console = console
        self.log_checkpoint = bool(log_checkpoint)
        self.checkpoint_max_mb = float(checkpoint_max_mb)
        self.run: Any = None

    def start(
        self, *, config: dict[str, Any], name: str, group: str, directory: Path, job_type: str, run_id: str
    ) -> None:
        """Start (or resume) the W&B run; an online start that fails (invalid key, unreachable server)
        falls back to offline with one warning; any other failure only warns (the record is unaffected)."""
        try:
            self._init(config, name, group, directory, job_type, run_id)
        except Exception as err:  # noqa: BLE001 - W&B must never take the run down
            if self.mode != "online":
                self._warn("start", err)
                self.run = None
                return
            warnings.warn(
                f"W&B online start failed ({type(err).__name__}: {err}); logging offline to {directory / 'wandb'} "
                "instead (`wandb sync` uploads it later)",
                stacklevel=2,
            )
            self.mode = "offline"
            try:
                self._init(config, name, group, directory, job_type, run_id)
            except Exception as offline_err:  # noqa: BLE001
                self._warn("start", offline_err)
                self.run = None

    def _init(
        self, config: dict[str, Any], name: str, group: str, directory: Path, job_type: str, run_id: str
    ) -> None:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            name=self.name or name,
            group=self.group or group,
            job_type=self.job_type or job_type,
            tags=self.tags,
            config=config,
            dir=str(directory),
            id=run_id,
            resume="allow",  # a relaunched (killed) job continues its W&B run
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console=cast(Any, self.console)),
        )
        log.info("W&B run %s (%s mode) in %s", self.name or name, self.mode, directory / "wandb")

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(values, step=step)
        except Exception as err:  # noqa: BLE001
            self._warn("log", err)

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

    def log_record(self, name: str, files: list[Path], checkpoint: Path | None) -> None:
        """The run record's files as a ``run-record`` artifact; the checkpoint as a ``model`` artifact when
        ``log_checkpoint`` is on and it is at most ``checkpoint_max_mb``."""
        if self.run is None:
            return
        try:
            import wandb

            record = wandb.Artifact(f"record-{name}", type="run-record")
            for path in files:
                if path.is_file():
                    record.add_file(str(path), name=path.name)
            self.run.log_artifact(record)
            if self.log_checkpoint and checkpoint is not None and checkpoint.is_file():
                size_mb = checkpoint.stat().st_size / 2**20
                if size_mb <= self.checkpoint_max_mb:
                    model = wandb.Artifact(f"model-{name}", type="model")
                    model.add_file(str(checkpoint), name="last.pt")
                    self.run.log_artifact(model)
                else:
                    log.info(
                        "checkpoint %s is %.0f MB > logger.checkpoint_max_mb=%g: not uploaded",
                        checkpoint, size_mb, self.checkpoint_max_mb,
                    )  # fmt: skip
        except Exception as err:  # noqa: BLE001
            self._warn("log_artifact", err)

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
