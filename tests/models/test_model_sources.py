"""Model sources: timm (random / pretrained from the local HF cache / hf-hub:), weight files, the user's own
architecture, TorchScript and RobustBench folders; input conventions; and a clear error for each bad input."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from robustdiag.errors import ConfigError
from robustdiag.models import Classifier, ModelSpec, build_classifier
from robustdiag.models.sources import model_spec

DATA = {
    "num_classes": 10,
    "in_chans": 3,
    "img_size": 32,
    "data_mean": (0.4, 0.45, 0.5),
    "data_std": (0.2, 0.25, 0.3),
}
X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def build(spec: ModelSpec, **overrides) -> tuple[Classifier, dict]:
    built = build_classifier(spec, **{**DATA, **overrides})
    return built.model.eval(), built.facts


def trained_robustdiag_checkpoint(path: Path) -> Classifier:
    """A file shaped like robustdiag's own training checkpoint (CheckpointStore's last.pt)."""
    torch.manual_seed(1)
    model, _ = build(ModelSpec(name="resnet10t"))
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 3}, path)
    return model


class PlainNet(nn.Module):
    """A user's own small CIFAR-style network, unknown to timm."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, K)
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def plain_net(num_classes: int = 10, width: int = 8) -> PlainNet:
    return PlainNet(num_classes, width)


def features_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 16): no head


def fixed_size_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, num_classes))  # only 64 px inputs


def not_a_module(num_classes: int = 10) -> dict:
    return {"num_classes": num_classes}


FACTORY = f"{__name__}.plain_net"


# --- timm architectures with a weights file -------------------------------------------------------------


def test_robustdiag_checkpoint_reloads_to_identical_logits(tmp_path: Path) -> None:
    """Our own training checkpoint: nested under "model", "net." prefix, normalisation stored beside."""
    original = trained_robustdiag_checkpoint(tmp_path / "last.pt").eval()
    model, facts = build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "last.pt")))
    assert torch.equal(model(X), original(X))
    assert facts["model/source"] == "checkpoint" and facts["model/input_norm"] == "checkpoint"
    assert facts["model/stem"] == "adapted" and len(facts["model/checkpoint_sha256"]) == 64
    assert ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "last.pt")).display_name == "resnet10t@last"


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_state_dict_with_wrapper_prefix_and_data_normalisation(tmp_path: Path, fmt: str) -> None:
    """A plain state dict saved from DataParallel (``module.``), as .pt or .safetensors; the model's input
    normalisation defaults to the data's mean/std."""
    torch.manual_seed(2)
    net = timm.create_model("resnet10t", num_classes=10)  # torchvision-style stem, trained elsewhere at 32 px
    state = {f"module.{k}": v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / f"w.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    model, facts = build(ModelSpec(name="resnet10t", checkpoint=str(path)))
    mean, std = (
        torch.tensor(DATA["data_mean"]).view(1, 3, 1, 1),
        torch.tensor(DATA["data_std"]).view(1, 3, 1, 1),
    )
    direct = net.eval()((X - mean) / std)
    assert torch.allclose(model(X), direct, atol=1e-6, rtol=0)
    assert facts["model/stem"] == "own", "the file has the 7x7/2 stem: kept, not re-initialised"
    assert facts["model/input_norm"] == "data"


def test_explicit_small_stem_against_weights_with_the_big_stem_is_refused(tmp_path: Path) -> None:
    """resnet18's 7x7/2 first conv becomes 3x3/1 in the small-input stem: weights of the big one cannot load."""
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), tmp_path / "w.pt")
    with pytest.raises(
        ConfigError, match=r"small-input stem: .*shape mismatches: conv1\.weight: file \(64, 3, 7, 7\)"
    ):
        build(ModelSpec(name="resnet18", checkpoint=str(tmp_path / "w.pt"), small_input_stem=True))
    model, facts = build(ModelSpec(name="resnet18", checkpoint=str(tmp_path / "w.pt")))  # automatic: fits own
    assert facts["model/stem"] == "own" and model.net.conv1.kernel_size == (7, 7)


def test_wrong_class_count_names_both_sides(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet10t", num_classes=100).state_dict(), tmp_path / "w100.pt")
    with pytest.raises(
        ConfigError, match=r"classifier \(fc.weight\) has 100 outputs but the data has 10 classes"
    ):
        build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "w100.pt")))


