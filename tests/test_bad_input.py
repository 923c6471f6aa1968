"""Bad input, as tried by users: every row of docs/bad_inputs.md is executed or points at a test here.

The config table is the documentation and the test at once: each row's overrides are composed with the
real config, the grid point is built (nothing is loaded or trained) and the error must contain the
row's text. The second table names, for every other bad input, the test that covers it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.errors import ConfigError, describe
from robustdiag.grid_point import build_grid_point
from robustdiag.launch import register_resolvers

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_inputs.md"
register_resolvers()


def table_rows(heading: str) -> list[list[str]]:
    """The rows (cells without backticks) of the first Markdown table after ``heading`` in the doc."""
    text = DOC.read_text()
    section = text[text.index(heading) :]
    rows, started = [], False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append([c.strip("`") for c in cells])
        elif started:
            break
    return rows[1:]  # without the header


CONFIG_ROWS = table_rows("## Config values")
OTHER_ROWS = table_rows("## Files, models")


def compose_app(overrides: list[str], cache: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    if not any(o.startswith("cache_dir=") for o in overrides):
        overrides = [*overrides, f"cache_dir={cache}"]
    with initialize_config_dir(config_dir=PACKAGE_CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_the_doc_has_both_tables() -> None:
    assert len(CONFIG_ROWS) >= 25 and len(OTHER_ROWS) >= 10


@pytest.mark.parametrize(("overrides", "message"), CONFIG_ROWS, ids=[row[0] for row in CONFIG_ROWS])
def test_config_row_is_refused_with_its_message(overrides: str, message: str, tmp_path: Path) -> None:
    cfg = compose_app(shlex.split(overrides), tmp_path / "cache")
    with pytest.raises(ConfigError) as err:
        build_grid_point(cfg)
    text = describe(err.value)
    assert message in text, text
    assert "\n" not in text  # one line


@pytest.mark.parametrize("row", OTHER_ROWS, ids=[row[0] for row in OTHER_ROWS])
def test_every_other_row_names_a_test_that_exists(row: list[str]) -> None:
    path, _, name = row[2].partition("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{row[2]} does not exist"


def test_good_config_builds(tmp_path: Path) -> None:
    cfg = compose_app(
        ["attack=pgd_linf", "shift=[gaussian_noise,contrast]", "metric=[fisher,baselines]"], tmp_path
    )
    point = build_grid_point(cfg)
    assert list(point.attacks) == ["pgd_linf"] and [s.name for s in point.shifts] == [
        "gaussian_noise",
        "contrast",
    ]
    assert set(point.metrics) == {"fisher", "baselines"} and point.eval.n_samples == 1000


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_a_cache_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    cfg = compose_app(["cache_dir=/proc/robustdiag-cache"], tmp_path)  # not creatable, even by root
    with pytest.raises(ConfigError, match="cache_dir='/proc/robustdiag-cache' cannot be created"):
        build_grid_point(cfg)
