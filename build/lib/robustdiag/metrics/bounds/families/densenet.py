"""Spectral-bound rules for timm's DenseNet (dense blocks: each layer's output is concatenated)."""

from __future__ import annotations

from typing import cast

from timm.models.densenet import DenseBlock, DenseLayer, DenseNet

from robustdiag.metrics.bounds.ops import Chain, DenseBlockOp, Op
from robustdiag.metrics.bounds.registry import children, register


@register(DenseNet, supports="densenet*")
def densenet_ops(name: str, model: DenseNet) -> list[Op]:
    return children(name, model, ("features", "global_pool", "head_drop", "classifier"))


@register(DenseBlock)
def dense_block_ops(name: str, block: DenseBlock) -> list[Op]:
    layers = [
        Chain(f"{name}.{n}", dense_layer_ops(f"{name}.{n}", cast(DenseLayer, layer)))
        for n, layer in block.items()
    ]
    return [DenseBlockOp(name, layers)]


@register(DenseLayer)
def dense_layer_ops(name: str, layer: DenseLayer) -> list[Op]:
    return children(name, layer, ("norm1", "conv1", "norm2", "conv2"))  # dropout: identity in eval
