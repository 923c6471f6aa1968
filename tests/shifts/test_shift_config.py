"""The conf/shift group composes (single options, lists, the CIFAR-10-C preset) and every option instantiates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.shifts import CORRUPTIONS, AdversarialShift, CorruptionFiles, apply_shift
from robustdiag.types import Shift

CONF = Path(PACKAGE_CONFIG_DIR)
SHIFT_DIR = CONF / "shift"
OPTIONS = sorted(p.stem for p in SHIFT_DIR.glob("*.yaml"))
PRESETS = {
    "none",
    "cifar10c_all",
    "corruptions_15",
    "corruptions_extra",
    "corruptions_19",
}  # group files that select other options


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A minimal primary config that takes the shift group from the real conf/ via the search path."""
    folder = tmp_path_factory.mktemp("conf")
    (folder / "primary.yaml").write_text(
        "defaults:\n  - shift: none\n  - _self_\n"
        "shift:\n  severities: [1, 2, 3, 4, 5]\n"
        f"hydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    return folder


def compose_shifts(primary: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
        return compose("primary", overrides=list(overrides))


def shift_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    return {key: node for key, node in cfg.shift.items() if key != "severities"}


def test_none_contributes_nothing(primary: Path) -> None:
    cfg = compose_shifts(primary)
    assert list(cfg.shift.keys()) == ["severities"]
    assert list(cfg.keys()) == ["shift"]


def test_a_list_of_options_lands_under_their_names(primary: Path) -> None:
    cfg = compose_shifts(primary, "shift=[gaussian_noise,contrast]", "shift.severities=[1,3]")
    nodes = shift_nodes(cfg)
    assert sorted(nodes) == ["contrast", "gaussian_noise"]
    for name, node in nodes.items():
        shift = instantiate(node)
        assert isinstance(shift, CORRUPTIONS[name]) and shift.name == name and shift.severities == (1, 3)


@pytest.mark.parametrize("preset", ["cifar10c_all", "corruptions_19"])
def test_cifar10c_all_selects_every_computed_corruption(primary: Path, preset: str) -> None:
    cfg = compose_shifts(primary, f"shift={preset}")
    nodes = shift_nodes(cfg)
    assert sorted(nodes) == sorted(CORRUPTIONS)
    x = torch.rand(2, 3, 16, 16)
    for name, node in nodes.items():
        shift = instantiate(node)
        assert isinstance(shift, Shift) and shift.name == name
        assert shift(x, 5, generator=torch.Generator().manual_seed(0)).shape == x.shape


def test_published_sets_are_named_exactly(primary: Path) -> None:
    """corruptions_15 is RobustBench's list in its order; corruptions_extra the four extras."""
    from robustdiag.shifts import EXTRA_4, STANDARD_15

    assert list(shift_nodes(compose_shifts(primary, "shift=corruptions_15"))) == list(STANDARD_15)
    assert list(shift_nodes(compose_shifts(primary, "shift=corruptions_extra"))) == list(EXTRA_4)
    assert STANDARD_15 == (
        "shot_noise",
        "motion_blur",
        "snow",
        "pixelate",
        "gaussian_noise",
        "defocus_blur",
        "brightness",
        "fog",
        "zoom_blur",
        "frost",
        "glass_blur",
        "impulse_noise",
        "contrast",
        "jpeg_compression",
        "elastic_transform",
    )  # fmt: skip  (robustbench.data.CORRUPTIONS)


def test_preset_combines_with_other_options(primary: Path) -> None:
    nodes = shift_nodes(compose_shifts(primary, "shift=[cifar10c_all,adversarial]"))
    assert sorted(nodes) == sorted([*CORRUPTIONS, "adversarial"])


@pytest.mark.parametrize("option", sorted(set(OPTIONS) - PRESETS))
def test_every_option_composes_and_instantiates(option: str, primary: Path, tmp_path: Path) -> None:
    overrides = [f"shift={option}"]
    if option == "cifar10c_files":
        np.save(tmp_path / "gaussian_noise.npy", np.zeros((5, 4, 4, 3), dtype=np.uint8))
        overrides.append(f"shift.cifar10c_files.root={tmp_path}")
    if option == "cifar10_1":
        overrides.append(f"shift.cifar10_1.root={tmp_path}")
    if option == "test_folder":
        overrides.append(f"shift.test_folder.path={tmp_path}")
    nodes = shift_nodes(compose_shifts(primary, *overrides))
    assert list(nodes) == [option]
    node = nodes[option]
    assert "_target_" in node
    overrides_at_instantiation = {"attack": stand_in_attack} if option == "adversarial" else {}  # PGD: below
    shift = instantiate(node, **overrides_at_instantiation)
    assert isinstance(shift, Shift)
    assert len(shift.severities) >= 1


def stand_in_attack(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Leaves the inputs unchanged (the adversarial option's plumbing, not PGD, is under test here)."""
    return x


def test_adversarial_option_builds_the_configured_pgd(primary: Path) -> None:
    attacks = pytest.importorskip("robustdiag.attacks")
    node = shift_nodes(compose_shifts(primary, "shift=adversarial"))["adversarial"]
    assert node.attack._target_ == "robustdiag.attacks.PGD"
    assert (node.attack.norm, node.attack.steps, node.attack.random_start) == ("linf", 20, True)
    assert node.attack.eps == pytest.approx(8 / 255) and node.attack.step_size == pytest.approx(2 / 255)
    if not hasattr(attacks, "PGD"):
        pytest.skip("robustdiag.attacks.PGD is not available yet")
    shift = instantiate(node)
    assert isinstance(shift, AdversarialShift) and list(shift.severities) == [1]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    x_adv = apply_shift(shift, x, 1, seed=0, batch_size=2, y=y, model=model)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert torch.equal(x_adv, apply_shift(shift, x, 1, seed=0, batch_size=2, y=y, model=model))


def test_files_option_needs_a_root(primary: Path) -> None:
    node = shift_nodes(compose_shifts(primary, "shift=cifar10c_files"))["cifar10c_files"]
    with pytest.raises(Exception, match="root"):
        instantiate(node)
    shift = instantiate(node, root="/data/CIFAR-10-C")
    assert isinstance(shift, CorruptionFiles) and shift.name == "gaussian_noise"


def test_every_option_file_nests_under_its_own_name() -> None:
    for option in sorted(set(OPTIONS) - PRESETS):
        text = (SHIFT_DIR / f"{option}.yaml").read_text()
        assert f"\n{option}:\n" in text, option


def test_real_primary_config_selects_shifts() -> None:
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=["shift=[cifar10c_all,adversarial]", "shift.severities=[2]"])
    except Exception as error:  # the lead's config may be mid-edit; the group itself is tested above
        pytest.skip(f"conf/config.yaml does not compose here: {error}")
    nodes = shift_nodes(cfg)
    assert sorted(nodes) == sorted([*CORRUPTIONS, "adversarial"])
    assert list(instantiate(nodes["fog"]).severities) == [2]
