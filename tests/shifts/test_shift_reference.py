"""The batched torch corruptions against independent per-image NumPy / SciPy / Pillow implementations.

Random corruptions are compared given the same random draws, so every comparison is exact (float64) except
where Pillow rounds to 8 bits (pixelate) or is the reference itself (JPEG, compared bit for bit).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import reference as ref
import torch
from PIL import Image
from scipy import ndimage
from shift_images import natural_images, quantised

from robustdiag import numba_support
from robustdiag.shifts import CORRUPTIONS, jpeg_roundtrip, plasma_fractal
from robustdiag.shifts.ops import (
    correlate1d,
    disk_kernel,
    filter2d,
    gaussian_kernel1d,
    pil_box_weights,
    resize_matrices,
)

PER_CHANNEL = {"noise", "counts", "flip", "salt"}  # draws shaped like the images


def per_image_draws(draws: dict[str, torch.Tensor], b: int) -> dict[str, np.ndarray]:
    """Slice image ``b`` out of batched torch draws, in the reference's (H, W, C) layout."""
    out = {}
    for key, value in draws.items():
        item = value[b].numpy()
        out[key] = item.transpose(1, 2, 0) if key in PER_CHANNEL else item
    return out


def torch_and_reference(
    name: str, x: torch.Tensor, severity: int, table: str
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``x`` with the torch shift and, with the same draws, with the per-image reference."""
    shift = CORRUPTIONS[name](table=table)
    h, w = x.shape[-2:]
    geom = shift.geometry(h, w)
    param = shift.params(severity, h, w)
    draws = shift.sample(x, param, geom, torch.Generator().manual_seed(severity))
    ours = shift.apply(x, param, geom, draws).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    pixel_param = shift.resolved_param(severity, h, w)
    theirs = np.stack(
        [
            np.clip(
                ref.REFERENCES[name].apply(
                    x[b].permute(1, 2, 0).numpy(), pixel_param, per_image_draws(draws, b)
                ),
                0,
                1,
            )
            for b in range(x.shape[0])
        ]
    )
    return ours, theirs


# frost: its benchmark form needs photos (tested with a folder below); spatter's water variant goes through
# OpenCV's float32 distance transform (tested to its rounding below)
EXACT = sorted(set(CORRUPTIONS) - {"pixelate", "jpeg_compression", "frost", "spatter"})


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize(("table", "height", "width"), [("cifar", 32, 32), ("imagenet", 40, 48)])
def test_matches_reference_given_the_same_draws(name: str, table: str, height: int, width: int) -> None:
    x = natural_images(2, 3, height, width, seed=5)
    for severity in (1, 3, 5):
        ours, theirs = torch_and_reference(name, x, severity, table)
        np.testing.assert_allclose(ours, theirs, atol=1e-10, err_msg=f"{name} severity {severity}")


@pytest.mark.parametrize("table", ["cifar", "imagenet"])
def test_pixelate_matches_pillow_up_to_its_8_bit_rounding(table: str) -> None:
    x = quantised(natural_images(3, 3, 32, seed=6))
    for severity in range(1, 6):
        ours, theirs = torch_and_reference("pixelate", x, severity, table)
        assert np.abs(ours - theirs).max() <= 1.0 / 255 + 1e-9


@pytest.mark.parametrize(("in_size", "out_size"), [(32, 30), (32, 20), (30, 32), (224, 56), (7, 3), (3, 7)])
def test_box_resampling_weights_equal_pillow_on_float_images(in_size: int, out_size: int) -> None:
    image = np.random.default_rng(0).random((in_size, in_size)).astype(np.float32)
    expected = np.asarray(Image.fromarray(image, mode="F").resize((out_size, out_size), Image.BOX))
    weights = pil_box_weights(in_size, out_size)
    ours = resize_matrices(torch.from_numpy(image).double()[None, None], weights, weights)[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def pillow_jpeg(x: torch.Tensor, quality: int, subsampling: int) -> np.ndarray:
    """Pillow's JPEG round trip of each image of (B, C, H, W); returns (B, H, W, C) levels."""
    out = []
    for image in x:
        levels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        picture = Image.fromarray(levels[..., 0] if image.shape[0] == 1 else levels)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality, subsampling=subsampling)
        decoded = np.asarray(Image.open(buffer), dtype=np.float64)
        out.append(decoded.reshape(image.shape[1], image.shape[2], image.shape[0]))
    return np.stack(out)


