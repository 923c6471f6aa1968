"""Real multiruns through Slurm on the local single-node cluster (slurm/local_cluster.sh).

Two apps: ``tiny_app`` (a stand-in with the same sweep contracts: epoch checkpoints in a cache,
``resumed from epoch <k>``, complete records skipped) checks the plumbing in seconds; the real
``robustdiag`` app checks the whole thing, then ``robustdiag-analyze`` on the sweep dir.
Routes: Hydra's submitit launcher (``hydra/launcher=slurm_local``) and the plain job array
(``slurm/sweep_array.sh``). Killed, preempted and timed-out jobs must resume on relaunch/requeue.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from robustdiag.config import PACKAGE_CONFIG_DIR

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TINY_APP = Path(__file__).resolve().parent / "tiny_app" / "app.py"
VENV_BIN = Path(sys.executable).parent
ROBUSTDIAG = VENV_BIN / "robustdiag"
ANALYZE = VENV_BIN / "robustdiag-analyze"
RESUMED = re.compile(r"resumed from epoch (\d+)")

# The real app's grid point for these tests: timm's test_resnet on small synthetic images, on one CPU.
REAL_APP_POINT = [
    "data=synthetic", "data.n_train=512", "data.n_test=200", "data.image_size=16",
    "model=tiny_resnet", "eval.n_samples=100", "device=cpu",
]  # fmt: skip


# --------------------------------------------------------------------------- helpers


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.3 s; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.3)


def record(job_dir: Path) -> dict:
    """The run record of a job dir ({} while there is none)."""
    try:
        return json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def logs_of(sweep_dir: Path, job: str) -> str:
    """Everything a grid point logged: Hydra's job log and the Slurm stdout/stderr files (submitit
    names them <array>_<job>/ for arrays and <job id>/ for a single job; sweep_array.sh <array>_<job>.out)."""
    submitit = [
        p for p in (sweep_dir / ".submitit").glob("*/*_log.*")
        if p.parent.name.endswith(f"_{job}") or (job == "0" and p.parent.name.isdigit())
    ]  # fmt: skip
    files = [*(sweep_dir / job).glob("*.log"), *submitit, *(sweep_dir / ".slurm").glob(f"*_{job}.out")]
    return "\n".join(p.read_text(errors="replace") for p in files)


def resumed_epochs(text: str) -> list[int]:
    return [int(k) for k in RESUMED.findall(text)]


def slurm_jobs(env: dict[str, str], name: str) -> list[str]:
    """Ids of this user's jobs called ``name`` still in the queue (array tasks one per line)."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%i"], env=env, capture_output=True, text=True
    ).stdout
    return out.split()


