"""The real config tree: every option of every group composes, and its objects instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from robustdiag.config import PACKAGE_CONFIG_DIR
from robustdiag.grid_point import selected
from robustdiag.launch import register_resolvers
from robustdiag.models import build_model
from robustdiag.types import Attack, Metric, Shift

CONF = Path(PACKAGE_CONFIG_DIR)
register_resolvers()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(CONF.parent)  # what Hydra sets when it runs the app
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def resolved(cfg: DictConfig) -> dict:
    """The app's config (without the hydra node), fully resolved."""
    app = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(app, resolve=True)


def test_default_config_composes_and_resolves() -> None:
    cfg = compose_with()
    values = resolved(cfg)
    assert values["cache_dir"].endswith(".cache")
    assert values["data"]["_target_"] == "robustdiag.data.Digits"
    assert values["model"]["name"] == "test_resnet"
    assert cfg.train.name == "generalise"
    assert selected(cfg.shift) == {} and selected(cfg.attack) == {} and selected(cfg.metric) == {}


@pytest.mark.parametrize("option", options("data"))
def test_every_data_option_instantiates(option: str) -> None:
    source = instantiate(compose_with(f"data={option}").data)
    assert callable(source.load)


@pytest.mark.parametrize("option", options("train"))
def test_every_training_regime_instantiates(option: str) -> None:
    regime = instantiate(compose_with(f"train={option}").train)
    assert regime.name == option
    if regime.evaluate_only:  # train=none: nothing to optimise
        assert option == "none" and regime.epochs == 0 and regime.optimizer is None
        return
    optimizer = regime.optimizer([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert 0.0 <= regime.schedule(0.5) <= 1.0
    assert regime.name == option


def test_specialising_config_applies_to_digits_only() -> None:
    assert compose_with("train=generalise", "data=digits").train.augment.flip is False
    assert compose_with("train=generalise", "data=synthetic").train.augment.flip is True


@pytest.mark.parametrize("option", options("model"))
def test_every_model_option_builds(option: str) -> None:
    cfg = compose_with(f"model={option}")
    if option in ("custom", "torchscript", "robustbench"):  # need the user's callable / file / model name
        from robustdiag.errors import ConfigError
        from robustdiag.models.sources import model_spec

        required = {"custom": "model._target_ is required", "torchscript": "model.checkpoint=<file>"}
        with pytest.raises(ConfigError, match=required.get(option, "model.name is required")):
            model_spec(cfg.model)
        return
    size = 224 if option == "vit_b16" else 32
    model = build_model(
        cfg.model.name, num_classes=10, in_chans=3, img_size=size, mean=[0.5] * 3, std=[0.25] * 3,
        small_input_stem=cfg.model.small_input_stem, kwargs=OmegaConf.to_container(cfg.model.kwargs),
    )  # fmt: skip
    assert model.num_classes == 10


def test_any_timm_name_without_a_yaml_file() -> None:
    cfg = compose_with("model.name=convnext_atto")
    assert cfg.model.name == "convnext_atto"
    build_model(cfg.model.name, num_classes=3, in_chans=3, img_size=32, mean=[0.5] * 3, std=[0.2] * 3)


@pytest.mark.parametrize("group", ["shift", "attack", "metric"])
def test_every_multiselect_option_instantiates(group: str) -> None:
    for option in options(group):
        if option == "autoattack":
            pytest.importorskip("pyautoattack")
        cfg = compose_with(f"{group}={option}")
        nodes = selected(cfg[group])
        if option in ("none", "cifar10c_files", "cifar10_1", "test_folder"):
            continue  # none adds nothing; the file-backed shifts need a folder (tested in tests/shifts)
        assert nodes, f"{group}={option} selected nothing"
        protocol = {"shift": Shift, "attack": Attack, "metric": Metric}[group]
        for name, node in nodes.items():
            obj = instantiate(node)
            assert isinstance(obj, protocol), f"{group}.{name} builds a {type(obj).__name__}"
            assert obj.name == name, (
                f"{group}.{name} records under {obj.name!r}: the record key must be the option's"
            )


def test_multiselect_lists_and_severities() -> None:
    cfg = compose_with(
        "shift=[gaussian_noise,contrast]", "shift.severities=[1,3,5]", "attack=[pgd_linf,fgsm]"
    )
    assert set(selected(cfg.shift)) == {"gaussian_noise", "contrast"}
    assert list(instantiate(cfg.shift.contrast).severities) == [1, 3, 5]
    assert set(selected(cfg.attack)) == {"pgd_linf", "fgsm"}


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_composes(option: str) -> None:
    cfg = compose_with(f"experiment={option}")
    resolved(cfg)
    assert cfg.hydra.sweeper.params, f"experiment={option} defines no grid"


def test_unknown_group_option_lists_valid_ones() -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="digits"):
        compose_with("data=mnist_typo")


@pytest.mark.parametrize("launcher", ["slurm", "slurm_gpu", "slurm_local", "parallel"])
def test_launcher_presets_survive_the_plugins_second_resolution(launcher: str) -> None:
    """The submitit plugin resolves hydra.launcher, then resolves the result again: an escaped
    ${VAR} in a preset becomes an interpolation the second time (UnsupportedInterpolationType)."""
    cfg = compose_with(f"hydra/launcher={launcher}")
    once = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    OmegaConf.to_container(OmegaConf.create(once), resolve=True)  # must not raise


def test_thread_policy_divides_the_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustdiag.run import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
        assert set_threads(None, 2) == 4 == torch.get_num_threads()
        assert set_threads(3, 2) == 3
        with pytest.raises(ValueError, match="positive integer or null"):
            set_threads(0, 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("shift=gaussian_noise shift.severities=[3,3]", "repeat [3]"),
        ("attack=pgd_linf attack.pgd_linf.eps=1", "out of range for an L∞ attack"),
        ("train.stop_train_acc=15", "fraction in (0, 1]"),
        ("train=memorise train.optimizer.lr=nan", "train.optimizer.lr=nan must be a finite number"),
    ],
)
def test_nonsense_values_are_refused_with_the_key(override: str, message: str) -> None:
    cfg = compose_with(*override.split())
    with pytest.raises(Exception) as error:
        for group in ("shift", "attack"):
            for node in selected(cfg.get(group)).values():
                instantiate(node)
        instantiate(cfg.train)
    assert message in str(error.value) or message in str(error.value.__cause__)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.batch_size=0", "eval.batch_size=0 must be an integer >= 1"),
        ("seed=1.5", "seed=1.5 must be an integer"),
    ],
)
def test_bad_eval_settings_and_seeds_are_refused_before_training(override: str, message: str) -> None:
    from robustdiag.grid_point import check_eval_settings

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_eval_settings(compose_with(override))


