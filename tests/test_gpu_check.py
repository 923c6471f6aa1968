"""benchmarks/gpu_check.sh is safe to run anywhere: without CUDA it says so and exits 0; the summary reads
the benchmarks' JSON and judges each figure against its target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import summary  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this is the CPU dry run")
def test_gpu_check_without_cuda_exits_cleanly(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "gpu"), "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no CUDA GPU here" in out.stdout and not (tmp_path / "gpu").exists()


def test_summary_judges_each_figure(tmp_path: Path) -> None:
    (tmp_path / "bench_paths.json").write_text(json.dumps({"speed": {"ratio_path_over_forward": 1.8}}))
    (tmp_path / "bench_attack.json").write_text(json.dumps({"ratio_pgd_over_k_forward_backward": 1.5}))
    rows = {f.label: (v, verdict) for f, v, _, verdict in summary.evaluate(tmp_path, gpu=False)}
    assert rows["path separation: time / plain forward (resnet18, 32 px)"] == (1.8, "pass")
    assert rows["PGD-20: time / 20 x (forward + input-backward)"] == (1.5, "FAIL")
    assert rows["corruptions: median speed-up vs per-image reference"] == (None, "not run")
    gpu = {f.label: verdict for f, _, _, verdict in summary.evaluate(tmp_path, gpu=True)}
    assert gpu["path separation: time / plain forward (resnet18, 32 px)"] == "FAIL"  # GPU target 1.5
    assert summary.main([str(tmp_path)]) == 1


def test_summary_reads_the_committed_results() -> None:
    rows = summary.evaluate(REPO / "results" / "benchmarks", gpu=False)
    assert sum(v is not None for _, v, _, _ in rows) >= 6


def test_readme_benchmark_table_comes_from_the_committed_json() -> None:
    """The README's benchmark table is summary.py's rendering of results/benchmarks/*.json, nothing typed."""
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- benchmark-table:start -->", "<!-- benchmark-table:end -->"
    assert start in readme and end in readme
    table = readme.split(start)[1].split(end)[0].strip()
    assert table == summary.markdown(REPO / "results" / "benchmarks")
