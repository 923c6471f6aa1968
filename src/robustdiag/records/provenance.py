"""Where a number came from: command, commit, hardware, library versions."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import robustdiag

REPO_ROOT = Path(__file__).resolve().parents[3]


def git_commit(root: Path = REPO_ROOT) -> tuple[str, bool]:
    """(commit hash, dirty) of the checkout the code runs from; ("unknown", False) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | None = None) -> dict[str, str | int]:
    """A description of the machine and the device the run used."""
    from robustdiag import numba_support  # imports numba: only when a record is written

    info: dict[str, str | int] = {
        "run/hardware": f"{cpu_name()} ({os.cpu_count()} cores)",
        "run/device": str(device) if device is not None else "cpu",
        "run/torch": torch.__version__,
        "run/python": platform.python_version(),
        "run/host": platform.node(),
        "run/cpu_kernels": numba_support.describe(),
    }
    if device is not None and device.type == "cuda":
        info["run/hardware"] = f"{torch.cuda.get_device_name(device)} + {info['run/hardware']}"
    return info


COMMAND_ENV = "ROBUSTDIAG_COMMAND"  # the launching command, exported to Slurm and joblib workers


def user_command() -> str:
    """The command the user typed: the launcher's (exported in ``ROBUSTDIAG_COMMAND`` before jobs start,
    so Slurm and joblib workers do not record submitit's or loky's own argv), else this process's."""
    return os.environ.get(COMMAND_ENV) or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def provenance(device: torch.device | None = None) -> dict[str, str | int | bool]:
    """Command, commit, version and hardware, as flat record keys."""
    commit, dirty = git_commit()
    return {
        "run/command": user_command(),
        "run/commit": commit,
        "run/dirty": dirty,
        "run/version": robustdiag.__version__,
        "run/slurm_job": os.environ.get("SLURM_JOB_ID", ""),
        **hardware(device),
    }
