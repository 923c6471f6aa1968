"""The sweep reader reports every kind of broken, missing and mixed grid point instead of failing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from analysis_records import ATTACK, base_record, planted_runs, write_job

from robustdiag.analysis.reader import NoRunsError, describe_empty, expected_grid, load_sweep


def _complete(
    model: str = "resnet18", regime: str = "generalise", seed: int = 0, **extra: object
) -> dict[str, object]:
    record = base_record(model, regime, seed)
    record |= {"clean/test_acc": 0.9, f"attack/{ATTACK}/acc": 0.3, "metric/fisher/mean": 2.0}
    return record | extra


def _kinds(sweep) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for problem in sweep.problems:
        out.setdefault(problem.kind, []).append(problem.run_dir)
    return out


def test_every_problem_kind_is_reported_and_complete_runs_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_job(root / "0", _complete(seed=0), overrides=["seed=0"])
    write_job(root / "1", _complete(seed=1), overrides=["seed=1"])
    failed = _complete(seed=2) | {"status": "failed", "error": "CUDA out of memory\nTraceback ..."}
    write_job(root / "2", failed, overrides=["seed=2"])
    write_job(root / "3", _complete(seed=3) | {"status": "running"}, overrides=["seed=3"])
    write_job(root / "4", '{"status": "complete", "model": ', overrides=["seed=4"])  # truncated write
    job = write_job(root / "5", None, overrides=["seed=5"])  # killed before the record
    (job / "run.log").write_text("[INFO] epoch 1\n[ERROR] Killed by signal 9\n\n")
    write_job(root / "6", _complete(seed=6) | {"status": "paused"}, overrides=["seed=6"])
    lacking = _complete(seed=7)
    del lacking[f"attack/{ATTACK}/acc"], lacking["regime"]
    write_job(root / "7", lacking, overrides=["seed=7"])
    write_job(root / "8", "[1, 2, 3]", overrides=["seed=8"])  # JSON, but not an object

    sweep = load_sweep(root)

    assert sorted(sweep.complete["run_dir"]) == ["0", "1", "7"]
    kinds = _kinds(sweep)
    assert kinds == {
        "failed": ["2"],
        "running": ["3"],
        "corrupt": ["4", "8"],
        "unknown_status": ["6"],
        "missing": ["5"],
        "missing_keys": ["7"],
    }
    detail = {p.run_dir: p.detail for p in sweep.problems}
    assert "CUDA out of memory Traceback" in detail["2"]
    assert "Killed by signal 9" in detail["5"]
    assert "complete, failed, running" in detail["6"]
    assert "regime" in detail["7"] and f"attack/{ATTACK}/acc" in detail["7"]
    assert "expected a JSON object" in detail["8"]
    assert sweep.counts()["complete"] == 3 and sweep.counts()["corrupt"] == 2
    missing_acc = sweep.complete.set_index("run_dir").loc["7", f"attack/{ATTACK}/acc"]
    assert missing_acc != missing_acc  # NaN where the key is missing
    assert set(sweep.problems_frame().columns) == {"run_dir", "kind", "detail"}


def test_grid_points_never_launched_are_listed(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    jobs = [("a", 0), ("a", 1), ("b", 0)]  # ("b", 1) never started
    for num, (model, seed) in enumerate(jobs):
        write_job(
            root / str(num),
            _complete(model=model, seed=seed),
            overrides=[f"model={model}", f"seed={seed}", "data=digits"],
        )
    multirun = {
        "hydra": {
            "overrides": {"task": ["model=a,b", "seed=range(0,2)", "data=digits"]},
            "sweeper": {"params": None},
        }
    }
    (root / "multirun.yaml").write_text(yaml.safe_dump(multirun))

    sweep = load_sweep(root)

    assert sweep.n_expected == 4
    (problem,) = [p for p in sweep.problems if p.kind == "not_launched"]
    assert problem.detail.endswith("data=digits model=b seed=1")


def test_expected_grid_combines_sweeper_params_and_command_line(tmp_path: Path) -> None:
    path = tmp_path / "multirun.yaml"
    cfg = {
        "hydra": {
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "params": {"seed": "0,1,2"},
            },
            "overrides": {"task": ["model=x,y", "experiment=grid"]},
        }
    }
    path.write_text(yaml.safe_dump(cfg))
    grid = expected_grid(path)
    assert len(grid) == 6
    assert frozenset({"seed=2", "model=y", "experiment=grid"}) in grid
    cfg["hydra"]["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="does not define a fixed grid"):
        expected_grid(path)


def test_unexpandable_grid_is_a_note_not_an_error(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_job(root / "0", _complete(), overrides=["seed=0"])
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=range(0,"]}}}))
    sweep = load_sweep(root)
    assert len(sweep.complete) == 1 and sweep.n_expected is None
    assert any("could not expand the grid" in note for note in sweep.notes)


def test_mixed_commits_and_record_versions_warn_with_the_runs_of_each(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in range(3):
        write_job(
            root / f"old{seed}", _complete(seed=seed) | {"run/commit": "aaaa111"}, overrides=[f"seed={seed}"]
        )
    write_job(
        root / "new0",
        _complete(seed=9) | {"run/commit": "bbbb222", "record_version": 3},
        overrides=["seed=9"],
    )

    with pytest.warns(UserWarning) as caught:
        sweep = load_sweep(root)

    messages = [str(w.message) for w in caught]
    commit_message = next(m for m in messages if "different commits" in m)
    assert "commit aaaa111: 3 runs (old0, old1, old2)" in commit_message
    assert "commit bbbb222: 1 run (new0)" in commit_message
    assert any("record_version 3: 1 run (new0)" in m for m in messages)
    assert len(sweep.warnings) == 2 and len(sweep.complete) == 4


def test_duplicate_grid_point_keeps_the_newest_record(tmp_path: Path) -> None:
    root = tmp_path / "parent"
    older = _complete() | {"run/finished": "2026-01-01T00:00:00"}
    newer = _complete() | {"run/finished": "2026-02-01T00:00:00", "clean/test_acc": 0.95}
    write_job(root / "sweep_a" / "0", older, overrides=["seed=0"])
    write_job(root / "sweep_b" / "0", newer, overrides=["seed=0"])
    write_job(root / "sweep_b" / "1", _complete(seed=1), overrides=["seed=1"])

    sweep = load_sweep(root)

    assert sorted(sweep.complete["run_dir"]) == ["sweep_b/0", "sweep_b/1"]
    (problem,) = [p for p in sweep.problems if p.kind == "duplicate"]
    assert problem.run_dir == "sweep_a/0" and "sweep_b/0" in problem.detail
    assert len(sweep.runs) == 3  # runs.csv still lists the superseded record


def test_output_dir_inside_the_sweep_is_ignored_and_nested_records_are_flattened(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    nested = {k: v for k, v in _complete().items() if not k.startswith("attack/")}
    nested["attack"] = {ATTACK: {"acc": 0.25}}
    write_job(root / "0", nested, overrides=["seed=0"])
    write_job(root / "analysis" / "stale", _complete(seed=5), overrides=["seed=5"])
    sweep = load_sweep(root, exclude=root / "analysis")
    assert list(sweep.complete["run_dir"]) == ["0"]
    assert sweep.complete.loc[0, f"attack/{ATTACK}/acc"] == pytest.approx(0.25)


def test_records_without_hydra_dirs_and_single_run_dirs_load(tmp_path: Path) -> None:
    run = tmp_path / "single"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(planted_runs()[0].record))
    sweep = load_sweep(run)
    assert list(sweep.complete["run_dir"]) == ["."] and sweep.problems == []


def test_empty_and_missing_directories_explain_what_a_sweep_holds(tmp_path: Path) -> None:
    empty = load_sweep(tmp_path)
    assert empty.complete.empty
    message = describe_empty(empty)
    assert "nothing to analyse" in message and "metrics.json" in message and ".hydra" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sweep(tmp_path / "nope")
    assert issubclass(NoRunsError, RuntimeError)


def test_half_finished_sweep_message_lists_what_was_found(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_job(root / "0", _complete() | {"status": "failed", "error": "boom"}, overrides=["seed=0"])
    write_job(root / "1", None, overrides=["seed=1"])
    message = describe_empty(load_sweep(root))
    assert (
        "1 failed" in message
        and "1 missing" in message
        and "boom" in message
        and "2 job directories" in message
    )


def test_same_config_hash_is_a_duplicate_whatever_the_overrides(tmp_path: Path) -> None:
    root = tmp_path / "parent"
    write_job(
        root / "a" / "0",
        _complete() | {"config/hash": "h1", "run/finished": "2026-01-01"},
        overrides=["seed=0"],
    )
    write_job(
        root / "b" / "0", _complete() | {"config/hash": "h1", "run/finished": "2026-01-02"}, overrides=[]
    )
    write_job(
        root / "b" / "1",
        _complete() | {"config/hash": "h2", "run/finished": "2026-01-02"},
        overrides=["seed=0"],
    )
    sweep = load_sweep(root)
    assert sorted(sweep.complete["run_dir"]) == ["b/0", "b/1"]  # h2 differs in config (e.g. attack eps)
    assert [(p.run_dir, p.kind) for p in sweep.problems] == [("a/0", "duplicate")]


def test_non_numeric_result_values_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    write_job(root / "0", _complete(seed=0), overrides=["seed=0"])
    write_job(root / "1", _complete(seed=1, **{f"attack/{ATTACK}/acc": "oops"}), overrides=["seed=1"])
    write_job(
        root / "2",
        _complete(seed=2, **{"metric/fisher/not_applicable": "no rule for Foo"}),
        overrides=["seed=2"],
    )
    sweep = load_sweep(root)
    problems = [(p.run_dir, p.kind, p.detail) for p in sweep.problems if p.kind == "non_numeric"]
    assert problems == [
        ("1", "non_numeric", f"is not a number (read as missing): attack/{ATTACK}/acc='oops'")
    ]
    values = sweep.complete.set_index("run_dir")[f"attack/{ATTACK}/acc"]
    assert values["0"] == 0.3 and values["1"] != values["1"]  # NaN, and said so


def test_non_numeric_per_sample_values_warn(tmp_path: Path) -> None:
    from robustdiag.analysis.per_sample import load_per_sample

    path = tmp_path / "per_sample.csv"
    path.write_text("index,y,correct,metric/fisher/lambda\n0,1,True,0.5\n1,0,False,abc\n")
    with pytest.warns(
        UserWarning, match=r"metric/fisher/lambda has 1 value\(s\) that are not numbers \(e.g. 'abc'\)"
    ):
        table = load_per_sample(path)
    assert table is not None and table["metric/fisher/lambda"].tolist()[0] == 0.5
    assert table["metric/fisher/lambda"].isna().tolist() == [False, True]
    path.write_text("")  # truncated to nothing
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_per_sample(path) is None
