"""Where a model comes from, as one typed object (:class:`ModelSpec`) the ``model`` config group builds.

Sources (``model/source`` in the record):

* ``timm``: a timm name (``model.name=resnet18``), random init, or with weights: ``model.pretrained=true``
  (the local Hugging Face cache; offline when the files are there) or an ``hf-hub:`` name.
* ``checkpoint``: a timm architecture plus a local weights file (``model.checkpoint=run/last.pt``).
* ``factory``: the user's own architecture, ``model._target_=my_pkg.models.build`` (any callable that
  returns an ``nn.Module`` mapping images to logits), with or without ``model.checkpoint``.
* ``torchscript``: a ``torch.jit.save`` file in ``model.checkpoint`` (no architecture needed).
* ``robustbench``: a RobustBench model from a local model folder, through ``robustbench.utils.load_model``.

``model.imports=[my_pkg.models, path/to/file.py]`` imports modules first, so timm architectures registered
there with ``@register_model`` are timm names like any other. :func:`build_classifier` turns a spec into a
:class:`~robustdiag.models.Classifier` (pixels in [0, 1] -> logits) with the model's input convention
(``model.input_norm``) applied inside, so attacks, shifts and diagnostics stay in pixel space.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from robustdiag.errors import ConfigError
from robustdiag.models.weights import (
    StateDict,
    check_weights_file,
    is_torchscript,
    load_if_fits,
    read_state_dict,
)

if TYPE_CHECKING:
    from robustdiag.models import Classifier

log = logging.getLogger("robustdiag")

SOURCES = ("timm", "checkpoint", "factory", "torchscript", "robustbench")
# auto: the file's own (robustdiag checkpoints) > none for RobustBench > the pretrained weights' > the data's
INPUT_NORMS = ("auto", "data", "pretrained", "checkpoint", "none")
HF_HUB_PREFIX = "hf-hub:"
# Keys of model.kwargs that the data decides for timm models; setting them twice is refused.
DATA_DECIDED_MODEL_KWARGS = {
    "num_classes": "data (data.num_classes, data.classes)",
    "in_chans": "data.channels",
}
# timm's own weight-loading arguments: robustdiag loads weights itself (strictly, after the stem is chosen)
WEIGHT_KWARGS = {
    "pretrained": "model.pretrained=true",
    "checkpoint_path": "model.checkpoint=<file>",
    "pretrained_cfg": "model.pretrained=true (or an hf-hub: name)",
    "pretrained_cfg_overlay": "model.pretrained=true (or an hf-hub: name)",
}


@dataclass(frozen=True)
class RobustBenchRef:
    """Where RobustBench keeps a model: ``<model_dir>/<dataset>/<threat_model>/<name>.pt``."""

    dataset: str = "cifar10"
    threat_model: str = "Linf"
    model_dir: str = "models"

    def file(self, name: str) -> Path:
        return Path(self.model_dir).expanduser() / self.dataset / self.threat_model / f"{name}.pt"


@dataclass(frozen=True)
class ModelSpec:
    """What model to evaluate (or train) and how to feed it; ``robustdiag/conf/model/*.yaml`` builds one.

    The data decides classes, channels and image size; ``source`` says which route builds the network."""

    name: str | None = None  # timm name or hf-hub:<repo>; RobustBench model name for model=robustbench
    small_input_stem: bool | None = (
        None  # timm CNNs: adapt ImageNet stems to images <= 64 px (null: automatic)
    )
    kwargs: dict[str, Any] = field(default_factory=dict)  # to timm.create_model / the factory
    pretrained: bool = False  # timm weights from the local Hugging Face cache
    checkpoint: str | None = None  # a weights file (state dict or TorchScript)
    checkpoint_key: str | None = None  # where the state dict sits in the file (dots for nesting); null: found
    strip_prefix: str | None = (
        None  # null: strip wrapper prefixes (module., _orig_mod., model., net.); "": none
    )
    trusted_pickle: bool = False  # allow torch.load(weights_only=False): only for files you trust
    input_norm: str = "auto"  # auto | data | pretrained | checkpoint | none (the model takes [0, 1] pixels)
    mean: tuple[float, ...] | None = None  # explicit per-channel input mean/std in [0, 1] pixel units
    std: tuple[float, ...] | None = None
    label: str | None = None  # the record's `model` (what the analysis groups by); null: derived
    imports: tuple[str, ...] = ()  # modules or .py files imported before the model is built
    factory: str | None = None  # dotted path of the user's model callable (model._target_ of a factory)
    robustbench: RobustBenchRef | None = None
    source: str = field(init=False, default="timm")  # how the network is built: one of SOURCES (derived)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for key in ("pretrained", "trusted_pickle"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"model.{key}={getattr(self, key)!r} must be true or false")
        if self.small_input_stem is not None and not isinstance(self.small_input_stem, bool):
            raise ConfigError(
                f"model.small_input_stem={self.small_input_stem!r} must be true, false or null (automatic)"
            )
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"model.input_norm={self.input_norm!r} is not one of {', '.join(INPUT_NORMS)}")
        set_(self, "kwargs", _plain_dict(self.kwargs, "model.kwargs"))
        set_(self, "imports", _string_list(self.imports, "model.imports"))
        if isinstance(self.robustbench, dict | DictConfig):
            set_(self, "robustbench", RobustBenchRef(**_plain_dict(self.robustbench, "model.robustbench")))
        set_(self, "mean", _pixel_stats(self.mean, "model.mean"))
        set_(self, "std", _pixel_stats(self.std, "model.std", positive=True))
        if (self.mean is None) != (self.std is None):
            raise ConfigError(
                "model.mean and model.std go together: set both (pixel units in [0, 1]) or neither"
            )
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ConfigError(
                    f"model.mean has {len(self.mean)} channels but model.std has {len(self.std)}"
                )
            if self.input_norm != "auto":
                raise ConfigError(
                    f"model.input_norm={self.input_norm!r} and model.mean/std both say how inputs are "
                    "normalised; keep one (model.input_norm=auto with explicit mean/std)"
                )
        if self.checkpoint is not None:
            set_(self, "checkpoint", str(check_weights_file(self.checkpoint)))
        set_(self, "source", self._decide_source())
        self._check_source()

    def _check_source(self) -> None:
        source = self.source
        if source in ("timm", "checkpoint", "robustbench") and (
            not isinstance(self.name, str) or not self.name
        ):
            need = {
                "timm": "a timm model name (model.name=resnet18); for a TorchScript file set "
                "model.checkpoint=<file> (model=torchscript), for your own model model=custom model._target_=<callable>",
                "checkpoint": "the timm architecture the weights belong to (e.g. model.name=resnet18)",
                "robustbench": "the RobustBench model name (e.g. model.name=Standard)",
            }[source]
            raise ConfigError(f"model.name={self.name!r}: {source} models need {need}")
        if self.pretrained and source != "timm":
            other = "model.checkpoint" if self.checkpoint else f"a {source} model"
            raise ConfigError(f"model.pretrained=true and {other} both give weights; keep one")
        if source in ("timm", "checkpoint"):
            for key, instead in WEIGHT_KWARGS.items():
                if key in self.kwargs:
                    raise ConfigError(
                        f"model.kwargs.{key}: robustdiag loads weights itself (strictly, after choosing the stem, "
                        f"never re-initialising what it loaded); use {instead} instead"
                    )
            for key, decided_by in DATA_DECIDED_MODEL_KWARGS.items():
                if key in self.kwargs:
                    raise ConfigError(
                        f"model.kwargs.{key}={self.kwargs[key]!r}: {key} is set by the {decided_by}; "
                        f"remove model.kwargs.{key}"
                    )
        elif self.small_input_stem:
            raise ConfigError(
                f"model.small_input_stem=true adapts timm stems; a {source} model keeps the stem it has "
                "(set model.small_input_stem=null)"
            )
        if self.input_norm == "pretrained" and not self.has_pretrained_weights:
            raise ConfigError(
                "model.input_norm=pretrained needs timm pretrained weights (model.pretrained=true or an hf-hub: "
                "name); use data, checkpoint, none, or model.mean/std"
            )

    def _decide_source(self) -> str:
        """How the network is built: one of :data:`SOURCES` (reads a checkpoint's format once)."""
        if self.robustbench is not None:
            return "robustbench"
        if self.factory:
            return "factory"
        if self.checkpoint and is_torchscript(Path(self.checkpoint)):
            return "torchscript"
        return "checkpoint" if self.checkpoint else "timm"

    @property
    def has_pretrained_weights(self) -> bool:
        return self.source == "timm" and (self.pretrained or str(self.name).startswith(HF_HUB_PREFIX))

    @property
    def has_weights(self) -> bool:
        """Whether the built model carries trained weights (a factory is trusted to load its own)."""
        return self.has_pretrained_weights or self.source != "timm"

    @property
    def architecture(self) -> str:
        """The architecture's name: timm name, the factory's dotted path, or the file for TorchScript."""
        if self.source == "factory":
            return str(self.factory)
        if self.source == "torchscript":
            return f"torchscript:{Path(str(self.checkpoint)).name}"
        return str(self.name)

    @property
    def display_name(self) -> str:
        """The record's ``model``: ``model.label`` when set, else the architecture, plus the weights file's
        name for a checkpoint (a sweep over checkpoints then ranks each file as its own model)."""
        if self.label:
            return self.label
        if self.source == "torchscript":
            return Path(str(self.checkpoint)).stem
        base = self.architecture.removeprefix(HF_HUB_PREFIX)
        return f"{base}@{Path(self.checkpoint).stem}" if self.checkpoint else base


def _plain_dict(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, dict):
        raise ConfigError(f"{key}={value!r} must be a mapping (e.g. {key}={{depth: 18}})")
    return {str(k): v for k, v in value.items()}


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ConfigError(f"{key}={value!r} must be a list: {key}=[{value}]")
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key}={value!r} must be a list of module names or .py files")
    return tuple(value)


def _pixel_stats(value: Any, key: str, positive: bool = False) -> tuple[float, ...] | None:
    """Per-channel mean/std in [0, 1] pixel units; 0-255 units and non-numbers refused."""
    if value is None:
        return None
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{key}={value!r} must be a per-channel list, e.g. {key}=[0.5,0.5,0.5]")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{key}={value!r}: {v!r} is not a finite number")
        out.append(float(v))
    if any(v > 1.0 for v in out):
        raise ConfigError(f"{key}={value!r} looks like 0-255 pixel units; give it in [0, 1] (divide by 255)")
    if positive and any(v <= 0 for v in out):
        raise ConfigError(f"{key}={value!r} must be positive")
    if not positive and any(v < 0 for v in out):
        raise ConfigError(f"{key}={value!r} must be in [0, 1]")
    return tuple(out)


def import_user_modules(imports: Sequence[str], base: Path | None = None) -> None:
    """Import each entry of ``model.imports``: a module name (``my_pkg.models``) or a ``.py`` file, whose
    module is then importable by its file name (so ``model._target_=my_models.build`` resolves)."""
    for entry in imports:
        if entry.endswith(".py"):
            path = Path(entry).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            if not path.is_file():
                raise ConfigError(f"model.imports: {entry!r}: no such file")
            name = path.stem
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path.resolve()):
                continue
            spec = importlib.util.spec_from_file_location(name, path.resolve())
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[name]
                raise ConfigError(
                    f"model.imports: importing {entry!r} failed: {type(err).__name__}: {err}"
                ) from err
            continue
        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"model.imports: no module {entry!r} ({err}); install it, add its folder to PYTHONPATH, or "
                "list the file instead: model.imports=[path/to/my_models.py]"
            ) from None
        except Exception as err:
            raise ConfigError(
                f"model.imports: importing {entry!r} failed: {type(err).__name__}: {err}"
            ) from err


def locate_factory(target: str) -> Callable[..., Any]:
    """The user's model callable named by ``model._target_``, or an error saying how to make it importable."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
    except Exception as err:  # noqa: BLE001 - hydra raises ImportError or its own wrapper
        raise ConfigError(
            f"model._target_={target!r} cannot be imported ({str(err).splitlines()[0]}); install its package, "
            "add its folder to PYTHONPATH, or name its file in model.imports=[path/to/file.py]"
        ) from None
    if not callable(obj):
        raise ConfigError(
            f"model._target_={target!r} is a {type(obj).__name__}, not a callable that builds a model"
        )
    return obj


@dataclass(frozen=True)
class InputConvention:
    """How the model expects its inputs: normalised with mean/std (pixel units) after [0, 1] pixels."""

    kind: str  # data | pretrained | checkpoint | none | config
    mean: tuple[float, ...]
    std: tuple[float, ...]


def input_convention(
    spec: ModelSpec,
    *,
    in_chans: int,
    data_mean: Sequence[float],
    data_std: Sequence[float],
    pretrained_cfg: dict[str, Any] | None,
    weights: StateDict | None,
) -> InputConvention:
    """Resolve ``model.input_norm`` (and explicit ``model.mean/std``) for this model and data."""
    kind = spec.input_norm
    if spec.mean is not None and spec.std is not None:
        mean, std, kind = spec.mean, spec.std, "config"
    else:
        if kind == "auto":
            if weights is not None and weights.mean is not None:
                kind = "checkpoint"
            elif spec.source == "robustbench":
                kind = "none"
            elif spec.has_pretrained_weights:
                kind = "pretrained"
            else:
                kind = "data"
        if kind == "checkpoint":
            if weights is None or weights.mean is None or weights.std is None:
                raise ConfigError(
                    "model.input_norm=checkpoint but the weights file stores no input normalisation "
                    "(only robustdiag checkpoints do); use data, none or model.mean/std"
                )
            mean, std = weights.mean, weights.std
        elif kind == "pretrained":
            cfg = pretrained_cfg or {}
            if "mean" not in cfg or "std" not in cfg:
                raise ConfigError(
                    "model.input_norm=pretrained but the weights declare no mean/std; set model.mean/std"
                )
            mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        elif kind == "none":
            mean, std = (0.0,) * in_chans, (1.0,) * in_chans
        else:
            mean, std = tuple(data_mean), tuple(data_std)
    if len(mean) != in_chans and kind == "pretrained" and in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)  # gray data: timm sums the RGB filters
    if len(mean) != in_chans:
        raise ConfigError(
            f"the model's input normalisation ({kind}) has {len(mean)} channels but the data has {in_chans}; "
            "set model.mean/std for the data's channels, or data.channels"
        )
    return InputConvention(kind, tuple(float(v) for v in mean), tuple(float(v) for v in std))


@dataclass
class BuiltModel:
    """The network behind its input convention, and the record's facts about where it came from."""

    model: Classifier
    facts: dict[str, Any]


def build_classifier(
    spec: ModelSpec,
    *,
    num_classes: int,
    in_chans: int,
    img_size: int,
    data_mean: Sequence[float],
    data_std: Sequence[float],
    evaluate_only: bool = False,
    base_dir: Path | None = None,
) -> BuiltModel:
    """Build the model ``spec`` names for data with ``num_classes`` classes, ``in_chans`` channels and
    ``img_size`` px. ``evaluate_only`` (``train=none``) refuses weights whose classifier does not fit the
    data (a new head would be random)."""
    from robustdiag.models import Classifier, Normalize, build_model, check_forward

    import_user_modules(spec.imports, base_dir)
    source = spec.source
    weights = None
    if spec.checkpoint and source != "torchscript":
        weights = read_state_dict(
            Path(spec.checkpoint), key=spec.checkpoint_key, strip_prefix=None, trusted=spec.trusted_pickle
        )
    facts: dict[str, Any] = {
        "model/source": source,
        "model/architecture": spec.architecture,
        "model/checkpoint": spec.checkpoint,
        "model/checkpoint_sha256": weights.sha256 if weights else None,
        "model/pretrained": spec.has_pretrained_weights,
    }
    if source == "torchscript":
        from robustdiag.models.weights import file_sha256

        facts["model/checkpoint_sha256"] = file_sha256(Path(str(spec.checkpoint)))
    if source in ("timm", "checkpoint"):
        pretrained_cfg = _timm_pretrained_cfg(spec)
        convention = input_convention(
            spec, in_chans=in_chans, data_mean=data_mean, data_std=data_std,
            pretrained_cfg=pretrained_cfg, weights=weights,
        )  # fmt: skip
        model = build_model(
            str(spec.name), num_classes=num_classes, in_chans=in_chans, img_size=img_size,
            mean=convention.mean, std=convention.std, small_input_stem=spec.small_input_stem,
            kwargs=spec.kwargs, pretrained=spec.has_pretrained_weights, weights=weights,
            strip_prefix=spec.strip_prefix, evaluate_only=evaluate_only, label=spec.display_name,
        )  # fmt: skip
        facts["model/stem"] = getattr(model, "stem", "own")
    else:
        net = _build_other(spec, source, num_classes=num_classes, in_chans=in_chans)
        if weights is not None:
            _load_into(net, weights, spec, what=f"model._target_={spec.factory}")
        convention = input_convention(
            spec,
            in_chans=in_chans,
            data_mean=data_mean,
            data_std=data_std,
            pretrained_cfg=None,
            weights=weights,
        )
        model = Classifier(
            net, Normalize(convention.mean, convention.std), name=spec.display_name, num_classes=num_classes
        )
        check_forward(model, in_chans=in_chans, img_size=img_size, num_classes=num_classes)
        facts["model/stem"] = "own"
    facts.update(
        {
            "model/input_norm": convention.kind,
            "model/input_mean": ",".join(f"{v:.6g}" for v in convention.mean),
            "model/input_std": ",".join(f"{v:.6g}" for v in convention.std),
        }
    )
    log.info(
        "model %s (source %s%s): inputs normalised by %s mean %s std %s",
        spec.display_name, source, f", weights {spec.checkpoint}" if spec.checkpoint else "",
        convention.kind, facts["model/input_mean"], facts["model/input_std"],
    )  # fmt: skip
    return BuiltModel(model, facts)


def _timm_pretrained_cfg(spec: ModelSpec) -> dict[str, Any] | None:
    """The pretrained config timm declares for the weights (mean/std, classes): from timm's registry, or
    for an ``hf-hub:`` name from the repo's ``config.json`` (the local cache when offline)."""
    if not spec.has_pretrained_weights:
        return None
    import timm

    name = str(spec.name)
    try:
        if name.startswith(HF_HUB_PREFIX):
            from timm.models._hub import load_model_config_from_hf

            cfg, _, _ = load_model_config_from_hf(name.removeprefix(HF_HUB_PREFIX))
            return dict(cfg)
        registered = timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - missing weights and unknown names are reported when the model is created
        return None
    return registered.to_dict() if registered is not None else None


def _load_into(net: nn.Module, weights: StateDict, spec: ModelSpec, *, what: str) -> None:
    report = load_if_fits(net, weights.tensors, spec.strip_prefix, classifier=None)
    if report is not None:
        raise ConfigError(
            f"model.checkpoint={spec.checkpoint!r} does not fit {what}: {report}. Check the architecture and "
            "its arguments (model.kwargs), the data's classes and channels, or model.checkpoint_key / "
            "model.strip_prefix"
        )


def _build_other(spec: ModelSpec, source: str, *, num_classes: int, in_chans: int) -> nn.Module:
    """The network of a factory, TorchScript or RobustBench source."""
    if source == "factory":
        factory = locate_factory(str(spec.factory))
        kwargs = dict(spec.kwargs)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        for key, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if key in params and key not in kwargs:
                kwargs[key] = value
        try:
            net = factory(**kwargs)
        except Exception as err:
            raise ConfigError(
                f"model._target_={spec.factory}: calling it with {kwargs} failed: {type(err).__name__}: {err}"
            ) from err
        if not isinstance(net, nn.Module):
            raise ConfigError(
                f"model._target_={spec.factory} returned a {type(net).__name__}, not a torch.nn.Module; it must "
                "build the network (images -> logits)"
            )
        return net
    if source == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", category=FutureWarning
                )  # "torch.jit is deprecated": still the format users have
                return torch.jit.load(str(spec.checkpoint), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - torch raises RuntimeError or its own
            raise ConfigError(
                f"model.checkpoint={spec.checkpoint!r} is not a loadable TorchScript file: "
                f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
    return _load_robustbench(spec)


def _load_robustbench(spec: ModelSpec) -> nn.Module:
    """A RobustBench model from its local folder (no download: the file must be there)."""
    ref = spec.robustbench
    assert ref is not None
    path = ref.file(str(spec.name))
    if not path.is_file():
        raise ConfigError(
            f"model=robustbench: no {path} (model.robustbench.model_dir={ref.model_dir!r}, dataset "
            f"{ref.dataset!r}, threat model {ref.threat_model!r}, model.name={spec.name!r}). On a machine with "
            f"network: python -c \"from robustbench.utils import load_model; load_model('{spec.name}', "
            f"model_dir='{ref.model_dir}', dataset='{ref.dataset}', threat_model='{ref.threat_model}')\", then "
            "copy the model folder here"
        )
    try:
        from robustbench.utils import load_model
    except ImportError as err:
        raise ConfigError(
            f"model=robustbench needs the robustbench package ({err}): pip install "
            "git+https://github.com/RobustBench/robustbench. Without it, name the architecture and the file: "
            f"model.name=<timm or registered name> model.checkpoint={path}"
        ) from None
    try:
        net = load_model(
            model_name=spec.name, model_dir=ref.model_dir, dataset=ref.dataset, threat_model=ref.threat_model
        )
    except Exception as err:
        raise ConfigError(
            f"model=robustbench: robustbench could not load {spec.name!r}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model=robustbench: load_model returned a {type(net).__name__}, not a module")
    return net


RESERVED_KEYS = {name for name, f in ModelSpec.__dataclass_fields__.items() if f.init and name != "factory"}


def model_spec(node: DictConfig, base_dir: Path | None = None) -> ModelSpec:
    """The ``model`` block as a :class:`ModelSpec`.

    ``_target_`` is the registry: a ModelSpec (the presets), or the user's own model callable, whose extra
    keys become its arguments (beside ``model.kwargs``). A plain block without ``_target_`` is read as a
    ModelSpec."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    plain: dict[str, Any] = {str(k): v for k, v in container.items()}
    for key, value in plain.items():
        if value == "???":
            example = {"_target_": "my_models.build", "checkpoint": "path/to/weights.pt"}.get(key, "<value>")
            raise ConfigError(
                f"model.{key} is required but has no value (???); set it, e.g. model.{key}={example}"
            )
    import_user_modules(_string_list(plain.get("imports"), "model.imports"), base_dir)
    target = plain.pop("_target_", None)
    fields = {k: v for k, v in plain.items() if k in RESERVED_KEYS}
    extra = {k: v for k, v in plain.items() if k not in RESERVED_KEYS and not str(k).startswith("_")}
    is_spec = target is None or target in ("robustdiag.grid_point.ModelSpec", "robustdiag.models.ModelSpec")
    if not is_spec:
        located = locate_factory(str(target))
        is_spec = isinstance(located, type) and issubclass(located, ModelSpec)
    if is_spec:
        if extra or "factory" in plain:
            unknown = sorted(set(extra) | ({"factory"} & set(plain)))
            raise ConfigError(
                f"model: unknown key(s) {unknown} (nothing reads them: check the spelling); valid keys: "
                f"{', '.join(sorted(RESERVED_KEYS))}"
            )
        return ModelSpec(**fields)
    fields.pop("name", None)  # a factory's model is named by its _target_ (or model.label)
    kwargs = {**_plain_dict(fields.pop("kwargs", None), "model.kwargs"), **extra}
    return ModelSpec(factory=str(target), kwargs=kwargs, **fields)
