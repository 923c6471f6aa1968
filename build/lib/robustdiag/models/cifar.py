"""CIFAR-style networks timm does not ship, registered as timm models.

* ``preact_resnet18``: He et al. 2016 pre-activation ResNet-18 with a 3x3 stem (the robustness
  literature's standard CIFAR ResNet, e.g. Rice et al. 2020).
* ``wrn28_10``, ``wrn28_1``, ``wrn16_4``, ``wrn34_10``: Zagoruyko & Komodakis wide ResNets
  (pre-activation), used by RobustBench and by Zhang et al. 2017's random-label experiments (WRN-28-1).

After ``import robustdiag.models`` they are ordinary timm names: ``model.name=wrn28_10``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: 3x3 stem, stages of :class:`PreActBlock`."""

    def __init__(
        self,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Conv2d(
            in_chans, 16 if widths[0] > 16 and len(widths) == 3 else widths[0], 3, padding=1, bias=False
        )
        planes = self.stem.out_channels
        stages: list[nn.Module] = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(PreActBlock(planes, width, stride, drop_rate))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.num_features = planes
        self.head = nn.Linear(planes, num_classes)
        self.pretrained_cfg = {"first_conv": "stem", "classifier": "head", "architecture": "preact"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        return self.head(self.forward_features(x).mean(dim=(2, 3)))

    def get_classifier(self) -> nn.Module:
        return self.head


def _wide(depth: int, widen: int, **kwargs: Any) -> PreActResNet:
    if (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    return PreActResNet(widths=(16 * widen, 32 * widen, 64 * widen), depths=(n, n, n), **kwargs)


def _clean(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


@register_model
def preact_resnet18(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 (64-128-256-512, 2 blocks per stage) for 32 px inputs."""
    return PreActResNet(widths=(64, 128, 256, 512), depths=(2, 2, 2, 2), **_clean(kwargs))


@register_model
def wrn28_10(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """WRN-28-10 (36.5M parameters): the RobustBench CIFAR baseline."""
    return _wide(28, 10, **_clean(kwargs))


@register_model
def wrn34_10(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """WRN-34-10: Madry/TRADES adversarial-training baseline."""
    return _wide(34, 10, **_clean(kwargs))


@register_model
def wrn28_1(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """WRN-28-1 (0.37M parameters): Zhang et al. 2017's random-label network."""
    return _wide(28, 1, **_clean(kwargs))


@register_model
def wrn16_4(pretrained: bool = False, **kwargs: Any) -> PreActResNet:
    """WRN-16-4 (2.7M parameters): a quick wide ResNet."""
    return _wide(16, 4, **_clean(kwargs))
