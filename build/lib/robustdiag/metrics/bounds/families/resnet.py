"""Spectral-bound rules for ResNets: timm's BasicBlock/Bottleneck ResNets and robustdiag's pre-activation
ResNets / wide ResNets."""

from __future__ import annotations

import torch.nn.functional as F
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from robustdiag.metrics.bounds.ops import (
    Chain,
    ConstOp,
    LinearOp,
    Op,
    ResidualOp,
    UnsupportedArchitecture,
    supported,
)
from robustdiag.metrics.bounds.registry import children, module_ops, register
from robustdiag.models.cifar import PreActBlock, PreActResNet


@register(BasicBlock, Bottleneck)
def resnet_block_ops(name: str, block: nn.Module) -> list[Op]:
    if block.se is not None and not isinstance(block.se, nn.Identity):
        raise UnsupportedArchitecture(f"{name}.se (squeeze-excitation) has no rule; supported: {supported()}")
    branch_attrs: tuple[str, ...]
    if isinstance(block, BasicBlock):
        branch_attrs = ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2", "drop_path")
        post_attr = "act2"
    else:
        branch_attrs = (
            "conv1",
            "bn1",
            "act1",
            "conv2",
            "bn2",
            "drop_block",
            "act2",
            "aa",
            "conv3",
            "bn3",
            "drop_path",
        )
        post_attr = "act3"
    branch = Chain(f"{name}.branch", children(name, block, branch_attrs))
    downsample = getattr(block, "downsample", None)
    shortcut = (
        Chain(f"{name}.downsample", module_ops(f"{name}.downsample", downsample))
        if isinstance(downsample, nn.Module)
        else None
    )
    post = Chain(f"{name}.{post_attr}", module_ops(f"{name}.{post_attr}", getattr(block, post_attr)))
    return [ResidualOp(name, branch, shortcut, post)]


@register(PreActBlock)
def preact_block_ops(name: str, block: PreActBlock) -> list[Op]:
    """relu(bn1(x)) feeds both conv1 and a projection shortcut; the identity shortcut takes x itself."""
    pre = [*module_ops(f"{name}.bn1", block.bn1), ConstOp(f"{name}.relu1", "relu", 1.0, F.relu)]
    body = [
        *module_ops(f"{name}.conv1", block.conv1),
        *module_ops(f"{name}.bn2", block.bn2),
        ConstOp(f"{name}.relu2", "relu", 1.0, F.relu),
        *module_ops(f"{name}.conv2", block.conv2),  # dropout between: identity in eval
    ]
    if block.shortcut is None:
        return [ResidualOp(name, Chain(f"{name}.branch", pre + body), None, Chain(name, []))]
    shortcut = Chain(f"{name}.shortcut", module_ops(f"{name}.shortcut", block.shortcut))
    return pre + [ResidualOp(name, Chain(f"{name}.branch", body), shortcut, Chain(name, []))]


@register(PreActResNet, supports="robustdiag preact_resnet*/wrn*")
def preact_resnet_ops(name: str, model: PreActResNet) -> list[Op]:
    return [
        *children(name, model, ("stem", "stages", "bn")),
        ConstOp(f"{name}.relu", "relu", 1.0, F.relu),
        LinearOp(f"{name}.pool", "mean(H, W)", lambda h: h.mean(dim=(2, 3))),
        *module_ops(f"{name}.head", model.head),
    ]


@register(ResNet, supports="timm resnet* (BasicBlock/Bottleneck, no squeeze-excitation)")
def resnet_ops(name: str, model: ResNet) -> list[Op]:
    attrs = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4", "global_pool", "fc")
    return children(name, model, attrs)
