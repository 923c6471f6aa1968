"""Edge contributions: the fast tap-sum route against dense per-pair convolutions and the true output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, StdConv2d
from torch import nn

from robustdiag.metrics.path_contrib import (
    LayerProbe,
    contributions,
    conv_tap_sums,
    linear_contributions,
    output_ranges,
    tap_read_counts,
)
from robustdiag.metrics.path_layers import ProbeLayer, conv_effective_weight

torch.manual_seed(0)


def per_pair_conv(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    """Direct route: every (o, c') partial convolution as its own channel of one grouped conv. (B, O, Cg)."""
    out_units, per_group = weight.shape[:2]
    out_per_group = out_units // conv.groups
    in_channel = torch.tensor(
        [(o // out_per_group) * per_group + c for o in range(out_units) for c in range(per_group)]
    )  # (O * Cg,) input channel each pair reads
    x_pairs = x[:, in_channel]  # (B, O*Cg, H, W)
    if conv.padding_mode != "zeros":
        pads = conv._reversed_padding_repeated_twice
        x_pairs, padding = F.pad(x_pairs, pads, mode=conv.padding_mode), 0
    else:
        padding = conv.padding
    maps = F.conv2d(
        x_pairs,
        weight.reshape(out_units * per_group, 1, *weight.shape[2:]),
        stride=conv.stride,
        padding=padding,
        dilation=conv.dilation,
        groups=out_units * per_group,
    )  # (B, O*Cg, Ho, Wo)
    return maps.sum((-2, -1)).reshape(x.shape[0], out_units, per_group)


def fast_route(layer: ProbeLayer, x: torch.Tensor) -> torch.Tensor:
    """Tap sums then contributions, with the layer's true output size. (B, O, Cg)."""
    out_hw = tuple(layer.module(x).shape[-2:])
    sums = conv_tap_sums(x, layer, out_hw)
    return contributions(layer, sums, layer.folded_weight(x.dtype), 0, layer.out_units)


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1),
    dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=(2, 1), padding=(2, 0), dilation=(2, 1)),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=3, stride=2, padding=1, groups=6),  # depthwise
    dict(in_channels=4, out_channels=8, kernel_size=5, padding=2, groups=4),  # depthwise, multiplier 2
    dict(in_channels=3, out_channels=4, kernel_size=1),
    dict(in_channels=3, out_channels=4, kernel_size=4, stride=4),  # patch embedding
    dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", dilation=2),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=2, padding_mode="circular"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate", stride=2),
]


