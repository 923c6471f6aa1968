"""apply_shift's batching and seeding contract, the identity shift and the adversarial shift."""

from __future__ import annotations

import zlib

import pytest
import torch
from shift_images import natural_images
from torch import nn

from robustdiag.shifts import (
    AdversarialShift,
    Contrast,
    Fog,
    GaussianNoise,
    apply_shift,
    make_generator,
    shift_seed,
)
from robustdiag.shifts.adversarial import generator_on
from robustdiag.types import Shift


def test_shift_seed_is_a_stable_crc32() -> None:
    assert shift_seed(0, "fog", 3, 2) == zlib.crc32(b"0/fog/3/2")
    assert shift_seed(0, "fog", 3, 2) == 3591325383  # fixed across Python processes and versions
    seeds = {
        shift_seed(s, n, v, b) for s in (0, 1) for n in ("fog", "contrast") for v in (1, 5) for b in (0, 1)
    }
    assert len(seeds) == 16


def test_apply_shift_equals_calling_the_shift_per_batch_with_its_seed() -> None:
    x = natural_images(10, 3, 16).float()
    shift = GaussianNoise()
    out = apply_shift(shift, x, 4, seed=3, batch_size=4)
    expected = torch.cat(
        [
            shift(
                x[start : start + 4],
                4,
                generator=make_generator(shift_seed(3, "gaussian_noise", 4, b), "cpu"),
            )
            for b, start in enumerate(range(0, 10, 4))
        ]
    )
    assert torch.equal(out, expected)


def test_apply_shift_is_deterministic_and_seed_dependent() -> None:
    x = natural_images(9, 3, 16).float()
    shift = Fog()
    first = apply_shift(shift, x, 2, seed=0, batch_size=4)
    assert torch.equal(first, apply_shift(shift, x, 2, seed=0, batch_size=4))
    assert not torch.equal(first, apply_shift(shift, x, 2, seed=1, batch_size=4))
    assert not torch.equal(first, apply_shift(shift, x, 3, seed=0, batch_size=4))


def test_deterministic_shifts_do_not_depend_on_the_batch_size() -> None:
    x = natural_images(9, 3, 16).float()
    assert torch.equal(
        apply_shift(Contrast(), x, 5, seed=0, batch_size=2),
        apply_shift(Contrast(), x, 5, seed=0, batch_size=9),
    )


def test_apply_shift_generator_on_the_input_device_differs_from_cpu_only_by_the_numbers() -> None:
    x = natural_images(4, 3, 16).float()
    on_x = apply_shift(GaussianNoise(), x, 1, seed=0, batch_size=4, generator_device=None)
    assert torch.equal(on_x, apply_shift(GaussianNoise(), x, 1, seed=0, batch_size=4))  # x is on the CPU


def test_apply_shift_validates_its_arguments() -> None:
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        apply_shift(Contrast(), x, 1, seed=0, batch_size=0)
    with pytest.raises(ValueError, match="index has 3 entries for 4 images"):
        apply_shift(Contrast(), x, 1, seed=0, batch_size=2, index=torch.arange(3))
    with pytest.raises(ValueError, match="contrast: severity must be one of"):
        apply_shift(Contrast(), x, 9, seed=0, batch_size=2)


def test_apply_shift_passes_index_labels_and_model_per_batch() -> None:
    """Labels and the model go only to shifts that declare ``adversarial = True`` (types.ModelShift)."""
    seen: list[tuple[list[int], list[int], object]] = []

    class Recorder:
        name = "recorder"
        severities = (1,)
        adversarial = True

        def __call__(
            self,
            x: torch.Tensor,
            severity: int,
            *,
            generator: torch.Generator,
            index: torch.Tensor | None = None,
            y: torch.Tensor | None = None,
            model: nn.Module | None = None,
        ) -> torch.Tensor:
            assert index is not None and y is not None
            seen.append((index.tolist(), y.tolist(), model))
            return x

    model = nn.Identity()
    x = torch.rand(5, 1, 4, 4)
    out = apply_shift(
        Recorder(), x, 1, seed=0, batch_size=2, index=torch.arange(10, 15), y=torch.arange(5), model=model
    )
    assert torch.equal(out, x)
    assert seen == [([10, 11], [0, 1], model), ([12, 13], [2, 3], model), ([14], [4], model)]

    class Corruption:  # no y/model parameters at all: a plain shift never receives them
        name, severities = "plain", (1,)

        def __call__(self, x, severity, *, generator, index=None):
            return x

    assert torch.equal(
        apply_shift(Corruption(), x, 1, seed=0, batch_size=2, y=torch.arange(5), model=model), x
    )


