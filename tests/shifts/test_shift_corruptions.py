"""Contracts every computed corruption satisfies: shape, dtype, range, severities, seeds, grey-scale."""

from __future__ import annotations

import warnings

import pytest
import torch
from shift_images import natural_images

from robustdiag.shifts import CORRUPTIONS, Corruption, GaussianNoise, Saturate, base
from robustdiag.shifts.ops import PadMode
from robustdiag.types import Shift

NAMES = sorted(CORRUPTIONS)
RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "motion_blur",
    "fog",
    "elastic_transform",
    "glass_blur",
    "snow",
    "frost",
    "spatter",
}
COLOUR = {"brightness", "saturate", "jpeg_compression"}

# Where the benchmark's own table is not monotone in strength, the distance from clean need not grow:
#  * saturate: severities 1-2 desaturate (x0.3, x0.1), 3-5 oversaturate, so 3 is closer to clean than 2;
#  * elastic_transform: the table shrinks the affine jitter while it grows the displacement field;
#  * motion_blur (CIFAR): severities 3 and 4 are (radius 6, sigma 2) and (8, 2); the extra taps weigh
#    < 0.3 %, a near tie;
#  * fog (ImageNet-C): severities 3 and 4 share the strength 2.5 and differ only in the fractal's decay;
#  * glass_blur: blur, move distance and rounds change separately (CIFAR severity 4 blurs less than 3 and
#    moves twice; ImageNet severity 2 moves farther but once, 1 moves twice);
#  * frost: the image's weight falls while the frost's rises, so the distance depends on their contrast;
#  * spatter: severities 1-3 are water drops, 4-5 mud (different kinds of change);
#  * snow: the layer's mean, threshold and zoom move in different directions across the table.
NOT_MONOTONE = {
    "saturate": {(1, 2), (3, 4), (4, 5)},
    "elastic_transform": set(),
    "glass_blur": set(),
    "frost": set(),
    "spatter": set(),
    "snow": set(),
}  # pairs that still grow
NEAR_TIES = {"cifar": {"motion_blur": {(3, 4)}}, "imagenet": {"fog": {(3, 4)}}}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mean_distances(shift: Corruption, x: torch.Tensor) -> list[float]:
    return [float((shift(x, s, generator=generator()) - x).abs().mean()) for s in range(1, 6)]


@pytest.mark.parametrize("name", NAMES)
def test_satisfies_shift_protocol(name: str) -> None:
    shift = CORRUPTIONS[name]()
    assert isinstance(shift, Shift)
    assert shift.name == name
    assert tuple(shift.severities) == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_in_unit_range_with_input_shape_and_dtype(name: str, dtype: torch.dtype) -> None:
    x = natural_images(3, 3, 20, 28, seed=1).to(dtype)  # non-square, not a multiple of 8
    shift = CORRUPTIONS[name]()
    for severity in (1, 5):
        out = shift(x, severity, generator=generator())
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_severity_changes_the_images(name: str, images: torch.Tensor) -> None:
    distances = mean_distances(CORRUPTIONS[name](), images)
    assert min(distances) > 1e-4, distances


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("table", "size"), [("cifar", 32), ("imagenet", 64)])
def test_distance_from_clean_grows_with_severity(name: str, table: str, size: int) -> None:
    if name in NOT_MONOTONE and not NOT_MONOTONE[name]:
        pytest.skip(f"{name}: the benchmark's table is not monotone (see NOT_MONOTONE)")
    x = natural_images(16, 3, size, seed=2).float()
    distances = mean_distances(CORRUPTIONS[name](table=table), x)
    pairs = NOT_MONOTONE.get(name, {(s, s + 1) for s in range(1, 5)})
    for severity in sorted(s for s, _ in pairs):
        lower, upper = distances[severity - 1], distances[severity]
        if (severity, severity + 1) in NEAR_TIES.get(table, {}).get(name, set()):
            assert upper >= lower - 0.02 * lower, distances
        else:
            assert upper > lower, distances


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_same_seed_same_images_other_seed_other_images(name: str, images: torch.Tensor) -> None:
    shift = CORRUPTIONS[name]()
    first = shift(images, 3, generator=generator(7))
    again = shift(images, 3, generator=generator(7))
    other = shift(images, 3, generator=generator(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", sorted(set(NAMES) - RANDOM))
def test_deterministic_corruptions_ignore_the_generator(name: str, images: torch.Tensor) -> None:
    shift = CORRUPTIONS[name]()
    assert torch.equal(shift(images, 2, generator=generator(1)), shift(images, 2, generator=generator(2)))


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"saturate"}))
def test_grey_scale_images(name: str) -> None:
    x = natural_images(4, 1, 16, seed=3).float()
    out = CORRUPTIONS[name]()(x, 4, generator=generator())
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().mean()) > 1e-4


