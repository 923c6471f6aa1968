"""Sweep plumbing (DESIGN §4.7): collision-free sweep dirs, a guard against sweeps that cannot or
should not be launched, and grid expansion for plain ``sbatch`` job arrays.

* ``register_resolvers()`` adds the OmegaConf resolver ``${rd.unique:}``: a short random token, the
  same for every use in one sweep (launching process and its jobs), so
  ``multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}-${rd.unique:}`` never collides when two sweeps start in
  the same second.
* ``SweepGuard`` is a Hydra callback (``hydra.callbacks``): before a multirun launches anything it
  stops a Slurm launcher that has no ``sbatch`` and a grid larger than ``max_jobs``.
* ``expand_grid`` enumerates a grid exactly as Hydra's basic sweeper does; ``python -m
  robustdiag.launch expand ...`` writes it to ``<sweep dir>/grid.txt`` for ``slurm/sweep_array.sh``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from robustdiag.errors import folder_problem
from robustdiag.records.provenance import COMMAND_ENV, user_command
from robustdiag.records.schema import METRICS_FILE
from robustdiag.records.schema import is_complete as record_is_complete

UNIQUE_RESOLVER = "rd.unique"
# The token is also exported here, so processes started by a sweep (joblib workers, Slurm jobs: sbatch
# exports the environment) agree with the launching process even where Hydra's resolver cache is not
# carried over.
SWEEP_TOKEN_ENV = "ROBUSTDIAG_SWEEP_TOKEN"
DEFAULT_MAX_JOBS = 500
MAX_JOBS_KEY = "launch.max_jobs"
SLURM_LAUNCHER_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC_SWEEPER_TARGET = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
GRID_FILE = "grid.txt"  # one shell-quoted line of overrides per grid point, in job-number order
_COUNT_CAP = 10_000_000  # stop counting one sweep dimension here (a range() typo must not hang)

_token: str | None = None


class SweepError(ValueError):
    """A sweep that cannot or should not be launched as configured."""


class SlurmUnavailableError(SweepError):
    """A Slurm launcher is selected where the Slurm client tools are missing."""


class GridTooLargeError(SweepError):
    """The grid would launch more jobs than the configured maximum."""


# --------------------------------------------------------------------------- sweep dir token


def sweep_token() -> str:
    """A 6-hex-digit token, drawn once per process (or inherited from ``$ROBUSTDIAG_SWEEP_TOKEN``)."""
    global _token
    if _token is None:
        _token = os.environ.get(SWEEP_TOKEN_ENV) or secrets.token_hex(3)
        os.environ[SWEEP_TOKEN_ENV] = _token
    return _token


JOB_TAG_RESOLVER = "rd.job"


def register_resolvers() -> None:
    """Register ``${rd.unique:}`` (idempotent). ``use_cache`` makes Hydra copy the value resolved in
    the launching process into every job's config (``load_sweep_config`` copies the resolver cache)."""
    if not OmegaConf.has_resolver(UNIQUE_RESOLVER):
        OmegaConf.register_new_resolver(UNIQUE_RESOLVER, sweep_token, use_cache=True)
    if not OmegaConf.has_resolver(JOB_TAG_RESOLVER):
        OmegaConf.register_new_resolver(JOB_TAG_RESOLVER, job_tag)


def job_tag(name: str, num: int | None) -> str:
    """``${rd.job:${hydra:job.name},${hydra:job.num}}``: ``name#num`` in a multirun, ``name`` otherwise."""
    return str(name) if num is None else f"{name}#{num}"


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class GridDimension:
    """One swept key: how many values it takes and where the sweep was written."""

    key: str
    size: int
    source: str  # "command line" or "hydra.sweeper.params"


