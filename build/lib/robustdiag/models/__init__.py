"""Models: any timm architecture, wrapped so it takes pixels in [0, 1] and normalises inside.

``build_model("resnet18", num_classes=10, in_chans=3, img_size=32, mean=..., std=...)`` returns a
:class:`Classifier` whose ``forward(x) == net(normalize(x))``. Attacks, shifts and the Fisher metric
therefore all live in pixel space. :mod:`robustdiag.models.cifar` registers the CIFAR-style networks
timm lacks (pre-activation / wide ResNets) so they are timm names like any other.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import warnings
from collections.abc import Sequence

import timm
import torch
from torch import nn

from robustdiag.models import cifar as _cifar  # noqa: F401  (registers wrn*/preact_resnet* with timm)

log = logging.getLogger(__name__)

__all__ = ["Classifier", "Normalize", "UnknownModelError", "adapt_small_input_stem", "build_model"]


class UnknownModelError(ValueError):
    """Raised for a model name timm does not know; the message lists close names."""


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with mean/std in [0, 1] pixel units, stored as buffers."""

    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor  # (1, C, 1, 1)

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """A timm network behind its input normalisation: pixels in [0, 1] -> logits (B, K)."""

    def __init__(self, net: nn.Module, normalize: Normalize, name: str) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.name = name

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net, "num_classes"))  # noqa: B009 - timm models set it; nn.Module is untyped here

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, K)
        return self.net(self.normalize(x))