HELP = CONF / "hydra" / "help" / "robustdiag.yaml"
USER_GROUPS = ("data", "train", "shift", "attack", "metric", "logger", "experiment", "hparams_search")


def test_help_lists_every_user_option_and_no_internal_group() -> None:
    text = str(OmegaConf.to_container(OmegaConf.load(HELP))["template"])
    for group in USER_GROUPS:
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{group}:"))
        for option in options(group):
            if option in ("none",) or option.startswith(("path_separation_", "reproduce_")):
                continue  # named as families in the help
            if group == "shift" and option not in (
                "gaussian_noise",
                "contrast",
                "cifar10c_all",
                "cifar10c_files",
                "adversarial",
            ):
                continue  # the 15 corruptions are summarised by "..."
            assert option in text, f"{group}={option} missing from --help"
        assert line
    assert "train_data" not in text and "claims:" not in text


def test_every_help_example_composes() -> None:
    footer = OmegaConf.load(HELP).footer
    commands, current = [], ""
    for line in footer.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("robustdiag"):
            current = line
        elif current and line:
            current += " " + line
        if current and not current.endswith("\\"):
            if current.startswith("robustdiag"):
                commands.append(current)
            current = ""
    assert len(commands) >= 6
    for command in commands:
        if "--config-dir" in command:  # the user's own folder: tests/test_packaging.py runs that route
            continue
        overrides = [
            token.split(",")[0] if "=" in token and "[" not in token else token
            for token in command.replace("\\", " ").split()[1:]
            if token not in ("-m", "--cfg", "job", "...")
        ]
        compose_with(*overrides)  # must not raise


def test_model_presets_build_a_model_spec_and_plain_user_blocks_still_work() -> None:
    from robustdiag.grid_point import ModelSpec, model_spec

    spec = model_spec(compose_with("model=vit_tiny").model)
    assert isinstance(spec, ModelSpec) and spec.name.startswith("vit_tiny") and isinstance(spec.kwargs, dict)
    plain = OmegaConf.create({"name": "resnet18", "small_input_stem": None, "kwargs": {"drop_rate": 0.1}})
    assert model_spec(plain) == ModelSpec(
        "resnet18", None, {"drop_rate": 0.1}
    )  # a user's YAML without _target_
