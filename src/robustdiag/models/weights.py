"""Reading model weights from files: state dicts (``.pt``/``.pth``/``.bin``/``.safetensors``), TorchScript
archives, and robustdiag's own training checkpoints, safely.

* PyTorch files are read with ``torch.load(..., weights_only=True)``: a file cannot run code. A pickle that
  needs more (a whole pickled model, an ``argparse.Namespace`` beside the weights) is refused with the reason;
  ``model.trusted_pickle=true`` opts in for files the user trusts.
* The state dict is found in the common containers (``state_dict``, ``model``, ``model_state_dict``, ...)
  or named with ``model.checkpoint_key``; prefixes that wrappers add (``module.`` from DataParallel,
  ``_orig_mod.`` from ``torch.compile``, ``model.``, ``net.``) are stripped when the model has none.
* Loading is strict: missing, unexpected or mis-shaped tensors are one error naming both sides (never a
  silent re-initialisation).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustdiag.errors import ConfigError

log = logging.getLogger(__name__)

# containers training scripts put their state dict under (first match wins)
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "state", "module", "ema", "model_ema")
# prefixes wrappers add to every key: DataParallel/DDP, torch.compile, Lightning/robustdiag wrappers
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")
# robustdiag's Classifier keeps its input normalisation as buffers beside the network
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")
# tensors a checkpoint may lack without changing the function (BatchNorm's step counter)
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


@dataclass(frozen=True)
class StateDict:
    """Weights read from a file: tensors by key, the input normalisation stored with them (robustdiag's own
    checkpoints), and where they came from."""

    tensors: dict[str, torch.Tensor]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    path: Path
    sha256: str
    notes: tuple[str, ...] = ()


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (cached per path, size and modification time)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_file(value: Any, key: str = "model.checkpoint") -> Path:
    """``value`` as an existing, readable file, or a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{key}={value!r} must be a path to a weights file (.pt, .pth, .safetensors)")
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(f"{key}={str(value)!r}: no such file (relative paths start at the launch folder)")
    if not path.is_file():
        raise ConfigError(f"{key}={str(value)!r} is a folder; point it at one weights file")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise ConfigError(f"{key}={str(value)!r} cannot be read: {err.strerror}") from None
    return path.resolve()


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``) rather than a pickled state dict."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(
                name.endswith(("/constants.pkl", "/code/")) or "/code/" in name for name in archive.namelist()
            )
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(
    path: Path, *, key: str | None = None, strip_prefix: str | None = None, trusted: bool = False
) -> StateDict:
    """The state dict in ``path``: located, unwrapped and with the robustdiag normalisation split off."""
    loaded = _load_file(path, trusted)
    tensors, where = _find_state_dict(loaded, path, key)
    notes = [f"state dict under {where!r}"] if where else []
    mean = std = None
    if all(
        k in tensors for k in NORMALIZE_KEYS
    ):  # a robustdiag checkpoint: the input normalisation rides along
        mean = tuple(float(v) for v in tensors.pop("normalize.mean").flatten())
        std = tuple(float(v) for v in tensors.pop("normalize.std").flatten())
        notes.append("input normalisation stored in the file")
    return StateDict(tensors, mean, std, path, file_sha256(path), tuple(notes))