def test_wrong_architecture_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    torch.save(timm.create_model("test_vit", num_classes=10).state_dict(), tmp_path / "vit.pt")
    with pytest.raises(ConfigError, match=r"missing from the file: .*unexpected in the file"):
        build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "vit.pt")))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("missing", "no such file"),
        ("truncated", "cannot be read as a PyTorch file"),
        ("list", "holds a list, not a state dict"),
        ("no_state_dict", "none of them is a state dict; name the right one with model.checkpoint_key"),
        ("pickle", "holds Python objects besides tensors"),
        ("bad_safetensors", "not a readable safetensors file"),
    ],
)
def test_bad_weight_files_are_refused_with_the_reason(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / ("w.safetensors" if content == "bad_safetensors" else "w.pt")
    state = timm.create_model("resnet10t", num_classes=10).state_dict()
    if content == "truncated":
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif content == "list":
        torch.save([1, 2, 3], path)
    elif content == "no_state_dict":
        torch.save({"epoch": 3, "acc": 0.9}, path)
    elif content == "pickle":
        torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)
    elif content == "bad_safetensors":
        path.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=message):
        build(ModelSpec(name="resnet10t", checkpoint=str(path)))


def test_trusted_pickle_is_an_explicit_opt_in(tmp_path: Path) -> None:
    net = timm.create_model("resnet10t", num_classes=10)
    torch.save({"state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "w.pt")
    model, _ = build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "w.pt"), trusted_pickle=True))
    assert torch.equal(model.net.fc.weight, net.fc.weight)
    torch.save(net, tmp_path / "whole.pt")  # a whole pickled module
    model, _ = build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "whole.pt"), trusted_pickle=True))
    assert torch.equal(model.net.fc.weight, net.fc.weight)


def test_checkpoint_key_and_strip_prefix(tmp_path: Path) -> None:
    net = timm.create_model("resnet10t", num_classes=10)
    torch.save(
        {"ckpt": {"weights": {f"backbone.{k}": v for k, v in net.state_dict().items()}}}, tmp_path / "w.pt"
    )
    spec = ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "w.pt"), checkpoint_key="ckpt.weights")
    with pytest.raises(ConfigError, match="missing from the file"):
        build(spec)
    model, _ = build(
        ModelSpec(
            name="resnet10t",
            checkpoint=str(tmp_path / "w.pt"),
            checkpoint_key="ckpt.weights",
            strip_prefix="backbone.",
        )
    )
    assert torch.equal(model.net.fc.weight, net.fc.weight)
    with pytest.raises(ConfigError, match="model.checkpoint_key='ckpt.nope'"):
        build(ModelSpec(name="resnet10t", checkpoint=str(tmp_path / "w.pt"), checkpoint_key="ckpt.nope"))
    with pytest.raises(ConfigError, match="model.strip_prefix='head.': no key of the file starts with it"):
        build(
            ModelSpec(
                name="resnet10t",
                checkpoint=str(tmp_path / "w.pt"),
                checkpoint_key="ckpt.weights",
                strip_prefix="head.",
            )
        )


# --- the user's own architecture ------------------------------------------------------------------------------


def test_factory_gets_classes_and_weights(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = PlainNet(10, width=12)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "w.pth")
    spec = model_spec(
        OmegaConf.create({"_target_": FACTORY, "width": 12, "checkpoint": str(tmp_path / "w.pth")})
    )
    assert spec.source == "factory" and spec.kwargs == {"width": 12}
    model, facts = build(spec, data_mean=(0, 0, 0), data_std=(1, 1, 1))
    assert torch.equal(model(X), net.eval()(X))
    assert facts["model/source"] == "factory" and facts["model/architecture"] == FACTORY
    assert spec.display_name == f"{FACTORY}@w"