def test_grey_scale_brightness_adds_to_the_value() -> None:
    x = natural_images(2, 1, 8).float()
    out = CORRUPTIONS["brightness"](table="cifar")(x, 5, generator=generator())
    torch.testing.assert_close(out, (x + 0.3).clamp(0, 1))


def test_grey_scale_saturate_is_identity_with_a_warning() -> None:
    x = natural_images(2, 1, 8).float()
    with pytest.warns(UserWarning, match="grey-scale"):
        out = Saturate()(x, 5, generator=generator())
    assert torch.equal(out, x)


def test_grey_rgb_image_is_unchanged_by_saturate() -> None:
    grey = natural_images(2, 1, 16).float().expand(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = Saturate()(grey, 3, generator=generator())
    torch.testing.assert_close(out, grey)


@pytest.mark.parametrize("name", sorted(COLOUR))
def test_colour_corruptions_reject_other_channel_counts(name: str) -> None:
    with pytest.raises(ValueError, match=r"C=3.*C=1.*got C=2"):
        CORRUPTIONS[name]()(torch.rand(1, 2, 8, 8), 1, generator=generator())


@pytest.mark.parametrize("bad", [0, 6, -1, 2.5, "3", True, None])
def test_severity_outside_1_to_5_names_the_shift_and_range(bad: object, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"gaussian_noise: severity .*\[1, 2, 3, 4, 5\]"):
        GaussianNoise()(images, bad, generator=generator())  # type: ignore[arg-type]


def test_numpy_and_torch_integer_severities_are_accepted(images: torch.Tensor) -> None:
    import numpy as np

    shift = GaussianNoise()
    expected = shift(images, 2, generator=generator())
    assert torch.equal(shift(images, np.int64(2), generator=generator()), expected)  # type: ignore[arg-type]
    assert torch.equal(shift(images, torch.tensor(2), generator=generator()), expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"severities": [0, 1]}, r"gaussian_noise: severity must be one of \[1, 2, 3, 4, 5\], got 0"),
        ({"severities": []}, "must not be empty"),
        ({"severities": 3}, "list of integers"),
        ({"table": "svhn"}, r"table must be one of \['auto', 'cifar', 'tinyimagenet', 'imagenet'\]"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_construction_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianNoise(**kwargs)  # type: ignore[arg-type]


def test_jpeg_rejects_unknown_dct() -> None:
    with pytest.raises(ValueError, match=r"dct must be one of \['islow', 'float'\]"):
        CORRUPTIONS["jpeg_compression"](dct="fast")  # type: ignore[call-arg]


def test_inputs_must_be_float_images() -> None:
    with pytest.raises(ValueError, match=r"contrast: expected images of shape \(B, C, H, W\)"):
        CORRUPTIONS["contrast"]()(torch.rand(3, 8, 8), 1, generator=generator())
    with pytest.raises(ValueError, match="expected float pixels"):
        CORRUPTIONS["contrast"]()(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 1, generator=generator())


def test_custom_name_and_severities() -> None:
    shift = GaussianNoise(severities=[1, 3], name="noise_a")
    assert shift.name == "noise_a" and shift.severities == (1, 3)


def test_table_choice_by_image_size() -> None:
    shift = GaussianNoise()
    assert shift.params(5, 32, 32) == 0.10  # CIFAR-10-C
    assert shift.params(5, 64, 64) == 0.38  # ImageNet-C
    assert GaussianNoise(table="tinyimagenet").params(5, 64, 64) == 0.18


def test_spatial_parameters_scale_with_the_image() -> None:
    blur = CORRUPTIONS["gaussian_blur"]()
    assert blur.resolved_param(5, 224, 224) == pytest.approx(6.0)  # ImageNet-C at its own size
    assert blur.resolved_param(5, 112, 112) == pytest.approx(3.0)
    assert blur.resolved_param(5, 32, 32) == pytest.approx(1.0)  # CIFAR-10-C at its own size
    assert blur.resolved_param(5, 8, 8) == pytest.approx(1.0)  # no scaling below 32 px
    assert CORRUPTIONS["gaussian_blur"](scale_spatial=False).resolved_param(5, 112, 112) == 6.0
    elastic = CORRUPTIONS["elastic_transform"]()
    assert elastic.resolved_param(5, 32, 32) == pytest.approx((3.2, 0.96, 0.96))  # IMSIZE * (0.1, .03, .03)
    assert elastic.resolved_param(5, 16, 16) == pytest.approx((1.6, 0.48, 0.48))  # relative to the image


def test_elastic_severity_one_on_cifar_is_a_pure_affine_warp() -> None:
    # CIFAR-10-C elastic severity 1 has alpha = sigma = 0: with zero affine jitter it is the identity
    shift = CORRUPTIONS["elastic_transform"]()
    x = natural_images(2, 3, 32).float()
    geom = shift.geometry(32, 32)
    draws = {"affine": torch.zeros(2, 3, 2), "field": torch.rand(2, 2, 32, 32) * 2 - 1}
    torch.testing.assert_close(shift.apply(x, shift.params(1, 32, 32), geom, draws), x)


def test_contrast_matches_its_formula() -> None:
    x = natural_images(2, 3, 8)
    out = CORRUPTIONS["contrast"]()(x, 3, generator=generator())
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out, ((x - mean) * 0.4 + mean).clamp(0, 1))


