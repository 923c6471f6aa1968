"""Per-sample edge contributions of conv and linear layers, from one forward pass.

Linear: C_ij = W_ij * s_j with s_j the input summed over tokens (for (B, N, I) inputs; exact, since the
layer is linear). Conv: C_oc = sum over output positions of the (o, c) partial convolution
= sum_taps W[o, c, u, v] * S_c(u, v), where S_c(u, v) sums input channel c over the positions that tap
(u, v) reads. S is computed from the unpadded input with two small matrix products: ``A_h`` (kh, H)
counts, for tap row u, how often input row r is read (stride, padding, dilation and padding mode in
it), likewise ``A_w``; then S = A_h x A_w^T. No unfold, no per-pair feature maps.

Hooks reduce each layer's input to these sums (and its output to per-unit sums) as the forward pass
goes, so all layers are captured in ONE pass and nothing image-sized is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from robustdiag.metrics.path_layers import ProbeLayer


def tap_read_counts(
    size_in: int,
    size_out: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_before: int,
    padding_mode: str = "zeros",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``A[u, r]`` = how many output positions read input index r through kernel tap u. (kernel, size_in)."""
    out = torch.arange(size_out, device=device)
    taps = torch.arange(kernel, device=device)
    pos = out[None, :] * stride - pad_before + taps[:, None] * dilation  # (k, size_out) input coordinates
    valid = torch.ones_like(pos, dtype=torch.bool)
    if padding_mode == "zeros":
        valid = (pos >= 0) & (pos < size_in)
    elif padding_mode == "reflect":
        pos = pos.abs()
        pos = torch.where(pos >= size_in, 2 * (size_in - 1) - pos, pos)
    elif padding_mode == "replicate":
        pos = pos.clamp(0, size_in - 1)
    elif padding_mode == "circular":
        pos = pos.remainder(size_in)
    else:
        raise ValueError(
            f"padding_mode={padding_mode!r} is not supported; valid: zeros, reflect, replicate, circular"
        )
    counts = torch.zeros(kernel, size_in, dtype=dtype, device=device)
    return counts.scatter_add_(1, pos.clamp(0, size_in - 1), valid.to(dtype))


def conv_tap_sums(x: torch.Tensor, layer: ProbeLayer, out_hw: tuple[int, int]) -> torch.Tensor:
    """S[b, c, (u, v)]: input channel c summed over the positions tap (u, v) reads. (B, C, kh*kw)."""
    conv = layer.module
    assert isinstance(conv, nn.Conv2d)
    height, width = x.shape[-2:]
    top, left = layer.pad_before((height, width))
    rows = tap_read_counts(
        height,
        out_hw[0],
        conv.kernel_size[0],
        conv.stride[0],
        conv.dilation[0],
        top,
        conv.padding_mode,
        dtype=x.dtype,
        device=x.device,
    )  # (kh, H)
    cols = tap_read_counts(
        width,
        out_hw[1],
        conv.kernel_size[1],
        conv.stride[1],
        conv.dilation[1],
        left,
        conv.padding_mode,
        dtype=x.dtype,
        device=x.device,
    )  # (kw, W)
    sums = torch.matmul(torch.matmul(rows, x), cols.T)  # (B, C, kh, kw)
    return sums.flatten(2)


LOOP_MAX_TAPS = 4  # up to this many kernel taps, accumulate tap by tap; above, one einsum (GEMM)


def conv_contributions(
    sums: torch.Tensor, weight: torch.Tensor, groups: int, o0: int, o1: int
) -> torch.Tensor:
    """C[b, o, c'] for output channels [o0, o1), c' indexing in-channels of o's group. (B, o1-o0, Cg).

    ``sums``: (B, C, T) tap sums; ``weight``: (O, Cg, T) folded kernel. Small kernels (1x1, 2x2)
    accumulate ``S_t * W_t`` tap by tap into a contiguous result; larger ones use one einsum (a GEMM
    batched over channels, whose result is a strided view: a transposing copy costs more than the
    strided event code saves, measured on CPU).
    """
    batch, channels, taps = sums.shape
    out_units, per_group, _ = weight.shape
    out_per_group = out_units // groups
    g0, g1 = o0 // out_per_group, (o1 - 1) // out_per_group + 1
    if g1 - g0 > 1:
        assert o0 % out_per_group == 0 and o1 % out_per_group == 0, "ranges spanning groups are whole groups"
    group_sums = sums[:, g0 * per_group : g1 * per_group].reshape(batch, g1 - g0, 1, per_group, taps)
    group_weight = weight[o0:o1].reshape(1, g1 - g0, -1, per_group, taps)  # (1, G, Oc/G, Cg, T)
    if taps > LOOP_MAX_TAPS:
        contrib = torch.einsum("bgxct,xgoct->bgoc", group_sums, group_weight)  # (B, G, Oc/G, Cg)
        return contrib.reshape(batch, o1 - o0, per_group)
    contrib = group_sums[..., 0] * group_weight[..., 0]  # (B, G, Oc/G, Cg)
    for tap in range(1, taps):
        contrib.addcmul_(group_sums[..., tap], group_weight[..., tap])
    return contrib.reshape(batch, o1 - o0, per_group)


