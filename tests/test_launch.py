"""Sweep plumbing: sweep-dir token, grid counting/expansion, SweepGuard, job-array helpers."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from robustdiag import launch
from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.launch import (
    BASIC_SWEEPER_TARGET,
    SLURM_LAUNCHER_TARGET,
    GridDimension,
    GridTooLargeError,
    SlurmUnavailableError,
    SweepError,
    SweepGuard,
    check_grid_size,
    check_sbatch,
    expand_grid,
    format_index_ranges,
    grid_dimensions,
    grid_size,
    pending_points,
    write_sweep,
)

REPO = Path(__file__).resolve().parents[1]
TINY_APP = REPO / "tests" / "slurm" / "tiny_app" / "app.py"


@pytest.fixture
def fresh_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget this process's token so the test draws a new one."""
    monkeypatch.setattr(launch, "_token", None)
    monkeypatch.delenv(launch.SWEEP_TOKEN_ENV, raising=False)


@pytest.fixture
def clean_hydra() -> None:
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


# --------------------------------------------------------------------------- token / resolver


def test_sweep_token_is_stable_in_a_process_and_exported(fresh_token: None) -> None:
    token = launch.sweep_token()
    assert re.fullmatch(r"[0-9a-f]{6}", token)
    assert launch.sweep_token() == token
    assert os.environ[launch.SWEEP_TOKEN_ENV] == token


def test_sweep_token_is_inherited_from_the_environment(
    fresh_token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(launch.SWEEP_TOKEN_ENV, "abc123")
    assert launch.sweep_token() == "abc123"


def test_resolver_gives_the_token_everywhere_in_a_config(fresh_token: None) -> None:
    launch.register_resolvers()
    launch.register_resolvers()  # idempotent
    cfg = OmegaConf.create({"a": "multirun/x-${rd.unique:}", "b": "outputs/${rd.unique:}"})
    token = launch.sweep_token()
    assert cfg.a == f"multirun/x-{token}"
    assert cfg.b == f"outputs/{token}"


def test_tokens_differ_between_processes() -> None:
    env = {k: v for k, v in os.environ.items() if k != launch.SWEEP_TOKEN_ENV}
    code = "from robustdiag.launch import sweep_token; print(sweep_token())"
    tokens = {
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(tokens) == 2


# --------------------------------------------------------------------------- grid


def test_grid_of_command_line_sweeps() -> None:
    dims = grid_dimensions(["a=1,2,3", "b=x,y", "c=5"])
    assert dims == [GridDimension("a", 3, "command line"), GridDimension("b", 2, "command line")]
    assert grid_size(dims) == 6
    expected = [[f"a={a}", f"b={b}", "c=5"] for a, b in itertools.product("123", "xy")]
    assert expand_grid(["a=1,2,3", "b=x,y", "c=5"]) == expected


def test_grid_merges_sweeper_params_and_command_line_like_hydra() -> None:
    params = {"a": "1,2", "r": "range(0,4)", "m": "choice(p,q)"}
    task = ["a=5,6,7", "b=x,y"]  # a from the command line replaces the sweeper param, in its place
    dims = grid_dimensions(task, params)
    assert [(d.key, d.size, d.source) for d in dims] == [
        ("a", 3, "command line"),
        ("r", 4, "hydra.sweeper.params"),
        ("m", 2, "hydra.sweeper.params"),
        ("b", 2, "command line"),
    ]
    assert grid_size(dims) == 48
    grid = expand_grid(task, params)
    expected = [
        [f"a={a}", f"r={r}", f"m={m}", f"b={b}"]
        for a, r, m, b in itertools.product("567", "0123", "pq", "xy")
    ]
    assert grid == expected


def test_a_plain_override_removes_a_swept_param() -> None:
    assert grid_dimensions(["a=3"], {"a": "1,2"}) == []
    assert expand_grid(["a=3"], {"a": "1,2"}) == [["a=3"]]


def test_float_range_and_quoted_values() -> None:
    dims = grid_dimensions(["lr=range(0,1,0.25)", "name='a b',c"])
    assert [d.size for d in dims] == [4, 2]
    assert expand_grid(["name='a b',c"]) == [["name='a b'"], ["name=c"]]


def test_covering_points_contain_every_override() -> None:
    points = expand_grid(["a=1,2,3", "b=x,y", "c=range(0,4)"])
    cover = launch.covering_points(points)
    assert {o for p in cover for o in p} == {o for p in points for o in p}
    assert len(cover) <= 3 + 2 + 4 < len(points)


def test_interval_sweep_is_refused() -> None:
    with pytest.raises(SweepError, match=r"interval"):
        grid_dimensions(["lr=interval(0,1)"])


def test_max_jobs_message_names_size_dimensions_and_the_fix() -> None:
    dims = grid_dimensions(["seed=range(0,100)", "model=a,b,c"], {"q": "0.0,0.5"})
    with pytest.raises(GridTooLargeError) as err:
        check_grid_size(dims, max_jobs=500)
    msg = str(err.value)
    assert "would launch 600 jobs" in msg
    assert "more than launch.max_jobs=500" in msg
    assert "q (2, hydra.sweeper.params) × seed (100, command line) × model (3, command line)" in msg
    assert "launch.max_jobs=600" in msg
    check_grid_size(dims, max_jobs=600)  # at the limit: fine


def test_empty_grid_is_refused() -> None:
    with pytest.raises(SweepError, match="no grid points"):
        check_grid_size([GridDimension("model", 0, "command line")], max_jobs=10)


def test_glob_sweep_over_a_config_group(tmp_path: Path, clean_hydra: None) -> None:
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    for name in ("alpha", "beta", "gamma"):
        (conf / "model" / f"{name}.yaml").write_text(f"name: {name}\n")
    (conf / "config.yaml").write_text("defaults:\n  - model: alpha\n  - _self_\nseed: 0\n")
    cfg = launch.compose_multirun_config(conf, "config", ["model=glob(*,exclude=gamma)", "seed=0,1"])
    assert launch.grid_lines(cfg, max_jobs=None) == [
        ["model=alpha", "seed=0"],
        ["model=alpha", "seed=1"],
        ["model=beta", "seed=0"],
        ["model=beta", "seed=1"],
    ]


# --------------------------------------------------------------------------- launcher checks


def test_slurm_launcher_without_sbatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    with pytest.raises(SlurmUnavailableError) as err:
        check_sbatch(SLURM_LAUNCHER_TARGET, "slurm_gpu")
    msg = str(err.value)
    assert "hydra/launcher=slurm_gpu" in msg and "`sbatch` is not on PATH" in msg
    assert "module load" in msg and "hydra/launcher=joblib" in msg and "hydra/launcher=basic" in msg
    # other launchers do not need sbatch
    check_sbatch("hydra._internal.core_plugins.basic_launcher.BasicLauncher", "basic")


def test_slurm_launcher_with_sbatch_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.shutil, "which", lambda name: f"/usr/bin/{name}")
    check_sbatch(SLURM_LAUNCHER_TARGET, "slurm")


def _multirun_config(launcher: str, params: dict[str, str], task: list[str]) -> OmegaConf:
    return OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": launcher},
                "runtime": {"choices": {"hydra/launcher": "slurm"}},
                "sweeper": {"_target_": BASIC_SWEEPER_TARGET, "params": params},
                "overrides": {"task": task, "hydra": []},
            }
        }
    )