def test_corruptions_do_not_track_gradients(images: torch.Tensor) -> None:
    x = images.clone().requires_grad_(True)
    out = CORRUPTIONS["gaussian_blur"]()(x, 2, generator=generator())
    assert not out.requires_grad


def test_elastic_needs_three_pixels() -> None:
    with pytest.raises(ValueError, match=r"elastic_transform: needs images of at least 3 x 3 pixels"):
        CORRUPTIONS["elastic_transform"]()(torch.rand(1, 3, 2, 8), 1, generator=generator())


@pytest.mark.parametrize("name", NAMES)
def test_tiny_digit_sized_images(name: str) -> None:
    x = natural_images(3, 1, 8, seed=4).float()  # the default data set: 8 x 8 grey-scale digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saturate on grey-scale warns
        out = CORRUPTIONS[name]()(x, 5, generator=generator())
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    if name != "saturate":
        assert float((out - x).abs().mean()) > 1e-3  # blurs keep CIFAR's pixel values below 32 px


@pytest.mark.parametrize("mode", ["replicate", "reflect101", "symmetric"])
@pytest.mark.parametrize("dim", [-1, -2])
def test_correlation_as_one_matrix_equals_the_shifted_slices(mode: PadMode, dim: int) -> None:
    """Short axes run a 1-D correlation as one (n, n) product; it equals the tap-by-tap sum in float64."""
    from robustdiag.shifts import ops

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    kernel = torch.rand(7, generator=generator, dtype=torch.float64)  # 7 taps > 4-5 px sides: borders fold
    n = x.shape[dim]
    padded = x.index_select(dim, ops.border_index(n, 3, 3, mode, x.device))
    expected = sum(w * padded.narrow(dim, t, n) for t, w in enumerate(kernel.tolist()))
    torch.testing.assert_close(ops.correlate1d(x, kernel, dim, mode), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_chunked_apply_on_cpu_equals_the_whole_batch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU apply() runs over cache-sized chunks of images; the images are those of one whole-batch call."""
    from robustdiag.shifts import base

    x = natural_images(5, seed=4)
    shift = CORRUPTIONS[name]()
    whole = shift(x, 3, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(base, "CPU_CHUNK_VALUES", 2 * x[0].numel())  # chunks of 2 images: 2 + 2 + 1
    chunked = shift(x, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("p", [0.01, 0.09, 0.27, 0.7])
@pytest.mark.parametrize("margin", [6.0, -5.0])  # -5: too few gaps per round, so it must draw again
def test_bernoulli_positions_follow_the_law_of_independent_trials(
    p: float, margin: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "BERNOULLI_MARGIN_SD", margin)
    n, rounds = 200_000, 8
    generator = torch.Generator().manual_seed(3)
    counts, gaps = [], []
    for _ in range(rounds):
        positions = base.draw_bernoulli_positions(n, p, generator)
        assert positions.dtype == torch.int64
        assert bool((positions[1:] > positions[:-1]).all()), "sorted and distinct"
        assert int(positions.min()) >= 0 and int(positions.max()) < n
        counts.append(len(positions))
        gaps.append(torch.diff(positions))
    # total successes ~ Binomial(rounds n, p): within 5 standard deviations
    total, mean = sum(counts), rounds * n * p
    assert abs(total - mean) < 5 * (mean * (1 - p)) ** 0.5
    # gaps between successes are geometric: P(gap = k) = p (1 - p)^(k - 1)
    gap = torch.cat(gaps)
    for k in (1, 2, 3):
        expected = p * (1 - p) ** (k - 1)
        observed = float((gap == k).double().mean())
        assert abs(observed - expected) < 5 * (expected * (1 - expected) / len(gap)) ** 0.5, k


def test_bernoulli_positions_edge_probabilities() -> None:
    generator = torch.Generator().manual_seed(0)
    assert len(base.draw_bernoulli_positions(100, 0.0, generator)) == 0
    assert base.draw_bernoulli_positions(5, 1.0, generator).tolist() == [0, 1, 2, 3, 4]
    assert len(base.draw_bernoulli_positions(0, 0.5, generator)) == 0
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        base.draw_bernoulli_positions(10, 1.5, generator)


def test_impulse_noise_replaces_the_expected_fraction_half_salt_half_pepper() -> None:
    x = torch.full((8, 3, 64, 64), 0.5)
    shift = CORRUPTIONS["impulse_noise"](table="imagenet")
    out = shift(x, 5, generator=torch.Generator().manual_seed(1))  # c = 0.27
    n = x.numel()
    salt, pepper = int((out == 1).sum()), int((out == 0).sum())
    assert int((out != 0.5).sum()) == salt + pepper
    sd = (n * 0.27 * 0.73) ** 0.5
    assert abs(salt + pepper - 0.27 * n) < 5 * sd
    assert abs(salt - pepper) < 5 * (0.27 * n) ** 0.5


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_leave_their_input_and_a_second_call_unchanged(name: str, images: torch.Tensor) -> None:
    """The output is clamped in place only when it is a buffer of its own (never the input or a draw)."""
    x = images[:3].clone()
    before = x.clone()
    shift = CORRUPTIONS[name]()
    first = shift(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    second = shift(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1


def test_poisson_counts_in_blocks_follow_the_rates_and_ignore_the_thread_count() -> None:
    rate = torch.rand(3 * base.POISSON_BLOCK_VALUES + 123) * 20  # several blocks and a short last one
    previous = torch.get_num_threads()
    try:
        draws = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            draws.append(base.draw_poisson(rate, torch.Generator().manual_seed(4)))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(draws[0], draws[1])
    assert draws[0].dtype == rate.dtype and draws[0].shape == rate.shape
    counts = draws[0].double()
    assert bool((counts == counts.round()).all()) and counts.min() >= 0
    # E[N] = Var[N] = rate: the standardised residuals have mean 0 and variance 1
    positive = rate > 1
    z = (counts[positive] - rate[positive].double()) / rate[positive].double().sqrt()
    assert abs(float(z.mean())) < 5 / len(z) ** 0.5
    assert abs(float(z.var()) - 1) < 0.02
    other_seed = base.draw_poisson(rate, torch.Generator().manual_seed(5))
    assert not torch.equal(other_seed, draws[0])
