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

from robustdiag.errors import ConfigError
from robustdiag.models import cifar as _cifar  # noqa: F401  (registers wrn*/preact_resnet* with timm)
from robustdiag.models.weights import StateDict, load_if_fits

log = logging.getLogger(__name__)

__all__ = [
    "Classifier",
    "ModelSpec",
    "Normalize",
    "UnknownModelError",
    "adapt_small_input_stem",
    "build_classifier",
    "build_model",
]


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

    def __init__(
        self,
        net: nn.Module,
        normalize: Normalize,
        name: str,
        num_classes: int | None = None,
        stem: str = "own",
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.name = name
        self.stem = stem  # "adapted" (small-input stem) or "own"
        self._num_classes = num_classes

    @property
    def num_classes(self) -> int:
        if self._num_classes is not None:
            return self._num_classes
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
    name: str, *, num_classes: int, in_chans: int, img_size: int, kwargs: dict, pretrained: bool = False
) -> tuple[nn.Module, bool]:
    """``timm.create_model`` that also passes ``img_size`` to models which take it (ViT, Swin, ...).

    ``pretrained`` loads timm's weights from the local Hugging Face cache (``hf-hub:`` names always do).
    Returns the network and whether it is sized by ``img_size`` (its stem is then left alone)."""
    hub = name.startswith("hf-hub:")
    if not hub and not timm.is_model(name):
        hint = ", ".join(suggest_model_names(name)) or "see timm.list_models()"
        raise UnknownModelError(
            f"model.name={name!r} is not a timm model. Close names: {hint}. (Your own @register_model "
            "architectures become timm names once their module is imported: model.imports=[my_pkg.models])"
        )
    base = dict(pretrained=pretrained or hub, num_classes=num_classes, in_chans=in_chans, **kwargs)
    sized = False if hub else _takes_img_size(timm.models.model_entrypoint(name), name)
    if "img_size" not in kwargs and sized:
        base["img_size"] = img_size
    try:
        return timm.create_model(name, **base), sized
    except TypeError as err:
        raise ValueError(f"timm model {name!r} rejected model.kwargs={kwargs}: {err}") from err
    except (OSError, ValueError, RuntimeError) as err:
        if not base["pretrained"]:
            raise
        raise _missing_weights_error(name, err) from None


def _missing_weights_error(name: str, err: BaseException) -> ConfigError:
    """Pretrained weights that are not in the local Hugging Face cache: say where they go and how to get them."""
    from huggingface_hub.constants import HF_HUB_CACHE

    if name.startswith("hf-hub:"):
        repo = name.removeprefix("hf-hub:")
    else:
        cfg = timm.models.get_pretrained_cfg(name)
        repo = (cfg.hf_hub_id if cfg is not None else None) or f"timm/{name}"
    first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    return ConfigError(
        f"model.pretrained: the weights of {name!r} (Hugging Face repo {repo}) could not be loaded ({first}). "
        f"robustdiag looks in the local Hugging Face cache ({HF_HUB_CACHE}; HF_HOME / HF_HUB_CACHE move it). "
        f'On a machine with network run: huggingface-cli download {repo}  (or python -c "import timm; '
        f"timm.create_model('{name}', pretrained=True)\"), then copy that cache folder here; or download the "
        "weights file and use model.checkpoint=<file>"
    )


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
    pretrained: bool = False,
    weights: StateDict | None = None,
    strip_prefix: str | None = None,
    evaluate_only: bool = False,
    label: str | None = None,
) -> Classifier:
    """Create timm model ``name`` for ``num_classes`` classes behind a :class:`Normalize` layer.

    ``small_input_stem=None`` adapts the stem when ``img_size <= 64`` (for weights: when the weights were
    trained with the adapted stem; a stem is never re-initialised under loaded weights). ``kwargs`` go to
    ``timm.create_model`` (e.g. ``{"patch_size": 4}`` for a ViT at 32 px). ``pretrained`` loads timm's
    weights; ``weights`` is a state dict read from a file, loaded strictly.
    """
    if len(mean) != in_chans:
        raise ValueError(
            f"data has {in_chans} channel(s) but normalisation mean has {len(mean)}; "
            "set data.channels or the dataset's mean/std to match"
        )
    label = label or name
    net, sized_by_img_size = _create_timm(
        name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, kwargs=dict(kwargs or {}),
        pretrained=pretrained,
    )  # fmt: skip
    automatic = small_input_stem is None
    wants_small = img_size <= 64 and not sized_by_img_size
    if pretrained:
        _check_pretrained_head(net, name, num_classes, evaluate_only)
        if small_input_stem:
            raise ConfigError(
                f"model.small_input_stem=true would re-initialise the first conv of the pretrained {name!r}; "
                "set model.small_input_stem=null (keep its stem) or use a larger data.image_size"
            )
        if automatic and wants_small:
            log.info(
                "pretrained %s keeps its own stem at %d px (its weights were trained with it)", name, img_size
            )
        model = Classifier(net, Normalize(mean, std), name=label, num_classes=num_classes)
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
        return model
    if weights is not None:
        adapt = wants_small if automatic else bool(small_input_stem)
        net, stem = _load_weights_with_stem(
            net, weights, name, adapt=adapt, automatic=automatic, strip_prefix=strip_prefix
        )
        model = Classifier(net, Normalize(mean, std), name=label, num_classes=num_classes, stem=stem)
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
        return model
    adapt = wants_small if automatic else bool(small_input_stem)
    original = copy.deepcopy(net) if adapt and automatic else None
    changes = adapt_small_input_stem(net) if adapt else []
    model = Classifier(
        net, Normalize(mean, std), name=label, num_classes=num_classes, stem="adapted" if changes else "own"
    )
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
        model = Classifier(original, Normalize(mean, std), name=label, num_classes=num_classes)
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
    return model


