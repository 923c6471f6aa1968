"""The water spatter's OpenCV operations: Numba kernels (CPU) and tensor path against OpenCV itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from robustdiag import numba_support
from robustdiag.shifts import cpu_kernels, cvops

cv2 = pytest.importorskip("cv2")
needs_numba = pytest.mark.skipif(not numba_support.available(), reason="numba not installed")

SIZES = [(1, 1), (2, 7), (5, 3), (31, 40), (64, 64)]


def zero_masks(seed: int) -> list[np.ndarray]:
    """Binary maps (zero = a source pixel) of several sizes and densities, including none and all."""
    rng = np.random.default_rng(seed)
    masks = [rng.random(size) < p for size in SIZES for p in (0.01, 0.05, 0.3)]
    return [*masks, np.zeros((9, 11), dtype=bool), np.ones((4, 6), dtype=bool)]


def opencv_distance(zero: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform(np.where(zero, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)


@needs_numba
@pytest.mark.parametrize("seed", [0, 1])
def test_numba_distance_transform_is_opencv_bit_for_bit(seed: int) -> None:
    for zero in zero_masks(seed):
        ours = cpu_kernels.chamfer_distance(torch.from_numpy(zero)[None])[0].numpy()
        if not zero.any():  # no source pixel: OpenCV reports its own "far" value, we report 1e30
            assert (ours >= 1e29).all()
            continue
        np.testing.assert_array_equal(ours, opencv_distance(zero), err_msg=f"shape {zero.shape}")


@pytest.mark.parametrize("use_numba", [True, False])
def test_truncated_distance_matches_opencv(use_numba: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spatter uses: distances truncated at 20, batched; the tensor path to one float32 ulp."""
    if use_numba and not numba_support.available():
        pytest.skip("numba not installed")
    monkeypatch.setenv(numba_support.DISABLE_ENV, "1" if use_numba else "0")
    rng = np.random.default_rng(5)
    zero = rng.random((6, 48, 56)) < 0.02
    zero[2] = False  # one image without a source pixel: every distance truncates to 20
    ours = cvops.chamfer_distance(torch.from_numpy(zero), 20.0).numpy()
    expected = np.stack([np.minimum(opencv_distance(z), 20.0) for z in zero]).astype(np.float32)
    if use_numba:
        np.testing.assert_array_equal(ours, expected)
    else:
        np.testing.assert_allclose(ours, expected, rtol=2e-7, atol=0)


def smooth_levels(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """8-bit maps with edges of every orientation and strength."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape) * 255, rng.choice([0.5, 1.0, 2.0]))
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-9) * 255 * rng.uniform(0.3, 1.0)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("use_numba", [True, False])
def test_canny_matches_opencv(use_numba: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if use_numba and not numba_support.available():
        pytest.skip("numba not installed")
    monkeypatch.setenv(numba_support.DISABLE_ENV, "1" if use_numba else "0")
    for seed in range(12):
        shape = [(3, 3), (8, 13), (40, 33), (64, 64)][seed % 4]
        levels = smooth_levels(seed, shape)
        ours = cvops.canny(torch.from_numpy(levels.astype(np.float64))[None], 50, 150)[0].numpy()
        np.testing.assert_array_equal(ours > 0, cv2.Canny(levels, 50, 150) > 0, err_msg=f"seed {seed}")


def test_kernels_are_off_with_the_switch_or_on_other_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(numba_support.DISABLE_ENV, "0")
    assert not cpu_kernels.usable_for(torch.zeros(1))
    monkeypatch.setenv(numba_support.DISABLE_ENV, "1")
    assert cpu_kernels.usable_for(torch.zeros(1)) == (numba_support.numba is not None)
    assert not cpu_kernels.usable_for(torch.zeros(1, device="meta"))


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_water_drops_kernel_equals_the_tensor_steps(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step of the water map in one kernel: the same float64 map as the tensor path, bit for bit."""
    from robustdiag.shifts.ops import gaussian_blur
    from robustdiag.shifts.weather import water_drops

    generator = torch.Generator().manual_seed(0)
    for trial in range(12):
        height, width = (int(v) for v in torch.randint(2, 60, (2,), generator=generator))
        noise = torch.randn(3, 1, height, width, generator=generator, dtype=dtype)
        sigma = (0.7, 1.0, 2.0, 4.0)[trial % 4]
        liquid = gaussian_blur(0.65 + 0.3 * noise, sigma, truncate=4.0, mode="replicate")
        liquid = torch.where(liquid < 0.68, torch.zeros_like(liquid), liquid)[:, 0]  # (3, H, W)
        liquid[0] = 0.0 if trial == 0 else liquid[0]  # a map without drops
        monkeypatch.setenv(numba_support.DISABLE_ENV, "1")
        kernel = water_drops(liquid)
        monkeypatch.setenv(numba_support.DISABLE_ENV, "0")
        tensor = water_drops(liquid)
        assert kernel.dtype == tensor.dtype == torch.float64
        torch.testing.assert_close(kernel, tensor, rtol=0, atol=0, msg=f"{tuple(liquid.shape)} sigma {sigma}")


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frost_crop_and_blend_kernel_equals_the_tensor_path(
    tmp_path, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from robustdiag.shifts import CORRUPTIONS

    rng = np.random.default_rng(3)
    for i in range(3):
        photo = ndimage.gaussian_filter(rng.random((300, 360, 3)), (2, 2, 0))  # > 40x48 after resizing
        Image.fromarray((photo / photo.max() * 255).astype(np.uint8)).save(tmp_path / f"frost{i + 1}.png")
    shift = CORRUPTIONS["frost"](images=str(tmp_path), table="imagenet")
    x = torch.rand(5, 3, 40, 48, generator=torch.Generator().manual_seed(1), dtype=dtype)
    monkeypatch.setenv(numba_support.DISABLE_ENV, "1")
    kernel = shift(x, 4, generator=torch.Generator().manual_seed(2))
    monkeypatch.setenv(numba_support.DISABLE_ENV, "0")
    tensor = shift(x, 4, generator=torch.Generator().manual_seed(2))
    assert kernel.dtype == dtype
    torch.testing.assert_close(kernel, tensor, rtol=0, atol=0)
    assert (kernel - x).abs().mean() > 0.01  # it does something
