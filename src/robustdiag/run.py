"""One grid point: data -> labels regime -> model -> train (or load) -> evaluate -> record.

This is the edge where the Hydra config becomes objects; everything below it takes plain values.
The evaluation order is: clean accuracy, attacks (their per-sample flags feed the Fisher AUROC),
diagnostics on clean data, then every shift x severity with accuracy and the diagnostics that are
recomputed under shift, on the same samples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import robustdiag
from robustdiag.allocator import reuse_freed_memory
from robustdiag.data import DataBundle, balanced_subset
from robustdiag.errors import TRACEBACK_FILE
from robustdiag.grid_point import GridPoint, build_grid_point, check_cache_dir, check_eval_settings
from robustdiag.models import Classifier, build_classifier
from robustdiag.records import (
    METRICS_FILE,
    PER_LAYER_FILE,
    PER_SAMPLE_FILE,
    NullLogger,
    RunRecord,
    provenance,
    read_json,
    save_npy,
    schema,
    write_table,
)
from robustdiag.records.index import REUSED_FROM_KEY, RecordIndex, code_identity, copy_record
from robustdiag.records.provenance import git_commit
from robustdiag.shifts.natural import TestSetShift, is_natural, natural_subset
from robustdiag.train import (
    CheckpointStore,
    NonFiniteLossError,
    Regime,
    TrainResult,
    accuracy_and_loss,
    corrupt_labels,
    fit,
    predict_logits,
)
from robustdiag.train.loop import EpochStats, fast_paths
from robustdiag.train.regime import labels_kind
from robustdiag.types import (
    Attack,
    EvalContext,
    EvalSet,
    Metric,
    MetricNotApplicable,
    MetricResult,
    Shift,
    needs_model,
    share_work,
)

log = logging.getLogger("robustdiag")

# Bump when the training loop changes in a way that invalidates cached checkpoints.
TRAIN_CODE_VERSION = 1
# Keys of the training-relevant config: what the checkpoint cache is keyed by.
TRAIN_KEYS = ("model", "data", "train", "seed")
# Keys that never change a result: left out of the record identity, so a relaunch that changes them
# still skips complete grid points.
NOT_IDENTITY = (
    "hydra", "launch", "cache_dir", "skip_complete", "threads", "reuse_freed_memory", "optimized_metric"
)  # fmt: skip
# Regime keys that are not part of the training recipe (what the labels are, how long, the name):
# runs whose regimes differ only in these share a recipe (train/recipe), e.g. label_noise at any q.
NOT_RECIPE = ("name", "q", "epochs", "stop_train_acc")


@dataclass(frozen=True)
class TrainingHashes:
    """What the checkpoint cache and the recipe grouping are keyed by (hashes of config sub-trees)."""

    config: str  # the training-relevant config (TRAIN_KEYS)
    recipe: str  # the regime without what labels it trains on and for how long (train/recipe)


@dataclass
class RunResult:
    """What evaluating a grid point produces: the flat record values and the per-sample/per-layer tables
    (``records.schema`` names every key). ``evaluate_model`` returns one without Hydra."""

    values: dict[str, Any]
    tables: Tables


@dataclass
class Tables:
    """Per-sample columns (joined on the evaluation sample order) and per-layer rows."""

    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    per_layer: list[dict[str, Any]] = field(default_factory=list)

    def add_metric(self, name: str, condition: str, result: MetricResult) -> None:
        prefix = schema.metric_key(name, "", condition).rstrip("/")
        for column, values in result.per_sample.items():
            self.per_sample[f"{prefix}/{column}"] = np.asarray(values)
        self.per_layer += [{"metric": name, "condition": condition, **row} for row in result.per_layer]


def training_key(config_key: str, data_fingerprint: str) -> str:
    """The checkpoint cache key: the training config's hash and the training data's fingerprint."""
    return hashlib.sha256(f"{config_key}/{data_fingerprint}".encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig, keys: tuple[str, ...], weights: str | None = None) -> str:
    """A short stable hash of the resolved sub-config ``keys`` of ``cfg`` (and of a weights file's
    content digest, so replacing the file at the same path is a new configuration)."""
    payload = {
        k: OmegaConf.to_container(cfg[k], resolve=True) if isinstance(cfg[k], DictConfig) else cfg[k]
        for k in keys
    }
    payload["_train_code_version"] = TRAIN_CODE_VERSION
    if weights is not None:
        payload["_weights_sha256"] = weights
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def timed(record: dict[str, float], key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        record[f"time/{key}_s"] = round(time.perf_counter() - start, 3)


def already_complete(out_dir: Path, identity: str) -> bool:
    """Whether ``out_dir`` holds a complete record of the same configuration."""
    previous = read_json(out_dir / METRICS_FILE)
    return bool(
        schema.is_complete(out_dir, previous) and previous and previous.get("config/hash") == identity
    )


RECORD_FILES = (METRICS_FILE, PER_SAMPLE_FILE, PER_LAYER_FILE, schema.TRAIN_LABELS_FILE, TRACEBACK_FILE)


def set_aside_other_config(out_dir: Path, identity: str) -> Path | None:
    """Move the record of *another* configuration out of the way instead of overwriting it.

    Hydra numbers jobs by position, so inserting a value into a swept list gives job 3 the config that
    job 4 had; a record (and its tables) in ``out_dir`` that belongs to another config hash is moved to
    ``out_dir/replaced/<its hash>/`` with a warning. Returns where it went, or None.
    """
    previous = read_json(out_dir / METRICS_FILE)
    if not previous or previous.get("config/hash") == identity:
        return None
    target = out_dir / schema.SET_ASIDE_DIR / str(previous.get("config/hash") or "unknown")
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, target / name)
    log.warning(
        "%s held a %s record of another configuration (config/hash %s); moved it to %s rather than "
        "overwrite it", out_dir, previous.get("status", "?"), previous.get("config/hash"), target,
    )  # fmt: skip
    return target


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run one grid point, writing its record into ``out_dir``. Returns the flat record."""
    check_eval_settings(cfg)  # the identity keys below need an integer seed
    weights = weights_digest(cfg)  # a weights file is part of what the record is of, by content
    identity = config_hash(cfg, tuple(str(k) for k in cfg if k not in NOT_IDENTITY), weights)
    if cfg.skip_complete and already_complete(out_dir, identity):
        log.info("%s already holds a complete record of this configuration: skipping", out_dir)
        return read_json(out_dir / METRICS_FILE) or {}
    code = code_identity(*git_commit(), robustdiag.__version__)
    index = RecordIndex(check_cache_dir(cfg.cache_dir))
    source = index.find(identity, code, exclude=out_dir) if cfg.skip_complete else None
    log.debug("config/hash %s, code %s, complete record elsewhere: %s", identity, code, source)
    set_aside_other_config(out_dir, identity)
    if source is not None:  # the same configuration, run by the same code, completed elsewhere
        log.info(
            "a complete record of this configuration (same code %s) is in %s: copied it here instead of "
            "recomputing (skip_complete=false recomputes)", code, source,
        )  # fmt: skip
        return copy_record(source, out_dir, {REUSED_FROM_KEY: str(source), "run/reused_at": _now()})
    (out_dir / TRACEBACK_FILE).unlink(missing_ok=True)  # an earlier attempt's; this one writes its own
    record = RunRecord(out_dir)
    record.update({**identity_keys(cfg), "config/hash": identity, "run/started": _now()})
    try:  # a config that cannot be built is recorded as a failed grid point, then raised
        point = build_grid_point(cfg)
        threads = set_threads(cfg.get("threads"), launcher_jobs())
        reused = reuse_freed_memory(cfg.get("reuse_freed_memory", True))
        wandb_logger = instantiate(cfg.logger) if cfg.get("logger") else NullLogger()
    except BaseException as err:
        record.update({"run/finished": _now()})
        record.fail(err)
        raise
    record.update(
        {
            **provenance(point.device),
            "run/threads": threads,
            "run/reuse_freed_memory": reused,
            "model": point.model.display_name,
        }
    )
    failed = True
    try:
        wandb_logger.start(
            config={**_plain_dict(cfg), **hydra_facts()},
            name=f"{point.model.display_name}-{cfg.train.name}-q{cfg.train.q:g}-s{cfg.seed}",
            group=_group_name(out_dir),
            directory=out_dir,
            job_type=str(cfg.train.name),
            run_id=wandb_run_id(out_dir, identity),
        )
        hashes = TrainingHashes(config=config_hash(cfg, TRAIN_KEYS, weights), recipe=recipe_hash(cfg.train))
        result = evaluate_grid_point(point, hashes, out_dir, record, on_epoch=stream_epochs(wandb_logger))
        values, tables = result.values, result.tables
        files = write_tables(out_dir, tables)  # first: "complete" must mean every listed file is on disk
        record.update({**values, schema.FILES_KEY: schema.join_keys(files), "run/finished": _now()})
        record.complete()
        index.add(identity, code, out_dir)
        mirror_to_wandb(wandb_logger, record.values, tables)
        wandb_logger.log_record(
            identity,
            [out_dir / METRICS_FILE, *(out_dir / name for name in files)],
            point.cache_dir / "checkpoints" / str(values["train/hash"]) / "last.pt",
        )
        failed = False
        log.info("done: %s", one_line_summary(record.values))
        return record.values
    except BaseException as err:
        record.update({"run/finished": _now()})
        record.fail(err)
        raise
    finally:
        wandb_logger.finish(failed=failed)


