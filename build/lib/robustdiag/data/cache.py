"""Decoded datasets cached as uint8 tensors under ``cache_dir/data/<name>-<hash>.pt``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import warnings

import torch

from robustdiag.data.bundle import ImageData

CACHE_VERSION = 1  # bump when the decoded content of an unchanged config would change

log = logging.getLogger("robustdiag")


def path_fingerprint(path: pathlib.Path) -> str | None:
    """A digest of what lies at ``path``: every file's relative name, size and modification time.

    Editing, adding or removing any file below a folder changes it (a folder's own mtime does not change
    when a file deeper inside is rewritten). None when the path does not exist.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return None
    digest = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_path(cache_dir: pathlib.Path, name: str, params: dict[str, object]) -> pathlib.Path:
    """Where the tensors of a source with these content-defining ``params`` are cached."""
    blob = json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    readable = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return pathlib.Path(cache_dir) / "data" / f"{readable}-{digest}.pt"


def save_cached(
    path: pathlib.Path,
    train: ImageData,
    test: ImageData,
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    meta: dict[str, int | str] | None = None,
) -> None:
    """Write atomically (temporary file then rename), so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CACHE_VERSION,
        "train_images": train.images,
        "train_labels": train.labels,
        "test_images": test.images,
        "test_labels": test.labels,
        "classes": list(classes),
        "mean": torch.tensor(mean, dtype=torch.float64),
        "std": torch.tensor(std, dtype=torch.float64),
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


CachedData = tuple[
    ImageData, ImageData, list[str], tuple[float, ...], tuple[float, ...], dict[str, int | str]
]


def load_cached(path: pathlib.Path) -> CachedData | None:
    """The cached (train, test, classes, mean, std, meta), or None when absent; unreadable files warn."""
    if not path.is_file():
        log.debug("data cache miss: %s", path)
        return None
    log.info("decoded data from the cache %s (delete that file to decode the source again)", path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {payload.get('version')} != {CACHE_VERSION}")
        train = ImageData(payload["train_images"], payload["train_labels"])
        test = ImageData(payload["test_images"], payload["test_labels"])
        classes = [str(c) for c in payload["classes"]]
        mean = tuple(float(v) for v in payload["mean"])
        std = tuple(float(v) for v in payload["std"])
        meta = dict(payload["meta"])
    except Exception as error:  # any unreadable or malformed file is rebuilt, never trusted
        warnings.warn(f"data cache {path} is unreadable ({error!r}); rebuilding it", stacklevel=2)
        return None
    return train, test, classes, mean, std, meta
