"""The attack config group composes with Hydra (alone, several at once, none) and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from robustdiag.attacks import FGSM, PGD
from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.types import Attack

CONF = Path(PACKAGE_CONFIG_DIR)
OPTIONS = sorted(p.stem for p in (CONF / "attack").glob("*.yaml"))


@pytest.fixture
def primary(tmp_path: Path) -> Path:
    """A minimal primary config that takes the attack group from the repository's conf/."""
    (tmp_path / "primary.yaml").write_text(
        f"defaults:\n  - attack: none\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    return tmp_path


def compose_attacks(config_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose("primary", overrides=overrides)


def test_the_expected_options_exist() -> None:
    assert set(OPTIONS) >= {"none", "pgd_linf", "pgd_l2", "fgsm", "autoattack"}


def test_none_contributes_nothing(primary: Path) -> None:
    assert dict(compose_attacks(primary, []).attack) == {}
    assert dict(compose_attacks(primary, ["attack=[none]"]).attack) == {}


def test_two_attacks_compose_and_instantiate(primary: Path) -> None:
    cfg = compose_attacks(primary, ["attack=[pgd_linf,fgsm]", "attack.pgd_linf.steps=7"])
    assert list(cfg.attack) == ["pgd_linf", "fgsm"]
    attacks = {key: instantiate(node) for key, node in cfg.attack.items()}
    pgd, fgsm = attacks["pgd_linf"], attacks["fgsm"]
    assert isinstance(pgd, PGD) and isinstance(fgsm, FGSM)
    assert (pgd.norm, pgd.eps, pgd.step_size) == ("linf", 8 / 255, 2 / 255)
    assert (pgd.steps, pgd.random_start, pgd.restarts) == (7, True, 1)
    assert fgsm.eps == 8 / 255


@pytest.mark.parametrize("option", [o for o in OPTIONS if o != "none"])
def test_every_option_lands_at_its_name_and_builds(option: str, primary: Path) -> None:
    if option == "autoattack":
        pytest.importorskip("pyautoattack")
    cfg = compose_attacks(primary, [f"attack={option}"])
    assert list(cfg.attack) == [option]
    attack = instantiate(cfg.attack[option])
    assert isinstance(attack, Attack)
    assert attack.name == option  # the record key attack/<name>/acc matches the option name


def test_pgd_l2_defaults(primary: Path) -> None:
    pgd = instantiate(compose_attacks(primary, ["attack=pgd_l2"]).attack.pgd_l2)
    assert (pgd.norm, pgd.eps, pgd.steps) == ("l2", 0.5, 20)
    assert pgd.step_size == pytest.approx(2.5 * 0.5 / 20)


def test_a_bad_value_fails_at_instantiation_naming_the_key(primary: Path) -> None:
    cfg = compose_attacks(primary, ["attack=[pgd_linf]", "attack.pgd_linf.eps=8"])
    with pytest.raises(Exception, match=r"eps=8 .*pixel units"):
        instantiate(cfg.attack.pgd_linf)