def suggest_model_names(name: str, n: int = 5) -> list[str]:
    """timm names closest to ``name`` (by spelling, then by shared prefix)."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
    if len(close) < n:
        stem = name.split("_")[0][:5]
        close += [m for m in names if m.startswith(stem) and m not in close][: n - len(close)]
    return close


def _create_timm(
    name: str, *, num_classes: int, in_chans: int, img_size: int, kwargs: dict
) -> tuple[nn.Module, bool]:
    """``timm.create_model`` that also passes ``img_size`` to models which take it (ViT, Swin, ...).

    Returns the network and whether it is sized by ``img_size`` (its stem is then left alone)."""
    if not timm.is_model(name):
        hint = ", ".join(suggest_model_names(name)) or "see timm.list_models()"
        raise UnknownModelError(f"model.name={name!r} is not a timm model. Close names: {hint}.")
    entry = timm.models.model_entrypoint(name)
    base = dict(pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    sized = _takes_img_size(entry, name)
    if "img_size" not in kwargs and sized:
        base["img_size"] = img_size
    try:
        return timm.create_model(name, **base), sized
    except TypeError as err:
        raise ValueError(f"timm model {name!r} rejected model.kwargs={kwargs}: {err}") from err


def _takes_img_size(entry: object, name: str) -> bool:
    """Whether the model behind a timm entrypoint has a patch embedding sized by ``img_size`` (ViT, DeiT,
    LeViT, Swin, ...); CNNs that merely accept ``img_size`` (ByobNet) are not.

    Looks at every ``nn.Module`` class defined in the entrypoint's module and at their base classes
    (DeiT's distilled ViT takes ``*args`` and hands ``img_size`` to its ViT base)."""
    module = inspect.getmodule(entry)
    if module is None:
        return False
    for obj in vars(module).values():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
            for cls in obj.__mro__:
                if cls is nn.Module or not issubclass(cls, nn.Module):
                    continue
                params = inspect.signature(cls.__init__).parameters
                if "img_size" in params and (
                    "patch_size" in params or "stem_stride" in params
                ):  # patch/stem sized by it
                    return True
    return False


def adapt_small_input_stem(net: nn.Module) -> list[str]:
    """Adapt an ImageNet stem (7x7/2 conv + 3x3/2 max-pool, 32x downsampling) to 32 px inputs.

    The first conv (timm's ``pretrained_cfg['first_conv']``) gets stride 1 (and a 3x3 kernel when it was
    7x7); the stem's first max-pool becomes identity. This is the standard CIFAR adaptation of
    ResNet/DenseNet. Patchify stems (kernel == stride, e.g. ViT, ConvNeXt) are left alone: set their
    ``patch_size`` in ``model.kwargs`` instead. Returns a description of the changes.
    """
    pretrained_cfg = getattr(net, "pretrained_cfg", None)
    first = pretrained_cfg.get("first_conv") if isinstance(pretrained_cfg, dict) else None
    if not first:
        return []
    names = (
        list(first) if isinstance(first, (list, tuple)) else [first]
    )  # multi-branch stems list each branch
    changes = []
    for conv_name in names:
        try:
            conv = net.get_submodule(conv_name)
        except AttributeError:
            continue
        if isinstance(conv, nn.Sequential):  # deep stems list the block; adapt its first conv
            conv_name, conv = next(
                (f"{conv_name}.{n}", m) for n, m in conv.named_children() if isinstance(m, nn.Conv2d)
            )
        if not isinstance(conv, nn.Conv2d) or conv.stride == (1, 1) or conv.kernel_size == conv.stride:
            continue
        kh, kw = (3, 3) if conv.kernel_size == (7, 7) else conv.kernel_size[:2]
        kernel = (kh, kw)
        new = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=kernel,
            stride=1,
            padding=(kh // 2, kw // 2),
            bias=conv.bias is not None,
            groups=conv.groups,
        )
        net.set_submodule(conv_name, new)
        changes.append(f"{conv_name}: {tuple(conv.kernel_size)}/{conv.stride[0]} -> {kernel}/1")
    if not changes:
        return []
    for name, module in net.named_modules():
        if isinstance(module, nn.MaxPool2d) and name.count(".") <= 1:  # the stem's pool, not a later one
            net.set_submodule(name, nn.Identity())
            changes.append(f"{name}: max-pool -> identity")
            break
    return changes


def build_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    small_input_stem: bool | None = None,
    kwargs: dict | None = None,
) -> Classifier:
    """Create timm model ``name`` for ``num_classes`` classes behind a :class:`Normalize` layer.

    ``small_input_stem=None`` adapts the stem when ``img_size <= 64``. ``kwargs`` go to
    ``timm.create_model`` (e.g. ``{"patch_size": 4}`` for a ViT at 32 px).
    """
    if len(mean) != in_chans:
        raise ValueError(
            f"data has {in_chans} channel(s) but normalisation mean has {len(mean)}; "
            "set data.channels or the dataset's mean/std to match"
        )
    net, sized_by_img_size = _create_timm(
        name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, kwargs=dict(kwargs or {})
    )
    automatic = small_input_stem is None
    adapt = img_size <= 64 and not sized_by_img_size if automatic else bool(small_input_stem)
    original = copy.deepcopy(net) if adapt and automatic else None
    changes = adapt_small_input_stem(net) if adapt else []
    model = Classifier(net, Normalize(mean, std), name=name)
    try:
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
    except ValueError as err:
        if not changes:
            raise
        if original is None:  # asked for explicitly
            raise ValueError(
                f"model.small_input_stem=true breaks {name!r} ({'; '.join(changes)}): {err.__cause__ or err}. "
                "Set model.small_input_stem=false (keep its own stem) or use a larger data.image_size"
            ) from err
        log.warning(
            "the small-input stem adaptation does not fit %s (%s); keeping its own stem "
            "(model.small_input_stem=false silences this)", name, err.__cause__ or err,
        )  # fmt: skip
        model = Classifier(original, Normalize(mean, std), name=name)
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
    return model


def check_forward(model: nn.Module, *, in_chans: int, img_size: int, num_classes: int) -> None:
    """Run one tiny forward pass so shape problems surface at construction with a readable message."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_chans, img_size, img_size))
    except (RuntimeError, AssertionError) as err:
        raise ValueError(
            f"model {getattr(model, 'name', type(model).__name__)!r} cannot take {in_chans}x{img_size}x{img_size} "
            f"inputs: {err}. Try a larger data.image_size, model.small_input_stem=true|false (adapt the stem "
            "to small images or keep it), or for patch models model.kwargs.patch_size"
        ) from err
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"model {getattr(model, 'name', type(model).__name__)!r} returns a {type(out).__name__} (features?), "
            "not a logits tensor (B, K); use a classification model (no features_only / forward_features)"
        )
    if out.shape != (2, num_classes):
        raise ValueError(f"model returns {tuple(out.shape)} for 2 images; expected (2, {num_classes})")
    if not torch.isfinite(out).all():
        warnings.warn("model produced non-finite logits at initialisation", stacklevel=2)
