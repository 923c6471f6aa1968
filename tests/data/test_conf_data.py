"""Every conf/data preset instantiates, and the presets load real (local) data end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from robustdiag.config import PACKAGE_CONFIG_DIR

CONF_DATA = Path(PACKAGE_CONFIG_DIR) / "data"
PRESETS = sorted(p.stem for p in CONF_DATA.glob("*.yaml"))


def _preset(name: str, **overrides: object):
    cfg = OmegaConf.merge(OmegaConf.load(CONF_DATA / f"{name}.yaml"), overrides)
    return cfg, instantiate(cfg)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_instantiates_with_its_name(name: str) -> None:
    cfg, source = _preset(name)
    assert cfg.name == name and source.name == name
    assert callable(source.load)
    header = (CONF_DATA / f"{name}.yaml").read_text().splitlines()[0]
    assert header.startswith("# ")


def test_expected_presets_exist() -> None:
    assert {"digits", "synthetic", "cifar10", "cifar100", "tiny_imagenet", "imagenet"} <= set(PRESETS)
    assert len(PRESETS) >= 7  # plus one medical set


def test_digits_and_synthetic_presets_load(tmp_path: Path) -> None:
    _, digits = _preset("digits")
    assert digits.load(tmp_path).num_classes == 10
    _, synthetic = _preset("synthetic", n_train=40, n_test=20, image_size=8)
    bundle = synthetic.load(tmp_path)
    assert bundle.train.images.shape == (40, 3, 8, 8) and bundle.num_classes == 10


def test_cifar_presets_load_pickle_folders(cifar10_folder, cifar100_folder, tmp_path: Path) -> None:
    folder, splits = cifar10_folder
    _, source = _preset("cifar10", path=str(folder))
    bundle = source.load(tmp_path / "cache")
    assert bundle.num_classes == 10 and bundle.image_size == 32 and len(bundle.train) == 20
    assert torch.equal(bundle.test.labels, torch.from_numpy(splits["test"].labels))
    folder100, _ = cifar100_folder
    _, source100 = _preset("cifar100", path=str(folder100))
    assert source100.load(tmp_path / "cache").num_classes == 100