def weights_digest(cfg: DictConfig) -> str | None:
    """The SHA-256 of ``model.checkpoint`` when it names a readable file (None otherwise; a missing file is
    reported when the grid point is built)."""
    from robustdiag.models.weights import file_sha256

    path = OmegaConf.select(cfg, "model.checkpoint", default=None)
    if not isinstance(path, str) or not path:
        return None
    try:
        return file_sha256(Path(path).expanduser())
    except OSError:
        return None


def wandb_run_id(out_dir: Path, identity: str) -> str:
    """The W&B run id of a grid point: the same for a relaunch of the same configuration in the same job
    folder (so a killed job resumes its W&B run), different for anything else."""
    return hashlib.sha256(f"{out_dir.resolve()}/{identity}".encode()).hexdigest()[:16]


def stream_epochs(logger: NullLogger) -> Callable[[EpochStats], None]:
    """Per-epoch training curves to the tracker (step = epoch)."""

    def log_epoch(stats: EpochStats) -> None:
        logger.log_metrics(
            {
                "train/loss": stats.loss,
                "train/acc": stats.acc,
                "train/lr": stats.lr,
                "train/epoch_s": stats.seconds,
            },
            step=stats.epoch,
        )

    return log_epoch


def hydra_facts() -> dict[str, Any]:
    """What the W&B config needs beyond the resolved config: the overrides, group choices, experiment."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hydra_cfg = cast(DictConfig, HydraConfig.get())
    choices = OmegaConf.to_container(hydra_cfg.runtime.choices, resolve=False)
    overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)
    assert isinstance(choices, dict) and isinstance(overrides, list)
    return {
        "hydra/overrides": [str(o) for o in overrides],
        "hydra/choices": {str(k): v for k, v in choices.items() if not str(k).startswith("hydra/")},
        "hydra/experiment": choices.get("experiment"),
        "hydra/job_num": OmegaConf.select(hydra_cfg, "job.num", default=None),
    }


def launcher_jobs() -> int:
    """Grid points this launcher runs at once on this machine (joblib's n_jobs; 1 otherwise)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    n_jobs = OmegaConf.select(cast(DictConfig, HydraConfig.get()), "launcher.n_jobs", default=None)
    if n_jobs is None:
        return 1
    return available_cores() if int(n_jobs) < 0 else max(1, int(n_jobs))


def available_cores() -> int:
    """CPU cores this process may use: the Slurm allocation, else the affinity mask, else the machine."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None, jobs: int) -> int:
    """Set torch's CPU threads: ``threads`` if given, else available cores // jobs, so parallel grid
    points never oversubscribe the CPU (all jobs at full width run ~10x slower under load)."""
    if threads is not None and (isinstance(threads, bool) or not str(threads).isdigit() or int(threads) < 1):
        raise ValueError(f"threads={threads!r} must be a positive integer or null (automatic)")
    n = int(threads) if threads is not None else max(1, available_cores() // max(1, jobs))
    log.debug(
        "torch threads: %d (threads=%s, %d available cores, %d parallel jobs)",
        n,
        threads,
        available_cores(),
        jobs,
    )
    torch.set_num_threads(n)
    return n


def recipe_hash(train: DictConfig) -> str:
    """A short hash of the training recipe: the regime config without what labels it trains on and for how long."""
    payload = {k: v for k, v in OmegaConf.to_container(train, resolve=True).items() if k not in NOT_RECIPE}  # type: ignore[union-attr]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def identity_keys(cfg: DictConfig) -> dict[str, Any]:
    """The grid point's identity as far as the config says (``model`` is refined once the spec is built)."""
    model = cfg.model.get("label") or cfg.model.get("name") or cfg.model.get("_target_") or "?"
    return {
        "model": str(model),
        "data": cfg.data.get("name", "?"),
        "regime": cfg.train.name,
        "q": float(cfg.train.q),
        "labels": labels_kind(float(cfg.train.q)),
        "seed": int(cfg.seed),
    }


def evaluate_grid_point(
    point: GridPoint,
    hashes: TrainingHashes,
    out_dir: Path,
    record: RunRecord,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> RunResult:
    """Train or load the model, then measure everything the grid point asks for."""
    values: dict[str, Any] = {}
    with timed(values, "data"):
        bundle: DataBundle = point.data.load(point.cache_dir)
    torch.manual_seed(point.seed)  # initial weights depend on the seed only
    regime = point.regime
    built = build_classifier(
        point.model,
        num_classes=bundle.num_classes,
        in_chans=bundle.channels,
        img_size=bundle.image_size,
        data_mean=bundle.mean,
        data_std=bundle.std,
        evaluate_only=regime.evaluate_only,
    )
    model = built.model
    values.update(built.facts)
    train_labels = corrupt_labels(
        bundle.train.labels, q=regime.q, num_classes=bundle.num_classes, seed=point.seed
    )
    save_npy(out_dir / schema.TRAIN_LABELS_FILE, train_labels.numpy())
    data_fingerprint = bundle.train_fingerprint()
    train_hash = training_key(hashes.config, data_fingerprint)
    store = CheckpointStore(point.cache_dir / "checkpoints" / train_hash)
    values["train/hash"] = train_hash
    values["data/fingerprint"] = data_fingerprint
    values["train/recipe"] = hashes.recipe
    values["train/labels_changed"] = float((train_labels != bundle.train.labels).float().mean())
    record.update(values)
    if regime.evaluate_only:
        log.info(
            "evaluating %s as loaded (train=%s: no training) on %s (%d classes, %dpx), device %s",
            point.model.display_name, regime.name, bundle.name, bundle.num_classes, bundle.image_size, point.device,
        )  # fmt: skip
        model.to(point.device)
        result = TrainResult()
    else:
        log.info(
            "checkpoint cache %s (key: training config + data fingerprint %s; delete the folder to retrain)",
            store.root, data_fingerprint,
        )  # fmt: skip
        log.info(
            "training %s on %s (%d classes, %d train images, %dpx), regime %s, q=%.2f, seed %d, device %s",
            point.model.display_name, bundle.name, bundle.num_classes, len(bundle.train), bundle.image_size,
            regime.name, regime.q, point.seed, point.device,
        )  # fmt: skip
        with store.exclusive():  # a second process on the same config waits, then reuses the checkpoint
            result = fit(
                model,
                bundle.train.images,
                train_labels,
                regime,
                device=point.device,
                seed=point.seed,
                store=store,
                on_epoch=on_epoch,
            )
    values.update(
        {
            "time/train_s": round(result.seconds, 3),
            "train/epochs": result.epochs,
            "train/resumed_from": result.resumed_from,
            "train/cached": result.epochs_run == 0 and not regime.evaluate_only,
            schema.ADVERSARIAL_KEY: float(regime.adversary is not None),
            **{f"train/{name}": on for name, on in fast_paths(regime, point.device).items()},
        }
    )
    model.eval()
    with timed(values, "eval"):
        batch_size = point.eval.batch_size
        test_logits = predict_logits(model, bundle.test.images, batch_size=batch_size)  # (N_test, K)
        values.update(clean_accuracies(model, bundle, train_labels, test_logits, batch_size))
        values[schema.GOAL_REACHED_KEY] = goal_reached(regime, values[schema.CLEAN_TRAIN_ACC], result.epochs)
        record.update(values)
        evaluated = evaluate_model(point, model, bundle, train_labels, test_logits)
        eval_values, tables = evaluated.values, evaluated.tables
    values.update(eval_values)
    return RunResult(values, tables)


def clean_accuracies(
    model: Classifier,
    bundle: DataBundle,
    train_labels: torch.Tensor,
    test_logits: torch.Tensor,
    batch_size: int,
) -> dict[str, float]:
    """Accuracy and loss on the full train split (trained and true labels) and the full test split."""
    train_logits = predict_logits(model, bundle.train.images, batch_size=batch_size)
    train_acc, train_loss = accuracy_and_loss(train_logits, train_labels)
    train_true_acc, _ = accuracy_and_loss(train_logits, bundle.train.labels)
    test_acc, test_loss = accuracy_and_loss(test_logits, bundle.test.labels)
    if not (np.isfinite(train_loss) and np.isfinite(test_loss)):
        raise NonFiniteLossError(
            f"the trained model gives non-finite outputs (train loss {train_loss}, test loss {test_loss}); "
            "training diverged: lower train.optimizer.lr or add warm-up (train.schedule.warmup)"
        )
    return {
        "clean/train_acc": train_acc,
        "clean/train_loss": train_loss,
        "clean/train_true_acc": train_true_acc,
        "clean/test_acc": test_acc,
        "clean/test_loss": test_loss,
    }


def goal_reached(regime: Regime, train_acc: float, epochs: int) -> float:
    """1.0 when the regime reached its goal: a memorising regime (``stop_train_acc`` set) fits its
    labels to that accuracy in eval mode; other regimes count as reached when they ran all their
    epochs. A run that misses it is recorded complete but flagged, and the claims leave it out."""
    if regime.stop_train_acc is not None:
        reached = train_acc >= regime.stop_train_acc
        if not reached:
            log.warning(
                "regime %s did not reach its goal: train accuracy %.4f < train.stop_train_acc %.3f after %d "
                "epochs (raise train.epochs or the learning rate); the record says train/goal_reached=0",
                regime.name, train_acc, regime.stop_train_acc, epochs,
            )  # fmt: skip
        return float(reached)
    return float(epochs >= regime.epochs)


def eval_sets(
    bundle: DataBundle, train_labels: torch.Tensor, n: int, seed: int, device: torch.device
) -> tuple[EvalSet, EvalSet]:
    """Class-balanced evaluation samples of the test split, and of the train split by trained label."""
    test_idx = balanced_subset(bundle.test.labels, n, seed, num_classes=bundle.num_classes)
    n_train = min(n, len(bundle.train))
    train_idx = balanced_subset(train_labels, n_train, seed, num_classes=bundle.num_classes)
    test = EvalSet(
        x=bundle.test.images[test_idx].to(device).float().div_(255),
        y=bundle.test.labels[test_idx].to(device),
        index=test_idx.to(device),
    )
    train = EvalSet(
        x=bundle.train.images[train_idx].to(device).float().div_(255),
        y=bundle.train.labels[train_idx].to(device),
        index=train_idx.to(device),
        y_trained=train_labels[train_idx].to(device),
    )
    return test, train


def evaluate_model(
    point: GridPoint,
    model: Classifier,
    bundle: DataBundle,
    train_labels: torch.Tensor,
    test_logits: torch.Tensor,  # (N_test, K) logits of the whole test split, computed once
) -> RunResult:
    """Attacks, diagnostics and shifts on the fixed evaluation samples."""
    values: dict[str, Any] = {}
    test, train = eval_sets(bundle, train_labels, point.eval.n_samples, point.eval.seed, point.device)
    logits = test_logits[test.index.to(test_logits.device)]  # (N, K): the evaluation samples' rows
    pred = logits.argmax(dim=1)
    tables = Tables(
        per_sample={
            "index": test.index.cpu().numpy(),
            "y": test.y.cpu().numpy(),
            "pred": pred.cpu().numpy(),
            "correct": (pred == test.y).cpu().numpy(),
        }
    )
    values["eval/n"] = len(test)
    values["eval/clean_acc"] = float((pred == test.y).float().mean())
    fooled = run_attacks(point.attacks, model, test, point.eval.batch_size, point.seed, values, tables)
    metrics = point.metrics
    share_work(metrics.values())  # e.g. path separation variants ride on one forward pass
    values.update(declared_roles(metrics.values()))
    clean_ctx = EvalContext(
        model=model,
        data=test,
        num_classes=bundle.num_classes,
        batch_size=point.eval.batch_size,
        seed=point.seed,
        logits=logits,
        train_data=train,
        attack_fooled=fooled,
        input_mean=tuple(float(v) for v in model.normalize.mean.flatten()),
        input_std=tuple(float(v) for v in model.normalize.std.flatten()),
    )
    clean_scalars = run_metrics(metrics, clean_ctx, "clean", values, tables)
    corruptions = [shift for shift in point.shifts if not is_natural(shift)]
    run_shifts(corruptions, model, test, metrics, clean_ctx, clean_scalars, values, tables)
    for shift in point.shifts:
        if is_natural(shift):
            run_natural_shift(
                cast(TestSetShift, shift), bundle, point, model, metrics, clean_ctx, values, tables
            )
    return RunResult(values, tables)


def run_natural_shift(
    shift: TestSetShift,
    bundle: DataBundle,
    point: GridPoint,
    model: Classifier,
    metrics: dict[str, Metric],
    clean_ctx: EvalContext,
    values: dict[str, Any],
    tables: Tables,
) -> None:
    """Accuracy (and the shift-aware diagnostics) on another test set of the same classes."""
    name, condition = shift.name, schema.shift_condition(shift.name, 1)
    with timed(values, f"shift/{condition}"):
        data = shift.load_test_set(bundle, point.cache_dir)
        idx = natural_subset(data.labels, point.eval.n_samples, point.eval.seed, bundle.num_classes)
        x = data.images[idx].to(point.device).float().div_(255)  # (n, C, H, W)
        y = data.labels[idx].to(point.device)
        logits = predict_logits(model, x, batch_size=clean_ctx.batch_size)
    values[schema.shift_acc_key(name, 1)] = float((logits.argmax(dim=1) == y).float().mean())
    values[f"{schema.SHIFT_INFO_PREFIX}{name}/n"] = len(idx)
    values[schema.shift_kind_key(name)] = schema.NATURAL_SHIFT_KIND
    shifted = EvalSet(x=x, y=y, index=idx.to(point.device), condition=condition)
    ctx = dataclasses.replace(clean_ctx, data=shifted, logits=logits, clean=None, cache={})
    scratch = Tables()  # other images than the evaluation samples: no per-sample columns
    run_metrics({k: m for k, m in metrics.items() if m.under_shift}, ctx, condition, values, scratch)
    tables.per_layer += scratch.per_layer
    log.info(
        "shift %s (natural, %d images): accuracy %.3f", name, len(idx), values[schema.shift_acc_key(name, 1)]
    )


def declared_roles(metrics: Iterable[Metric]) -> dict[str, str]:
    """The record's role keys: which metric outputs are diagnostics and which are baselines."""
    roles: dict[str, list[str]] = {key: [] for key in schema.ROLE_KEYS}
    for metric in metrics:
        r = metric.roles
        roles[schema.DIAGNOSTICS_KEY] += [schema.metric_key(metric.name, s) for s in r.diagnostics]
        roles[schema.BASELINES_KEY] += [schema.metric_key(metric.name, s) for s in r.baselines]
        roles[schema.PER_SAMPLE_DIAGNOSTICS_KEY] += [
            schema.metric_key(metric.name, c) for c in r.per_sample_diagnostics
        ]
        roles[schema.PER_SAMPLE_BASELINES_KEY] += [
            schema.metric_key(metric.name, c) for c in r.per_sample_baselines
        ]
    return {key: schema.join_keys(keys) for key, keys in roles.items()}


def run_attacks(
    attacks: dict[str, Attack],
    model: Classifier,
    test: EvalSet,
    batch_size: int,
    seed: int,
    values: dict[str, Any],
    tables: Tables,
) -> dict[str, torch.Tensor]:
    """Adversarial accuracy per configured attack; returns per-sample fooled flags."""
    if not attacks:
        return {}
    from robustdiag.attacks import compare_attacks, evaluate_attack

    results = {}
    for name, attack in attacks.items():
        with timed(values, f"attack/{name}"):
            result = evaluate_attack(attack, model, test.x, test.y, batch_size=batch_size, seed=seed)
        results[name] = result
        values[schema.attack_acc_key(name)] = result.acc
        tables.per_sample[schema.attack_robust_column(name)] = result.robust.cpu().numpy()
        log.info("attack %s: robust accuracy %.4f (clean %.4f)", name, result.acc, result.clean_acc)
    if len(results) > 1:
        compare_attacks(results)
    return {name: r.fooled.to(test.x.device) for name, r in results.items()}  # clean-correct & flipped


def run_metrics(
    metrics: dict[str, Metric], ctx: EvalContext, condition: str, values: dict[str, Any], tables: Tables
) -> dict[str, dict[str, float]]:
    """Every metric on one condition; scalars go to ``values`` under ``metric/<name>[/<condition>]/``."""
    scalars: dict[str, dict[str, float]] = {}
    for name, metric in metrics.items():
        if condition != "clean" and not metric.under_shift:
            continue
        prefix = schema.metric_key(name, "", condition).rstrip("/")
        try:
            with timed(values, prefix):
                result = metric(ctx)
        except MetricNotApplicable as reason:
            values[f"{prefix}/{schema.NOT_APPLICABLE_STAT}"] = str(reason)
            log.warning("metric %s does not apply to this model (recorded, run continues): %s", name, reason)
            continue
        values.update({f"{prefix}/{stat}": value for stat, value in result.scalars.items()})
        tables.add_metric(name, condition, result)
        scalars[name] = result.scalars
    return scalars


def run_shifts(
    shifts: list[Shift],
    model: Classifier,
    test: EvalSet,
    metrics: dict[str, Metric],
    clean_ctx: EvalContext,
    clean_scalars: dict[str, dict[str, float]],
    values: dict[str, Any],
    tables: Tables,
) -> None:
    """Accuracy (and the shift-aware diagnostics) under every shift x severity, on the same samples."""
    if not shifts:
        return
    from robustdiag.shifts import apply_shift

    batch_size, seed = clean_ctx.batch_size, clean_ctx.seed
    corruption_accs: dict[tuple[str, int], float] = {}
    for shift in shifts:
        name = shift.name  # e.g. cifar10c_files records under its corruption's name
        source = getattr(shift, "source", None)
        if isinstance(source, str):  # e.g. frost: photos (the benchmark's) or the procedural approximation
            values[f"{schema.SHIFT_INFO_PREFIX}{name}/source"] = source
        for severity in shift.severities:
            condition = schema.shift_condition(name, severity)
            with timed(values, f"shift/{condition}"):
                x = apply_shift(
                    shift, test.x, severity, seed=seed, batch_size=batch_size,
                    index=test.index, y=test.y, model=model,
                )  # fmt: skip
                logits = predict_logits(model, x, batch_size=batch_size)
            correct = logits.argmax(dim=1) == test.y
            values[schema.shift_acc_key(name, severity)] = float(correct.float().mean())
            tables.per_sample[schema.shift_correct_column(name, severity)] = correct.cpu().numpy()
            if not needs_model(shift):
                corruption_accs[(name, int(severity))] = values[schema.shift_acc_key(name, severity)]
            shifted = EvalSet(x=x, y=test.y, index=test.index, condition=condition)
            ctx = dataclasses.replace(clean_ctx, data=shifted, logits=logits, clean=test, cache={})
            shifted_scalars = run_metrics(metrics, ctx, condition, values, tables)
            for metric_name, stats in shifted_scalars.items():
                if "excess" in stats and "excess" in clean_scalars.get(metric_name, {}):
                    drop = clean_scalars[metric_name]["excess"] - stats["excess"]
                    values[schema.metric_key(metric_name, "excess_drop", condition)] = drop
        log.info(
            "shift %s: accuracy %s", name,
            "  ".join(f"s{s}={values[f'shift/{name}/{s}/acc']:.3f}" for s in shift.severities),
        )  # fmt: skip
    if corruption_accs:
        values.update(
            corruption_means(
                corruption_accs, procedural_frost="procedural" in str(values.get("shift_info/frost/source"))
            )
        )


def corruption_means(accs: dict[tuple[str, int], float], *, procedural_frost: bool) -> dict[str, Any]:
    """The mean corruption accuracy over everything measured, labelled with what it averages, and the
    published sets' headline means (all of a set's corruptions at severities 1-5, or no key)."""
    from robustdiag.shifts.suites import SETS, SEVERITIES

    names = list(dict.fromkeys(name for name, _ in accs))
    severities = sorted({s for _, s in accs})
    out: dict[str, Any] = {schema.MEAN_CORRUPTION_ACC: float(np.mean(list(accs.values())))}
    label = next(
        (set_name for set_name, members in SETS if sorted(names) == sorted(members)),
        "all19"
        if sorted(names) == sorted(SETS[0][1] + SETS[1][1])
        else f"{len(names)} corruptions ({', '.join(names)})",
    )
    out[schema.MEAN_CORRUPTION_SET] = f"{label} x severities {severities}"
    for set_name, members in SETS:
        cells = [(name, s) for name in members for s in SEVERITIES]
        if all(cell in accs for cell in cells):
            key = schema.benchmark_acc_key(set_name, procedural_frost and "frost" in members)
            out[key] = float(np.mean([accs[cell] for cell in cells]))
    return out


def write_tables(out_dir: Path, tables: Tables) -> list[str]:
    """Write the per-sample and per-layer tables; returns the file names written (the record lists them)."""
    write_table(out_dir / PER_SAMPLE_FILE, pd.DataFrame(tables.per_sample))
    files = [schema.TRAIN_LABELS_FILE, PER_SAMPLE_FILE]
    if tables.per_layer:
        write_table(out_dir / PER_LAYER_FILE, pd.DataFrame(tables.per_layer))
        files.append(PER_LAYER_FILE)
    return files


def mirror_to_wandb(logger: NullLogger, values: dict[str, Any], tables: Tables) -> None:
    """Summary metrics, the per-layer table and the lambda histogram to W&B (best effort)."""
    logger.log_summary(
        {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool)) or v is None}
    )
    if tables.per_layer:
        logger.log_table("per_layer", pd.DataFrame(tables.per_layer))
    if "metric/fisher/lambda" in tables.per_sample:
        logger.log_histogram("fisher/lambda", tables.per_sample["metric/fisher/lambda"])


