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
    info: dict[str, str | int] = {
        "run/hardware": f"{cpu_name()} ({os.cpu_count()} cores)",
        "run/device": str(device) if device is not None else "cpu",
        "run/torch": torch.__version__,
        "run/python": platform.python_version(),
        "run/host": platform.node(),
    }
    if device is not None and device.type == "cuda":
        info["run/hardware"] = f"{torch.cuda.get_device_name(device)} + {info['run/hardware']}"
    return info


def provenance(device: torch.device | None = None) -> dict[str, str | int | bool]:
    """Command, commit, version and hardware, as flat record keys."""
    commit, dirty = git_commit()
    return {
        "run/command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "run/commit": commit,
        "run/dirty": dirty,
        "run/version": robustdiag.__version__,
        "run/slurm_job": os.environ.get("SLURM_JOB_ID", ""),
        **hardware(device),
    }
