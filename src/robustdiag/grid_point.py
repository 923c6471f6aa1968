"""The one place the Hydra config of a grid point becomes typed objects.

``build_grid_point(cfg)`` instantiates the data source, the training regime, every attack, shift and
metric, and checks the plain settings, before anything is loaded or trained, so a bad value anywhere
in the config fails in seconds with a message naming its key (:class:`robustdiag.errors.ConfigError`).
Below it nothing reads the config.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from robustdiag.data import DataBundle
from robustdiag.errors import ConfigError, folder_problem, instantiate_at
from robustdiag.models.sources import ModelSpec, model_spec
from robustdiag.train import Regime
from robustdiag.types import Attack, Metric, Shift

log = logging.getLogger("robustdiag")


class DataSource(Protocol):
    """What a ``data`` config builds: a named source that loads (and caches) a :class:`DataBundle`."""

    name: str

    def load(self, cache_dir: Path) -> DataBundle: ...


@dataclass(frozen=True)
class EvalSettings:
    """Which test samples every attack, shift and metric is measured on, and in what batches."""

    n_samples: int
    batch_size: int
    seed: int


@dataclass
class GridPoint:
    """Everything one grid point runs, as objects: built once, at the edge."""

    data: DataSource
    model: ModelSpec
    regime: Regime
    attacks: dict[str, Attack]
    shifts: list[Shift]
    metrics: dict[str, Metric]
    eval: EvalSettings
    seed: int
    device: torch.device
    cache_dir: Path


def selected(group: DictConfig | None) -> dict[str, DictConfig]:
    """The options of a multi-select group (``shift``, ``attack``, ``metric``): nodes with ``_target_``."""
    if group is None:
        return {}
    return {str(k): v for k, v in group.items() if isinstance(v, DictConfig) and "_target_" in v}


def check_int(value: Any, key: str, *, minimum: int | None = None, example: str = "") -> int:
    """``value`` as an int, or a :class:`ConfigError` naming ``key`` (bools, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        hint = f" (e.g. {example})" if example else ""
        raise ConfigError(f"{key}={value!r} must be an integer{bound}{hint}")
    return value


def check_bool(value: Any, key: str) -> bool:
    """``value`` as a bool, or a :class:`ConfigError` naming ``key`` (strings and numbers refused)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    return value


def check_eval_settings(cfg: DictConfig) -> EvalSettings:
    """The ``eval`` block and the run seed, refused before anything is trained when they cannot work."""
    check_int(cfg.seed, "seed", example="seed=0, or seed=0,1,2 in a multirun")
    return EvalSettings(
        n_samples=check_int(
            cfg.eval.get("n_samples"), "eval.n_samples", minimum=1, example="eval.n_samples=1000"
        ),
        batch_size=check_int(
            cfg.eval.get("batch_size"), "eval.batch_size", minimum=1, example="eval.batch_size=256"
        ),
        seed=check_int(cfg.eval.get("seed", 0), "eval.seed", minimum=0, example="eval.seed=0"),
    )


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={name!r} is not a device; valid values: auto, cpu, cuda, cuda:N, mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} but MPS is not available here; use device=cpu or device=auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r} is not supported; valid values: auto, cpu, cuda, cuda:N, mps")
    return device


def check_cache_dir(path: str | os.PathLike[str]) -> Path:
    """The cache folder, created if needed; a file in its place or no write permission is refused."""
    root = Path(path).expanduser()
    problem = folder_problem(root, keep=True)
    if problem is not None:
        blocked_by_file, words = problem
        where = "at a folder" if blocked_by_file else "at a writable folder"
        raise ConfigError(
            f"cache_dir={str(root)!r}{':' if blocked_by_file else ''} {words}; point cache_dir (or ROBUSTDIAG_CACHE) {where}"
        )
    return root


def build_grid_point(cfg: DictConfig) -> GridPoint:
    """Instantiate and check every part of a grid point; nothing is loaded or trained here."""
    settings = check_eval_settings(cfg)
    check_bool(cfg.get("reuse_freed_memory", True), "reuse_freed_memory")
    regime = instantiate_at(cfg.train, "train")
    if not isinstance(regime, Regime):
        raise ConfigError(
            f"train: _target_ must build a robustdiag.train.Regime, got {type(regime).__name__}"
        )
    attacks = {
        name: instantiate_at(node, f"attack.{name}") for name, node in selected(cfg.get("attack")).items()
    }
    shifts = [instantiate_at(node, f"shift.{name}") for name, node in selected(cfg.get("shift")).items()]
    metrics = {
        name: instantiate_at(node, f"metric.{name}") for name, node in selected(cfg.get("metric")).items()
    }
    typed = (
        ("attack", attacks, Attack),
        ("metric", metrics, Metric),
        ("shift", {s.name: s for s in shifts}, Shift),
    )
    for kind, objects, protocol in typed:
        for name, obj in objects.items():
            if not isinstance(obj, protocol):
                raise ConfigError(
                    f"{kind}.{name}: _target_ builds a {type(obj).__name__}, which is not a robustdiag {kind} "
                    f"(see robustdiag.types.{protocol.__name__})"
                )
    for kind, built in (("train", {"regime": regime}), ("attack", attacks), ("metric", metrics)):
        for name, obj in built.items():
            log.debug("built %s.%s: %r", kind, name, obj)
    for shift in shifts:
        log.debug("built shift.%s: %r", shift.name, shift)
    names = [shift.name for shift in shifts]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"shift: {repeated} selected twice; each shift is measured once")
    model = model_spec(cfg.model)
    if regime.epochs == 0 and not model.has_weights:
        raise ConfigError(
            f"train.epochs=0 evaluates the model as loaded (train=none), but model.name={model.name!r} would have random "
            "weights: give it weights (model.checkpoint=<file>, model.pretrained=true, an hf-hub: name) or "
            "train it (train=generalise)"
        )
    return GridPoint(
        data=instantiate_at(cfg.data, "data"),
        model=model,
        regime=regime,
        attacks=attacks,
        shifts=shifts,
        metrics=metrics,
        eval=settings,
        seed=int(cfg.seed),
        device=resolve_device(str(cfg.device)),
        cache_dir=check_cache_dir(cfg.cache_dir),
    )