def _check_pretrained_head(net: nn.Module, name: str, num_classes: int, evaluate_only: bool) -> None:
    """Pretrained weights for another class count get a new (random) head: fine to fine-tune, not to evaluate."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    trained_for = cfg.get("num_classes")
    if trained_for is None or int(trained_for) == num_classes:
        return
    if evaluate_only:
        raise ConfigError(
            f"model.pretrained: {name!r}'s weights classify {trained_for} classes but the data has {num_classes}; "
            "train=none would evaluate a random new head. Fine-tune it (train=generalise), or evaluate on data "
            "with the weights' classes"
        )
    log.info(
        "pretrained %s: new %d-class head (the weights were trained for %s classes)",
        name,
        num_classes,
        trained_for,
    )


def _load_weights_with_stem(
    net: nn.Module, weights: StateDict, name: str, *, adapt: bool, automatic: bool, strip_prefix: str | None
) -> tuple[nn.Module, str]:
    """Load ``weights`` into ``net`` with the stem they were trained with: the adapted small-input stem is
    tried first when wanted, and in automatic mode the model's own stem when the weights do not fit it."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier") if isinstance(cfg.get("classifier"), str) else None
    own: list[tuple[str, nn.Module]] = [("own", net)]
    adapted: list[tuple[str, nn.Module]] = []
    if adapt:
        small = copy.deepcopy(net)
        if adapt_small_input_stem(small):
            adapted.append(("adapted", small))
    if not automatic:
        candidates = adapted or own
    elif weights.mean is not None:  # a robustdiag checkpoint: trained with robustdiag's automatic rule
        candidates = adapted + own
    else:  # weights from elsewhere: the architecture as timm defines it, unless only the adapted stem fits
        candidates = own + adapted
    reports = []
    for stem, candidate in candidates:
        report = load_if_fits(candidate, weights.tensors, strip_prefix, classifier)
        if report is None:
            if automatic and adapted and stem == "own":
                log.warning(
                    "%s at small images: kept its own stem for the weights in %s (timm's architecture); if they "
                    "were trained with robustdiag's small-input stem, set model.small_input_stem=true",
                    name, weights.path.name,
                )  # fmt: skip
            return candidate, stem
        reports.append(f"with the {'small-input' if stem == 'adapted' else 'own'} stem: {report}")
    raise ConfigError(
        f"model.checkpoint={str(weights.path)!r} does not fit model.name={name!r} "
        f"({' | '.join(reports)}). Check model.name and model.kwargs, the data's classes and channels, "
        "model.small_input_stem, or model.checkpoint_key / model.strip_prefix"
    )


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


from robustdiag.models.sources import ModelSpec, build_classifier  # noqa: E402  (needs the names above)