def _load_file(path: Path, trusted: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ConfigError(
                f"model.checkpoint={str(path)!r} is not a readable safetensors file ({err}); truncated or "
                "another format? Save weights with safetensors.torch.save_file or torch.save(model.state_dict())"
            ) from None
    if is_torchscript(path):
        raise ConfigError(
            f"model.checkpoint={str(path)!r} is a TorchScript archive, not a state dict; leave model.name "
            "empty (model=torchscript) to run the scripted model itself"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        if trusted:
            raise ConfigError(f"model.checkpoint={str(path)!r} cannot be unpickled: {err}") from None
        needs = str(err).split("\n")[0] if "GLOBAL" in str(err) or "global" in str(err) else ""
        raise ConfigError(
            f"model.checkpoint={str(path)!r} holds Python objects besides tensors (a pickled model or "
            f"training state{': ' + needs if needs else ''}); loading it would run code from the file, so it "
            "is refused. Save a state dict instead (torch.save(model.state_dict(), path)), or, for a file you "
            "trust, set model.trusted_pickle=true"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().split("\n")[0][:200]
        raise ConfigError(
            f"model.checkpoint={str(path)!r} cannot be read as a PyTorch file ({type(err).__name__}: {first}); "
            "is it truncated, or another format?"
        ) from None


def _is_tensor_map(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _find_state_dict(loaded: Any, path: Path, key: str | None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensor mapping inside ``loaded``: itself, the ``key`` the user named, or a common container."""
    if isinstance(loaded, nn.Module):  # a whole pickled model (only with trusted_pickle)
        return dict(loaded.state_dict()), "the pickled module's state_dict()"
    if key:
        node = loaded
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                have = sorted(map(str, node)) if isinstance(node, Mapping) else type(node).__name__
                raise ConfigError(
                    f"model.checkpoint_key={key!r}: {str(path)!r} has no {part!r} here (found: {have})"
                )
            node = node[part]
        if isinstance(node, nn.Module):
            node = node.state_dict()
        if not _is_tensor_map(node):
            raise ConfigError(f"model.checkpoint_key={key!r} in {str(path)!r} is not a state dict of tensors")
        return dict(node), key
    if _is_tensor_map(loaded):
        return dict(loaded), None
    if isinstance(loaded, Mapping):
        for name in STATE_DICT_KEYS:
            if _is_tensor_map(loaded.get(name)):
                return dict(loaded[name]), name
        keys = ", ".join(sorted(map(str, loaded))[:12])
        raise ConfigError(
            f"model.checkpoint={str(path)!r} holds a dict (keys: {keys}) and none of them is a state dict; "
            "name the right one with model.checkpoint_key=<key> (dots for nested keys)"
        )
    raise ConfigError(
        f"model.checkpoint={str(path)!r} holds a {type(loaded).__name__}, not a state dict; save "
        "torch.save(model.state_dict(), path)"
    )


def strip_wrapper_prefixes(
    tensors: dict[str, torch.Tensor], expected: set[str], prefix: str | None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove key prefixes the model does not have: ``prefix`` when given ("" strips nothing), else the
    wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``, ``net.``) every key carries."""
    if prefix is not None:
        if prefix == "":
            return tensors, []
        if not any(k.startswith(prefix) for k in tensors):
            sample = ", ".join(list(tensors)[:3])
            raise ConfigError(
                f"model.strip_prefix={prefix!r}: no key of the file starts with it (e.g. {sample})"
            )
        return {k.removeprefix(prefix): v for k, v in tensors.items()}, [prefix]
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for candidate in WRAPPER_PREFIXES:
            carries = all(k.startswith(candidate) for k in tensors)
            model_has = any(k.startswith(candidate) for k in expected)
            if carries and not model_has:
                tensors = {k.removeprefix(candidate): v for k, v in tensors.items()}
                stripped.append(candidate)
                changed = True
    return tensors, stripped


def mismatch_report(
    net: nn.Module, tensors: Mapping[str, torch.Tensor], classifier: str | None
) -> str | None:
    """What keeps ``tensors`` from loading strictly into ``net`` (None when they fit), both sides named."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in tensors and not k.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in tensors and tensors[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    head = f"{classifier}.weight" if classifier else None
    if head and head in tensors and head in expected and tensors[head].shape[:1] != expected[head].shape[:1]:
        parts.append(
            f"the file's classifier ({head}) has {tensors[head].shape[0]} outputs but the data has "
            f"{expected[head].shape[0]} classes"
        )
    for label, items in (
        ("shape mismatches", shapes),
        ("missing from the file", missing),
        ("unexpected in the file", unexpected),
    ):
        if items:
            more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:4])}{more}")
    return "; ".join(parts)


def load_if_fits(
    net: nn.Module, tensors: Mapping[str, torch.Tensor], strip_prefix: str | None, classifier: str | None
) -> str | None:
    """Strip wrapper prefixes and load ``tensors`` into ``net`` strictly; the mismatch report (and nothing
    loaded) when they do not fit."""
    fitted, stripped = strip_wrapper_prefixes(dict(tensors), set(net.state_dict()), strip_prefix)
    report = mismatch_report(net, fitted, classifier)
    if report is not None:
        return report
    load_strict(net, fitted)
    if stripped:
        log.info("weights: stripped key prefix %s", " + ".join(repr(p) for p in stripped))
    return None


def load_strict(net: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Load ``tensors`` into ``net``; optional buffers (BatchNorm step counters) may be absent."""
    expected = net.state_dict()
    full = {**{k: v for k, v in expected.items() if k.endswith(OPTIONAL_SUFFIXES)}, **tensors}
    net.load_state_dict(full, strict=True)
