"""``run.run`` in-process on a tiny composed config: records, reuse by identity, resume after a kill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from robustdiag import run as run_module
from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.launch import register_resolvers
from robustdiag.records import schema

REPO = Path(__file__).resolve().parents[1]
register_resolvers()

TINY = [
    "data=synthetic", "data.n_train=120", "data.n_test=60", "data.image_size=8", "train.epochs=2",
    "train.schedule.warmup=0", "eval.n_samples=30", "attack=fgsm", "metric=baselines", "shift=gaussian_noise",
    "shift.severities=[1]", "threads=1",
]  # fmt: skip


def tiny_config(tmp_path: Path, *extra: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=PACKAGE_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, f"cache_dir={tmp_path / 'cache'}", *extra])


@pytest.fixture
def clean_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs as from a clean checkout at a fixed commit (the development tree may be dirty)."""
    monkeypatch.setattr(run_module, "git_commit", lambda: ("c0ffee", False))


def results(record: dict) -> dict:
    return {
        k: v for k, v in record.items() if not k.startswith(("time/", "run/")) and not k.endswith("_seconds")
    }


def test_a_relaunch_elsewhere_finds_the_complete_record_by_identity(tmp_path: Path, clean_code: None) -> None:
    first = run_module.run(tiny_config(tmp_path), tmp_path / "sweep_a" / "0")
    assert first["status"] == schema.COMPLETE
    copied = run_module.run(
        tiny_config(tmp_path), tmp_path / "sweep_b" / "3"
    )  # another folder and job number
    assert copied["run/reused_from"] == str(tmp_path / "sweep_a" / "0")
    assert results(copied) == results(first)
    for name in schema.split_keys(first[schema.FILES_KEY]):
        assert (tmp_path / "sweep_b" / "3" / name).read_bytes() == (
            tmp_path / "sweep_a" / "0" / name
        ).read_bytes()
    other = run_module.run(
        tiny_config(tmp_path, "seed=1"), tmp_path / "sweep_b" / "4"
    )  # another config: computed
    assert "run/reused_from" not in other and other["seed"] == 1


def test_dirty_code_neither_reuses_nor_offers_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "git_commit", lambda: ("c0ffee", True))
    run_module.run(tiny_config(tmp_path), tmp_path / "a")
    second = run_module.run(tiny_config(tmp_path), tmp_path / "b")
    assert "run/reused_from" not in second and second["train/cached"] is True  # recomputed, model from cache
    # the record says which CUDA fast paths ran (none on a CPU) and what computed the path events
    assert second["train/bf16_autocast"] is False and second["train/channels_last"] is False
    assert second["run/cpu_kernels"] in ("torch", f"numba {__import__('numba').__version__}")
    assert second["run/reuse_freed_memory"] is sys.platform.startswith("linux")  # glibc on Linux CI


def test_reuse_freed_memory_false_is_recorded_and_not_part_of_the_identity(
    tmp_path: Path, clean_code: None
) -> None:
    first = run_module.run(tiny_config(tmp_path), tmp_path / "a")
    off = run_module.run(
        tiny_config(tmp_path, "reuse_freed_memory=false", "skip_complete=false"), tmp_path / "b"
    )
    assert off["config/hash"] == first["config/hash"]  # the same grid point: its numbers do not depend on it
    assert off["run/reuse_freed_memory"] is False and "run/reused_from" not in off


def test_skip_complete_false_recomputes(tmp_path: Path, clean_code: None) -> None:
    run_module.run(tiny_config(tmp_path), tmp_path / "a")
    again = run_module.run(tiny_config(tmp_path, "skip_complete=false"), tmp_path / "b")
    assert "run/reused_from" not in again


def test_a_copied_record_whose_source_lost_a_table_is_not_reused(tmp_path: Path, clean_code: None) -> None:
    first = run_module.run(tiny_config(tmp_path), tmp_path / "a")
    (tmp_path / "a" / schema.PER_SAMPLE_FILE).unlink()  # the source is no longer complete
    second = run_module.run(tiny_config(tmp_path), tmp_path / "b")
    assert "run/reused_from" not in second
    assert results(second)["clean/test_acc"] == first["clean/test_acc"]  # same numbers, recomputed


