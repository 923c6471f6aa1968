"""Spectral-bound rules for timm's VisionTransformer: patch embedding, pre-norm blocks with local
LayerNorm and attention bounds (valid at the evaluated inputs only), token or average pooling."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed
from timm.layers.attention import Attention
from timm.layers.format import Format, nchw_to
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from robustdiag.metrics.bounds.ops import (
    Chain,
    LinearOp,
    Op,
    PowerSettings,
    ResidualOp,
    UnsupportedArchitecture,
    _log,
    supported,
)
from robustdiag.metrics.bounds.registry import children, module_ops, register


class AttentionOp(Op):
    """timm multi-head self-attention; local bound (see the module docstring), max over evaluated inputs."""

    local = True

    def __init__(self, name: str, module: Attention) -> None:
        for attr in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(module, attr), nn.Identity):
                raise UnsupportedArchitecture(f"{name}.{attr} is not Identity; supported: {supported()}")
        if getattr(module, "gate", None) is not None:
            raise UnsupportedArchitecture(f"{name} is gated attention; supported: {supported()}")
        self.name, self.kind, self.module = name, "Attention", module
        H, hd, a = module.num_heads, module.head_dim, module.attn_dim
        W = module.qkv.weight.detach()  # (3a, C)
        per_head = W.reshape(3, H, hd, -1)  # (3, H, hd, C)
        self.wq = torch.linalg.matrix_norm(per_head[0], 2)  # (H,)
        self.wk = torch.linalg.matrix_norm(per_head[1], 2)
        self.wv = float(torch.linalg.matrix_norm(W[2 * a :], 2))
        self.wo = float(torch.linalg.matrix_norm(module.proj.weight.detach(), 2))
        self.lip = 0.0

    def run(self, h: Tensor, settings: PowerSettings) -> Tensor:
        m = self.module
        B, N, _ = h.shape
        qkv = m.qkv(h).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, hd) each
        A = (q * m.scale @ k.transpose(-2, -1)).softmax(-1)  # (B, H, N, N)
        # (B, H) ‖A_h‖₂: exact for small N, else ‖A‖₂ ≤ √(‖A‖₁ ‖A‖_∞) with rows summing to 1
        a_norm = torch.linalg.matrix_norm(A, 2) if N <= 256 else A.sum(-2).amax(-1).sqrt()
        s = A.amax(dim=(-2, -1)).clamp_max(0.5)  # (B, H) bound on the softmax Jacobian norm
        qn, kn, vn = (torch.linalg.matrix_norm(t, 2) for t in (q, k, v))  # (B, H)
        c = s * vn * (self.wq * kn + qn * self.wk) * m.scale  # (B, H)
        lip = self.wo * (a_norm.amax(-1) * self.wv + c.square().sum(-1).sqrt())  # (B,)
        self.lip = max(self.lip, float(lip.max()))
        return m(h)

    def log_lip(self) -> float:
        return _log(self.lip)


@register(Attention)
def attention_ops(name: str, module: Attention) -> list[Op]:
    return [AttentionOp(name, module)]


@register(
    VisionTransformer, supports="vit_* (VisionTransformer with Block/Attention/Mlp, token or avg pooling)"
)
def vit_ops(name: str, model: VisionTransformer) -> list[Op]:
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg", ""):
        raise UnsupportedArchitecture(
            f"{name}: ViT pooling {model.global_pool!r}/attn_pool has no rule; token and avg have"
        )
    ops = children(name, model, ("patch_embed",))
    ops.append(LinearOp(f"{name}._pos_embed", "pos_embed", model._pos_embed, exact=1.0))
    ops += children(name, model, ("patch_drop", "norm_pre", "blocks", "norm"))
    ops.append(LinearOp(f"{name}.pool", f"pool[{model.global_pool}]", _vit_pool(model)))
    return ops + children(name, model, ("fc_norm", "head_drop", "head"))


def _vit_pool(model: VisionTransformer) -> Callable[[Tensor], Tensor]:
    """The ViT's token pooling (linear: class token or mean of the patch tokens)."""

    def pool(h: Tensor) -> Tensor:
        if model.global_pool == "token":
            return h[:, 0]
        if model.global_pool == "avg":
            return (
                h if getattr(model, "pool_include_prefix", False) else h[:, model.num_prefix_tokens :]
            ).mean(1)
        return h

    return pool


@register(PatchEmbed)
def patch_embed_ops(name: str, pe: PatchEmbed) -> list[Op]:
    def embed(h: Tensor) -> Tensor:  # PatchEmbed.forward without its norm (linear)
        if pe.dynamic_img_pad:
            ph = (pe.patch_size[0] - h.shape[-2] % pe.patch_size[0]) % pe.patch_size[0]
            pw = (pe.patch_size[1] - h.shape[-1] % pe.patch_size[1]) % pe.patch_size[1]
            h = F.pad(h, (0, pw, 0, ph))
        h = pe.proj(h)
        if pe.flatten:
            return h.flatten(2).transpose(1, 2)  # NCHW -> NLC
        return nchw_to(h, pe.output_fmt) if pe.output_fmt != Format.NCHW else h

    return [LinearOp(f"{name}.proj", "PatchEmbed", embed)] + module_ops(f"{name}.norm", pe.norm)


@register(Block)
def vit_block_ops(name: str, block: Block) -> list[Op]:
    attn = Chain(f"{name}.attn_branch", children(name, block, ("norm1", "attn", "ls1", "drop_path1")))
    mlp = Chain(f"{name}.mlp_branch", children(name, block, ("norm2", "mlp", "ls2", "drop_path2")))
    return [
        ResidualOp(f"{name}.attn_residual", attn, None, Chain(name, [])),
        ResidualOp(f"{name}.mlp_residual", mlp, None, Chain(name, [])),
    ]


@register(Mlp)
def mlp_ops(name: str, mlp: Mlp) -> list[Op]:
    return children(name, mlp, ("fc1", "act", "drop1", "norm", "fc2", "drop2"))