class SignGradientAttack:
    """A stand-in attack: one signed-gradient step of size eps on the cross-entropy (FGSM)."""

    name = "sign_step"

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.generators: list[torch.Generator | None] = []

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        self.generators.append(generator)
        x = x.detach().clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        return (x + self.eps * grad.sign()).clamp(0, 1).detach()


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


def test_adversarial_shift_applies_the_attack_and_stays_in_the_ball() -> None:
    model, attack = linear_model(), SignGradientAttack(eps=0.05)
    x, y = torch.rand(6, 3, 8, 8) * 0.8 + 0.1, torch.tensor([0, 1, 2, 3, 0, 1])
    shift = AdversarialShift(attack)
    assert isinstance(shift, Shift) and shift.name == "adversarial" and shift.severities == (1,)
    assert shift.adversarial and not getattr(GaussianNoise(), "adversarial", False)
    out = apply_shift(shift, x, 1, seed=0, batch_size=4, y=y, model=model)
    assert (out - x).abs().max() <= 0.05 + 1e-6 and float(out.min()) >= 0 and float(out.max()) <= 1
    loss = nn.functional.cross_entropy
    assert loss(model(out), y) > loss(model(x), y)  # the linear model's loss grows along the gradient sign
    assert all(g is not None and g.device == x.device for g in attack.generators)


def test_adversarial_shift_needs_model_and_labels() -> None:
    shift = AdversarialShift(SignGradientAttack(0.1))
    with pytest.raises(
        ValueError, match="adversarial: the adversarial shift needs the model and the labels y"
    ):
        shift(torch.rand(2, 3, 8, 8), 1, generator=torch.Generator())


def test_adversarial_shift_has_only_severity_one() -> None:
    with pytest.raises(ValueError, match=r"adversarial: severity must be one of \[1\], got 2"):
        AdversarialShift(SignGradientAttack(0.1), severities=[1, 2])
    shift = AdversarialShift(SignGradientAttack(0.1), name="adv_small")
    with pytest.raises(ValueError, match=r"adv_small: severity must be one of \[1\], got 3"):
        shift(
            torch.rand(2, 3, 8, 8),
            3,
            generator=torch.Generator(),
            y=torch.zeros(2, dtype=torch.long),
            model=linear_model(),
        )


def test_adversarial_shift_rejects_a_non_callable_attack() -> None:
    with pytest.raises(ValueError, match="attack must be callable"):
        AdversarialShift("pgd")  # type: ignore[arg-type]


def test_generator_on_the_same_device_is_passed_through() -> None:
    cpu = torch.Generator().manual_seed(1)
    assert generator_on(torch.device("cpu"), cpu) is cpu


def test_generator_on_another_device_is_derived_reproducibly(monkeypatch: pytest.MonkeyPatch) -> None:
    import robustdiag.shifts.adversarial as adversarial

    monkeypatch.setattr(adversarial, "_same_device", lambda a, b: False)  # pretend the batch lives elsewhere
    source = torch.Generator().manual_seed(1)
    a = generator_on(torch.device("cpu"), source)
    b = generator_on(torch.device("cpu"), torch.Generator().manual_seed(1))
    assert a is not source
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    other_seed = generator_on(torch.device("cpu"), torch.Generator().manual_seed(2))
    same_seed = generator_on(torch.device("cpu"), torch.Generator().manual_seed(1))
    assert not torch.equal(torch.rand(3, generator=other_seed), torch.rand(3, generator=same_seed))
