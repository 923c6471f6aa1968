"""Read every run record under a sweep directory, and say what is missing, broken or mixed.

A sweep directory holds one job directory per grid point (Hydra's job output dir: ``.hydra/`` plus the
run record ``metrics.json``, ``per_sample.csv``, ``per_layer.csv``). Hydra multiruns also leave
``multirun.yaml`` at the sweep root, from which the full grid is recovered, so grid points whose job
never started are reported too. Nothing here raises on a bad record: each problem becomes a row of
``problems`` and the analysis goes on with the complete records.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from robustdiag.records.schema import (
    COMPLETE,
    FAILED,
    IDENTITY_KEYS,
    NOT_APPLICABLE_STAT,
    RUNNING,
    is_set_aside,
    missing_files,
)
from robustdiag.records.schema import METRICS_FILE as RECORD_FILE

HYDRA_DIR = ".hydra"
MULTIRUN_FILE = "multirun.yaml"

RESULT_PREFIXES = ("clean/", "eval/", "shift/", "attack/", "metric/")
NUMERIC_KEYS = ("q", "seed", "record_version")

# kind -> what it means; every row of problems.csv has one of these kinds
PROBLEM_KINDS: dict[str, str] = {
    "missing": "job directory without metrics.json (never started its record, or killed before it)",
    "not_launched": "grid point of multirun.yaml without a job directory",
    "failed": "record with status 'failed'",
    "running": "record with status 'running' (still running, or killed without cleanup)",
    "corrupt": "metrics.json that is not a readable JSON object",
    "unknown_status": "record whose status is none of complete/failed/running",
    "missing_files": "record marked complete whose listed tables are not on disk (killed while writing; rerun it)",
    "missing_keys": "complete record lacking keys that other records have (kept; NaN where missing)",
    "duplicate": "complete record of a grid point that has a newer complete record (left out)",
    "non_numeric": "complete record with result values that are not numbers (read as missing)",
}

SWEEP_LAYOUT_HELP = (
    "A sweep directory is what `robustdiag -m ...` writes (hydra.sweep.dir): one job directory per grid "
    "point, each holding .hydra/ and the run record metrics.json (with per_sample.csv and per_layer.csv "
    "beside it). Pass that directory, or a parent of several sweeps."
)


class NoRunsError(RuntimeError):
    """Raised when a sweep directory holds no complete run record to analyse."""


@dataclass(frozen=True)
class Problem:
    """One grid point that cannot be (fully) analysed."""

    run_dir: str  # relative to the sweep root
    kind: str  # a key of PROBLEM_KINDS
    detail: str

    def __post_init__(self) -> None:
        assert self.kind in PROBLEM_KINDS, self.kind


@dataclass
class Sweep:
    """The records of one sweep directory.

    ``runs`` has one row per readable record (every status) with ``run_dir`` (relative to ``root``),
    ``status`` and ``included`` (complete and not superseded by a duplicate); ``complete`` is the
    included rows, the ones every statistic uses.
    """

    root: Path
    runs: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # results may not be comparable (mixed versions)
    notes: list[str] = field(default_factory=list)  # checks that could not be made
    n_job_dirs: int = 0
    n_expected: int | None = None  # grid size declared by multirun.yaml files, when they could be read

    @property
    def complete(self) -> pd.DataFrame:
        if self.runs.empty:
            return self.runs
        return self.runs[self.runs["included"]].reset_index(drop=True)

    def path(self, run_dir: str) -> Path:
        """Absolute directory of a run."""
        return self.root / run_dir

    def problems_frame(self) -> pd.DataFrame:
        """Problems as a table (columns run_dir, kind, detail)."""
        rows = [{"run_dir": p.run_dir, "kind": p.kind, "detail": p.detail} for p in self.problems]
        return pd.DataFrame(rows, columns=["run_dir", "kind", "detail"])

    def counts(self) -> dict[str, int]:
        """How many grid points are in each state."""
        out = {"complete": len(self.complete)}
        for kind in PROBLEM_KINDS:
            out[kind] = sum(p.kind == kind for p in self.problems)
        return out


def _relative(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel if rel else "."


def _inside(path: Path, excluded: Path | None) -> bool:
    return excluded is not None and (path == excluded or excluded in path.parents)


def natural_key(path: Path) -> list[tuple[int, int | str]]:
    """Sort key that puts job 2 before job 10."""
    parts = re.split(r"(\d+)", path.as_posix())
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts if p]


def find_records(root: Path, *, exclude: Path | None = None) -> list[Path]:
    """Every metrics.json under ``root`` (recursively), skipping the ``exclude`` tree."""
    found = (
        p for p in root.rglob(RECORD_FILE) if p.is_file() and not _inside(p, exclude) and not is_set_aside(p)
    )
    return sorted(found, key=natural_key)


def find_job_dirs(root: Path, *, exclude: Path | None = None) -> list[Path]:
    """Every directory under ``root`` (itself included) that Hydra made a job output dir (has .hydra/)."""
    found = (p.parent for p in root.rglob(HYDRA_DIR) if p.is_dir())
    return sorted((d for d in found if not _inside(d, exclude)), key=natural_key)


def flatten(record: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Flatten nested dicts into slash keys (records are flat by contract; be lenient with old ones)."""
    flat: dict[str, object] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}/"))
        else:
            flat[name] = value
    return flat