def _params_as_overrides(sweeper_params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` as override strings, as Hydra's BasicSweeper builds them."""
    return [f"{key}={value}" for key, value in (sweeper_params or {}).items()]


def parse_sweep(
    task_overrides: Sequence[str],
    sweeper_params: Mapping[str, Any] | None = None,
    config_loader: Any = None,
) -> list[Override]:
    """Parse sweeper params then command-line overrides with Hydra's parser (later keys win).

    ``config_loader`` is needed only for ``glob(...)`` sweeps over config groups.
    """
    parser = OverridesParser.create(config_loader=config_loader)
    return parser.parse_overrides([*_params_as_overrides(sweeper_params), *task_overrides])


def _count(values: Iterable[str]) -> int:
    n = 0
    for n, _ in enumerate(values, start=1):
        if n > _COUNT_CAP:
            break
    return n


def grid_dimensions(
    task_overrides: Sequence[str],
    sweeper_params: Mapping[str, Any] | None = None,
    config_loader: Any = None,
) -> list[GridDimension]:
    """The swept keys of a grid with their sizes, in Hydra's order (a later override of a key replaces
    an earlier one in place: the command line beats ``hydra.sweeper.params``, as in BasicSweeper)."""
    n_params = len(sweeper_params or {})
    parsed = parse_sweep(task_overrides, sweeper_params, config_loader)
    dims: dict[str, GridDimension | None] = {}  # insertion order = Hydra's job numbering order
    for i, override in enumerate(parsed):
        key = override.get_key_element()
        if not override.is_sweep_override():
            dims[key] = None
            continue
        if not override.is_discrete_sweep():
            raise SweepError(
                f"'{override.input_line}': Hydra's basic sweeper enumerates choice, range and glob "
                "sweeps only (interval(...) needs an optimising sweeper such as optuna)"
            )
        source = "hydra.sweeper.params" if i < n_params else "command line"
        dims[key] = GridDimension(key, _count(override.sweep_string_iterator()), source)
    return [d for d in dims.values() if d is not None]


def grid_size(dims: Sequence[GridDimension]) -> int:
    """Number of jobs a grid launches (1 when nothing is swept)."""
    return math.prod(d.size for d in dims)


def expand_grid(
    task_overrides: Sequence[str],
    sweeper_params: Mapping[str, Any] | None = None,
    config_loader: Any = None,
) -> list[list[str]]:
    """Every grid point's overrides, in the order Hydra's BasicSweeper numbers the jobs."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = parse_sweep(task_overrides, sweeper_params, config_loader)
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def describe_grid(dims: Sequence[GridDimension]) -> str:
    """``model (3, hydra.sweeper.params) × seed (5, command line)``."""
    return " × ".join(f"{d.key} ({d.size}, {d.source})" for d in dims) or "no swept keys"


def check_grid_size(dims: Sequence[GridDimension], max_jobs: int, max_jobs_key: str = MAX_JOBS_KEY) -> None:
    """Raise ``GridTooLargeError`` when the grid has more than ``max_jobs`` points, ``SweepError``
    when it has none (a sweep over an empty glob or range)."""
    n = grid_size(dims)
    if n == 0:
        raise SweepError(f"this sweep has no grid points: {describe_grid(dims)}")
    if n > max_jobs:
        raise GridTooLargeError(
            f"this sweep would launch {n:,} jobs, more than {max_jobs_key}={max_jobs}. "
            f"Sweep dimensions: {describe_grid(dims)}. "
            f"Narrow the grid, or raise the limit on the command line: {max_jobs_key}={n}"
        )


# --------------------------------------------------------------------------- launcher checks


def check_sbatch(launcher_target: str | None, launcher_choice: str | None = None) -> None:
    """Raise ``SlurmUnavailableError`` when a Slurm launcher is selected but ``sbatch`` is not on PATH."""
    if launcher_target != SLURM_LAUNCHER_TARGET or shutil.which("sbatch") is not None:
        return
    choice = f"hydra/launcher={launcher_choice}" if launcher_choice else "the selected launcher"
    raise SlurmUnavailableError(
        f"{choice} submits jobs to Slurm (submitit_slurm), but `sbatch` is not on PATH. "
        "Install the Slurm client tools (Debian/Ubuntu: apt-get install slurm-client), load your "
        "cluster's Slurm module (e.g. `module load slurm`), or launch on this machine with "
        "hydra/launcher=joblib (parallel) or hydra/launcher=basic (one job after another)"
    )


def check_output_dir(path: str, key: str) -> None:
    """Raise ``SweepError`` when the run/sweep folder cannot be created or written (before Hydra tries);
    the trial leaves nothing behind."""
    problem = folder_problem(Path(path).expanduser(), keep=False)
    if problem is not None:
        blocked_by_file, words = problem
        fix = f"choose another {key}" if blocked_by_file else f"choose a writable {key}"
        raise SweepError(f"{key}={path!r}{':' if blocked_by_file else ''} {words}; {fix}")


class SweepGuard(Callback):
    """Hydra callback: refuse a multirun that cannot reach Slurm or exceeds ``max_jobs`` grid points.

    Configure it under ``hydra.callbacks``; ``max_jobs_key`` is the config key named in the error.
    Grids are counted for Hydra's basic sweeper only (optimising sweepers choose their own trials).
    """

    def __init__(
        self,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_jobs_key: str = MAX_JOBS_KEY,
        cpu_minutes_per_run: float | None = None,
        gpu_minutes_per_run: float | None = None,
    ) -> None:
        if int(max_jobs) < 1:
            raise ValueError(f"SweepGuard: max_jobs must be >= 1, got {max_jobs}")
        self.max_jobs = int(max_jobs)
        self.max_jobs_key = max_jobs_key
        self.minutes = {"CPU (2 cores)": cpu_minutes_per_run, "GPU": gpu_minutes_per_run}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra 1.3 turns exceptions raised in callbacks into warnings and launches anyway, so a
        # refused sweep ends the process here, before the sweeper has created anything.
        os.environ.setdefault(COMMAND_ENV, user_command())  # jobs inherit it: run/command is the user's
        try:
            self.check(config)
            check_output_dir(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir")
        except SweepError as err:
            raise SystemExit(f"robustdiag: error: {err}") from err

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_output_dir(str(OmegaConf.select(config, "hydra.run.dir")), "hydra.run.dir")
        except SweepError as err:
            raise SystemExit(f"robustdiag: error: {err}") from err

    def check(self, config: DictConfig) -> None:
        """Raise ``SweepError`` if the multirun ``config`` cannot or should not be launched."""
        hydra_cfg = config.hydra
        check_sbatch(
            OmegaConf.select(hydra_cfg, "launcher._target_"),
            OmegaConf.select(hydra_cfg, "runtime.choices", default={}).get("hydra/launcher"),
        )
        if OmegaConf.select(hydra_cfg, "sweeper._target_") != BASIC_SWEEPER_TARGET:
            return
        task = _strings(hydra_cfg.overrides.task)
        params = _params(OmegaConf.select(hydra_cfg, "sweeper.params"))
        dims = grid_dimensions(task, params, _active_config_loader())
        check_grid_size(dims, self.max_jobs, self.max_jobs_key)
        for line in estimate_lines(grid_size(dims), self.minutes):
            print(f"robustdiag: {line}", file=sys.stderr, flush=True)


def estimate_lines(n_runs: int, minutes: Mapping[str, float | None]) -> list[str]:
    """'30 grid points × ~0.6 min per run on CPU ≈ 18 min of one device (cold cache)' per stated cost."""
    lines = []
    for device, per_run in minutes.items():
        if per_run:
            total = n_runs * float(per_run)
            shown = f"{total:.0f} min" if total < 120 else f"{total / 60:.1f} h"
            lines.append(
                f"{n_runs} grid points × ~{float(per_run):g} min per run on one {device} ≈ {shown} "
                "before parallelism and cached checkpoints (per-run cost stated in the experiment file)"
            )
    return lines


def _active_config_loader() -> Any:
    """Hydra's config loader of this process (for glob sweeps), or None outside a Hydra app."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    return gh.config_loader() if gh.is_initialized() else None


# --------------------------------------------------------------------------- sbatch job arrays


def _strings(node: Any) -> list[str]:
    """A list node of overrides as plain strings."""
    values = OmegaConf.to_container(node, resolve=False) if node is not None else []
    return [str(v) for v in values] if isinstance(values, list) else []


def _params(node: Any) -> dict[str, Any]:
    """``hydra.sweeper.params`` as a plain dict (empty when unset)."""
    values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return {str(k): v for k, v in values.items()} if isinstance(values, dict) else {}


def format_index_ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (the ``sbatch --array`` syntax)."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    runs: list[list[int]] = []  # consecutive runs
    for i in ordered:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(parts)


def read_grid(sweep_dir: Path) -> list[list[str]]:
    """The grid lines ``expand`` wrote to ``<sweep_dir>/grid.txt``."""
    path = Path(sweep_dir) / GRID_FILE
    if not path.is_file():
        raise SweepError(
            f"{path} not found: create the sweep with `python -m robustdiag.launch expand --sweep-dir ...`"
        )
    return [shlex.split(line) for line in path.read_text().splitlines() if line.strip()]


def is_complete(job_dir: Path) -> bool:
    """Whether ``job_dir`` holds a run record with ``status: complete``."""
    try:
        record = json.loads((Path(job_dir) / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record_is_complete(Path(job_dir), record)


def pending_points(sweep_dir: Path) -> list[int]:
    """Grid indices of ``sweep_dir`` whose job dir ``<sweep_dir>/<index>`` has no complete record."""
    n = len(read_grid(sweep_dir))
    return [i for i in range(n) if not is_complete(Path(sweep_dir) / str(i))]


def compose_multirun_config(config_dir: Path, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The master config Hydra composes for ``robustdiag -m <overrides>`` (sweeps unexpanded)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    register_resolvers()
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3", job_name="cli")
    cfg = GlobalHydra.instance().hydra.compose_config(  # type: ignore[union-attr]
        config_name, list(overrides), run_mode=RunMode.MULTIRUN, with_log_configuration=False
    )
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} in hydra.sweep.dir resolves
    return cfg


def _guard_of(cfg: DictConfig) -> SweepGuard | None:
    """The ``SweepGuard`` configured in ``hydra.callbacks``, if any."""
    from hydra.utils import instantiate

    target = "robustdiag.launch.SweepGuard"
    for node in (OmegaConf.select(cfg, "hydra.callbacks") or {}).values():
        if node is not None and node.get("_target_") == target:
            return instantiate(node)
    return None


def grid_lines(cfg: DictConfig, max_jobs: int | None) -> list[list[str]]:
    """The grid of a composed multirun config (``compose_multirun_config``): each line is the
    command-line hydra overrides plus one grid point's task overrides, which is what each job of
    ``robustdiag -m`` receives. The size limit is ``max_jobs`` if given, else the configured
    ``SweepGuard``'s."""
    task = _strings(cfg.hydra.overrides.task)
    hydra_overrides = [o for o in _strings(cfg.hydra.overrides.hydra) if not o.startswith("hydra.mode=")]
    swept_hydra = [o.input_line for o in parse_sweep(hydra_overrides) if o.is_sweep_override()]
    if swept_hydra:
        raise SweepError(f"cannot sweep hydra settings in a job array: {swept_hydra}")
    params = _params(OmegaConf.select(cfg, "hydra.sweeper.params"))
    loader = _active_config_loader()
    guard = _guard_of(cfg) or SweepGuard()
    if max_jobs is not None:
        guard = SweepGuard(max_jobs, max_jobs_key="--max-jobs")
    check_grid_size(grid_dimensions(task, params, loader), guard.max_jobs, guard.max_jobs_key)
    points = expand_grid(task, params, loader)
    if loader is not None:  # compose now, so a bad key or option fails here and not on the cluster
        for point in covering_points(points):
            loader.load_sweep_config(cfg, list(point))
    return [[*hydra_overrides, *point] for point in points]


def covering_points(points: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """A few grid points that together contain every override of the grid (at most the sum of the
    dimension sizes, instead of their product): composing these checks every key and value."""
    seen: set[str] = set()
    cover = []
    for point in points:
        if not seen.issuperset(point):
            cover.append(point)
            seen.update(point)
    return cover


def write_sweep(sweep_dir: Path, cfg: DictConfig, lines: Sequence[Sequence[str]]) -> None:
    """Write ``grid.txt`` and Hydra's ``multirun.yaml`` into ``sweep_dir``; an existing sweep dir
    must hold the same grid (relaunching fills in missing points, it does not change the grid)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(shlex.join(line) + "\n" for line in lines)
    grid_path = sweep_dir / GRID_FILE
    if grid_path.exists() and grid_path.read_text() != text:
        raise SweepError(
            f"{grid_path} holds a different grid ({len(read_grid(sweep_dir))} points) than these overrides "
            f"({len(lines)} points); relaunch with the same overrides or choose a new sweep dir"
        )
    grid_path.write_text(text)
    OmegaConf.save(cfg, sweep_dir / "multirun.yaml")


def _default_config_dir() -> str:
    from robustdiag.config import CONFIG_DIR

    return CONFIG_DIR


def _cmd_expand(args: argparse.Namespace) -> int:
    cfg = compose_multirun_config(
        Path(args.config_dir or _default_config_dir()), args.config_name, args.overrides
    )
    lines = grid_lines(cfg, args.max_jobs)
    if args.sweep_dir is None:
        for line in lines:
            print(shlex.join(line))
        return 0
    sweep_dir = Path(str(cfg.hydra.sweep.dir) if args.sweep_dir == "auto" else args.sweep_dir).absolute()
    write_sweep(sweep_dir, cfg, lines)
    print(sweep_dir)
    return 0


def _cmd_pending(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    pending = pending_points(sweep_dir)
    n = len(read_grid(sweep_dir))
    print(f"{sweep_dir}: {len(pending)} of {n} grid points without a complete record", file=sys.stderr)
    print(format_index_ranges(pending))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robustdiag.launch {expand,pending}``: see ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m robustdiag.launch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    expand = sub.add_parser(
        "expand",
        help="enumerate the grid of `robustdiag -m <overrides>` (sweeper params + command line)",
        description="Print one shell-quoted line of overrides per grid point, or with --sweep-dir write "
        f"them to <sweep dir>/{GRID_FILE} (+ multirun.yaml) and print the sweep dir.",
    )
    expand.add_argument("overrides", nargs="*", help="Hydra overrides as for `robustdiag -m`")
    expand.add_argument("--sweep-dir", help="'auto' (the config's hydra.sweep.dir) or a directory")
    expand.add_argument(
        "--max-jobs", type=int, help=f"grid size limit (default: the SweepGuard's, else {DEFAULT_MAX_JOBS})"
    )
    expand.add_argument(
        "--config-dir", help="Hydra config dir (default: the robustdiag app's robustdiag/conf/)"
    )
    expand.add_argument("--config-name", default="config")
    expand.set_defaults(func=_cmd_expand)
    pending = sub.add_parser(
        "pending", help="grid indices without a complete record, in sbatch --array syntax"
    )
    pending.add_argument("sweep_dir")
    pending.set_defaults(func=_cmd_pending)
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return int(args.func(args))
    except (SweepError, HydraException, OmegaConfBaseException) as err:
        print(f"robustdiag.launch: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run the imported module's main, so there is one robustdiag.launch (one token, one SweepGuard class).
    from robustdiag.launch import main as _main

    sys.exit(_main())