@pytest.mark.parametrize("stage", ["train", "attack", "metric", "tables"])
def test_a_run_killed_at_any_stage_resumes_to_the_uninterrupted_record(
    tmp_path: Path, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill is simulated by an exception at the stage (nothing after it runs, the record says
    'failed' or 'running'); the relaunch in the same folder must end with the same numbers and tables
    as a run that was never interrupted."""
    reference = run_module.run(tiny_config(tmp_path / "ref"), tmp_path / "ref" / "0")

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed

    targets = {
        "train": (run_module, "fit"),
        "attack": (run_module, "run_attacks"),
        "metric": (run_module, "run_metrics"),
        "tables": (run_module, "write_tables"),
    }
    module, name = targets[stage]
    with monkeypatch.context() as patch:
        if stage == "train":  # die after the first epoch's checkpoint, like a kill mid-training
            from robustdiag.train import checkpoints

            original_save = checkpoints.CheckpointStore.save

            def save_then_die(self, state):
                original_save(self, state)
                raise Killed

            patch.setattr(checkpoints.CheckpointStore, "save", save_then_die)
        else:
            patch.setattr(module, name, die)
        with pytest.raises(Killed):
            run_module.run(tiny_config(tmp_path / "killed"), tmp_path / "killed" / "0")
    interrupted = json.loads((tmp_path / "killed" / "0" / "metrics.json").read_text())
    assert interrupted["status"] != schema.COMPLETE
    resumed = run_module.run(tiny_config(tmp_path / "killed"), tmp_path / "killed" / "0")
    assert results(resumed) | {"train/resumed_from": 0, "train/cached": False} == results(reference) | {
        "train/resumed_from": 0, "train/cached": False
    }  # fmt: skip
    for table in schema.split_keys(reference[schema.FILES_KEY]):
        assert (tmp_path / "killed" / "0" / table).read_bytes() == (
            tmp_path / "ref" / "0" / table
        ).read_bytes()


def test_the_engine_runs_from_objects_without_hydra(tmp_path: Path) -> None:
    """A notebook or benchmark builds a GridPoint by hand and calls the engine: no config, no Hydra."""
    import functools

    import torch

    from robustdiag.attacks import FGSM
    from robustdiag.data import Synthetic
    from robustdiag.grid_point import EvalSettings, GridPoint, ModelSpec
    from robustdiag.metrics.baselines import Baselines
    from robustdiag.records import RunRecord
    from robustdiag.run import RunResult, TrainingHashes, evaluate_grid_point
    from robustdiag.shifts import GaussianNoise
    from robustdiag.train import Regime
    from robustdiag.train.schedules import Constant

    point = GridPoint(
        data=Synthetic(n_train=100, n_test=40, image_size=8),
        model=ModelSpec("test_resnet"),
        regime=Regime(
            name="generalise", epochs=1, batch_size=32, schedule=Constant(),
            optimizer=functools.partial(torch.optim.SGD, lr=0.05),
        ),
        attacks={"fgsm": FGSM(eps=2 / 255)},
        shifts=[GaussianNoise(severities=[1])],
        metrics={"baselines": Baselines()},
        eval=EvalSettings(n_samples=20, batch_size=16, seed=0),
        seed=0,
        device=torch.device("cpu"),
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    result = evaluate_grid_point(point, TrainingHashes(config="c", recipe="r"), tmp_path, RunRecord(tmp_path))
    assert isinstance(result, RunResult)
    for key in (
        "clean/test_acc",
        "attack/fgsm/acc",
        "shift/gaussian_noise/1/acc",
        "metric/baselines/msp_mean",
    ):
        assert key in result.values, key
    assert len(result.tables.per_sample["index"]) == 20


def test_fast_paths_follow_the_device() -> None:
    """bf16 autocast and channels-last are CUDA paths: on for a CUDA device when the regime asks."""
    import functools

    import torch

    from robustdiag.train import Regime
    from robustdiag.train.loop import fast_paths
    from robustdiag.train.schedules import Constant

    def regime(on: bool) -> Regime:
        return Regime(
            name="generalise", epochs=1, batch_size=8, schedule=Constant(), amp=on, channels_last=on,
            optimizer=functools.partial(torch.optim.SGD, lr=0.05),
        )  # fmt: skip

    assert fast_paths(regime(True), torch.device("cuda")) == {"bf16_autocast": True, "channels_last": True}
    assert fast_paths(regime(True), torch.device("cpu")) == {"bf16_autocast": False, "channels_last": False}
    assert fast_paths(regime(False), torch.device("cuda")) == {"bf16_autocast": False, "channels_last": False}