def one_line_summary(values: dict[str, Any]) -> str:
    """``model/data/regime seed: train 1.000 test 0.912 pgd_linf 0.01 fisher 3.2 ...`` for the log."""
    parts = [f"{values['model']}/{values['data']}/{values['regime']} seed {values['seed']}:"]
    parts.append(f"train {values.get('clean/train_acc', float('nan')):.3f}")
    parts.append(f"test {values.get('clean/test_acc', float('nan')):.3f}")
    for key, value in values.items():
        if key.startswith("attack/") and key.endswith("/acc"):
            parts.append(f"{key.split('/')[1]} {value:.3f}")
    if "shift/mean_corruption_acc" in values:
        parts.append(f"corruptions {values['shift/mean_corruption_acc']:.3f}")
    for key, label in (
        ("metric/fisher/mean", "fisher"),
        ("metric/path_separation/excess", "path-excess"),
        ("metric/activation_separation/excess", "act-excess"),
    ):
        if key in values and values[key] is not None:
            parts.append(f"{label} {values[key]:.4g}")
    total = sum(v for k, v in values.items() if k in ("time/train_s", "time/eval_s", "time/data_s"))
    parts.append(f"({total:.0f}s)")
    return " ".join(parts)


def _group_name(out_dir: Path) -> str:
    """The W&B group: the sweep directory's name for multirun jobs, else the run directory's."""
    return out_dir.parent.name if out_dir.name.isdigit() else out_dir.name


def _plain_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (what W&B's config gets)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
