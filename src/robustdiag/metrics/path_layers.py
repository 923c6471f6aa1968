"""Which layers path separation measures, and the effective weights it measures them with.

Every ``nn.Conv2d`` and ``nn.Linear`` of the network is a candidate layer (timm's ``Linear``, ``Conv2dSame``
and the weight-standardised ``StdConv2d`` family are subclasses and are handled; attention ``qkv``/``proj``
and MLP linears of ViTs are ordinary ``nn.Linear``). A ``layers`` filter keeps a subset by name.

Eval-mode BatchNorm that directly consumes a layer's output is folded into it, so the layer's edge
contributions sum to the true pre-activation (BN's affine part; a fused activation such as timm's
``BatchNormAct2d`` stays outside). Conv -> BN pairs are found in this order:

1. ``torch.fx`` tracing (BatchNorm, conv and linear modules kept as leaves): a BN node whose only input is
   a conv/linear node that feeds nothing else. Exact where the model traces.
2. Otherwise, registration order: inside one parent module, a BatchNorm registered immediately after a
   conv/linear with matching channel count (``conv1``/``bn1`` of timm ResNets, ``.conv``/``.bn`` of
   ``ConvNormAct``, ``nn.Sequential(conv, bn, act)``). This is a naming/ordering convention, not a proof;
   the metric checks on its first batch that contributions add up to the layer's output and warns if not.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
from timm.layers.conv2d_same import Conv2dSameExport
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustdiag.types import MetricNotApplicable

log = logging.getLogger(__name__)

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)
REGEX_PREFIX = "re:"  # a `layers` pattern starting with this is a regular expression, else a glob


def model_body(model: nn.Module) -> nn.Module:
    """The network whose layers are measured: ``model.net`` of a ``Classifier``, else the model itself."""
    net = getattr(model, "net", None)
    return net if isinstance(net, nn.Module) else model


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total TF-style 'SAME' padding along one axis (timm's ``get_same_padding``)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _uses_dynamic_same_padding(conv: nn.Conv2d) -> bool:
    """True for timm convs that pad the input themselves with TF 'SAME' padding in ``forward``."""
    if isinstance(conv, Conv2dSame | Conv2dSameExport):
        return True
    return isinstance(conv, StdConv2dSame | ScaledStdConv2dSame) and bool(getattr(conv, "same_pad", False))


def conv_effective_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The kernel the conv really applies (weight standardisation of timm's StdConv family included)."""
    if isinstance(conv, StdConv2d | StdConv2dSame):
        flat = conv.weight.reshape(1, conv.out_channels, -1)
        eps = float(getattr(conv, "eps"))  # noqa: B009 - timm's StdConv2d attribute, untyped for mypy
        return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=eps).reshape_as(conv.weight)
    if isinstance(conv, ScaledStdConv2d | ScaledStdConv2dSame):
        flat = conv.weight.reshape(1, conv.out_channels, -1)
        gain = (cast(torch.Tensor, getattr(conv, "gain")) * float(getattr(conv, "scale"))).view(-1)  # noqa: B009
        eps = float(getattr(conv, "eps"))  # noqa: B009
        return F.batch_norm(flat, None, None, weight=gain, training=True, momentum=0.0, eps=eps).reshape_as(
            conv.weight
        )
    return conv.weight


