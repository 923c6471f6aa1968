"""User-facing errors: one line that names the key, what is wrong and what to do.

Objects check their own arguments and raise ``ValueError``/``TypeError``; the edge that builds them
from the config (:func:`instantiate_at`) adds the config key, and the CLI prints :func:`describe` of
whatever ends a run instead of a traceback (``HYDRA_FULL_ERROR=1`` restores the traceback, and the
job folder keeps it in ``traceback.txt``).
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

TRACEBACK_FILE = "traceback.txt"

_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '(\w+)'")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the problem and the fix."""


class ReportedOSError(OSError):
    """An OS-level failure (full disk, permissions) whose ``strerror`` is already the full user message."""


def instantiate_at(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node)``, with any error turned into a :class:`ConfigError` that names ``key``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {_cause_message(cause, node)}") from cause
    except MissingMandatoryValue as err:
        full_key = getattr(err, "full_key", None) or key
        raise ConfigError(
            f"{full_key} is required but has no value (???); set it, e.g. {full_key}=<value>"
        ) from err
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {_omegaconf_message(err)}") from err


def _cause_message(cause: BaseException, node: DictConfig) -> str:
    """The constructor's own message; an unknown keyword becomes 'no such key' with the valid ones."""
    if isinstance(cause, TypeError) and (match := _UNEXPECTED_KWARG.search(str(cause))):
        valid = _parameters(node)
        listed = f"; valid keys: {', '.join(valid)}" if valid else ""
        return f"unknown key {match.group(1)!r} (nothing reads it: check the spelling){listed}"
    if isinstance(cause, OmegaConfBaseException):
        return _omegaconf_message(cause)
    return str(cause) if isinstance(cause, ValueError | TypeError) else f"{type(cause).__name__}: {cause}"


def _parameters(node: DictConfig) -> list[str]:
    """The keyword parameters the node's ``_target_`` accepts (empty when it cannot be inspected)."""
    try:
        target = get_class(str(node["_target_"])) if "_target_" in node else None
        if target is None:
            return []
        signature = inspect.signature(target)
    except Exception:  # noqa: BLE001 - a hint only
        return []
    return [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    full_key = getattr(err, "full_key", None)
    return f"{first} (key {full_key})" if full_key and full_key not in first else first


def folder_problem(folder: Path, *, keep: bool) -> tuple[bool, str] | None:
    """Why ``folder`` cannot hold our files, else None: (a file is in its way, the words), the words being
    "<file> is a file, not a folder", "cannot be created (<reason>)" or "is not writable".

    Creates the folder when ``keep``; otherwise only tries and removes what it created, so a refused
    launch leaves nothing behind."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return True, f"{existing} is a file, not a folder"
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return False, f"cannot be created ({err.strerror})"
    writable = os.access(folder, os.W_OK | os.X_OK)
    if not keep:
        for created in missing:  # deepest first
            created.rmdir()
    return None if writable else (False, "is not writable")


def describe(err: BaseException) -> str:
    """One line for the user: the message of a :class:`ConfigError`/``ValueError``, else type and message."""
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, ReportedOSError):
        return str(err.strerror)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return f"the disk is full{where}: free space or point cache_dir / hydra.run.dir at another disk"
    if isinstance(err, PermissionError | NotADirectoryError | IsADirectoryError) and err.filename:
        return f"{err.strerror}: {err.filename} (check cache_dir and hydra.run.dir / hydra.sweep.dir)"
    message = " ".join(str(err).split()) or "(no message)"
    if isinstance(err, ConfigError):
        return message
    return f"{type(err).__name__}: {message}"


def save_traceback(out_dir: Path, err: BaseException) -> Path | None:
    """Write the full traceback of ``err`` to ``out_dir/traceback.txt``; None when that is impossible."""
    path = out_dir / TRACEBACK_FILE
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(err)))
    except OSError:
        return None
    return path