@pytest.mark.parametrize("use_numba", ["1", "0"])  # the CPU kernel and the tensor path
@pytest.mark.parametrize(("height", "width"), [(32, 32), (30, 17), (8, 8), (3, 5)])
@pytest.mark.parametrize("quality", [80, 40, 7])
@pytest.mark.parametrize(
    ("channels", "subsample", "subsampling"), [(3, True, 2), (3, False, 0), (1, True, 2)]
)
def test_jpeg_equals_pillow_bit_for_bit(
    height: int,
    width: int,
    quality: int,
    channels: int,
    subsample: bool,
    subsampling: int,
    use_numba: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(numba_support.DISABLE_ENV, use_numba)
    x = quantised(natural_images(2, channels, height, width, seed=7))
    ours = jpeg_roundtrip(x, quality, subsample_chroma=subsample).permute(0, 2, 3, 1).numpy() * 255
    np.testing.assert_array_equal(np.round(ours), pillow_jpeg(x, quality, subsampling))


@pytest.mark.skipif(not numba_support.available(), reason="numba not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jpeg_kernel_equals_the_tensor_path(dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unquantised pixels, odd sizes, narrow planes, out-of-range values, grey and colour, every option."""
    generator = torch.Generator().manual_seed(11)
    for trial in range(24):
        height, width = (int(v) for v in torch.randint(1, 41, (2,), generator=generator))
        channels = 1 if trial % 4 == 0 else 3
        x = torch.rand(2, channels, height, width, generator=generator, dtype=dtype) * 1.2 - 0.1
        for quality in (7, 50, 95):
            for subsample in (True, False):
                monkeypatch.setenv(numba_support.DISABLE_ENV, "1")
                kernel = jpeg_roundtrip(x, quality, subsample_chroma=subsample)
                monkeypatch.setenv(numba_support.DISABLE_ENV, "0")
                tensor = jpeg_roundtrip(x, quality, subsample_chroma=subsample)
                assert kernel.dtype == dtype
                torch.testing.assert_close(
                    kernel, tensor, rtol=0, atol=0, msg=f"{x.shape} q{quality} {subsample}"
                )


def test_jpeg_with_the_float_dct_stays_within_a_level_of_pillow() -> None:
    x = quantised(natural_images(4, 3, 32, seed=8))
    ours = jpeg_roundtrip(x, 50, dct="float").permute(0, 2, 3, 1).numpy() * 255
    difference = np.abs(ours - pillow_jpeg(x, 50, 2))
    assert difference.mean() < 1.0
    assert np.abs(ours - x.permute(0, 2, 3, 1).numpy() * 255).mean() > 3 * difference.mean()


def test_jpeg_quality_tables_follow_libjpeg_scaling() -> None:
    from robustdiag.shifts.jpeg import LUMA_TABLE, quality_table

    assert quality_table(LUMA_TABLE, 50)[0, 0] == 16  # quality 50 is the Annex K table itself
    assert quality_table(LUMA_TABLE, 100).max() == 1
    assert quality_table(LUMA_TABLE, 25)[0, 0] == 32  # scale 5000 / 25 = 200 %
    assert quality_table(LUMA_TABLE, 1).max() == 255  # baseline clamp
    with pytest.raises(ValueError, match="quality must be in 1..100"):
        quality_table(LUMA_TABLE, 0)


def test_plasma_fractal_equals_the_reference_diamond_square() -> None:
    rng = np.random.default_rng(0)
    uniforms: list[np.ndarray] = []

    def record(shape: tuple[int, ...]) -> torch.Tensor:
        uniforms.append(rng.random(shape))
        return torch.from_numpy(uniforms[-1])

    maps = plasma_fractal(2, 16, 2.5, record, dtype=torch.float64)
    for b in range(2):
        replay = iter(u[b] for u in uniforms)
        expected = ref.plasma_fractal(16, 2.5, lambda shape, it=replay: next(it))
        np.testing.assert_allclose(maps[b].numpy(), expected, atol=1e-12)
    assert float(maps.amin()) == 0.0 and float(maps.amax()) == 1.0


def test_plasma_fractal_rejects_other_sizes() -> None:
    with pytest.raises(ValueError, match="power of two"):
        plasma_fractal(1, 24, 2.0, torch.rand)


@pytest.mark.parametrize(
    ("mode", "scipy_mode"), [("symmetric", "reflect"), ("reflect101", "mirror"), ("replicate", "nearest")]
)
@pytest.mark.parametrize("sigma", [1.0, 10.0, 50.0])  # 7 taps (shifted sums), 61 (conv2d), 301 (FFT)
def test_1d_filters_reflect_like_scipy_for_every_kernel_length(
    mode: str, scipy_mode: str, sigma: float
) -> None:
    # on 12 pixels the long kernels reflect the image several times over, as SciPy does
    x = np.random.default_rng(1).random((2, 3, 12, 10))
    kernel = gaussian_kernel1d(sigma, truncate=3.0)
    ours = correlate1d(torch.from_numpy(x), kernel, -2, mode).numpy()  # type: ignore[arg-type]
    expected = ndimage.gaussian_filter1d(x, sigma, axis=2, mode=scipy_mode, truncate=3.0)
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    ours_rows = correlate1d(torch.from_numpy(x), kernel, -1, mode).numpy()  # type: ignore[arg-type]
    np.testing.assert_allclose(
        ours_rows, ndimage.gaussian_filter1d(x, sigma, axis=3, mode=scipy_mode, truncate=3.0), atol=1e-10
    )


def test_large_defocus_kernels_use_convolution_and_match_scipy() -> None:
    x = natural_images(1, 2, 24, seed=3)
    kernel = disk_kernel(5.0, 0.5)  # 13 x 13 > the shifted-sum limit
    assert kernel.numel() > 49
    ours = filter2d(x, kernel, "reflect101")[0].numpy()
    expected = np.stack(
        [ndimage.correlate(channel, kernel.numpy(), mode="mirror") for channel in x[0].numpy()]
    )
    np.testing.assert_allclose(ours, expected, atol=1e-12)
    assert float(kernel.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(ref.REFERENCES))
def test_reference_corruptions_run_end_to_end(name: str) -> None:
    image = natural_images(1, 3, 32, seed=9)[0].permute(1, 2, 0).numpy()
    shift = CORRUPTIONS[name]()
    out = ref.REFERENCES[name](image, shift.resolved_param(3, 32, 32), np.random.default_rng(0))
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    assert np.abs(out - image).mean() > 1e-4


@pytest.mark.parametrize(("table", "size"), [("cifar", 32), ("tinyimagenet", 64), ("imagenet", 48)])
def test_spatter_matches_the_opencv_reference(table: str, size: int) -> None:
    """Water (OpenCV Canny, distance transform, equalisation, emboss, in OpenCV's float32) and mud."""
    pytest.importorskip("cv2")
    x = natural_images(12, 3, size, seed=3)
    for severity in range(1, 6):
        ours, theirs = torch_and_reference("spatter", x, severity, table)
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=f"spatter severity {severity}")
    assert np.abs(ours - x.permute(0, 2, 3, 1).numpy()).mean() > 1e-3  # it does something


def write_frost_photos(folder, count: int = 5, size: tuple[int, int] = (180, 260)) -> list[np.ndarray]:
    """Frost-like photos (structured, so a wrong crop or resize would show) as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    photos = []
    for i in range(count):
        base = ndimage.gaussian_filter(rng.random((*size, 3)), (3, 3, 0))
        photo = np.clip((base - base.min()) / (base.max() - base.min()), 0, 1)
        levels = np.round(photo * 255).astype(np.uint8)
        Image.fromarray(levels).save(folder / f"frost{i + 1}.png")
        photos.append(levels.astype(np.float64) / 255)
    return photos


@pytest.mark.parametrize(("table", "size"), [("cifar", 32), ("tinyimagenet", 64), ("imagenet", 40)])
def test_frost_from_photos_matches_the_opencv_reference(tmp_path, table: str, size: int) -> None:
    """The benchmark's frost: cv2.resize of the chosen photo, then the crop, blended; OpenCV's 8-bit bilinear
    (11-bit fixed-point weights) may land one level from ours."""
    pytest.importorskip("cv2")
    photos = write_frost_photos(tmp_path / "frost", size=(180, 260) if table == "cifar" else (300, 420))
    shift = CORRUPTIONS["frost"](images=str(tmp_path / "frost"), table=table)
    assert shift.source.startswith("images:")
    x = natural_images(6, 3, size, seed=2)
    geom = shift.geometry(size, size)
    for severity in (1, 3, 5):
        param = shift.params(severity, size, size)
        draws = shift.sample(x, param, geom, torch.Generator().manual_seed(severity))
        ours = shift.apply(x, param, geom, draws).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for b in range(x.shape[0]):
            start = tuple(int(v) for v in draws["start"][b])
            crop = ref.frost_photo_crop(
                photos[int(draws["photo"][b])], shift.resize_factor(geom), start, size, size
            )
            theirs = np.clip(param[0] * x[b].permute(1, 2, 0).numpy() + param[1] * crop, 0, 1)
            np.testing.assert_allclose(ours[b], theirs, atol=param[1] / 255 + 1e-9)


def test_procedural_frost_is_labelled_and_calibrated() -> None:
    """Without photos the frost is a procedural approximation; the record says so (shift.source)."""
    shift = CORRUPTIONS["frost"]()
    assert shift.source == "procedural"
    x = torch.zeros(64, 3, 32, 32, dtype=torch.float64)
    geom = shift.geometry(32, 32)
    param = (0.0, 1.0)  # the frost layer alone
    layer = shift.apply(x, param, geom, shift.sample(x, param, geom, torch.Generator().manual_seed(0)))
    mean = layer.mean(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(mean, [0.4885, 0.6186, 0.6694], atol=0.02)  # the photos' per-channel mean


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("missing", "is not a folder"),
        ("empty", "holds no image files"),
        ("not_images", "is not a readable image"),
    ],
)
def test_bad_frost_folders_are_refused(tmp_path, folder: str, message: str) -> None:
    path = tmp_path / folder
    if folder != "missing":
        path.mkdir()
    if folder == "not_images":
        (path / "frost1.png").write_text("not a picture")
    with pytest.raises(ValueError, match=message):
        CORRUPTIONS["frost"](images=str(path))


def test_frost_photos_smaller_than_the_images_are_refused(tmp_path) -> None:
    write_frost_photos(tmp_path / "small", size=(40, 40))
    shift = CORRUPTIONS["frost"](images=str(tmp_path / "small"), table="cifar")
    with pytest.raises(ValueError, match="not larger than the 32x32 images"):
        shift(torch.rand(2, 3, 32, 32), 3, generator=torch.Generator().manual_seed(0))


def test_glass_blur_copies_like_the_benchmark_rgb_swap() -> None:
    """The benchmark's NumPy "swap" of RGB pixels copies one way; a real swap would keep every value."""
    shift = CORRUPTIONS["glass_blur"](table="cifar")
    x = natural_images(2, 3, 32, seed=1)
    geom = shift.geometry(32, 32)
    param = (0.0, 1, 1)  # no blur: the moves alone
    draws = shift.sample(x, param, geom, torch.Generator().manual_seed(0))
    out = shift.apply(x, param, geom, draws)
    levels_in = torch.floor(x * 255).reshape(2, 3, -1)
    levels_out = torch.round(out * 255).reshape(2, 3, -1)
    # copies duplicate some pixels and drop others (a permutation would keep the multiset of pixels)
    assert not torch.equal(levels_in.sort(-1).values, levels_out.sort(-1).values)


def test_a_table_that_does_not_fit_the_image_size_is_refused() -> None:
    shift = CORRUPTIONS["glass_blur"](table="imagenet", scale_spatial=False)
    with pytest.raises(ValueError, match="leaves no pixel to move in 8x8 images; use table=auto"):
        shift(torch.rand(2, 3, 8, 8), 5, generator=torch.Generator().manual_seed(0))