def test_factory_over_a_timm_preset_ignores_the_preset_name() -> None:
    """``robustdiag model._target_=my.build`` on top of the default preset: the preset's timm name is not the label."""
    node = OmegaConf.create(
        {"_target_": FACTORY, "name": "test_resnet", "small_input_stem": None, "kwargs": {}}
    )
    spec = model_spec(node)
    assert spec.source == "factory" and spec.display_name == FACTORY


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (f"{__name__}.not_a_module", "returned a dict, not a torch.nn.Module"),
        (f"{__name__}.features_net", r"returns \(2, 16\) for 2 images; expected \(2, 10\)"),
        ("no_such_pkg.models.build", "cannot be imported"),
        (f"{__name__}.fixed_size_net", "cannot take 3x32x32 inputs"),
    ],
)
def test_bad_factories_are_refused(target: str, message: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        build(model_spec(OmegaConf.create({"_target_": target})))


def test_imports_make_registered_architectures_timm_names(tmp_path: Path) -> None:
    module = tmp_path / "my_registered_models.py"
    module.write_text(
        textwrap.dedent(
            """
            import torch
            from timm.models import register_model

            class Tiny(torch.nn.Module):
                def __init__(self, num_classes=10, in_chans=3, **kwargs):
                    super().__init__()
                    self.num_classes = num_classes
                    self.conv = torch.nn.Conv2d(in_chans, 4, 3, padding=1)
                    self.head = torch.nn.Linear(4, num_classes)

                def forward(self, x):
                    return self.head(self.conv(x).mean(dim=(2, 3)))

            @register_model
            def my_tiny_registered(pretrained=False, **kwargs):
                kwargs.pop("pretrained_cfg", None); kwargs.pop("pretrained_cfg_overlay", None)
                kwargs.pop("cache_dir", None)
                return Tiny(**kwargs)
            """
        )
    )
    spec = model_spec(OmegaConf.create({"name": "my_tiny_registered", "imports": [str(module)]}))
    model, facts = build(spec)
    assert facts["model/source"] == "timm" and model(X).shape == (4, 10)
    with pytest.raises(ConfigError, match="model.imports: no module 'no_such_module'"):
        model_spec(OmegaConf.create({"name": "resnet10t", "imports": ["no_such_module"]}))
    with pytest.raises(ConfigError, match="must be a list"):
        model_spec(OmegaConf.create({"name": "resnet10t", "imports": "my_pkg"}))


# --- TorchScript, RobustBench ----------------------------------------------------------------------------------


def test_torchscript_file_runs_as_saved(tmp_path: Path) -> None:
    net = PlainNet().eval()
    torch.jit.save(torch.jit.trace(net, X), str(tmp_path / "scripted.pt"))
    spec = ModelSpec(checkpoint=str(tmp_path / "scripted.pt"), input_norm="none")
    model, facts = build(spec)
    assert spec.source == "torchscript" and facts["model/input_norm"] == "none"
    assert torch.allclose(model(X), net(X), atol=1e-6)
    assert spec.display_name == "scripted"
    from robustdiag.metrics.path_layers import discover_layers
    from robustdiag.types import MetricNotApplicable

    with pytest.raises(MetricNotApplicable, match="TorchScript model runs no forward hooks"):
        discover_layers(model)  # recorded as metric/<name>/not_applicable; the run completes
    with pytest.raises(ConfigError, match="is a TorchScript archive, not a state dict"):
        build(ModelSpec(name="resnet10t", factory=FACTORY, checkpoint=str(tmp_path / "scripted.pt")))


def fake_robustbench(root: Path) -> None:
    """A stand-in for ``robustbench.utils.load_model`` with its file layout, to check the wiring offline."""
    package = root / "robustbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "utils.py").write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            import torch
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_model_sources import PlainNet

            def load_model(model_name, model_dir, dataset, threat_model):
                net = PlainNet()
                state = torch.load(Path(model_dir) / dataset / threat_model / f"{{model_name}}.pt", weights_only=True)
                net.load_state_dict(state["state_dict"])
                return net.eval()
            """
        )
    )


def test_robustbench_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = {
        "_target_": "robustdiag.models.ModelSpec",
        "name": "Toy2026",
        "robustbench": {"dataset": "cifar10", "threat_model": "Linf", "model_dir": str(tmp_path / "models")},
    }
    spec = model_spec(OmegaConf.create(node))
    with pytest.raises(ConfigError, match=r"no .*cifar10/Linf/Toy2026.pt .*load_model\('Toy2026'"):
        build(spec)
    net = PlainNet()
    (tmp_path / "models" / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "models" / "cifar10" / "Linf" / "Toy2026.pt")
    monkeypatch.setitem(sys.modules, "robustbench", None)  # not installed
    with pytest.raises(ConfigError, match="needs the robustbench package"):
        build(spec)
    monkeypatch.delitem(sys.modules, "robustbench")
    fake_robustbench(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model, facts = build(spec)
    assert facts["model/source"] == "robustbench" and facts["model/input_norm"] == "none"
    assert torch.allclose(model(X), net.eval()(X), atol=1e-6), "RobustBench models take [0, 1] pixels"


# --- timm pretrained weights from the local Hugging Face cache ------------------------------------------------------


def fake_hf_cache(home: Path, repo: str, net: nn.Module, num_classes: int = 1000) -> None:
    """The Hugging Face cache layout timm reads offline: refs/main -> snapshots/<commit>/model.safetensors."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snapshot / "model.safetensors"))
    config = {"architecture": "test_resnet", "num_classes": num_classes,
              "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": num_classes}}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(config))


