"""Layer discovery, the `layers` filter and BatchNorm folding (fx and registration-order routes)."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from robustdiag.metrics.path_layers import discover_layers, find_bn_folds, model_body, select_names
from robustdiag.models import Classifier, Normalize


class Block(nn.Module):
    """conv1/bn1, conv2/bn2 as timm ResNets name them; the shortcut conv output is used raw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.shortcut = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, data_dependent: bool = False) -> None:
        super().__init__()
        self.block = Block()
        self.convnormact = nn.Module()
        self.convnormact.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.convnormact.bn = BatchNormAct2d(6)
        self.head = nn.Linear(6, 3)
        self.data_dependent = data_dependent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        if self.data_dependent and x.sum() > 0:  # control flow on a tensor: fx cannot trace this
            x = x * 1.0
        x = self.convnormact.bn(self.convnormact.conv(x))
        return self.head(x.mean((-2, -1)))


EXPECTED_FOLDS = {
    "block.conv1": "block.bn1",
    "block.conv2": "block.bn2",
    "convnormact.conv": "convnormact.bn",
}


@pytest.mark.parametrize("data_dependent,method", [(False, "fx"), (True, "order")])
def test_bn_folds_by_fx_and_by_registration_order(data_dependent: bool, method: str) -> None:
    net = Net(data_dependent).eval()
    pairs, used = find_bn_folds(net)
    assert used == method
    assert pairs == EXPECTED_FOLDS
    layers = discover_layers(net)
    assert [layer.name for layer in layers] == [
        "block.conv1",
        "block.conv2",
        "block.shortcut",
        "convnormact.conv",
        "head",
    ]
    assert {layer.name: layer.bn_name for layer in layers if layer.bn is not None} == EXPECTED_FOLDS
    assert [layer.kind for layer in layers] == ["conv", "conv", "conv", "conv", "linear"]
    assert layers[0].edges == 4 * 3 and layers[-1].edges == 3 * 6


def test_fx_does_not_fold_a_conv_whose_output_is_also_used_raw() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return (self.bn(y) + y).flatten(1)

    pairs, method = find_bn_folds(Shared())
    assert method == "fx" and pairs == {}


def test_classifier_layers_are_named_inside_net() -> None:
    model = Classifier(Net(), Normalize((0.5,) * 3, (0.25,) * 3), "net")
    assert model_body(model) is model.net
    assert discover_layers(model, ["head"])[0].name == "head"


def test_layer_filter_globs_and_regexes() -> None:
    names = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "fc"]
    assert select_names(names, ["layer1.*"]) == ["layer1.0.conv1", "layer1.0.conv2"]
    assert select_names(names, [r"re:layer\d\.0\.conv1", "fc"]) == ["layer1.0.conv1", "layer2.0.conv1", "fc"]
    assert select_names(names, None) == names


def test_filter_that_matches_nothing_lists_layers() -> None:
    with pytest.raises(ValueError, match=r"matches none.*Available layers: block.conv1, block.conv2"):
        discover_layers(Net(), ["layer4.*"])


def test_model_without_supported_layers() -> None:
    with pytest.raises(ValueError, match="no supported layers"):
        discover_layers(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))


def test_batchnorm_without_running_stats_is_not_folded() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.warns(UserWarning, match="no running statistics"):
        layers = discover_layers(net)
    assert layers[0].bn is None


def test_levit_batchnorm1d_after_a_flatten_is_folded() -> None:
    """LeViT's LinearNorm is bn(linear(x).flatten(0, 1)).reshape_as(...): the BN is per output feature."""
    import timm

    from robustdiag.metrics.path_layers import discover_layers

    net = timm.create_model("levit_128s", num_classes=10, img_size=32).eval()
    layers = discover_layers(net)
    linears = [
        layer for layer in layers if isinstance(layer.module, torch.nn.Linear) and "head" not in layer.name
    ]
    assert linears and all(layer.bn_name == layer.name.rsplit(".", 1)[0] + ".bn" for layer in linears)