def test_sweep_guard_stops_the_process_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    guard = SweepGuard(max_jobs=5)
    cfg = _multirun_config(SLURM_LAUNCHER_TARGET, {"a": "1,2"}, ["b=1,2"])
    with pytest.raises(SystemExit, match="sbatch"):
        guard.on_multirun_start(cfg)
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    guard.on_multirun_start(_multirun_config(basic, {"a": "1,2"}, ["b=1,2"]))  # 4 jobs <= 5
    with pytest.raises(SystemExit, match=r"would launch 6 jobs, more than launch.max_jobs=5"):
        guard.on_multirun_start(_multirun_config(basic, {"a": "1,2"}, ["b=1,2,3"]))


def test_sweep_guard_ignores_optimising_sweepers() -> None:
    cfg = _multirun_config("x.Launcher", {"lr": "interval(0,1)"}, [])
    cfg.hydra.sweeper._target_ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    SweepGuard(max_jobs=1).check(cfg)


def test_sweep_guard_validates_max_jobs() -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        SweepGuard(max_jobs=0)


# --------------------------------------------------------------------------- job-array helpers


def test_format_index_ranges() -> None:
    assert format_index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_index_ranges([3]) == "3"
    assert format_index_ranges([]) == ""


def test_pending_points_reads_records(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"a": 1})
    write_sweep(tmp_path, cfg, [["a=1"], ["a=2"], ["a=3"], ["a=4"]])
    for i, status in [(0, "complete"), (1, "running"), (3, "complete")]:
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps({"status": status}))
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "metrics.json").write_text("{truncated")
    assert pending_points(tmp_path) == [1, 2]
    assert (tmp_path / "multirun.yaml").exists()


