"""The timm families the model-zoo test builds and evaluates at 32 px: the one list, kept here.

``FAST`` are run by the fast suite; CI (``-m slow``) runs all of them. Add a family by adding its
smallest timm name (and any kwargs it needs at 32 px).
"""

from __future__ import annotations

ZOO: dict[str, dict] = {
    "test_resnet": {},
    "resnet18": {},
    "resnet18d": {},  # deep (3-conv) stem
    "test_byobnet": {},
    "vgg11_bn": {},
    "densenet121": {},
    "regnetx_002": {},
    "mobilenetv3_small_050": {},  # hard-swish / hard-sigmoid
    "efficientnet_b0": {},
    "ghostnet_050": {},
    "convnext_atto": {},  # patchify stem
    "repvgg_a0": {},  # multi-branch stem
    "mobileone_s0": {},  # multi-branch stem
    "fastvit_t8": {},  # multi-branch stem + attention
    "vit_tiny_patch16_224": {"patch_size": 4},
    "deit_tiny_patch16_224": {},  # img_size through the DeiT wrapper
    "levit_128s": {},  # stem sized by img_size, BatchNorm1d
    "mixer_s16_224": {},
}

FAST = ("test_resnet", "repvgg_a0", "deit_tiny_patch16_224", "mobilenetv3_small_050")
