"""HFImageSource: every local layout through the hub code path, selection options, errors and the cache."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fakes import CLASS_NAMES, FakeSplit, fake_split, write_image_folder
from PIL import Image

from robustdiag.data import HFImageSource, HubUnreachableError, resize_images
from robustdiag.data import hf as hf_module
from robustdiag.data.hf import _HFSplit


def _source(path: Path, tmp_path: Path, **kwargs) -> HFImageSource:
    options = {
        "name": "fake",
        "path": str(path),
        "num_classes": 3,
        "image_column": "img",
        "hf_cache_dir": str(tmp_path / "hf"),
    }
    return HFImageSource(**{**options, **kwargs})


def _chw(split: FakeSplit) -> torch.Tensor:
    return torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)


def _assert_same_multiset(images: torch.Tensor, labels: torch.Tensor, expected: FakeSplit) -> None:
    """Each loaded (image, label) is one expected pair, and none is missing (order-free)."""
    want = _chw(expected).flatten(1).double()
    got = images.flatten(1).double()
    match = torch.cdist(got, want).argmin(1)  # (N,)
    assert torch.equal(got, want[match]) and match.unique().numel() == len(expected.labels)
    assert torch.equal(labels, torch.from_numpy(expected.labels)[match])


@pytest.mark.parametrize("layout", ["saved_dataset", "parquet_dir"])
def test_ordered_layouts_load_exact_pixels(layout: str, request, tmp_path: Path, splits) -> None:
    root = request.getfixturevalue(layout)
    bundle = _source(root, tmp_path).load(tmp_path / "cache")
    assert bundle.classes == CLASS_NAMES and bundle.num_classes == 3 and bundle.image_size == 10
    for name in ("train", "test"):
        data = getattr(bundle, name)
        assert torch.equal(data.images, _chw(splits[name]))
        assert torch.equal(data.labels, torch.from_numpy(splits[name].labels))
    pixels = bundle.train.images.double() / 255
    assert bundle.mean == pytest.approx(tuple(pixels.mean(dim=(0, 2, 3)).tolist()), abs=1e-12)


def test_image_folder(image_folder: Path, tmp_path: Path, splits) -> None:
    bundle = _source(image_folder, tmp_path, image_column="image").load(tmp_path / "cache")
    assert bundle.classes == sorted(CLASS_NAMES)  # folder names, sorted
    for name in ("train", "test"):
        data = getattr(bundle, name)
        # folder labels follow the sorted class names; map the fixture labels the same way
        remap = torch.tensor([sorted(CLASS_NAMES).index(c) for c in CLASS_NAMES])
        expected = FakeSplit(splits[name].images, remap[torch.from_numpy(splits[name].labels)].numpy())
        _assert_same_multiset(data.images, data.labels, expected)


def test_missing_column_falls_back_to_the_only_image_column(image_folder: Path, tmp_path: Path) -> None:
    bundle = _source(image_folder, tmp_path, image_column="img").load(
        tmp_path / "cache"
    )  # folder column is "image"
    assert bundle.train.images.shape == (12, 3, 10, 10)


def test_valid_split_alias(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "tiny", {"train": fake_split(6, 0), "valid": fake_split(3, 1)})
    bundle = _source(root, tmp_path, test_split="valid").load(
        tmp_path / "cache"
    )  # datasets names it "validation"
    assert len(bundle.test) == 3


def test_single_parquet_file_with_carved_test_split(tmp_path: Path, parquet_dir: Path) -> None:
    file = parquet_dir / "train-00000-of-00001.parquet"
    source = _source(file, tmp_path, test_split=None, test_fraction=0.25)
    bundle = source.load(tmp_path / "cache")
    assert len(bundle.train) == 9 and len(bundle.test) == 3
    assert torch.bincount(bundle.test.labels).tolist() == [1, 1, 1]  # stratified


def test_cifar10_pickle_folder(cifar10_folder, tmp_path: Path) -> None:
    folder, splits = cifar10_folder
    for path in (folder, folder.parent):  # the folder itself, or the directory that holds it
        bundle = _source(path, tmp_path, num_classes=10, label_column="label").load(
            tmp_path / f"c{len(str(path))}"
        )
        assert bundle.classes == [f"c{k}" for k in range(10)] and bundle.image_size == 32
        for name in ("train", "test"):
            assert torch.equal(getattr(bundle, name).images, _chw(splits[name]))
            assert torch.equal(getattr(bundle, name).labels, torch.from_numpy(splits[name].labels))


def test_cifar100_pickle_folder_fine_and_coarse(cifar100_folder, tmp_path: Path) -> None:
    folder, splits = cifar100_folder
    fine = _source(folder, tmp_path, num_classes=100, label_column="fine_label").load(tmp_path / "cache")
    assert fine.num_classes == 100 and fine.classes[7] == "f7"
    assert torch.equal(fine.test.images, _chw(splits["test"]))
    assert torch.equal(fine.train.labels, torch.from_numpy(splits["train"].labels))
    coarse = _source(folder, tmp_path, num_classes=20, label_column="coarse_label").load(tmp_path / "cache")
    assert coarse.num_classes == 20 and torch.equal(coarse.train.labels, fine.train.labels // 5)


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test", "meta"):
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": np.zeros(1)}, handle)
    with open(folder / "train", "wb") as handle:
        handle.write(b"cos\nsystem\n(S'echo hi'\ntR.")  # a pickle that would call os.system
    with pytest.raises(ValueError, match="not allowed"):
        _source(folder, tmp_path, num_classes=100).load(tmp_path / "cache")


def test_resize_and_gray(saved_dataset: Path, tmp_path: Path, splits) -> None:
    bundle = _source(saved_dataset, tmp_path, image_size=6, channels=1).load(tmp_path / "cache")
    assert bundle.train.images.shape == (12, 1, 6, 6) and len(bundle.mean) == 1
    gray = torch.from_numpy(
        np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in splits["train"].images])
    )
    assert torch.equal(bundle.train.images, resize_images(gray[:, None], 6))


def test_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    root = write_image_folder(
        tmp_path / "mixed", {"train": fake_split(3, 0, size=8), "test": fake_split(3, 1, size=8)}
    )
    Image.fromarray(fake_split(1, 2, size=12).images[0]).save(root / "train" / "cat" / "big.png")
    bundle = _source(root, tmp_path, image_size=8).load(tmp_path / "cache")
    assert bundle.train.images.shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="different sizes.*data.image_size"):
        _source(root, tmp_path, image_size=None).load(tmp_path / "cache2")


def test_class_subset_and_per_class_cap(saved_dataset: Path, tmp_path: Path, splits) -> None:
    first_two = _source(saved_dataset, tmp_path, classes=2).load(tmp_path / "cache")
    assert first_two.classes == CLASS_NAMES[:2] and set(first_two.train.labels.tolist()) == {0, 1}
    assert len(first_two.train) == 8
    picked = _source(saved_dataset, tmp_path, classes=[2, 0], max_per_class=3).load(tmp_path / "cache")
    assert picked.classes == ["owl", "cat"] and picked.num_classes == 2
    assert torch.bincount(picked.train.labels).tolist() == [3, 3]
    assert torch.bincount(picked.test.labels).tolist() == [2, 2]  # fewer than the cap: all kept
    original = _chw(splits["train"])
    owls = original[torch.from_numpy(splits["train"].labels == 2)]
    chosen = picked.train.images[picked.train.labels == 0]  # new label 0 is the owl class
    assert all(any(torch.equal(c, o) for o in owls) for c in chosen)
    again = _source(saved_dataset, tmp_path, classes=[2, 0], max_per_class=3).load(tmp_path / "other")
    assert torch.equal(again.train.images, picked.train.images)  # the cap is seeded and fixed


def test_fixed_mean_std(saved_dataset: Path, tmp_path: Path) -> None:
    bundle = _source(
        saved_dataset, tmp_path, mean=[0.4914, 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010]
    ).load(tmp_path / "cache")
    assert bundle.mean == (0.4914, 0.4822, 0.4465) and bundle.std == (0.2023, 0.1994, 0.2010)
    with pytest.raises(ValueError, match=r"data.mean.*3 values"):
        _source(saved_dataset, tmp_path, mean=[0.5]).load(tmp_path / "cache")


def test_num_classes_mismatch_names_both_numbers_and_key(saved_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"has 3 classes but data.num_classes=10; set data.num_classes=3"):
        _source(saved_dataset, tmp_path, num_classes=10).load(tmp_path / "cache")
    _source(saved_dataset, tmp_path).load(tmp_path / "cache")  # warm the cache: the check must still run
    with pytest.raises(ValueError, match="data.num_classes=10"):
        _source(saved_dataset, tmp_path, num_classes=10).load(tmp_path / "cache")


def test_missing_split_lists_available(saved_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"no split 'validation' \(data.test_split\); available splits: \['test', 'train'\]"
    ):
        _source(saved_dataset, tmp_path, test_split="validation").load(tmp_path / "cache")


def test_missing_label_column_lists_the_columns(saved_dataset: Path, tmp_path: Path) -> None:
    import datasets

    plain = datasets.load_from_disk(str(saved_dataset)).cast_column("label", datasets.Value("int64"))
    plain.save_to_disk(str(tmp_path / "plain"))  # no ClassLabel column to fall back to
    with pytest.raises(ValueError, match=r"'fine_label' \(data.label_column\).*\['img', 'label'\]"):
        _source(tmp_path / "plain", tmp_path, label_column="fine_label").load(tmp_path / "cache")
    bundle = _source(tmp_path / "plain", tmp_path).load(tmp_path / "cache")  # int labels: classes 0..max
    assert bundle.classes == ["0", "1", "2"]


def test_cache_hit_skips_decoding(saved_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    calls = []
    original = _HFSplit.decode
    monkeypatch.setattr(_HFSplit, "decode", lambda self, *a: calls.append(1) or original(self, *a))
    first = _source(saved_dataset, tmp_path).load(tmp_path / "cache")
    assert len(calls) == 2  # train and test decoded once
    second = _source(saved_dataset, tmp_path).load(tmp_path / "cache")
    assert len(calls) == 2
    assert torch.equal(first.train.images, second.train.images) and first.mean == second.mean
    files = list((tmp_path / "cache" / "data").glob("fake-*.pt"))
    assert len(files) == 1
    _source(saved_dataset, tmp_path, image_size=5).load(tmp_path / "cache")  # new content, new file
    assert len(list((tmp_path / "cache" / "data").glob("fake-*.pt"))) == 2


def test_corrupt_cache_warns_and_rebuilds(saved_dataset: Path, tmp_path: Path) -> None:
    source = _source(saved_dataset, tmp_path)
    good = source.load(tmp_path / "cache")
    (file,) = (tmp_path / "cache" / "data").glob("fake-*.pt")
    file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        rebuilt = source.load(tmp_path / "cache")
    assert torch.equal(rebuilt.test.images, good.test.images)
    torch.load(file, weights_only=True)  # the rebuilt file is valid again


def _offline(monkeypatch) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_hub_without_network_explains_local_copy(tmp_path: Path, monkeypatch) -> None:
    _offline(monkeypatch)
    source = HFImageSource(
        name="cifar10",
        hub_id="uoft-cs/cifar10",
        num_classes=10,
        image_column="img",
        hf_cache_dir=str(tmp_path / "hf"),
    )
    with pytest.raises(HubUnreachableError) as info:
        source.load(tmp_path / "cache")
    message = str(info.value)
    assert "uoft-cs/cifar10" in message and "data.path=/local/copy" in message
    assert "save_to_disk" in message and "robustdiag data=cifar10" in message


def test_connection_error_from_loader_is_explained(tmp_path: Path, monkeypatch) -> None:
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'some/set' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    source = HFImageSource(name="med", hub_id="some/set", num_classes=2)
    with pytest.raises(HubUnreachableError, match="data.path=/local/copy"):
        source.load(tmp_path / "cache")


def test_other_hub_errors_are_not_masked(tmp_path: Path, monkeypatch) -> None:
    import datasets

    def broken(*args, **kwargs):
        raise ValueError("Unknown split \"tset\". Should be one of ['train', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not hf_module._is_offline(ValueError("x"))
    with pytest.raises(ValueError, match="Unknown split"):
        HFImageSource(name="x", hub_id="a/b", test_split="tset").load(tmp_path / "cache")


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="data.hub_id.*data.path"):
        HFImageSource(name="x")
    with pytest.raises(ValueError, match="data.channels"):
        HFImageSource(name="x", path=".", channels=2)
    with pytest.raises(ValueError, match="data.classes"):
        HFImageSource(name="x", path=".", classes=[1, 1])


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="data.path"):
        _source(tmp_path / "nowhere", tmp_path).load(tmp_path / "cache")
