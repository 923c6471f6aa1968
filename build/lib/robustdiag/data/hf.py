"""Real image datasets through one path: Hugging Face ``datasets``, from the hub or from a local copy.

``HFImageSource`` reads a hub id (``hub_id``) or a local ``path``: a dataset saved with
``save_to_disk``, an image folder ``root/<split>/<class>/*.png``, parquet files (a directory such as a
downloaded hub repo, or one file), or a classic CIFAR python-pickle folder. The selected images are
decoded once to uint8 tensors, resized, and cached under ``cache_dir/data/<name>-<hash>.pt``.
"""

from __future__ import annotations

import io
import logging
import os
import pathlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from robustdiag.data.bundle import DataBundle, ImageData, channel_stats, resize_images
from robustdiag.data.cache import cache_path, load_cached, path_fingerprint, save_cached
from robustdiag.data.cifar import find_cifar_folder, read_cifar
from robustdiag.progress import progress, progress_enabled

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import datasets

SPLIT_SEED = 0  # subsets and derived test splits never depend on the run seed
_DECODE_BATCH = 512  # images handed to the decoding threads at once
_SPLIT_ALIASES = (
    ("train", "training"),
    ("validation", "valid", "val", "dev"),
    ("test", "testing", "eval", "evaluation"),
)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_OFFLINE_ERRORS = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectError", "ConnectTimeout"}


class HubUnreachableError(ConnectionError):
    """The Hugging Face Hub could not be reached; the message says how to use a local copy."""


# ----------------------------------------------------------------------------------------- splits


class _Split:
    """Labels of one split, and a way to decode any subset of its images."""

    labels: np.ndarray  # (N,) int64 labels of the source

    def decode(self, indices: np.ndarray, image_size: int | None, channels: int) -> torch.Tensor:
        """Images at ``indices`` as uint8 (n, channels, S, S)."""
        raise NotImplementedError


