"""The record's corruption means: labelled with what they average; the published sets' headline keys only
when every corruption of the set ran at severities 1-5; procedural frost named in the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robustdiag.records import schema
from robustdiag.run import corruption_means
from robustdiag.shifts import ALL_19, EXTRA_4, STANDARD_15


def accs(names, severities=(1, 2, 3, 4, 5)) -> dict[tuple[str, int], float]:
    return {(n, s): 0.5 + 0.01 * i + 0.001 * s for i, n in enumerate(names) for s in severities}


def test_standard_15_at_all_severities_gets_the_headline_key() -> None:
    values = accs(STANDARD_15)
    out = corruption_means(values, procedural_frost=False)
    assert out[schema.benchmark_acc_key("standard15")] == pytest.approx(np.mean(list(values.values())))
    assert out[schema.MEAN_CORRUPTION_SET] == "standard15 x severities [1, 2, 3, 4, 5]"
    assert schema.benchmark_acc_key("extra4") not in out


def test_procedural_frost_is_named_in_the_key() -> None:
    out = corruption_means(accs(ALL_19), procedural_frost=True)
    assert (
        "shift/benchmark/standard15_procedural_frost_acc" in out
        and "shift/benchmark/standard15_acc" not in out
    )
    assert "shift/benchmark/extra4_acc" in out  # no frost among the extras
    assert out[schema.MEAN_CORRUPTION_SET].startswith("all19 x")


def test_partial_sets_get_no_headline_key() -> None:
    out = corruption_means(accs(STANDARD_15, severities=(1, 3, 5)), procedural_frost=False)
    assert not any(k.startswith("shift/benchmark/") for k in out)
    out = corruption_means(accs(["gaussian_noise", "contrast"]), procedural_frost=False)
    assert (
        out[schema.MEAN_CORRUPTION_SET]
        == "2 corruptions (gaussian_noise, contrast) x severities [1, 2, 3, 4, 5]"
    )
    assert set(EXTRA_4) <= set(ALL_19)


@pytest.mark.slow
def test_standard_15_runs_through_the_cli_with_photos(tmp_path: Path) -> None:
    """``shift=corruptions_15`` at all severities on a tiny model; with frost photos the headline key is the
    benchmark's, and the record says where frost came from."""
    photos = tmp_path / "frost"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((200, 240, 3)) * 255).astype(np.uint8)).save(photos / f"frost{i + 1}.png")
    env = {**os.environ, "ROBUSTDIAG_CACHE": str(tmp_path / "cache"), "ROBUSTDIAG_PROGRESS": "0",
           "WANDB_MODE": "disabled", "ROBUSTDIAG_FROST_IMAGES": str(photos)}  # fmt: skip
    out = subprocess.run(
        [str(Path(sys.executable).parent / "robustdiag"), "data=synthetic", "data.n_train=100", "data.n_test=100",
         "train.epochs=1", "eval.n_samples=20", "eval.batch_size=20", "shift=corruptions_15",
         f"hydra.run.dir={tmp_path / 'run'}", "threads=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    measured = [k for k in record if schema.parse_shift_acc_key(k)]
    assert len(measured) == 75
    assert record[schema.MEAN_CORRUPTION_SET] == "standard15 x severities [1, 2, 3, 4, 5]"
    assert record["shift/benchmark/standard15_acc"] == pytest.approx(record[schema.MEAN_CORRUPTION_ACC])
    assert record["shift_info/frost/source"] == f"images:{photos}"