def read_record(path: Path) -> dict[str, object]:
    """Parse one metrics.json into a flat dict; raises ValueError when it is not a JSON object."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"unreadable JSON ({type(err).__name__}: {err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    return flatten(raw)


def read_overrides(job_dir: Path) -> tuple[str, ...] | None:
    """The job's Hydra overrides (``.hydra/overrides.yaml``), or None when absent or unreadable."""
    path = job_dir / HYDRA_DIR / "overrides.yaml"
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return tuple(str(v) for v in values) if isinstance(values, list) else None


def last_log_line(job_dir: Path) -> str:
    """The last non-empty line of the job's Hydra log, if any (a hint to why a job stopped)."""
    for log in sorted(job_dir.glob("*.log")):
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        if lines:
            return f"; last line of {log.name}: {lines[-1][:200]}"
    return ""


def _short(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _status_problem(run_dir: str, record: Mapping[str, object], job_dir: Path) -> Problem | None:
    """A Problem for records that are not complete (or complete without the tables they list), else None."""
    status = record.get("status", COMPLETE)
    if status == COMPLETE:
        absent = missing_files(job_dir, record)
        if absent:
            return Problem(run_dir, "missing_files", "listed but not on disk: " + ", ".join(absent))
        return None
    if status == FAILED:
        return Problem(run_dir, "failed", _short(record.get("error") or "no error message recorded"))
    if status == RUNNING:
        started = record.get("run/started", "unknown time")
        return Problem(run_dir, "running", f"still running, or killed before finishing (started {started})")
    valid = ", ".join((COMPLETE, FAILED, RUNNING))
    return Problem(run_dir, "unknown_status", f"status={status!r}; valid statuses: {valid}")


def expected_grid(multirun_file: Path) -> list[frozenset[str]]:
    """The override sets of every job a basic-sweeper multirun declared (from ``multirun.yaml``).

    Raises ValueError when the file cannot be expanded (another sweeper, or syntax needing a config).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = yaml.safe_load(multirun_file.read_text()) or {}
    hydra_cfg = cfg.get("hydra", {}) or {}
    sweeper = hydra_cfg.get("sweeper", {}) or {}
    target = str(sweeper.get("_target_", "BasicSweeper"))
    if not target.endswith("BasicSweeper"):
        raise ValueError(f"sweeper {target} does not define a fixed grid")
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    task = [str(o) for o in (hydra_cfg.get("overrides", {}) or {}).get("task", []) or []]
    overrides = OverridesParser.create().parse_overrides(params + task)
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    return [frozenset(job) for job in jobs]


def _grid_problems(
    root: Path, job_dirs: Iterable[Path], exclude: Path | None
) -> tuple[list[Problem], int | None, list[str]]:
    """Grid points declared in multirun.yaml files but without a job directory."""
    problems: list[Problem] = []
    notes: list[str] = []
    total: int | None = None
    job_dirs = list(job_dirs)
    for multirun in sorted(root.rglob(MULTIRUN_FILE)):
        if _inside(multirun, exclude):
            continue
        sweep_root = multirun.parent
        try:
            expected = expected_grid(multirun)
        except Exception as err:  # any parse problem only costs the "not launched" check
            notes.append(f"could not expand the grid of {_relative(multirun, root)}: {_short(err, 200)}")
            continue
        total = (total or 0) + len(expected)
        launched = {
            frozenset(ov)
            for d in job_dirs
            if sweep_root in d.parents and (ov := read_overrides(d)) is not None
        }
        for job in expected:
            if job not in launched:
                detail = "no job directory for overrides: " + " ".join(sorted(job))
                problems.append(Problem(_relative(sweep_root, root), "not_launched", detail))
    return problems, total, notes


def _coerce(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as floats (NaN for missing or non-numeric), identity columns as strings."""
    for column in frame.columns:
        if column.startswith(RESULT_PREFIXES) or column.startswith("time/") or column in NUMERIC_KEYS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in ("model", "data", "regime", "labels"):
        if column in frame.columns:
            frame[column] = frame[column].map(lambda v: "unknown" if _missing(v) else str(v))
    return frame


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def display_value(value: object) -> str:
    """A record value as text: 'unknown' when missing, integral floats without '.0'."""
    if _missing(value):
        return "unknown"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # record_version 1, not 1.0
    return str(value)


def _is_number(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _non_numeric_problems(records: Mapping[str, Mapping[str, object]]) -> list[Problem]:
    """Result keys holding text that is not a number (hand-edited or foreign records): named, read as NaN."""
    problems = []
    for run_dir, record in records.items():
        bad = [
            f"{key}={value!r}"
            for key, value in record.items()
            if key.startswith(RESULT_PREFIXES)
            and not key.endswith(f"/{NOT_APPLICABLE_STAT}")
            and not _is_number(value)
        ]
        if bad:
            shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
            problems.append(Problem(run_dir, "non_numeric", f"is not a number (read as missing): {shown}"))
    return problems


def _missing_key_problems(records: Mapping[str, Mapping[str, object]]) -> list[Problem]:
    """Complete records that lack identity keys, or result keys other complete records have."""
    result_keys: set[str] = set()
    for record in records.values():
        result_keys.update(k for k in record if k.startswith(RESULT_PREFIXES))
    problems = []
    for run_dir, record in records.items():
        absent = [k for k in IDENTITY_KEYS if k not in record]
        absent += sorted(result_keys.difference(record))
        if absent:
            shown = ", ".join(absent[:8]) + (f" (+{len(absent) - 8} more)" if len(absent) > 8 else "")
            problems.append(Problem(run_dir, "missing_keys", f"{len(absent)} keys missing: {shown}"))
    return problems


def _duplicate_key(row: pd.Series) -> tuple[object, ...]:
    """Records of the same configuration share this key: the full-config hash when recorded."""
    config_hash = row.get("config/hash")
    if isinstance(config_hash, str) and config_hash:
        return ("config/hash", config_hash)
    identity = tuple("" if _missing(row.get(k)) else str(row.get(k)) for k in IDENTITY_KEYS)
    return (*identity, str(row.get("train/hash", "")), row.get("overrides") or "")


def _mark_duplicates(frame: pd.DataFrame) -> list[Problem]:
    """Among complete records of the same grid point, keep the newest; mark the others."""
    problems = []
    complete = frame[frame["included"]]
    finished = complete.get("run/finished", pd.Series(index=complete.index, dtype=object))
    for _, group in complete.groupby(complete.apply(_duplicate_key, axis=1), sort=False):
        if len(group) < 2:
            continue
        order = group.assign(_t=finished.loc[group.index].astype(str)).sort_values(["_t", "run_dir"])
        newest = order.iloc[-1]["run_dir"]
        for index, row in order.iloc[:-1].iterrows():
            frame.loc[index, "included"] = False
            detail = f"same grid point as {newest} (newer, kept)"
            problems.append(Problem(str(row["run_dir"]), "duplicate", detail))
    return problems


def version_warnings(complete: pd.DataFrame) -> list[str]:
    """Messages when complete records come from different commits or record versions."""
    messages = []
    for column, label in (("run/commit", "commit"), ("record_version", "record_version")):
        if column not in complete.columns:
            continue
        values = complete[column].map(display_value)
        if values.nunique() < 2:
            continue
        parts = []
        for value, group in complete.groupby(values, sort=True):
            dirs = list(group["run_dir"])
            shown = ", ".join(dirs[:10]) + (f", … (+{len(dirs) - 10} more)" if len(dirs) > 10 else "")
            parts.append(f"{label} {value}: {len(dirs)} run{'s' if len(dirs) != 1 else ''} ({shown})")
        messages.append(
            f"records from {values.nunique()} different {label}s are mixed in this sweep; results may not "
            "be comparable. " + "; ".join(parts)
        )
    return messages


def load_sweep(root: Path, *, exclude: Path | None = None) -> Sweep:
    """Read every record under ``root``; problems are collected, never raised.

    ``exclude`` is a subtree to ignore (the analysis output directory when it lies inside the sweep).
    Raises FileNotFoundError when ``root`` is not a directory.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"sweep directory {root} does not exist or is not a directory. {SWEEP_LAYOUT_HELP}"
        )
    exclude = exclude.resolve() if exclude is not None else None
    record_paths = find_records(root, exclude=exclude)
    job_dirs = find_job_dirs(root, exclude=exclude)
    record_dirs = {p.parent for p in record_paths}

    problems: list[Problem] = []
    rows: list[dict[str, object]] = []
    complete_records: dict[str, dict[str, object]] = {}
    for path in record_paths:
        run_dir = _relative(path.parent, root)
        try:
            record = read_record(path)
        except ValueError as err:
            problems.append(Problem(run_dir, "corrupt", _short(err)))
            continue
        status_problem = _status_problem(run_dir, record, path.parent)
        if status_problem is not None:
            problems.append(status_problem)
        elif "status" not in record:
            record["status"] = COMPLETE  # lenient: a record without status but with results counts
        overrides = read_overrides(path.parent)
        rows.append(
            {
                "run_dir": run_dir,
                **record,
                "included": status_problem is None,
                "overrides": " ".join(overrides) if overrides else "",
            }
        )
        if status_problem is None:
            complete_records[run_dir] = record
    for job_dir in job_dirs:
        if job_dir not in record_dirs:
            detail = f"no {RECORD_FILE}" + last_log_line(job_dir)
            problems.append(Problem(_relative(job_dir, root), "missing", detail))
    problems.extend(_missing_key_problems(complete_records))
    problems.extend(_non_numeric_problems(complete_records))
    grid_problems, n_expected, notes = _grid_problems(root, job_dirs, exclude)
    problems.extend(grid_problems)

    frame = _coerce(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=["run_dir", "status", "included"])
    if not frame.empty:
        frame["included"] = frame["included"].astype(bool)
        problems.extend(_mark_duplicates(frame))
    sweep = Sweep(root, frame, problems, notes=notes, n_job_dirs=len(job_dirs), n_expected=n_expected)
    for message in version_warnings(sweep.complete):
        warnings.warn(message, stacklevel=2)
        sweep.warnings.append(message)
    return sweep


def describe_empty(sweep: Sweep) -> str:
    """The message for a sweep with nothing complete: what was found, and what should be there."""
    counts = {k: v for k, v in sweep.counts().items() if v}
    found = ", ".join(f"{v} {k}" for k, v in counts.items()) or "nothing"
    lines = [
        f"nothing to analyse in {sweep.root}: no complete run record "
        f"({len(sweep.runs)} metrics.json read, {sweep.n_job_dirs} job directories; found: {found}).",
    ]
    for problem in sweep.problems[:10]:
        lines.append(f"  {problem.run_dir}: {problem.kind}: {problem.detail}")
    if len(sweep.problems) > 10:
        lines.append(f"  … and {len(sweep.problems) - 10} more problems")
    lines.append(SWEEP_LAYOUT_HELP)
    return "\n".join(lines)