class _ArraySplit(_Split):
    """A split already in memory as uint8 (N, C, H, W) (the CIFAR pickles)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images
        self.labels = labels

    def decode(self, indices: np.ndarray, image_size: int | None, channels: int) -> torch.Tensor:
        images = torch.from_numpy(self.images[indices])  # (n, C, H, W)
        if images.shape[1] != channels:
            if images.shape[1] == 3 and channels == 1:
                weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # ITU-R 601 luma, as PIL "L"
                images = (
                    (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
                )
            else:
                images = images.expand(-1, channels, -1, -1)
        return images.contiguous() if image_size is None else resize_images(images, image_size)


class _HFSplit(_Split):
    """A ``datasets.Dataset`` whose images are decoded with PIL in threads (PIL releases the GIL)."""

    def __init__(
        self, dataset: datasets.Dataset, image_column: str, labels: np.ndarray, workers: int
    ) -> None:
        self.dataset = dataset
        self.image_column = image_column
        self.labels = labels
        self.workers = workers

    def first_mode(self) -> str:
        """PIL mode of the first image (to infer the channel count)."""
        item = self._encoded(self.dataset.select([0]))[0]
        return _open_image(item).mode

    def _encoded(self, dataset: datasets.Dataset) -> list[dict[str, Any]]:
        import datasets

        column = dataset.select_columns([self.image_column]).cast_column(
            self.image_column, datasets.Image(decode=False)
        )
        return list(column[self.image_column])

    def decode(self, indices: np.ndarray, image_size: int | None, channels: int) -> torch.Tensor:
        import datasets

        subset = self.dataset.select(indices.tolist()).select_columns([self.image_column])
        subset = subset.cast_column(self.image_column, datasets.Image(decode=False))
        mode = "L" if channels == 1 else "RGB"
        chunks = []
        batches = subset.iter(batch_size=_DECODE_BATCH)
        total = -(-len(subset) // _DECODE_BATCH)
        with ThreadPoolExecutor(self.workers) as pool:
            for batch in progress(batches, desc="decode images", total=total, unit="batch"):
                arrays = list(
                    pool.map(partial(_decode_image, mode=mode, size=image_size), batch[self.image_column])
                )
                chunks.append(_stack(arrays, image_size))
        if not chunks:
            side = image_size or 0
            return torch.zeros((0, channels, side, side), dtype=torch.uint8)
        return torch.cat(chunks)


class _SubSplit(_Split):
    """Rows ``rows`` of another split (a test split carved out of a train split)."""

    def __init__(self, parent: _Split, rows: np.ndarray) -> None:
        self.parent = parent
        self.rows = rows
        self.labels = parent.labels[rows]

    def decode(self, indices: np.ndarray, image_size: int | None, channels: int) -> torch.Tensor:
        return self.parent.decode(self.rows[indices], image_size, channels)


# ------------------------------------------------------------------------------------ decoding


def _open_image(item: dict[str, Any]) -> Image.Image:
    """Open an encoded image as given by ``datasets.Image(decode=False)``: bytes or a file path."""
    if item.get("bytes"):
        return Image.open(io.BytesIO(item["bytes"]))
    return Image.open(item["path"])


def _decode_image(item: dict[str, Any], mode: str, size: int | None) -> np.ndarray:
    """One image as uint8 (H, W, C), converted to ``mode`` ("L" or "RGB")."""
    image = _open_image(item)
    if size is not None:
        image.draft(mode, (size, size))  # JPEG: decode at a reduced scale that still covers size x size
    if image.mode.startswith("I"):  # 16-bit grayscale (medical PNGs): scale 0..65535 to 0..255
        wide = np.asarray(image, dtype=np.int64)
        image = Image.fromarray(np.clip(wide // 257, 0, 255).astype(np.uint8), "L")
    array = np.asarray(image.convert(mode), dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def _stack(arrays: list[np.ndarray], image_size: int | None) -> torch.Tensor:
    """Decoded (H, W, C) arrays -> uint8 (n, C, S, S), resizing each group of equal shape at once."""
    shapes = sorted({a.shape for a in arrays})
    if image_size is None:
        if len(shapes) > 1:
            raise ValueError(
                f"images have different sizes ({shapes[0][:2]} and {shapes[-1][:2]}); set data.image_size"
            )
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    out = torch.empty((len(arrays), arrays[0].shape[2], image_size, image_size), dtype=torch.uint8)
    for shape in shapes:
        rows = [i for i, a in enumerate(arrays) if a.shape == shape]
        group = torch.from_numpy(np.stack([arrays[i] for i in rows])).permute(0, 3, 1, 2)  # (g, C, H, W)
        out[rows] = resize_images(group, image_size)
    return out


# ------------------------------------------------------------------------------------- selection


def quiet_datasets_outside_terminals() -> None:
    """``datasets`` draws its own progress bars; outside a terminal (Slurm logs, CI) they are noise."""
    if progress_enabled():
        return
    import datasets

    datasets.disable_progress_bars()


def check_pixel_stats(key: str, values: Sequence[float]) -> None:
    """``data.mean`` / ``data.std``: one finite value per channel in [0, 1] pixel units (std > 0)."""
    if isinstance(values, str) or not hasattr(values, "__len__") or not len(values):
        raise ValueError(f"data.{key} must be a list with one value per channel or null, got {values!r}")
    numbers = [float(v) for v in values]
    if not all(np.isfinite(numbers)):
        raise ValueError(f"data.{key}={numbers} must be finite numbers")
    if max(numbers) > 1.0:
        raise ValueError(
            f"data.{key}={numbers} looks like 0-255 units; pixels are in [0, 1], so divide by 255 "
            f"(data.{key}=[{', '.join(f'{v / 255:.4f}' for v in numbers)}])"
        )
    if key == "std" and min(numbers) <= 0:
        raise ValueError(f"data.std={numbers} must be positive")
    if key == "mean" and min(numbers) < 0:
        raise ValueError(f"data.mean={numbers} must lie in [0, 1] (pixel units)")


def check_source_labels(name: str, split_key: str, labels: np.ndarray, n_names: int | None) -> None:
    """Refuse labels that are not class indices: negatives (often -1 for 'unlabelled') or beyond the names."""
    if not labels.size:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        count = int((labels < 0).sum())
        raise ValueError(
            f"{name}: {count} label(s) in data.{split_key} are negative (min {low}); labels must be class "
            "indices 0..K-1 (-1 usually marks unlabelled rows, e.g. a hidden test split): use a labelled "
            "split (data.test_split=null carves a test split out of the train split) or remove those rows"
        )
    if n_names is not None and high >= n_names:
        raise ValueError(
            f"{name}: data.{split_key} has label {high} but the data names only {n_names} classes; "
            "the label column and the class names disagree (check data.label_column)"
        )


def _balanced_cap(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted positions keeping at most ``cap`` seeded-random samples of each label (all if fewer)."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labels.shape[0])  # (N,)
    grouped = shuffled[np.argsort(labels[shuffled], kind="stable")]  # by label, random within label
    sorted_labels = labels[grouped]
    first = np.searchsorted(sorted_labels, sorted_labels, side="left")  # (N,) start of each label's run
    rank = np.arange(labels.shape[0]) - first
    return np.sort(grouped[rank < cap])


def _stratified_split(labels: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seed 0) stratified train/test positions of one labelled split."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(labels.shape[0])
    train, test = train_test_split(
        positions, test_size=test_fraction, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


# ------------------------------------------------------------------------------------ hub access


def _is_offline(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) says the hub could not be reached."""
    offline_env = any(
        os.environ.get(key, "").strip().lower() in {"1", "true", "yes", "on"}
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError) or type(seen).__name__ in _OFFLINE_ERRORS:
            return True
        if offline_env and isinstance(seen, FileNotFoundError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def offline_message(hub_id: str, name: str, splits: Sequence[str], cause: BaseException) -> str:
    """What to tell a user whose machine cannot reach the hub: how to use and make a local copy."""
    split_list = ", ".join(splits)
    return (
        f"Could not reach the Hugging Face Hub to load '{hub_id}' ({type(cause).__name__}: {cause}).\n"
        f"The machine is offline, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set. Point the source at a "
        f"local copy instead:\n\n"
        f"    robustdiag data={name} data.path=/local/copy\n\n"
        f"where /local/copy is one of\n"
        f"  * a dataset saved with save_to_disk; make it on a machine with network:\n"
        f"        python -c \"import datasets; datasets.load_dataset('{hub_id}').save_to_disk('/local/copy')\"\n"
        f"  * a snapshot of the hub repo (parquet files):\n"
        f"        huggingface-cli download {hub_id} --repo-type dataset --local-dir /local/copy\n"
        f"  * an image folder /local/copy/<split>/<class>/*.png with splits {split_list}\n"
        f"  * for CIFAR-10/100: the python-pickle folder cifar-10-batches-py/ or cifar-100-python/\n"
        f"and copy it to this machine."
    )


# ---------------------------------------------------------------------------------------- source


class HFImageSource:
    """An image-classification dataset from the Hugging Face hub or a local copy (see module doc).

    Args:
        name: record name and cache file prefix (e.g. "cifar10").
        num_classes: classes of the source dataset; checked on load (null: accept what is found).
        hub_id / config_name / revision: the hub dataset, used when ``path`` is not set.
        path: local copy (saved dataset, image folder, parquet directory or file, CIFAR pickle folder).
        train_split / test_split: split names; ``test_split: null`` carves a fixed stratified
            ``test_fraction`` out of the train split.
        image_column / label_column: column names (a missing name falls back to the only image /
            class-label column; for CIFAR-100 pickles a label column containing "coarse" picks the 20
            superclasses).
        image_size: side in pixels (center crop to square, then antialiased resize); null keeps the
            native size, which must then be the same for all images.
        channels: 1 (gray) or 3 (RGB); null infers it from the first image.
        classes: class subset: an int n (the first n classes) or a list of class indices; labels are
            renumbered 0..len-1 in the given order.
        max_per_class: keep at most this many images per class in each split (seeded, fixed).
        mean / std: fix the per-channel normalisation (pixel units); null computes it from the train split.
        hf_cache_dir: where ``datasets`` keeps downloads and arrow files (null: its default, HF_HOME).
        decode_workers: threads decoding images (null: up to 8).
    """

    def __init__(
        self,
        name: str,
        num_classes: int | None = None,
        hub_id: str | None = None,
        path: str | None = None,
        config_name: str | None = None,
        revision: str | None = None,
        train_split: str = "train",
        test_split: str | None = "test",
        test_fraction: float = 0.2,
        image_column: str = "image",
        label_column: str = "label",
        image_size: int | None = None,
        channels: int | None = None,
        classes: int | Sequence[int] | None = None,
        max_per_class: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        hf_cache_dir: str | None = None,
        decode_workers: int | None = None,
    ) -> None:
        if hub_id is None and path is None:
            raise ValueError(
                f"{name}: set data.hub_id (a Hugging Face dataset id) or data.path (a local copy)"
            )
        if channels not in (None, 1, 3):
            raise ValueError(f"data.channels={channels} is not valid; valid values: 1, 3, null (infer)")
        if image_size is not None and image_size < 1:
            raise ValueError(f"data.image_size must be >= 1 or null, got {image_size}")
        if max_per_class is not None and max_per_class < 1:
            raise ValueError(f"data.max_per_class must be >= 1 or null, got {max_per_class}")
        if test_split is None and not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must lie in (0, 1), got {test_fraction}")
        if isinstance(classes, int) and classes < 1:
            raise ValueError(
                f"data.classes must be >= 1 (the first n classes) or a list of indices, got {classes}"
            )
        if classes is not None and not isinstance(classes, int):
            classes = [int(c) for c in classes]
            if len(set(classes)) != len(classes) or not classes:
                raise ValueError(
                    f"data.classes must be a non-empty list of distinct class indices, got {classes}"
                )
        for key, value in (("mean", mean), ("std", std)):
            if value is not None:
                check_pixel_stats(key, value)
                if channels and len(value) != channels:
                    raise ValueError(
                        f"data.{key}={[float(v) for v in value]} needs {channels} values (one per channel, "
                        f"data.channels={channels})"
                    )
        self.name = name
        self.num_classes = num_classes
        self.hub_id = hub_id
        self.path = path
        self.config_name = config_name
        self.revision = revision
        self.train_split = train_split
        self.test_split = test_split
        self.test_fraction = test_fraction
        self.image_column = image_column
        self.label_column = label_column
        self.image_size = image_size
        self.channels = channels
        self.classes = classes
        self.max_per_class = max_per_class
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.hf_cache_dir = hf_cache_dir
        self.decode_workers = decode_workers or min(8, os.cpu_count() or 1)

    # ---- public

    def load(self, cache_dir: pathlib.Path) -> DataBundle:
        """Decoded tensors from the cache, or decode, cache and return them."""
        quiet_datasets_outside_terminals()
        target = cache_path(cache_dir, self.name, self.cache_params())
        cached = load_cached(target)
        if cached is None:
            train, test, classes, mean, std, meta = self._build()
            save_cached(target, train, test, classes, mean, std, meta)
        else:
            train, test, classes, mean, std, meta = cached
            log.info(
                "%s: decoded images from the cache %s (delete it, or `make clean-cache`, to decode again)",
                self.name,
                target,
            )
        self._check_num_classes(int(meta["source_classes"]))
        mean, std = self._fixed_stats(mean, std, train.images.shape[1])
        return DataBundle(self.name, train, test, classes, mean, std)

    def cache_params(self) -> dict[str, object]:
        """Everything that defines the decoded content (the cache key)."""
        location: dict[str, object] = {
            "hub_id": self.hub_id,
            "config_name": self.config_name,
            "revision": self.revision,
        }
        if self.path is not None:
            local = pathlib.Path(self.path).expanduser().resolve()
            location = {"path": str(local), "path_fingerprint": path_fingerprint(local)}
        return {
            "source": "HFImageSource",
            **location,
            "train_split": self.train_split,
            "test_split": self.test_split,
            "test_fraction": self.test_fraction if self.test_split is None else None,
            "image_column": self.image_column,
            "label_column": self.label_column,
            "image_size": self.image_size,
            "channels": self.channels,
            "classes": self.classes,
            "max_per_class": self.max_per_class,
        }

    # ---- building

    def _build(self) -> tuple[ImageData, ImageData, list[str], tuple[float, ...], tuple[float, ...], dict]:
        """Open, select, decode; returns (train, test, classes, mean, std, meta)."""
        train_raw, test_raw, names = self._open()
        for split_key, split in (("train_split", train_raw), ("test_split", test_raw)):
            check_source_labels(self.name, split_key, split.labels, len(names) if names else None)
        found = (
            len(names)
            if names
            else int(max(train_raw.labels.max(initial=-1), test_raw.labels.max(initial=-1))) + 1
        )
        names = names or [str(k) for k in range(found)]
        self._check_num_classes(found)
        chosen = self._chosen_classes(found)
        channels = self.channels or self._infer_channels(train_raw)
        class_map = np.full(found, -1, dtype=np.int64)
        class_map[chosen] = np.arange(len(chosen))
        train = self._decode_split(train_raw, class_map, channels)
        test = self._decode_split(test_raw, class_map, channels)
        mean, std = channel_stats(train.images)
        return train, test, [names[c] for c in chosen], mean, std, {"source_classes": found}

    def _decode_split(self, split: _Split, class_map: np.ndarray, channels: int) -> ImageData:
        """Keep the chosen classes (and at most max_per_class each), decode, relabel 0..K'-1."""
        labels = class_map[split.labels]  # (N,) -1 for dropped classes
        rows = np.flatnonzero(labels >= 0)
        if self.max_per_class is not None:
            rows = rows[_balanced_cap(labels[rows], self.max_per_class, SPLIT_SEED)]
        images = split.decode(rows, self.image_size, channels)
        return ImageData(images, torch.from_numpy(labels[rows].astype(np.int64)))

    def _chosen_classes(self, found: int) -> list[int]:
        """Source class indices kept, in the order they get new labels."""
        if self.classes is None:
            return list(range(found))
        if isinstance(self.classes, int):
            if self.classes > found:
                raise ValueError(f"data.classes={self.classes} but {self.name} has only {found} classes")
            return list(range(self.classes))
        bad = [c for c in self.classes if not 0 <= c < found]
        if bad:
            raise ValueError(f"data.classes has indices {bad} outside [0, {found}) for {self.name}")
        return list(self.classes)

    def _infer_channels(self, split: _Split) -> int:
        if isinstance(split, _SubSplit):
            split = split.parent
        if isinstance(split, _HFSplit):
            return 1 if split.first_mode() in _GRAY_MODES else 3
        assert isinstance(split, _ArraySplit)
        return int(split.images.shape[1])

    def _check_num_classes(self, found: int) -> None:
        if self.num_classes is not None and found != self.num_classes:
            raise ValueError(
                f"{self.name}: the data has {found} classes but data.num_classes={self.num_classes}; "
                f"set data.num_classes={found} (or point data.path / data.hub_id at the intended dataset)"
            )

    def _fixed_stats(
        self, mean: tuple[float, ...], std: tuple[float, ...], channels: int
    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The YAML's mean/std where given (checked against the channel count), else the computed ones."""
        for key, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and len(value) != channels:
                raise ValueError(f"data.{key}={list(value)} needs {channels} values (one per channel)")
        return self.mean or mean, self.std or std

    # ---- opening

    def _open(self) -> tuple[_Split, _Split, list[str] | None]:
        """(train, test, class names or None) before any selection."""
        if self.path is not None:
            train, test, names = self._open_local(pathlib.Path(self.path).expanduser())
        else:
            train, test, names = self._open_hub()
        if self.test_split is None:
            train_rows, test_rows = _stratified_split(train.labels, self.test_fraction)
            return _SubSplit(train, train_rows), _SubSplit(train, test_rows), names
        assert test is not None
        return train, test, names

    def _open_local(self, path: pathlib.Path) -> tuple[_Split, _Split | None, list[str] | None]:
        import datasets

        if not path.exists():
            raise FileNotFoundError(f"data.path={str(path)!r} does not exist")
        cifar = find_cifar_folder(path) if path.is_dir() else None
        if cifar is not None:
            splits, names = read_cifar(*cifar, self.label_column)
            arrays = {split: _ArraySplit(*value) for split, value in splits.items()}
            return self._pick(arrays, self.train_split, "train_split"), self._pick_test(arrays), names
        try:
            loaded = self._load_local(path)
        except Exception as err:  # datasets/pyarrow raise their own types for unreadable files
            if str(err).startswith("data.path="):
                raise
            raise ValueError(
                f"data.path={str(path)!r} cannot be read as a dataset ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:300]}); check the files (re-download or re-export them)"
            ) from err
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({self.train_split: loaded})
        splits = dict(loaded.items())
        train_ds = self._pick(splits, self.train_split, "train_split")
        test_ds = self._pick_test(splits)
        return self._hf_splits(train_ds, test_ds)

    def _load_local(self, path: pathlib.Path) -> Any:
        """``datasets`` reading a saved dataset, a parquet/arrow file, an image folder or parquet files."""
        import datasets

        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            builder = {".parquet": "parquet", ".arrow": "arrow"}.get(path.suffix)
            if builder is None:
                raise ValueError(
                    f"data.path={str(path)!r} is a file but not .parquet/.arrow; point it at a saved dataset, "
                    f"an image folder, a parquet directory or a CIFAR pickle folder"
                )
            loaded = datasets.load_dataset(
                builder, data_files={self.train_split: str(path)}, cache_dir=self.hf_cache_dir
            )
        else:
            loaded = datasets.load_dataset(
                str(path), cache_dir=self.hf_cache_dir
            )  # image folder or parquet files
        return loaded

    def _open_hub(self) -> tuple[_Split, _Split | None, list[str] | None]:
        import datasets

        wanted = [self.train_split] + ([self.test_split] if self.test_split is not None else [])
        loaded = []
        for split in wanted:
            try:
                loaded.append(
                    datasets.load_dataset(
                        self.hub_id,
                        name=self.config_name,
                        split=split,
                        revision=self.revision,
                        cache_dir=self.hf_cache_dir,
                    )
                )
            except Exception as error:
                if _is_offline(error):
                    raise HubUnreachableError(
                        offline_message(str(self.hub_id), self.name, wanted, error)
                    ) from error
                raise
        return self._hf_splits(loaded[0], loaded[1] if len(loaded) > 1 else None)

    def _hf_splits(
        self, train: datasets.Dataset, test: datasets.Dataset | None
    ) -> tuple[_Split, _Split | None, list[str] | None]:
        """Wrap datasets as splits, resolving the image and label columns on the train split."""
        import datasets

        image_column = _resolve_column(train, self.image_column, datasets.Image, "image_column")
        label_column = _resolve_column(train, self.label_column, datasets.ClassLabel, "label_column")
        feature = train.features[label_column]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None

        def wrap(ds: datasets.Dataset) -> _HFSplit:
            for column in (image_column, label_column):
                if column not in ds.column_names:
                    raise ValueError(
                        f"{self.name}: a split lacks column {column!r}; its columns are {ds.column_names}"
                    )
            labels = np.asarray(ds.with_format("numpy", columns=[label_column])[label_column], dtype=np.int64)
            return _HFSplit(ds, image_column, labels, self.decode_workers)

        return wrap(train), (wrap(test) if test is not None else None), names

    def _pick_test(self, splits: dict[str, Any]) -> Any:
        return None if self.test_split is None else self._pick(splits, self.test_split, "test_split")

    def _pick(self, splits: dict[str, Any], wanted: str, key: str) -> Any:
        """The split named ``wanted``, or its only alias present (valid <-> validation <-> val ...)."""
        if wanted in splits:
            return splits[wanted]
        aliases = next((group for group in _SPLIT_ALIASES if wanted in group), ())
        present = [name for name in aliases if name in splits]
        if len(present) == 1:
            return splits[present[0]]
        hint = (
            " (or set data.test_split=null to carve a test split out of the train split)"
            if key == "test_split"
            else ""
        )
        raise ValueError(
            f"{self.name}: no split {wanted!r} (data.{key}); available splits: {sorted(splits)}{hint}"
        )


def _resolve_column(dataset: datasets.Dataset, wanted: str, feature_type: type, key: str) -> str:
    """``wanted`` if present, else the only column of ``feature_type``; else an error listing columns."""
    if wanted in dataset.column_names:
        return wanted
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, feature_type)]
    if len(typed) == 1:
        return typed[0]
    raise ValueError(
        f"column {wanted!r} (data.{key}) is not in the dataset; its columns are {dataset.column_names}"
    )
