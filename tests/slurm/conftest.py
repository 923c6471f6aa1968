"""Fixtures for the Slurm integration tests: a running single-node cluster (slurm/local_cluster.sh).

The tests skip, with the command to run, when no cluster is up; ``ROBUSTDIAG_START_SLURM=1`` starts
one (and stops it afterwards), ``ROBUSTDIAG_SLURM_INSTALL=1`` also installs slurm-wlm and munge.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "slurm" / "local_cluster.sh"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
HOW_TO_START = (
    'apt-get install -y slurm-wlm munge && eval "$(slurm/local_cluster.sh start)", '
    "or set ROBUSTDIAG_START_SLURM=1 (and ROBUSTDIAG_SLURM_INSTALL=1 to install the packages)"
)


def _exports(output: str) -> dict[str, str]:
    """``export K=V`` lines of local_cluster.sh -> environment (``$PATH`` expanded)."""
    env: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env


def _cluster(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), cmd], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """Environment for subprocesses that talk to the local Slurm cluster."""
    started_here = False
    status = _cluster("status")
    if status.returncode != 0:
        if os.environ.get("ROBUSTDIAG_START_SLURM") != "1":
            pytest.skip(f"the local Slurm cluster is not running: {HOW_TO_START}")
        have_slurm = all(
            shutil.which(d, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") for d in DAEMONS
        )
        if not have_slurm and os.environ.get("ROBUSTDIAG_SLURM_INSTALL") != "1":
            pytest.skip(f"slurm-wlm/munge are not installed: {HOW_TO_START}")
        start = _cluster("start")
        if start.returncode != 0:
            pytest.fail(f"slurm/local_cluster.sh start failed:\n{start.stderr[-3000:]}")
        started_here = True
        status = _cluster("status")
    env = {**os.environ, **_exports(status.stdout), "OMP_NUM_THREADS": "1"}
    env.pop("ROBUSTDIAG_SWEEP_TOKEN", None)
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
    if sinfo.returncode != 0:
        pytest.skip(f"sinfo does not answer ({sinfo.stderr.strip()}): {HOW_TO_START}")
    yield env
    if started_here:
        _cluster("stop")