def crash_job(env: dict[str, str], name: str) -> None:
    """SIGKILL the run of the Slurm job called ``name`` (what the OOM killer or a node failure does),
    so it stops at once, unlike ``scancel``, after which a submitit job trains on until KillWait."""
    job, node = subprocess.run(
        ["squeue", "-h", "-n", name, "-t", "RUNNING", "-o", "%i %N"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    listing = subprocess.run(
        ["scontrol", "listpids", f"{job}.0", node], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()[1:]
    pids = [
        int(line.split()[0]) for line in listing if line.split()[3] != "-"
    ]  # the step's task, not srun's helpers
    assert pids, f"no task of job {job} found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def tiny_multirun(cwd: Path, env: dict[str, str], *overrides: str) -> list[str]:
    return [
        sys.executable, str(TINY_APP), "-m", f"hydra.searchpath=[file://{PACKAGE_CONFIG_DIR}]",
        "hydra/launcher=slurm_local", f"cache_dir={cwd / 'cache'}", *overrides,
    ]  # fmt: skip


def only_sweep_dir(cwd: Path) -> Path:
    (sweep,) = [p for p in (cwd / "multirun").glob("*/*") if p.is_dir()]
    return sweep


# --------------------------------------------------------------------------- submitit launcher, tiny app


def test_tiny_multirun_through_submitit(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    proc = subprocess.run(
        tiny_multirun(tmp_path, slurm_env, "x=1,2", "epoch_s=0.2", "hydra.launcher.name=rd-tiny-a"),
        cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    records = [record(sweep / str(i)) for i in range(2)]
    assert [r.get("status") for r in records] == ["complete", "complete"]
    assert sorted(r["x"] for r in records) == [1, 2]
    # both jobs ran under Slurm and wrote into the sweep dir the launcher chose
    assert len(list((sweep / ".submitit").glob("*_*/*_result.pkl"))) == 2


@pytest.mark.parametrize("preset", ["slurm", "slurm_gpu"])
def test_every_launcher_preset_submits_on_the_real_cluster(
    tmp_path: Path, slurm_env: dict[str, str], preset: str
) -> None:
    """The user-facing presets as written (not only slurm_local), shrunk to the test node's size: before,
    an escaped shell variable in their setup lines crashed them wherever sbatch existed."""
    cmd = [
        sys.executable, str(TINY_APP), "-m", f"hydra.searchpath=[file://{PACKAGE_CONFIG_DIR}]",
        f"hydra/launcher={preset}", f"cache_dir={tmp_path / 'cache'}", "x=3", "epoch_s=0.1",
        "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=5", "hydra.launcher.gpus_per_node=null", f"hydra.launcher.name=rd-{preset}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    assert record(sweep / "0").get("status") == "complete"
    (script,) = list((sweep / ".submitit").glob("*/*_submission.sh"))
    assert (
        "#SBATCH --requeue" in script.read_text() and f"#SBATCH --job-name=rd-{preset}" in script.read_text()
    )


def test_tiny_killed_sweep_resumes_on_relaunch_into_the_same_dir(
    tmp_path: Path, slurm_env: dict[str, str]
) -> None:
    name = "rd-tiny-kill"
    # point 0 finishes quickly; point 1 is cancelled after its first epoch checkpoint (submitit jobs
    # ignore SIGTERM, so it trains on until Slurm's SIGKILL KillWait=5 s later)
    cmd = tiny_multirun(
        tmp_path, slurm_env, "x=5", "epochs=1,30", "epoch_s=0.5", f"hydra.launcher.name={name}"
    )
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(
            lambda: (tmp_path / "multirun").exists() and any((tmp_path / "multirun").glob("*/*/1")),
            60,
            "job dir 1",
        )
        sweep = only_sweep_dir(tmp_path)
        wait_for(lambda: record(sweep / "0").get("status") == "complete", 60, "point 0 to complete")
        wait_for(lambda: "epoch 1 done" in logs_of(sweep, "1"), 60, "point 1's first epoch checkpoint")
        subprocess.run(["scancel", "-n", name], env=slurm_env, check=True)
        out, _ = launcher.communicate(timeout=120)  # submitit sees the cancelled job and gives up
    finally:
        launcher.kill()
    assert launcher.returncode != 0, out[-3000:]
    assert record(sweep / "1").get("status") != "complete"

    relaunch = subprocess.run(
        [*cmd, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert record(sweep / "1").get("status") == "complete"
    assert "holds a complete record" in logs_of(sweep, "0")  # the complete point was skipped
    resumed = resumed_epochs(logs_of(sweep, "1"))
    assert resumed and resumed[-1] >= 1, logs_of(sweep, "1")[-3000:]


def test_tiny_preempted_job_requeues_and_resumes(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    name = "rd-tiny-preempt"
    cmd = tiny_multirun(tmp_path, slurm_env, "x=9", "epochs=6", "epoch_s=1", f"hydra.launcher.name={name}")
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: any((tmp_path / "multirun").glob("*/*/0")), 60, "job dir 0")
        sweep = only_sweep_dir(tmp_path)
        wait_for(lambda: "epoch 1 done" in logs_of(sweep, "0"), 60, "the first epoch checkpoint")
        # USR2 is what Slurm sends submitit jobs before the time limit or on preemption (--signal)
        subprocess.run(["scancel", "--signal=USR2", "-n", name], env=slurm_env, check=True)
        out, _ = launcher.communicate(timeout=240)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, out[-3000:]
    assert record(sweep / "0").get("status") == "complete"
    log = logs_of(sweep, "0")
    assert "Requeued job" in log or "requeue" in log.lower(), log[-3000:]
    assert resumed_epochs(log) and resumed_epochs(log)[-1] >= 1, log[-3000:]


# --------------------------------------------------------------------------- sbatch job array, tiny app


def test_tiny_sweep_array_requeues_resumes_and_fills_in(tmp_path: Path, slurm_env: dict[str, str]) -> None:
    env = {
        **slurm_env,
        "ROBUSTDIAG_CMD": f"{sys.executable} {TINY_APP}",
        "ROBUSTDIAG_PYTHON": sys.executable,
        "ROBUSTDIAG_CONFIG_DIR": str(TINY_APP.parent / "conf"),
    }
    script = str(REPO / "slurm" / "sweep_array.sh")
    overrides = ["x=1,2", "epochs=5", "epoch_s=1", f"cache_dir={tmp_path / 'cache'}"]
    sub = subprocess.run(
        [script, "--parallel", "2", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sub.returncode == 0, sub.stderr
    sweep = Path(sub.stdout.strip().splitlines()[-1])
    assert (sweep / "grid.txt").read_text().splitlines() == [
        f"x={x} epochs=5 epoch_s=1 cache_dir={tmp_path / 'cache'}" for x in (1, 2)
    ]
    array_id = re.search(r"submitted job array (\d+)", sub.stderr).group(1)
    wait_for(lambda: "epoch 1 done" in logs_of(sweep, "0"), 60, "task 0's first epoch checkpoint")
    # what Slurm sends the batch script 120 s before the time limit: array_job.sbatch requeues itself
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{array_id}_0"], env=env, check=True)
    wait_for(
        lambda: all(record(sweep / str(i)).get("status") == "complete" for i in range(2)), 180, "both tasks"
    )
    log = logs_of(sweep, "0")
    assert "requeueing" in log and "restart 1" in log, log[-3000:]
    assert resumed_epochs(log) and resumed_epochs(log)[-1] >= 1, log[-3000:]

    again = subprocess.run(
        [script, "--sweep-dir", str(sweep), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "nothing to submit" in again.stdout
    changed = subprocess.run(
        [script, "--sweep-dir", str(sweep), "x=1,2,3"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert changed.returncode != 0 and "different grid" in changed.stderr


# --------------------------------------------------------------------------- the real app


@pytest.fixture(scope="module")
def real_app() -> list[str]:
    """Extra overrides for the robustdiag app; skip (with the reason) when it cannot compose the point."""
    if not ROBUSTDIAG.exists():
        pytest.skip(f"{ROBUSTDIAG} not found: pip install -e .")
    probe = subprocess.run(
        [str(ROBUSTDIAG), *REAL_APP_POINT, "--cfg", "hydra", "-p", "hydra.callbacks"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"robustdiag cannot compose {REAL_APP_POINT}: {probe.stderr.strip()[-500:]}")
    # the test runs robustdiag-analyze itself: the end-of-sweep summary need not analyse too
    return ["hydra.callbacks.summary.analyze=false"] if "summary:" in probe.stdout else []


def real_multirun(cwd: Path, extra: list[str], *overrides: str) -> list[str]:
    return [
        str(ROBUSTDIAG), "-m", "hydra/launcher=slurm_local", f"cache_dir={cwd / 'cache'}",
        *REAL_APP_POINT, *extra, *overrides,
    ]  # fmt: skip


def test_real_multirun_through_slurm_then_analyze(
    tmp_path: Path, slurm_env: dict[str, str], real_app: list[str]
) -> None:
    cmd = real_multirun(
        tmp_path,
        real_app,
        "seed=0,1,2",
        "train.epochs=3",
        "metric=[fisher]",
        "attack=[fgsm]",
        "hydra.launcher.name=rd-real",
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_sweep_dir(tmp_path)
    records = [record(sweep / str(i)) for i in range(3)]
    assert [r.get("status") for r in records] == ["complete"] * 3, records
    assert sorted(r["seed"] for r in records) == [0, 1, 2]
    assert all("attack/fgsm/acc" in r for r in records)

    analyze = subprocess.run(
        [str(ANALYZE), str(sweep), "--no-wandb", "--bootstrap", "200"],
        cwd=tmp_path, env=slurm_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert analyze.returncode == 0, analyze.stderr[-3000:]
    out = sweep / "analysis"
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3  # header + one row per grid point
    assert (out / "correlations.csv").read_text().strip(), "empty correlations.csv"
    assert (out / "report.md").exists()


def test_real_killed_point_resumes_on_relaunch(
    tmp_path: Path, slurm_env: dict[str, str], real_app: list[str]
) -> None:
    name = "rd-real-kill"
    cmd = real_multirun(tmp_path, real_app, "seed=3", "train.epochs=6", f"hydra.launcher.name={name}")
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path, env=slurm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ckpts = tmp_path / "cache" / "checkpoints"
    try:
        wait_for(
            lambda: ckpts.exists() and any(ckpts.rglob("last.pt")),
            300,
            "the first epoch checkpoint",
        )
        sweep = only_sweep_dir(tmp_path)
        crash_job(slurm_env, name)
        out, _ = launcher.communicate(timeout=120)  # submitit sees the job end without a result
    finally:
        launcher.kill()
    assert launcher.returncode != 0, out[-3000:]
    assert record(sweep / "0").get("status") != "complete", "the run finished before it could be killed"

    relaunch = subprocess.run(
        [*cmd, f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert record(sweep / "0").get("status") == "complete"
    resumed = resumed_epochs(logs_of(sweep, "0"))
    assert resumed and resumed[-1] >= 1, logs_of(sweep, "0")[-3000:]
