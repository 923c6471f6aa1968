"""CorruptionFiles on a tiny fake CIFAR-10-C folder written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustdiag.shifts import CorruptionFiles, apply_shift
from robustdiag.types import Shift

N = 6  # test images per severity in the fake release


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """``fog.npy`` (5 N, 4, 4, 3) uint8 whose pixel (0, 0, 0) encodes severity and position; ``labels.npy``."""
    images = np.zeros((5 * N, 4, 4, 3), dtype=np.uint8)
    for severity in range(1, 6):
        for position in range(N):
            images[(severity - 1) * N + position] = 10 * severity + position
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(N, dtype=np.uint8) % 3, 5))
    return tmp_path


def test_reads_the_images_of_the_given_positions_and_severity(release: Path) -> None:
    shift = CorruptionFiles(release, "fog")
    assert isinstance(shift, Shift) and shift.name == "fog"
    x = torch.zeros(3, 3, 4, 4, dtype=torch.float64)
    out = shift(x, 4, generator=torch.Generator(), index=torch.tensor([5, 0, 2]))
    assert out.shape == x.shape and out.dtype == torch.float64
    expected = torch.tensor([45, 40, 42], dtype=torch.float64) / 255
    torch.testing.assert_close(out[:, :, 0, 0], expected[:, None].expand(3, 3))
    assert torch.equal(out, out[:, :1, :1, :1].expand_as(out))


def test_labels_are_checked_against_y(release: Path) -> None:
    shift = CorruptionFiles(release, "fog")
    x, index = torch.zeros(2, 3, 4, 4), torch.tensor([1, 4])
    shift(x, 1, generator=torch.Generator(), index=index, y=torch.tensor([1, 1]))  # stored labels: 1, 1
    with pytest.raises(
        ValueError, match=r"fog: labels in .*labels.npy differ from the given labels y at 1 of 2"
    ):
        shift(x, 1, generator=torch.Generator(), index=index, y=torch.tensor([1, 2]))
    unchecked = CorruptionFiles(release, "fog", check_labels=False)
    unchecked(x, 1, generator=torch.Generator(), index=index, y=torch.tensor([1, 2]))


def test_missing_labels_file_warns_once(release: Path) -> None:
    (release / "labels.npy").unlink()
    shift = CorruptionFiles(release, "fog")
    x, index, y = torch.zeros(1, 3, 4, 4), torch.tensor([0]), torch.tensor([0])
    with pytest.warns(UserWarning, match="labels.npy not found"):
        shift(x, 1, generator=torch.Generator(), index=index, y=y)


def test_works_through_apply_shift_with_the_same_record_name(release: Path) -> None:
    x = torch.zeros(N, 3, 4, 4)
    out = apply_shift(CorruptionFiles(release, "fog"), x, 2, seed=0, batch_size=4, index=torch.arange(N))
    torch.testing.assert_close(out[:, 0, 0, 0], (20 + torch.arange(N, dtype=torch.float32)) / 255)


def test_missing_file_names_the_path_and_the_layout(tmp_path: Path) -> None:
    shift = CorruptionFiles(tmp_path, "snow")
    with pytest.raises(
        FileNotFoundError, match=r"snow: .*snow\.npy does not exist\. Expected the CIFAR-10-C layout"
    ):
        shift(torch.zeros(1, 3, 4, 4), 1, generator=torch.Generator(), index=torch.tensor([0]))


def test_index_out_of_range_and_missing_index(release: Path) -> None:
    shift = CorruptionFiles(release, "fog")
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(
        IndexError, match=rf"fog: index out of range \[{N}\]; .* holds {N} images per severity"
    ):
        shift(x, 1, generator=torch.Generator(), index=torch.tensor([0, N]))
    with pytest.raises(IndexError, match=r"out of range \[-1\]"):
        shift(x, 1, generator=torch.Generator(), index=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="needs index"):
        shift(x, 1, generator=torch.Generator())


def test_shape_mismatch_and_bad_files(release: Path, tmp_path: Path) -> None:
    shift = CorruptionFiles(release, "fog")
    with pytest.raises(
        ValueError, match=r"images in .* have shape \(3, 4, 4\) but the inputs are \(3, 8, 8\)"
    ):
        shift(torch.zeros(1, 3, 8, 8), 1, generator=torch.Generator(), index=torch.tensor([0]))
    np.save(release / "odd.npy", np.zeros((7, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"odd: .* has shape \(7, 4, 4, 3\)"):
        CorruptionFiles(release, "odd")(
            torch.zeros(1, 3, 4, 4), 1, generator=torch.Generator(), index=torch.tensor([0])
        )


def test_grey_scale_release(tmp_path: Path) -> None:
    np.save(tmp_path / "blur.npy", np.full((10, 4, 4), 51, dtype=np.uint8))
    out = CorruptionFiles(tmp_path, "blur")(
        torch.zeros(2, 1, 4, 4), 5, generator=torch.Generator(), index=torch.tensor([0, 1])
    )
    torch.testing.assert_close(out, torch.full((2, 1, 4, 4), 0.2))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"corruption": "a/b"}, "file stem"), ({"severities": [6]}, "got 6")]
)
def test_bad_construction(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"root": tmp_path, "corruption": "fog", **kwargs}
    with pytest.raises(ValueError, match=match):
        CorruptionFiles(**arguments)  # type: ignore[arg-type]


def test_severity_validation(release: Path) -> None:
    with pytest.raises(ValueError, match=r"fog: severity must be one of \[1, 2, 3, 4, 5\], got 0"):
        CorruptionFiles(release, "fog")(
            torch.zeros(1, 3, 4, 4), 0, generator=torch.Generator(), index=torch.tensor([0])
        )