@dataclass(eq=False)
class ProbeLayer:
    """One measured layer and the BatchNorm folded into it (if any)."""

    name: str
    module: nn.Conv2d | nn.Linear
    bn: _BatchNorm | None = None
    bn_name: str | None = None

    @property
    def kind(self) -> str:
        """``"conv"`` or ``"linear"``."""
        return "conv" if isinstance(self.module, nn.Conv2d) else "linear"

    @property
    def groups(self) -> int:
        return int(self.module.groups) if isinstance(self.module, nn.Conv2d) else 1

    @property
    def out_units(self) -> int:
        """Output neurons (linear) or channels (conv)."""
        return int(self.module.weight.shape[0])

    @property
    def in_per_group(self) -> int:
        """Inputs each output unit sees: in-features, or in-channels of its group."""
        return int(self.module.weight.shape[1])

    @property
    def edges(self) -> int:
        """Number of (out, in) edges: O * I for linear, O * (C / groups) for conv."""
        return self.out_units * self.in_per_group

    @property
    def taps(self) -> int:
        """Kernel taps per edge (kh * kw; 1 for linear)."""
        return int(self.module.weight[0, 0].numel())

    def pad_before(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """Zero/mode padding added above and left of a conv input of size ``in_hw``."""
        conv = self.module
        assert isinstance(conv, nn.Conv2d)
        kh, kw = conv.kernel_size
        if _uses_dynamic_same_padding(conv):
            pad_h = _same_padding(in_hw[0], kh, conv.stride[0], conv.dilation[0])
            pad_w = _same_padding(in_hw[1], kw, conv.stride[1], conv.dilation[1])
            return pad_h // 2, pad_w // 2
        if conv.padding == "valid":
            return 0, 0
        if conv.padding == "same":
            return conv.dilation[0] * (kh - 1) // 2, conv.dilation[1] * (kw - 1) // 2
        return int(conv.padding[0]), int(conv.padding[1])

    def bn_affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-output ``(scale, shift)`` of the folded BatchNorm: ``BN(y) = scale * y + shift``."""
        device = self.module.weight.device
        if self.bn is None:
            ones = torch.ones(self.out_units, dtype=dtype, device=device)
            return ones, torch.zeros_like(ones)
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        scale = torch.rsqrt(bn.running_var.to(dtype) + bn.eps)  # (O,)
        if bn.weight is not None:
            scale = scale * bn.weight.to(dtype)
        shift = -bn.running_mean.to(dtype) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.to(dtype)
        return scale, shift

    def folded_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """BN-folded weight: ``(O, I)`` for linear, ``(O, C/groups, kh*kw)`` for conv."""
        if isinstance(self.module, nn.Conv2d):
            weight = conv_effective_weight(self.module).to(dtype).flatten(2)  # (O, Cg, T)
        else:
            weight = self.module.weight.to(dtype)  # (O, I)
        scale, _ = self.bn_affine(dtype)
        return weight * scale.view(-1, *([1] * (weight.ndim - 1)))

    def folded_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """BN-folded bias ``(O,)``: the part of the pre-activation that is not an edge."""
        scale, shift = self.bn_affine(dtype)
        bias = self.module.bias
        return shift if bias is None else scale * bias.to(dtype) + shift


def _pairs_layer_with_bn(layer: nn.Module, bn: nn.Module) -> bool:
    """True when ``bn`` is the BatchNorm kind (and size) that can follow ``layer``."""
    if isinstance(layer, nn.Conv2d):
        return isinstance(bn, nn.BatchNorm2d) and bn.num_features == layer.out_channels
    if isinstance(layer, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d) and bn.num_features == layer.out_features
    return False


class _LeafTracer(torch.fx.Tracer):
    """fx tracer that keeps BatchNorm (timm's BatchNormAct included), conv and linear as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, (_BatchNorm, *SUPPORTED_LAYERS)) or super().is_leaf_module(
            m, module_qualified_name
        )


def _shape_reference(node: torch.fx.Node, source: torch.fx.Node) -> bool:
    """``t.reshape_as(source)`` (or view_as/expand_as) that uses ``source`` only for its shape."""
    return (
        node.op == "call_method"
        and node.target in ("reshape_as", "view_as", "expand_as")
        and node.args[1:2] == (source,)
        and node.args[0] is not source
    )


def _merges_leading_dims(node: torch.fx.Node, source: torch.fx.Node) -> bool:
    """``source.flatten(0, k)`` with a literal k >= 0: merges batch/token dims, keeps the feature dim last."""
    if node.op != "call_method" or node.target != "flatten" or node.args[:1] != (source,):
        return False
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return bool(start == 0 and isinstance(end, int) and end >= 0)


def _bn_pairs_by_fx(net: nn.Module) -> dict[str, str] | None:
    """``{layer name: bn name}`` from the traced graph, or None when the model does not trace."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = _LeafTracer().trace(net)
    except Exception:  # any tracing failure (control flow on tensors, unsupported ops) -> fallback
        return None
    modules = dict(net.named_modules())
    followers: dict[str, set[str | None]] = {}  # layer name -> the BN after each of its calls
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), SUPPORTED_LAYERS):
            continue
        source, users = node, list(node.users)
        if isinstance(
            modules[node.target], nn.Linear
        ):  # LeViT: y = linear(x); bn(y.flatten(0, 1)).reshape_as(y)
            users = [u for u in users if not _shape_reference(u, source)]
            while len(users) == 1 and _merges_leading_dims(users[0], source):
                source, users = users[0], list(users[0].users)
        bn_name = None
        if len(users) == 1 and users[0].op == "call_module" and users[0].args[:1] == (source,):
            candidate = str(users[0].target)
            follower = modules.get(candidate)
            if follower is not None and _pairs_layer_with_bn(modules[str(node.target)], follower):
                bn_name = candidate
        followers.setdefault(str(node.target), set()).add(bn_name)
    pairs: dict[str, str] = {}
    for name, bns in followers.items():
        (only,) = bns if len(bns) == 1 else (None,)
        if only is not None:
            pairs[name] = only
    return pairs


def _bn_pairs_by_order(net: nn.Module) -> dict[str, str]:
    """``{layer name: bn name}`` for BatchNorms registered right after a conv/linear of the same parent."""
    pairs: dict[str, str] = {}
    for parent_name, parent in net.named_modules():
        children = list(parent.named_children())
        for (name, child), (next_name, following) in zip(children, children[1:]):
            if _pairs_layer_with_bn(child, following):
                prefix = f"{parent_name}." if parent_name else ""
                pairs[prefix + name] = prefix + next_name
    return pairs


def find_bn_folds(net: nn.Module) -> tuple[dict[str, str], str]:
    """``({layer name: bn name}, method)`` with method ``"fx"`` or ``"order"`` (see module docstring)."""
    pairs = _bn_pairs_by_fx(net)
    if pairs is not None:
        return pairs, "fx"
    return _bn_pairs_by_order(net), "order"


def _matches(name: str, pattern: str) -> bool:
    """Glob match, or regex full match for patterns starting with ``re:``."""
    if pattern.startswith(REGEX_PREFIX):
        return re.fullmatch(pattern[len(REGEX_PREFIX) :], name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def select_names(names: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    """Names matching any pattern (all names when ``patterns`` is None or empty)."""
    if not patterns:
        return list(names)
    return [n for n in names if any(_matches(n, p) for p in patterns)]


def _foldable(bn: _BatchNorm, bn_name: str) -> bool:
    """Running statistics exist (BN without them normalises by batch statistics: not a fixed affine map)."""
    if bn.running_mean is None or bn.running_var is None:
        warnings.warn(
            f"path separation: BatchNorm {bn_name!r} has no running statistics; it is not folded, so "
            "contributions describe the layer before it.",
            stacklevel=3,
        )
        return False
    if bn.training:
        warnings.warn(
            f"path separation: BatchNorm {bn_name!r} is in training mode; folding uses its running "
            "statistics, which differ from what the forward pass uses. Call model.eval() first.",
            stacklevel=3,
        )
    return True


def discover_layers(model: nn.Module, layers: Sequence[str] | None = None) -> list[ProbeLayer]:
    """Every Conv2d/Linear of ``model_body(model)`` (in registration order) matching ``layers``.

    ``layers``: glob patterns on module names (``"layer4.*"``), or regexes prefixed ``re:``; None = all.
    """
    net = model_body(model)
    if isinstance(net, torch.jit.ScriptModule):
        raise MetricNotApplicable(
            "a TorchScript model runs no forward hooks, through which path and activation separation read each "
            "layer; evaluate its architecture with its state dict (model.name or model._target_ plus "
            "model.checkpoint) to measure them"
        )
    candidates = {n: m for n, m in net.named_modules() if isinstance(m, SUPPORTED_LAYERS) and n}
    if isinstance(net, SUPPORTED_LAYERS):
        candidates = {"": net}  # a bare layer used as the whole model
    if not candidates:
        raise ValueError(
            f"path separation: {type(net).__name__} has no supported layers (nn.Conv2d or nn.Linear); "
            "there are no weight-activation edges to measure."
        )
    chosen = select_names(list(candidates), layers)
    if not chosen:
        names = list(candidates)
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise ValueError(
            f"path separation: `layers`={list(layers or [])} matches none of the model's layers. "
            f"Patterns are globs (fnmatch) or regexes prefixed 're:'. Available layers: {shown}"
        )
    pairs, _ = find_bn_folds(net)
    modules = dict(net.named_modules())
    probes = []
    for name in chosen:
        bn_name = pairs.get(name)
        found = modules.get(bn_name) if bn_name is not None else None
        bn = (
            found
            if isinstance(found, _BatchNorm) and bn_name is not None and _foldable(found, bn_name)
            else None
        )
        module = candidates[name]
        assert isinstance(module, nn.Conv2d | nn.Linear)
        probes.append(
            ProbeLayer(name=name, module=module, bn=bn, bn_name=bn_name if bn is not None else None)
        )
    folded = {p.bn_name for p in probes if p.bn_name}
    unfolded = [
        n
        for n, m in modules.items()
        if isinstance(m, _BatchNorm) and n not in folded and n not in set(pairs.values())
    ]
    if unfolded:
        log.info(
            "path separation: %d BatchNorm layer(s) do not directly follow a measured layer (e.g. %s; pre-activation "
            "BN, or a BN after another op) and are not folded: edge contributions are before them",
            len(unfolded), ", ".join(unfolded[:3]),
        )  # fmt: skip
    return probes