@pytest.fixture
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(home))
    return home


def test_pretrained_from_the_local_cache(offline_hf: Path) -> None:
    net = timm.create_model("test_resnet")  # ImageNet head: the data's 10 classes get a new one (fine-tuning)
    fake_hf_cache(offline_hf, "timm/test_resnet.r160_in1k", net)
    model, facts = build(ModelSpec(name="test_resnet", pretrained=True))
    assert torch.equal(model.net.conv1[0].weight, net.conv1[0].weight) and model.net.fc.out_features == 10
    assert facts["model/pretrained"] and facts["model/input_norm"] == "pretrained"
    assert facts["model/input_mean"] == "0.5,0.5,0.5" and facts["model/stem"] == "own"
    with pytest.raises(ConfigError, match="would re-initialise the first conv"):
        build(ModelSpec(name="test_resnet", pretrained=True, small_input_stem=True))


def test_pretrained_head_for_other_classes_is_refused_when_only_evaluating(offline_hf: Path) -> None:
    fake_hf_cache(offline_hf, "timm/test_resnet.r160_in1k", timm.create_model("test_resnet"))
    with pytest.raises(ConfigError, match="classify 1000 classes but the data has 10; train=none"):
        build(ModelSpec(name="test_resnet", pretrained=True), evaluate_only=True)
    model, _ = build(ModelSpec(name="test_resnet", pretrained=True))  # fine-tuning gets a new head
    assert model.net.fc.out_features == 10


def test_hf_hub_name_from_the_local_cache(offline_hf: Path) -> None:
    net = timm.create_model("test_resnet", num_classes=10)
    fake_hf_cache(offline_hf, "timm/test_resnet.r160_in1k", net, num_classes=10)
    spec = ModelSpec(name="hf-hub:timm/test_resnet.r160_in1k")
    model, facts = build(spec)
    assert torch.equal(model.net.fc.weight, net.fc.weight) and spec.has_weights
    assert spec.display_name == "timm/test_resnet.r160_in1k" and facts["model/input_norm"] == "pretrained"


def test_pretrained_weights_not_in_the_cache_say_how_to_get_them(offline_hf: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"Hugging Face repo timm/test_resnet.r160_in1k.*huggingface-cli download"
    ):
        build(ModelSpec(name="test_resnet", pretrained=True))


# --- input conventions and the spec's own checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"name": "resnet10t", "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]},
            "0-255 pixel units",
        ),
        ({"name": "resnet10t", "mean": [0.5, 0.5, 0.5]}, "model.mean and model.std go together"),
        ({"name": "resnet10t", "input_norm": "imagenet"}, "model.input_norm='imagenet' is not one of"),
        ({"name": "resnet10t", "input_norm": "pretrained"}, "needs timm pretrained weights"),
        ({"name": "resnet10t", "pretrained": "yes"}, "model.pretrained='yes' must be true or false"),
        ({"name": "resnet10t", "kwargs": {"num_classes": 10}}, "num_classes is set by the data"),
        ({"factory": FACTORY, "small_input_stem": True}, "keeps the stem it has"),
    ],
)
def test_spec_refuses_nonsense(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelSpec(**fields)


def test_explicit_mean_std_and_none(tmp_path: Path) -> None:
    model, facts = build(ModelSpec(name="resnet10t", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert facts["model/input_norm"] == "config" and torch.allclose(
        model.normalize.std.flatten(), torch.full((3,), 0.25)
    )
    model, facts = build(ModelSpec(name="resnet10t", input_norm="none"))
    assert torch.equal(model.normalize(X), X)


def test_replacing_the_weights_file_is_a_new_configuration(tmp_path: Path) -> None:
    """The record identity and the checkpoint cache key include the weights file's content."""
    from robustdiag.run import config_hash, weights_digest

    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(2)}, path)
    cfg = OmegaConf.create({"model": {"name": "resnet10t", "checkpoint": str(path)}, "seed": 0})
    first = config_hash(cfg, ("model", "seed"), weights_digest(cfg))
    os.utime(path, ns=(1, 1))
    torch.save({"a": torch.ones(2)}, path)
    assert config_hash(cfg, ("model", "seed"), weights_digest(cfg)) != first
