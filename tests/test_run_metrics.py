"""The run's metric loop: a metric that does not apply is recorded as such and the run goes on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustdiag.metrics.bounds import SpectralBound, UnsupportedArchitecture
from robustdiag.records import schema
from robustdiag.run import Tables, run_metrics
from robustdiag.types import EvalContext, EvalSet, MetricNotApplicable, MetricResult, MetricRoles


class Constant:
    name, under_shift, roles = "constant", False, MetricRoles(diagnostics=("value",))

    def __call__(self, ctx: EvalContext) -> MetricResult:
        return MetricResult(scalars={"value": 1.0})


class Gated(nn.Module):  # a block no bound rule covers
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 3), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return self.a(flat) * torch.sigmoid(self.b(flat))


def test_an_inapplicable_metric_is_recorded_and_the_others_still_run() -> None:
    assert issubclass(UnsupportedArchitecture, MetricNotApplicable)
    x = torch.rand(6, 3, 2, 2)
    ctx = EvalContext(
        model=Gated().eval(),
        data=EvalSet(x=x, y=torch.arange(6) % 3, index=torch.arange(6)),
        num_classes=3,
        batch_size=4,
        seed=0,
    )
    values: dict[str, object] = {}
    scalars = run_metrics(
        {"spectral_bound": SpectralBound(n_samples=4), "constant": Constant()}, ctx, "clean", values, Tables()
    )
    reason = values[f"metric/spectral_bound/{schema.NOT_APPLICABLE_STAT}"]
    assert isinstance(reason, str) and "no Lipschitz rule" in reason
    assert (
        values["metric/constant/value"] == 1.0 and "constant" in scalars and "spectral_bound" not in scalars
    )


def test_other_metric_errors_still_fail_the_run() -> None:
    class Broken(Constant):
        def __call__(self, ctx: EvalContext) -> MetricResult:
            raise RuntimeError("a bug")

    ctx = EvalContext(
        model=nn.Identity(),
        data=EvalSet(x=torch.rand(2, 1, 1, 1), y=torch.zeros(2, dtype=torch.long), index=torch.arange(2)),
        num_classes=2,
        batch_size=2,
        seed=0,
    )
    with pytest.raises(RuntimeError, match="a bug"):
        run_metrics({"broken": Broken()}, ctx, "clean", {}, Tables())


def test_a_record_of_another_configuration_is_set_aside_not_overwritten(tmp_path) -> None:
    import json

    from robustdiag.run import set_aside_other_config

    (tmp_path / "metrics.json").write_text(json.dumps({"status": "complete", "config/hash": "old"}))
    (tmp_path / "per_sample.csv").write_text("index\n0\n")
    assert set_aside_other_config(tmp_path, "old") is None  # same configuration: resume / skip, untouched
    moved = set_aside_other_config(tmp_path, "new")
    assert moved == tmp_path / "replaced" / "old"
    assert json.loads((moved / "metrics.json").read_text())["config/hash"] == "old"
    assert (moved / "per_sample.csv").exists() and not (tmp_path / "per_sample.csv").exists()
    assert set_aside_other_config(tmp_path, "new") is None  # nothing left to move


def test_set_aside_records_are_not_read_as_part_of_the_sweep(tmp_path) -> None:
    import json

    from robustdiag.analysis.reader import find_records
    from robustdiag.sweep import runs_table

    job = tmp_path / "0"
    (job / "replaced" / "old").mkdir(parents=True)
    (job / "replaced" / "old" / "metrics.json").write_text(json.dumps({"status": "complete"}))
    (job / "metrics.json").write_text(json.dumps({"status": "complete", "model": "m"}))
    assert find_records(tmp_path) == [job / "metrics.json"]
    assert list(runs_table(tmp_path)["job"]) == ["0"]


def test_caches_follow_the_datas_content(tmp_path) -> None:
    """Before: the data cache was keyed by the top folder's mtime and the checkpoint cache by the config
    alone, so new files at the same data.path reused arrays and models of the old data, silently."""
    import os

    from robustdiag.data.bundle import DataBundle, ImageData
    from robustdiag.data.cache import path_fingerprint
    from robustdiag.run import training_key

    nested = tmp_path / "train" / "cat"
    nested.mkdir(parents=True)
    image = nested / "0.png"
    image.write_bytes(b"old")
    top_mtime = tmp_path.stat().st_mtime_ns
    before = path_fingerprint(tmp_path)
    image.write_bytes(b"new pixels")  # same name, new content: the top folder's mtime does not move
    os.utime(tmp_path, ns=(top_mtime, top_mtime))
    assert path_fingerprint(tmp_path) != before and path_fingerprint(tmp_path / "missing") is None

    def bundle(value: int) -> DataBundle:
        images = torch.full((4, 1, 2, 2), value, dtype=torch.uint8)
        split = ImageData(images, torch.tensor([0, 1, 0, 1]))
        return DataBundle("d", split, split, ["a", "b"], (0.5,), (0.25,))

    assert bundle(1).train_fingerprint() == bundle(1).train_fingerprint() != bundle(2).train_fingerprint()
    config_key = "same-config"
    assert training_key(config_key, bundle(1).train_fingerprint()) != training_key(
        config_key, bundle(2).train_fingerprint()
    )


def test_optimized_metric_is_returned_or_refused_with_close_keys() -> None:
    from robustdiag.cli import optimized_value

    record = {"attack/pgd_linf/acc": 0.4, "clean/test_acc": 0.9, "status": "complete"}
    assert optimized_value(record, None) is None
    assert optimized_value(record, "attack/pgd_linf/acc") == 0.4
    with pytest.raises(ValueError, match="Close keys: attack/pgd_linf/acc"):
        optimized_value(record, "attack/pgd_lnf/acc")
    with pytest.raises(ValueError, match="not a number"):
        optimized_value(record, "status")


def test_a_record_write_that_fails_keeps_the_previous_record(tmp_path, monkeypatch) -> None:
    """Disk full while writing metrics.json: the previous good file survives, no temporary file stays."""
    import errno
    import json
    from pathlib import Path

    from robustdiag.errors import describe
    from robustdiag.records import write_json_atomic

    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"status": "complete", "x": 1})
    original = Path.write_text

    def full(self, *args, **kwargs):
        original(self, '{"half', encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as err:
        write_json_atomic(target, {"status": "running", "x": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"status": "complete", "x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert describe(err.value).startswith("the disk is full")


@pytest.mark.parametrize(
    ("name", "severity", "metric", "stat"),
    [
        ("gaussian_noise", 3, "fisher", "mean"),
        ("contrast", "1", "path_separation", "excess"),
        ("adversarial", 1, "baselines", "msp_mean"),
    ],
)
def test_record_key_parsers_invert_the_builders(name: str, severity, metric: str, stat: str) -> None:
    from robustdiag.records import schema

    assert schema.parse_attack_acc_key(schema.attack_acc_key(name)) == name
    assert schema.parse_shift_acc_key(schema.shift_acc_key(name, severity)) == (name, str(severity))
    condition = schema.shift_condition(name, severity)
    assert schema.parse_shifted_metric_key(schema.metric_key(metric, stat, condition)) == (
        metric, name, str(severity), stat
    )  # fmt: skip
    assert (
        schema.parse_shifted_metric_key(schema.metric_key(metric, stat)) is None
    )  # clean keys are not shifted
    assert schema.parse_shift_acc_key(schema.MEAN_CORRUPTION_ACC) is None
    assert schema.parse_attack_acc_key(schema.attack_robust_column(name)) is None


def test_the_end_of_sweep_table_shows_every_swept_key(tmp_path) -> None:
    """Before: two points that differ only in data.path printed as identical rows."""
    import json

    import yaml

    from robustdiag.sweep import runs_table

    for job, path in (("0", "/data/a"), ("1", "/data/b")):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"data.path={path}", "seed=0"])
        )
        (tmp_path / job / "metrics.json").write_text(
            json.dumps({"status": "complete", "model": "m", "seed": 0})
        )
    table = runs_table(tmp_path)
    assert list(table["data.path"]) == ["/data/a", "/data/b"] and "seed" in table.columns


def test_run_command_is_the_launchers_under_slurm_and_joblib(monkeypatch) -> None:
    """Jobs started by submitit or loky see their own argv; the launcher exports the user's command."""
    import sys

    from robustdiag.records.provenance import COMMAND_ENV, user_command

    monkeypatch.setattr(sys, "argv", ["/x/submitit/_submit.py", "/sweep/.submitit/12"])
    monkeypatch.delenv(COMMAND_ENV, raising=False)
    assert user_command() == "_submit.py /sweep/.submitit/12"
    monkeypatch.setenv(COMMAND_ENV, "robustdiag -m experiment=quickstart hydra/launcher=slurm")
    assert user_command() == "robustdiag -m experiment=quickstart hydra/launcher=slurm"