@pytest.mark.parametrize("spec", CONV_CASES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_tap_sum_route_matches_per_pair_convolutions(spec: dict) -> None:
    conv = nn.Conv2d(**spec).double()
    x = torch.randn(3, spec["in_channels"], 9, 8, dtype=torch.float64)
    layer = ProbeLayer("conv", conv)
    expected = per_pair_conv(x, conv, conv.weight)  # (B, O, Cg)
    torch.testing.assert_close(fast_route(layer, x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_folded_bn_contributions_sum_to_preactivation(groups: int) -> None:
    conv = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=groups, bias=True).double()
    bn = nn.BatchNorm2d(8).double().eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.2, 3.0)
    bn.weight.data.normal_()  # negative gammas flip signs: folding must follow them
    bn.bias.data.normal_()
    x = torch.randn(5, 4, 11, 10, dtype=torch.float64)
    layer = ProbeLayer("conv", conv, bn=bn, bn_name="bn")
    contrib = fast_route(layer, x)  # (B, O, Cg)
    preact = bn(conv(x))  # (B, O, Ho, Wo) the true pre-activation
    positions = preact.shape[-2] * preact.shape[-1]
    total = contrib.sum(-1) + layer.folded_bias(torch.float64) * positions
    torch.testing.assert_close(total, preact.sum((-2, -1)), rtol=1e-10, atol=1e-9)
    # and each pair equals the per-pair convolution with the folded kernel
    torch.testing.assert_close(
        contrib, per_pair_conv(x, conv, layer.folded_weight(torch.float64).view_as(conv.weight))
    )


def test_timm_same_padding_and_weight_standardisation() -> None:
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    for conv in (Conv2dSame(3, 4, 3, stride=2).double(), StdConv2d(3, 4, 3, padding=1).double()):
        layer = ProbeLayer("conv", conv)
        contrib = fast_route(layer, x)
        bias = conv.bias if conv.bias is not None else torch.zeros(4, dtype=torch.float64)
        out = conv(x)
        torch.testing.assert_close(
            contrib.sum(-1) + bias * out.shape[-2] * out.shape[-1], out.sum((-2, -1)), rtol=1e-9, atol=1e-9
        )
    torch.testing.assert_close(conv_effective_weight(nn.Conv2d(2, 2, 1)).shape, torch.Size([2, 2, 1, 1]))


def test_tap_read_counts_by_hand() -> None:
    # 1-D input of 4, kernel 3, stride 2, padding 1 -> outputs read positions (-1,0,1) and (1,2,3)
    counts = tap_read_counts(4, 2, kernel=3, stride=2, dilation=1, pad_before=1)
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(counts, expected)
    reflect = tap_read_counts(4, 2, kernel=3, stride=2, dilation=1, pad_before=1, padding_mode="reflect")
    torch.testing.assert_close(reflect[0], torch.tensor([0.0, 2.0, 0.0, 0.0]))  # index -1 reflects to 1
    with pytest.raises(ValueError, match="padding_mode"):
        tap_read_counts(4, 2, 3, 1, 1, 1, "mirror")


def test_linear_contributions_sum_over_tokens() -> None:
    lin = nn.Linear(6, 5).double()
    x = torch.randn(3, 7, 6, dtype=torch.float64)  # (B, tokens, I)
    layer = ProbeLayer("lin", lin)
    probe = LayerProbe([layer], torch.float64)
    with probe.attached():
        _, sums = probe.run(lin, x)
    contrib = linear_contributions(sums["lin"].inputs, lin.weight, 0, 5)  # (B, O, I)
    dense = (x[:, :, None, :] * lin.weight[None, None]).sum(1)  # (B, O, I) per-token products summed
    torch.testing.assert_close(contrib, dense)
    total = contrib.sum(-1) + lin.bias * sums["lin"].positions
    torch.testing.assert_close(total, lin(x).sum(1))
    torch.testing.assert_close(sums["lin"].outputs, lin(x).sum(1))


def test_probe_sums_repeated_calls_and_windows() -> None:
    lin = nn.Linear(4, 3).double()

    class Twice(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            windows = x.reshape(x.shape[0] * 2, -1, 4)  # (2B, N/2, 4) batch-major windows
            return lin(x) + lin(x).mean() + lin(windows).sum()

    x = torch.randn(2, 6, 4, dtype=torch.float64)
    probe = LayerProbe([ProbeLayer("lin", lin)], torch.float64)
    with probe.attached():
        _, sums = probe.run(Twice(), x)
    torch.testing.assert_close(sums["lin"].inputs, 3 * x.sum(1))
    assert sums["lin"].positions == 18


@pytest.mark.parametrize("kernel", [3, 5])  # tap-by-tap and einsum routes
@pytest.mark.parametrize("groups,chunk", [(1, 50), (1, 10**9), (4, 30), (4, 130), (8, 7)])
def test_output_chunks_cover_units_and_agree(groups: int, chunk: int, kernel: int) -> None:
    conv = nn.Conv2d(8, 16, kernel, padding=kernel // 2, groups=groups).double()
    layer = ProbeLayer("conv", conv)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    sums = conv_tap_sums(x, layer, (6, 6))
    weight = layer.folded_weight(torch.float64)
    ranges = output_ranges(layer, batch=2, chunk_elements=chunk)
    assert [o for r in ranges for o in range(*r)] == list(range(16))
    chunked = torch.cat([contributions(layer, sums, weight, o0, o1) for o0, o1 in ranges], dim=1)
    torch.testing.assert_close(chunked, contributions(layer, sums, weight, 0, 16))
