"""Rules for the layers every architecture is made of: linear/affine maps, BatchNorm, activations,
pooling, LayerNorm, classifier heads and ``nn.Sequential`` chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from timm.layers import LayerScale, PatchDropout
from timm.layers.activations import GELU as TimmGELU
from timm.layers.activations import GELUTanh, HardSigmoid, HardSwish, QuickGELU, Swish
from timm.layers.activations import Mish as TimmMish
from timm.layers.adaptive_avgmax_pool import SelectAdaptivePool2d
from timm.layers.classifier import ClassifierHead
from timm.layers.drop import DropBlock2d, DropPath
from timm.layers.norm_act import BatchNormAct2d
from torch import Tensor, nn

from robustdiag.metrics.bounds.ops import (
    ConstOp,
    LayerNormOp,
    LinearOp,
    MaxPoolOp,
    Op,
    UnsupportedArchitecture,
)
from robustdiag.metrics.bounds.registry import as_function, children, module_ops, register

# max |f'| of elementwise activations (checked numerically in tests/metrics/test_bounds.py)
GELU_LIP = 1.13  # max of Φ(x) + xφ(x) ≈ 1.1289 (erf and tanh forms)
SILU_LIP = 1.1  # max of σ(x)(1 + x(1 − σ(x))) ≈ 1.0998 (also QuickGELU x·σ(1.702x))
MISH_LIP = 1.09  # ≈ 1.0886
ACTIVATION_LIPSCHITZ: dict[type[nn.Module], Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.ReLU6: lambda m: 1.0,
    nn.Tanh: lambda m: 1.0,
    nn.Softplus: lambda m: 1.0,
    nn.Sigmoid: lambda m: 0.25,
    nn.Hardsigmoid: lambda m: 1.0 / 6.0,
    nn.Hardswish: lambda m: 1.5,
    nn.GELU: lambda m: GELU_LIP,
    nn.SiLU: lambda m: SILU_LIP,
    nn.Mish: lambda m: MISH_LIP,
    nn.LeakyReLU: lambda m: max(1.0, abs(float(getattr(m, "negative_slope")))),  # noqa: B009
    nn.ELU: lambda m: max(1.0, float(getattr(m, "alpha"))),  # noqa: B009
    nn.PReLU: lambda m: max(1.0, float(cast(Tensor, getattr(m, "weight")).detach().abs().max())),  # noqa: B009
    TimmGELU: lambda m: GELU_LIP,
    GELUTanh: lambda m: GELU_LIP,
    QuickGELU: lambda m: SILU_LIP,
    Swish: lambda m: SILU_LIP,
    TimmMish: lambda m: MISH_LIP,
    HardSwish: lambda m: 1.5,
    HardSigmoid: lambda m: 1.0 / 6.0,
}
# identity maps in eval mode (Flatten: a reshape, an isometry)
IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.Dropout2d,
    DropPath,
    DropBlock2d,
    PatchDropout,
)
# linear (or affine) in eval mode: merged into one operator per run of consecutive layers
LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    LayerScale,
    *IDENTITY_MODULES,
)


@register(
    *LINEAR_MODULES,
    supports="nn.Sequential chains of Conv/Linear/BatchNorm/pooling/activation layers, optionally behind a robustdiag Classifier",
)
def linear_ops(name: str, module: nn.Module) -> list[Op]:
    exact: float | None = None
    if isinstance(module, nn.Linear):
        exact = float(torch.linalg.matrix_norm(module.weight.detach().double(), 2))
    elif isinstance(module, LayerScale):
        exact = float(module.gamma.detach().abs().max())
    trivial = isinstance(module, IDENTITY_MODULES)
    return [LinearOp(name, type(module).__name__, as_function(module), exact=exact, trivial=trivial)]


@register(nn.BatchNorm1d, nn.BatchNorm2d)
def batchnorm_ops(name: str, bn: nn.modules.batchnorm._BatchNorm) -> list[Op]:
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedArchitecture(
            f"{name}: BatchNorm without running statistics normalises with batch statistics"
        )

    def affine(h: Tensor) -> Tensor:
        return F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    scale = (bn.running_var.detach().double() + bn.eps).rsqrt()  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    ops: list[Op] = [LinearOp(name, "BatchNorm", affine, exact=float(scale.abs().max()))]
    if isinstance(bn, BatchNormAct2d):
        ops += module_ops(f"{name}.drop", bn.drop) + module_ops(f"{name}.act", bn.act)
    return ops


@register(*ACTIVATION_LIPSCHITZ)
def activation_ops(name: str, module: nn.Module) -> list[Op]:
    lip = next(rule(module) for cls, rule in ACTIVATION_LIPSCHITZ.items() if isinstance(module, cls))
    return [ConstOp(name, type(module).__name__, lip, as_function(module))]


@register(nn.Sequential)
def sequential_ops(name: str, module: nn.Module) -> list[Op]:
    return [
        op
        for child_name, child in module.named_children()
        for op in module_ops(f"{name}.{child_name}", child)
    ]


@register(ClassifierHead)
def classifier_head_ops(name: str, head: ClassifierHead) -> list[Op]:
    return children(name, head, ("global_pool", "drop", "fc", "flatten"))


@register(SelectAdaptivePool2d)
def select_pool_ops(name: str, pool: SelectAdaptivePool2d) -> list[Op]:
    if pool.pool_type in ("avg", ""):
        return linear_ops(name, pool)
    if pool.pool_type == "max":
        return [MaxPoolOp(name, pool)]
    raise UnsupportedArchitecture(f"{name}: global pool {pool.pool_type!r} has no rule (avg, max, '' have)")


@register(nn.LayerNorm)
def layernorm_ops(name: str, module: nn.LayerNorm) -> list[Op]:
    return [LayerNormOp(name, module)]


@register(nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
def max_pool_ops(name: str, module: nn.Module) -> list[Op]:
    return [MaxPoolOp(name, module)]
