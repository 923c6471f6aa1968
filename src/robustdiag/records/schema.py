"""The run record's schema: file names, statuses, key builders and the declared roles of keys.

One home for everything the writer (``run.py``), the launchers, the sweep summary and the analysis
agree on. A record is a flat JSON object (``metrics.json``) with slash keys; per-sample and per-layer
tables sit beside it.

Record versions
---------------
* 1: the original layout. Which keys are diagnostics was not recorded; readers fall back to
  :data:`LEGACY_DIAGNOSTICS`.
* 2: adds the declared roles (``record/diagnostics``, ``record/baselines``,
  ``record/per_sample_diagnostics``, ``record/per_sample_baselines``: comma-separated key lists), the
  training facts ``train/adversarial`` and ``train/goal_reached``, and ``record/files`` (the tables the
  record lists; a record is complete only when they are all on disk).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

RECORD_VERSION = 2  # version-1 records are still read (legacy role defaults below)

METRICS_FILE = "metrics.json"
PER_SAMPLE_FILE = "per_sample.csv"
PER_LAYER_FILE = "per_layer.csv"
TRAIN_LABELS_FILE = "train_labels.npy"
SET_ASIDE_DIR = "replaced"  # <job dir>/replaced/<config hash>/: records of another configuration, kept

COMPLETE, FAILED, RUNNING = "complete", "failed", "running"

# identity of a grid point (what the analysis groups by)
IDENTITY_KEYS = ("model", "data", "regime", "labels", "q", "seed")

# declared roles (comma-separated lists of keys)
DIAGNOSTICS_KEY = "record/diagnostics"  # run-level diagnostic scalars, e.g. metric/fisher/mean
BASELINES_KEY = "record/baselines"  # run-level baseline scalars, e.g. metric/baselines/msp_mean
PER_SAMPLE_DIAGNOSTICS_KEY = "record/per_sample_diagnostics"  # per_sample.csv columns
PER_SAMPLE_BASELINES_KEY = "record/per_sample_baselines"
FILES_KEY = "record/files"  # tables the record lists (complete only when all exist)
ROLE_KEYS = (DIAGNOSTICS_KEY, BASELINES_KEY, PER_SAMPLE_DIAGNOSTICS_KEY, PER_SAMPLE_BASELINES_KEY)

# training facts (record version 2)
ADVERSARIAL_KEY = "train/adversarial"  # 1.0 when the regime trained on adversarial inputs
GOAL_REACHED_KEY = "train/goal_reached"  # 1.0 when the regime's goal was reached (e.g. memorised)

# what version-1 records are read as (their diagnostics were never declared)
LEGACY_DIAGNOSTICS = (
    "metric/fisher/mean",
    "metric/path_separation/excess",
    "metric/activation_separation/excess",
    "metric/spectral_bound/log10_bound",
)
LEGACY_PER_SAMPLE_DIAGNOSTICS = ("metric/fisher/lambda",)

NOT_APPLICABLE_STAT = "not_applicable"  # metric/<name>/not_applicable: why a metric did not apply
CLEAN = "clean"
CLEAN_TEST_ACC = "clean/test_acc"
CLEAN_TRAIN_ACC = "clean/train_acc"
EVAL_CLEAN_ACC = "eval/clean_acc"
MEAN_CORRUPTION_ACC = "shift/mean_corruption_acc"
# what MEAN_CORRUPTION_ACC averages (text; e.g. "standard15 x severities 1-5" or "3 corruptions x [1, 3, 5]: ...")
MEAN_CORRUPTION_SET = "shift_info/mean_corruption_set"
SHIFT_INFO_PREFIX = "shift_info/"  # text facts about shifts (e.g. shift_info/frost/source), not results
NATURAL_SHIFT_KIND = "natural test set"  # shift_info/<name>/kind of a shift that replaces the test images


def shift_kind_key(shift: str) -> str:
    """``shift_info/<shift>/kind``: what kind of shift a name is (only natural shifts write it)."""
    return f"{SHIFT_INFO_PREFIX}{shift}/kind"


def benchmark_acc_key(set_name: str, procedural_frost: bool = False) -> str:
    """``shift/benchmark/<set>_acc``: the mean accuracy over a published corruption set x severities 1-5
    (``<set>_procedural_frost_acc`` when its frost was the procedural approximation, not the photos)."""
    return f"shift/benchmark/{set_name}{'_procedural_frost' if procedural_frost else ''}_acc"


def metric_key(metric: str, stat: str, condition: str = CLEAN) -> str:
    """``metric/<name>/<stat>`` on clean data, ``metric/<name>/<shift>/<severity>/<stat>`` under a shift."""
    return f"metric/{metric}/{stat}" if condition == CLEAN else f"metric/{metric}/{condition}/{stat}"


def attack_acc_key(attack: str) -> str:
    return f"attack/{attack}/acc"


def attack_robust_column(attack: str) -> str:
    """per_sample.csv column: 1 when the sample is correct on clean data and under the attack."""
    return f"attack/{attack}/robust"


def shift_condition(shift: str, severity: int | str) -> str:
    return f"{shift}/{severity}"


def shift_acc_key(shift: str, severity: int | str) -> str:
    return f"shift/{shift}/{severity}/acc"


def shift_correct_column(shift: str, severity: int | str) -> str:
    """per_sample.csv column: 1 when the sample is classified correctly under the shift."""
    return f"shift/{shift}/{severity}/correct"


# ---- parsers: the inverses of the builders above (what the analysis reads keys back with)

_SEGMENT = r"[^/]+"
_ATTACK_ACC = re.compile(rf"^attack/(?P<attack>{_SEGMENT})/acc$")
_SHIFT_ACC = re.compile(rf"^shift/(?P<shift>{_SEGMENT})/(?P<severity>{_SEGMENT})/acc$")
_SHIFTED_METRIC = re.compile(
    rf"^metric/(?P<metric>{_SEGMENT})/(?P<shift>{_SEGMENT})/(?P<severity>{_SEGMENT})/(?P<stat>{_SEGMENT})$"
)


def parse_attack_acc_key(key: str) -> str | None:
    """The attack of ``attack/<attack>/acc`` (inverse of :func:`attack_acc_key`), else None."""
    m = _ATTACK_ACC.match(key)
    return m["attack"] if m else None


def parse_shift_acc_key(key: str) -> tuple[str, str] | None:
    """(shift, severity) of ``shift/<shift>/<severity>/acc`` (inverse of :func:`shift_acc_key`), else None.
    ``shift/mean_corruption_acc`` is not a per-condition key and gives None."""
    m = _SHIFT_ACC.match(key)
    return (m["shift"], m["severity"]) if m else None


def parse_shifted_metric_key(key: str) -> tuple[str, str, str, str] | None:
    """(metric, shift, severity, stat) of a metric key under a shift (inverse of :func:`metric_key` with a
    shift condition), else None."""
    m = _SHIFTED_METRIC.match(key)
    return (m["metric"], m["shift"], m["severity"], m["stat"]) if m else None


def join_keys(keys: Iterable[str]) -> str:
    """A declared key list as stored in the record (comma-separated, order kept, duplicates dropped)."""
    return ",".join(dict.fromkeys(k for k in keys if k))


def split_keys(value: object) -> tuple[str, ...]:
    """The inverse of :func:`join_keys`; missing or NaN values give ()."""
    if not isinstance(value, str) or not value:
        return ()
    return tuple(k for k in value.split(",") if k)


def declared(record: Mapping[str, object], role_key: str) -> tuple[str, ...]:
    """The keys a record declares for ``role_key``; version-1 records get the legacy defaults."""
    value = record.get(role_key)
    if isinstance(value, str):  # declared (possibly empty); NaN in a mixed table means "not recorded"
        return split_keys(value)
    if role_key == DIAGNOSTICS_KEY:
        return tuple(k for k in LEGACY_DIAGNOSTICS if k in record)
    if role_key == PER_SAMPLE_DIAGNOSTICS_KEY:
        return LEGACY_PER_SAMPLE_DIAGNOSTICS
    return ()


def is_set_aside(path: Path) -> bool:
    """Whether ``path`` lies in a ``replaced/`` folder (a record kept aside, not part of the sweep)."""
    return SET_ASIDE_DIR in Path(path).parts


def missing_files(job_dir: Path, record: Mapping[str, object]) -> list[str]:
    """Files the record lists that are not on disk (version-1 records list none)."""
    return [name for name in split_keys(record.get(FILES_KEY)) if not (Path(job_dir) / name).is_file()]


def is_complete(job_dir: Path, record: Mapping[str, object] | None) -> bool:
    """A record is complete when its status says so and every file it lists is on disk."""
    if not record:
        return False
    return record.get("status") == COMPLETE and not missing_files(job_dir, record)