def linear_contributions(sums: torch.Tensor, weight: torch.Tensor, o0: int, o1: int) -> torch.Tensor:
    """C[b, i, j] = W[i, j] * s[b, j] for outputs [o0, o1). (B, o1-o0, I)."""
    return sums[:, None, :] * weight[None, o0:o1, :]


def contributions(
    layer: ProbeLayer, sums: torch.Tensor, weight: torch.Tensor, o0: int, o1: int
) -> torch.Tensor:
    """Edge contributions of ``layer`` for output units [o0, o1). (B, o1-o0, in_per_group)."""
    if layer.kind == "conv":
        return conv_contributions(sums, weight, layer.groups, o0, o1)
    return linear_contributions(sums, weight, o0, o1)


def output_ranges(layer: ProbeLayer, batch: int, chunk_elements: int) -> list[tuple[int, int]]:
    """Output-unit ranges whose contributions (batch * units * inputs) stay near ``chunk_elements``.

    Ranges of a grouped conv either lie inside one group or cover whole groups.
    """
    out_units = layer.out_units
    step = max(1, chunk_elements // max(batch * layer.in_per_group, 1))  # output units per chunk
    out_per_group = out_units // layer.groups
    if layer.groups == 1 or step >= out_per_group:
        if layer.groups > 1:
            step -= step % out_per_group  # whole groups
        return [(o, min(o + step, out_units)) for o in range(0, out_units, step)]
    return [
        (g + o, g + min(o + step, out_per_group))
        for g in range(0, out_units, out_per_group)
        for o in range(0, out_per_group, step)
    ]


@dataclass
class LayerSums:
    """What a layer's hook keeps of one batch."""

    inputs: torch.Tensor  # conv: (B, C, kh*kw) tap sums; linear: (B, I) token sums
    outputs: torch.Tensor  # (B, O) layer output summed over positions/tokens (before any folded BN)
    positions: int  # output positions (conv) or tokens (linear) per sample, summed over calls


def _fold_leading(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Sum ``t`` (B', ...) to (batch, ...) when B' is a multiple of the batch (windows, frames)."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] % batch:
        raise RuntimeError(
            f"path separation: layer {name!r} saw a leading dimension {t.shape[0]} that is not a multiple "
            f"of the batch size {batch}; per-sample contributions cannot be attributed."
        )
    return t.reshape(batch, -1, *t.shape[1:]).sum(1)


def _summarise(
    layer: ProbeLayer, x: torch.Tensor, y: torch.Tensor, batch: int, dtype: torch.dtype
) -> LayerSums:
    """Reduce a layer call's input ``x`` and output ``y`` to :class:`LayerSums`."""
    x, y = x.detach().to(dtype), y.detach().to(dtype)
    if layer.kind == "conv":
        inputs = conv_tap_sums(x, layer, (y.shape[-2], y.shape[-1]))  # (B', C, T)
        outputs = y.sum((-2, -1))  # (B', O)
        positions = y.shape[-2] * y.shape[-1] * (y.shape[0] // batch)
    else:
        inputs = x.reshape(x.shape[0], -1, x.shape[-1]).sum(1)  # (B', I)
        outputs = y.reshape(y.shape[0], -1, y.shape[-1]).sum(1)  # (B', O)
        positions = (x.numel() // x.shape[-1]) // batch
    return LayerSums(
        _fold_leading(inputs, batch, layer.name), _fold_leading(outputs, batch, layer.name), positions
    )


class LayerProbe:
    """Forward hooks that reduce each layer's input/output of the current batch to :class:`LayerSums`.

    A module called several times in one forward (shared weights) contributes the sum over its calls.
    """

    def __init__(self, layers: list[ProbeLayer], dtype: torch.dtype) -> None:
        self.layers = layers
        self.dtype = dtype
        self.batch = 0
        self.sums: dict[str, LayerSums] = {}

    def _hook(self, layer: ProbeLayer):  # noqa: ANN202 - torch hook signature
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            new = _summarise(layer, args[0], output, self.batch, self.dtype)
            old = self.sums.get(layer.name)
            if old is not None:
                new = LayerSums(
                    old.inputs + new.inputs, old.outputs + new.outputs, old.positions + new.positions
                )
            self.sums[layer.name] = new

        return hook

    @contextmanager
    def attached(self) -> Iterator[LayerProbe]:
        """Register the hooks for the duration of the block."""
        handles = [layer.module.register_forward_hook(self._hook(layer)) for layer in self.layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, LayerSums]]:
        """One forward pass of ``model`` on ``x``; returns the logits and the sums of every layer called."""
        self.batch = int(x.shape[0])
        self.sums = {}
        logits = model(x)
        sums, self.sums = self.sums, {}
        return logits, sums