def test_write_sweep_refuses_a_different_grid(tmp_path: Path) -> None:
    cfg = OmegaConf.create({})
    write_sweep(tmp_path, cfg, [["a=1"], ["a='x y'"]])
    assert launch.read_grid(tmp_path) == [["a=1"], ["a='x y'"]]
    write_sweep(tmp_path, cfg, [["a=1"], ["a='x y'"]])  # same grid: fine
    with pytest.raises(SweepError, match="different grid"):
        write_sweep(tmp_path, cfg, [["a=1"]])


def test_pending_without_grid_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="grid.txt not found"):
        pending_points(tmp_path)


def test_expand_cli_prints_and_writes_the_grid(
    tmp_path: Path, clean_hydra: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "config.yaml").write_text(
        "defaults:\n  - _self_\n  - experiment: null\nx: 0\nseed: 0\n"
        "hydra:\n  sweep:\n    dir: ${oc.env:SWEEP_ROOT}/s-${rd.unique:}\n"
    )
    (conf / "experiment" / "grid.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      x: 1,2\n"
    )
    monkeypatch.setenv("SWEEP_ROOT", str(tmp_path / "multirun"))
    assert launch.main(["expand", "--config-dir", str(conf), "experiment=grid", "seed=0,1,2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"x={x} experiment=grid seed={s}" for x in (1, 2) for s in (0, 1, 2)
    ]  # params first, as Hydra

    assert (
        launch.main(
            ["expand", "--config-dir", str(conf), "--sweep-dir", "auto", "experiment=grid", "seed=0,1,2"]
        )
        == 0
    )
    sweep_dir = Path(capsys.readouterr().out.strip())
    assert sweep_dir.parent == tmp_path / "multirun" and sweep_dir.name == f"s-{launch.sweep_token()}"
    assert (sweep_dir / "grid.txt").read_text().splitlines() == lines

    assert (
        launch.main(["expand", "--config-dir", str(conf), "--max-jobs", "4", "experiment=grid", "seed=0,1,2"])
        == 2
    )
    assert "would launch 6 jobs, more than --max-jobs=4" in capsys.readouterr().err


def test_expand_uses_the_configured_sweep_guard_limit(
    clean_hydra: None, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = TINY_APP.parent / "conf"  # hydra.callbacks.sweep_guard.max_jobs: ${launch.max_jobs}
    assert launch.main(["expand", "--config-dir", str(conf), "x=1,2", "seed=0,1", "launch.max_jobs=3"]) == 2
    err = capsys.readouterr().err
    assert "would launch 4 jobs, more than launch.max_jobs=3" in err and "launch.max_jobs=4" in err
    assert launch.main(["expand", "--config-dir", str(conf), "x=1,2", "seed=0,1", "launch.max_jobs=4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_expand_reports_config_errors_without_a_traceback(
    clean_hydra: None, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = TINY_APP.parent / "conf"
    for bad in (
        "no_such_key=1",
        "no_such_key=1,2",
    ):  # a plain override fails to compose, a swept one per point
        assert launch.main(["expand", "--config-dir", str(conf), "x=1,2", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("robustdiag.launch: error:") and "no_such_key" in err


# --------------------------------------------------------------------------- through a real Hydra app


def _run_tiny_app(
    cwd: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != launch.SWEEP_TOKEN_ENV}
    return subprocess.run(
        [sys.executable, str(TINY_APP), "-m", f"hydra.searchpath=[file://{PACKAGE_CONFIG_DIR}]", *overrides],
        cwd=cwd,
        env={**base, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_app_refuses_an_oversized_grid_before_creating_anything(tmp_path: Path) -> None:
    proc = _run_tiny_app(tmp_path, "x=1,2,3", "seed=range(0,10)", "launch.max_jobs=20")
    assert proc.returncode != 0
    assert "would launch 30 jobs, more than launch.max_jobs=20" in proc.stderr
    assert "x (3, command line) × seed (10, command line)" in proc.stderr
    assert not (tmp_path / "multirun").exists()


def test_app_refuses_slurm_without_sbatch(tmp_path: Path) -> None:
    no_slurm_path = str(Path(sys.executable).parent)  # the venv's bin: python, no sbatch
    proc = _run_tiny_app(tmp_path, "hydra/launcher=slurm_local", "x=1,2", env={"PATH": no_slurm_path})
    assert proc.returncode != 0
    assert "hydra/launcher=slurm_local submits jobs to Slurm" in proc.stderr
    assert "`sbatch` is not on PATH" in proc.stderr
    assert not (tmp_path / "multirun").exists()


def test_two_sweeps_in_the_same_second_do_not_collide(tmp_path: Path) -> None:
    # The sweep dir has no timestamp at all here, so only the token tells the two sweeps apart.
    base = {k: v for k, v in os.environ.items() if k != launch.SWEEP_TOKEN_ENV}
    cmd = [sys.executable, str(TINY_APP), "-m", "hydra.sweep.dir=multirun/same-${rd.unique:}", "x=1,2"]
    procs = [
        subprocess.Popen(
            [*cmd, f"seed={i}"],
            cwd=tmp_path,
            env=base,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    sweeps = sorted((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 2
    for sweep in sweeps:
        records = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
        assert [r["status"] for r in records] == ["complete", "complete"]
        assert len({r["seed"] for r in records}) == 1  # each sweep holds only its own jobs
        assert sorted(r["x"] for r in records) == [1, 2]


def test_job_processes_resolve_the_launchers_sweep_dir(tmp_path: Path, fresh_token: None) -> None:
    """Remote launchers (submitit, joblib) pickle the master config; each job composes its own config
    and copies the master's resolver cache into it (Hydra's load_sweep_config). A job process with
    another token (and no inherited one) must still resolve the launcher's sweep dir."""
    launch.register_resolvers()
    master = OmegaConf.create({"dir": "multirun/t-${rd.unique:}"})
    expected = master.dir  # resolved (and cached) in the launching process
    (tmp_path / "master.pkl").write_bytes(pickle.dumps(master))
    code = (
        "import pickle, sys\n"
        "from omegaconf import OmegaConf\n"
        "from robustdiag.launch import register_resolvers, sweep_token\n"
        "register_resolvers()\n"
        "master = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "job = OmegaConf.create({'dir': 'multirun/t-${rd.unique:}'})\n"
        "OmegaConf.copy_cache(from_config=master, to_config=job)\n"
        "print(job.dir, sweep_token())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != launch.SWEEP_TOKEN_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "master.pkl")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    job_dir, job_token = out.split()
    assert job_dir == expected
    assert job_token != launch.sweep_token()  # the job drew its own token, yet agrees on the dir


# --------------------------------------------------------------------------- the robustdiag app's own config


def _run_robustdiag(
    cwd: Path, *overrides: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != launch.SWEEP_TOKEN_ENV}
    exe = Path(sys.executable).parent / "robustdiag"
    return subprocess.run(
        [str(exe), "-m", *overrides],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_robustdiag_refuses_oversized_grid_and_missing_sbatch(tmp_path: Path) -> None:
    """conf/config.yaml must configure the SweepGuard (hydra.callbacks.sweep_guard, launch.max_jobs)."""
    exe = Path(sys.executable).parent / "robustdiag"
    callbacks = subprocess.run(
        [str(exe), "--cfg", "hydra", "-p", "hydra.callbacks"], capture_output=True, text=True, timeout=120
    ).stdout
    # checked first: without the guard the sweeps below would really launch
    assert "robustdiag.launch.SweepGuard" in callbacks, "conf/config.yaml: no SweepGuard in hydra.callbacks"
    big = _run_robustdiag(tmp_path, "seed=range(0,501)")
    assert big.returncode != 0
    assert "would launch 501 jobs, more than launch.max_jobs=500" in big.stderr, big.stderr[-2000:]
    no_sbatch = _run_robustdiag(
        tmp_path, "hydra/launcher=slurm", "seed=0,1", env={"PATH": str(Path(sys.executable).parent)}
    )
    assert no_sbatch.returncode != 0
    assert "hydra/launcher=slurm submits jobs to Slurm" in no_sbatch.stderr, no_sbatch.stderr[-2000:]
    assert not (tmp_path / "multirun").exists()


def test_output_dirs_that_cannot_be_created_are_refused_before_hydra_tries(tmp_path: Path) -> None:
    from robustdiag.launch import SweepError, check_output_dir

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(SweepError, match="is a file, not a folder; choose another hydra.run.dir"):
        check_output_dir(str(a_file / "run"), "hydra.run.dir")
    with pytest.raises(SweepError, match="cannot be created"):
        check_output_dir("/proc/robustdiag-out/run", "hydra.sweep.dir")  # not creatable, even by root
    check_output_dir(str(tmp_path / "new" / "deep"), "hydra.run.dir")
    assert not (tmp_path / "new").exists()  # the trial leaves nothing behind
