"""Spectral-bound rules for timm's VGG (features, ConvMlp pre-logits, head)."""

from __future__ import annotations

import torch.nn.functional as F
from timm.models.vgg import VGG, ConvMlp
from torch import Tensor

from robustdiag.metrics.bounds.ops import LinearOp, Op
from robustdiag.metrics.bounds.registry import children, register


@register(VGG, supports="vgg*/vgg*_bn")
def vgg_ops(name: str, model: VGG) -> list[Op]:
    return children(name, model, ("features", "pre_logits", "head"))


@register(ConvMlp)
def conv_mlp_ops(name: str, mlp: ConvMlp) -> list[Op]:
    size = mlp.input_kernel_size

    def resize(h: Tensor) -> Tensor:  # ConvMlp upsamples maps smaller than its kernel (linear)
        if h.shape[-2] < size or h.shape[-1] < size:
            return F.adaptive_avg_pool2d(h, (max(size, h.shape[-2]), max(size, h.shape[-1])))
        return h

    resize_op = LinearOp(f"{name}.resize", "adaptive_avg_pool2d", resize)
    return [resize_op] + children(name, mlp, ("fc1", "act1", "drop", "fc2", "act2"))
