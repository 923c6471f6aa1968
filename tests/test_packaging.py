"""robustdiag as a library: the configs ship inside the package, a built wheel works from any folder in a
fresh virtual environment, and users add their own config groups through Hydra's documented routes."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from robustdiag.config import PACKAGE_CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OFFLINE = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "ROBUSTDIAG_PROGRESS": "0",
    "PIP_NO_INDEX": "1",
}
TINY_RUN = (
    "train.epochs=1",
    "eval.n_samples=20",
    "eval.batch_size=20",
    "threads=1",
)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    full_env = {k: v for k, v in os.environ.items() if k not in ("ROBUSTDIAG_CONFIG_DIR", "PYTHONPATH")}
    return subprocess.run(
        cmd,
        cwd=cwd,
        env={**full_env, **OFFLINE, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_conf(folder: Path) -> Path:
    """A user's own config folder: a model preset and an experiment, as the docs describe."""
    (folder / "model").mkdir(parents=True)
    (folder / "experiment").mkdir()
    (folder / "model" / "my_net.yaml").write_text("name: resnet10t\nsmall_input_stem: true\nkwargs: {}\n")
    (folder / "experiment" / "my_study.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: my_net\nseed: 11\neval:\n  n_samples: 33\n"
    )
    return folder


def test_configs_are_package_data() -> None:
    """The configs live inside the package (one copy), so an installed robustdiag finds them."""
    conf = Path(PACKAGE_CONFIG_DIR)
    assert conf.parent == REPO / "src" / "robustdiag" and (conf / "config.yaml").is_file()
    assert not (REPO / "conf").exists(), "one copy of the configs: src/robustdiag/conf"
    groups = {p.name for p in conf.iterdir() if p.is_dir()}
    assert {"model", "data", "train", "attack", "shift", "metric", "experiment", "claims", "hydra"} <= groups


@pytest.mark.parametrize("route", ["--config-dir", "hydra.searchpath"])
def test_user_config_groups_through_hydra_routes(tmp_path: Path, route: str) -> None:
    """Users add presets and experiments with ``--config-dir`` or ``hydra.searchpath`` (Hydra's routes)."""
    conf = user_conf(tmp_path / "my_conf")
    where = ["--config-dir", str(conf)] if route == "--config-dir" else [f"hydra.searchpath=[file://{conf}]"]
    out = run([str(BIN / "robustdiag"), *where, "experiment=my_study", "--cfg", "job"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "name: resnet10t" in out.stdout and "seed: 11" in out.stdout and "n_samples: 33" in out.stdout


def test_wrong_config_dir_variable_says_what_to_do(tmp_path: Path) -> None:
    out = run([str(BIN / "robustdiag")], cwd=tmp_path, env={"ROBUSTDIAG_CONFIG_DIR": str(tmp_path)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "ROBUSTDIAG_CONFIG_DIR" in out.stderr and "--config-dir" in out.stderr


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_environment(tmp_path: Path) -> None:
    """``pip install`` of the built wheel (not editable) gives a working ``robustdiag`` from any folder.

    The fresh environment reuses the already-installed dependencies (a ``.pth`` line to this
    environment's site-packages) and installs the wheel itself without an index."""
    dist, source = tmp_path / "dist", tmp_path / "source"  # build from a copy: setuptools writes build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist)]
    built = run([*wheel_cmd, str(source)], cwd=tmp_path)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("robustdiag-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "robustdiag/conf/config.yaml" in names and "robustdiag/conf/model/resnet18.yaml" in names
    assert "robustdiag/conf/hydra/help/robustdiag.yaml" in names

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    assert run([base, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path).returncode == 0
    purelib = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    )  # the new environment's site-packages
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "_robustdiag_test_deps.pth").write_text("\n".join(deps) + "\n")
    installed = run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = str(venv / "bin" / "robustdiag")
    where = run(
        [str(venv / "bin" / "python"), "-c", "import robustdiag; print(robustdiag.__file__)"], elsewhere
    )
    assert where.stdout.strip().startswith(str(venv)), f"imported {where.stdout!r}, not the installed wheel"
    helped = run([exe, "--help"], elsewhere)
    assert helped.returncode == 0 and "robustdiag" in helped.stdout and "model" in helped.stdout
    job = run([exe, "--cfg", "job", "seed=5"], elsewhere)
    assert job.returncode == 0 and "seed: 5" in job.stdout, job.stderr[-2000:]
    version = run([exe, "--version"], elsewhere)
    assert str(venv) in version.stdout, version.stdout
    tiny = run(
        [exe, *TINY_RUN, f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"], elsewhere
    )
    assert tiny.returncode == 0, tiny.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    user = user_conf(tmp_path / "my_conf")
    composed = run([exe, "--config-dir", str(user), "experiment=my_study", "--cfg", "job"], elsewhere)
    assert composed.returncode == 0 and "name: resnet10t" in composed.stdout, composed.stderr[-2000:]
