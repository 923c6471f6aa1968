"""Contracts every attack keeps: the ε-ball, the [0, 1] box, robust ≤ clean, a model left as found."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_models import tiny_cnn
from torch import nn

from robustdiag.attacks import FGSM, PGD, evaluate_attack
from robustdiag.attacks.geometry import perturbation_norm, project_to_ball, sample_in_ball
from robustdiag.attacks.gradients import loss_and_input_gradient
from robustdiag.attacks.pgd import _WorstCase
from robustdiag.types import Attack

ATTACKS = {
    "pgd_linf": lambda: PGD(norm="linf", eps=8 / 255, step_size=2 / 255, steps=5),
    "pgd_l2": lambda: PGD(norm="l2", eps=0.5, steps=5),
    "pgd_linf_restarts": lambda: PGD(norm="linf", eps=0.1, steps=3, restarts=3),
    "pgd_l2_no_start": lambda: PGD(norm="l2", eps=1.0, steps=4, random_start=False),
    "fgsm": lambda: FGSM(eps=8 / 255),
    "fgsm_large": lambda: FGSM(eps=0.5),
}


def labels_mostly_correct(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own predictions with every fourth label changed (clean accuracy 75%)."""
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[::4] = (y[::4] + 1) % 10
    return y


@pytest.mark.parametrize("key", list(ATTACKS))
def test_attack_stays_in_ball_and_box(key: str, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    attack = ATTACKS[key]()
    assert isinstance(attack, Attack)
    model = tiny_cnn()
    x, _ = images
    y = labels_mostly_correct(model, x)
    gen = torch.Generator().manual_seed(0)
    x_adv = attack(model, x, y, generator=gen)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    sizes = perturbation_norm(x_adv - x, attack.norm)
    assert sizes.max() <= attack.eps + 1e-6
    assert sizes.max() > 0.5 * attack.eps  # it moved: not a no-op that trivially passes

    result = evaluate_attack(attack, model, x, y, batch_size=5, seed=0)
    assert result.acc <= result.clean_acc
    assert result.clean_acc == pytest.approx(0.75)
    assert result.max_perturbation <= attack.eps + 1e-6
    assert result.robust.dtype == torch.bool and result.robust.shape == (16,)
    assert not (result.robust & ~result.clean_correct).any()  # misclassified clean -> not robust


@pytest.mark.parametrize("key", ["pgd_linf", "pgd_l2", "fgsm"])
def test_attack_in_float64(key: str, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    attack = ATTACKS[key]()
    model = tiny_cnn(dtype=torch.float64)
    x = images[0].double()
    y = labels_mostly_correct(model, x)
    x_adv = attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float64
    assert perturbation_norm(x_adv - x, attack.norm).max() <= attack.eps + 1e-12
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_lowers_accuracy_more_than_fgsm_and_noise() -> None:
    model = tiny_cnn()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = labels_mostly_correct(model, x)
    eps = 0.1
    pgd = evaluate_attack(PGD(eps=eps, step_size=eps / 4, steps=10), model, x, y, batch_size=64, seed=0)
    fgsm = evaluate_attack(FGSM(eps=eps), model, x, y, batch_size=64, seed=0)
    with torch.no_grad():
        noise = sample_in_ball(x, "linf", eps, generator=torch.Generator().manual_seed(0))
        noisy_acc = (model((x + noise).clamp(0, 1)).argmax(1) == y).float().mean().item()
    assert pgd.acc <= fgsm.acc <= noisy_acc
    assert pgd.acc < pgd.clean_acc


def test_worst_case_over_restarts_is_kept() -> None:
    """More restarts never leave more samples robust (same seed, per-sample worst case)."""
    model = tiny_cnn()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = labels_mostly_correct(model, x)
    one = evaluate_attack(PGD(eps=0.05, steps=2, restarts=1), model, x, y, batch_size=64, seed=0)
    five = evaluate_attack(PGD(eps=0.05, steps=2, restarts=5), model, x, y, batch_size=64, seed=0)
    assert not (five.robust & ~one.robust).any()  # restart 1 is the same run in both
    assert one.acc < one.clean_acc


def test_worst_case_prefers_misclassified_then_higher_loss() -> None:
    """Per sample: a misclassified point beats any correct one; otherwise the higher loss wins."""
    y = torch.tensor([0, 0, 0, 0])
    worst = _WorstCase(torch.zeros(4, 1))
    # round 1: sample 0 correct, low loss; 1 correct, high loss; 2 fooled; 3 correct
    worst.update(torch.full((4, 1), 1.0), torch.tensor([[5.0, 0], [1.0, 0], [0, 2.0], [3.0, 0]]), y)
    # round 2: 0 correct but higher loss -> replace; 1 correct lower loss -> keep;
    # 2 correct (even with higher loss) -> keep the fooled point; 3 fooled -> replace
    worst.update(torch.full((4, 1), 2.0), torch.tensor([[2.0, 0], [3.0, 0], [0.1, 0.0], [0, 0.5]]), y)
    # round 3: 2 fooled with a higher loss than round 1 -> replace
    worst.update(torch.full((4, 1), 3.0), torch.tensor([[9.0, 0], [9.0, 0], [0, 5.0], [9.0, 0]]), y)
    assert worst.x_adv.squeeze(1).tolist() == [2.0, 1.0, 3.0, 2.0]
    assert worst.fooled.tolist() == [False, False, True, True]


def test_same_seed_same_result_and_global_rng_untouched(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = tiny_cnn()
    x, y = images
    attack = PGD(eps=0.05, steps=3)
    state = torch.get_rng_state()
    a = attack(model, x, y, generator=torch.Generator().manual_seed(7))
    b = attack(model, x, y, generator=torch.Generator().manual_seed(7))
    c = attack(model, x, y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_evaluate_attack_is_reproducible_and_batch_independent_without_random_start(
    images: tuple[torch.Tensor, torch.Tensor],
) -> None:
    model = tiny_cnn()
    x, y = images
    attack = PGD(norm="l2", eps=0.5, steps=3, random_start=False)
    whole = evaluate_attack(attack, model, x, y, batch_size=16, seed=0, keep_adv=True)
    split = evaluate_attack(attack, model, x, y, batch_size=3, seed=0, keep_adv=True)
    assert whole.x_adv is not None and split.x_adv is not None
    torch.testing.assert_close(whole.x_adv, split.x_adv, rtol=0, atol=1e-6)
    assert torch.equal(whole.robust, split.robust)


def test_input_gradient_is_per_sample_not_batch_averaged() -> None:
    """∇ₓ of the summed loss equals each sample's own gradient, computed one at a time (float64)."""
    model = tiny_cnn(dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (5,), generator=g)
    _, grad = loss_and_input_gradient(model, x, y)
    for i in range(5):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), xi)
        torch.testing.assert_close(grad[i : i + 1], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("key", ["pgd_linf", "fgsm"])
def test_attack_leaves_parameters_untouched(key: str, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Called from a training loop: no .grad written, requires_grad flags and train mode restored."""
    model = tiny_cnn().train()
    x, y = images
    frozen = model[0].bias  # a parameter the user froze on purpose stays frozen
    frozen.requires_grad_(False)
    existing = torch.full_like(model[-1].weight, 0.5)
    model[-1].weight.grad = existing.clone()  # a gradient mid-accumulation stays as it was
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    bn_mean = model[1].running_mean.clone()

    model.eval()
    ATTACKS[key]()(model, x, y, generator=torch.Generator().manual_seed(0))
    model.train()

    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model[-1].weight.grad, existing)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "5.weight")
    assert torch.equal(model[1].running_mean, bn_mean)
    loss = F.cross_entropy(model(x), y)  # the training step after the attack still works
    loss.backward()
    assert model[0].weight.grad is not None and frozen.grad is None


def test_evaluate_attack_on_a_timm_model() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, pretrained=False).eval()  # tiny ResNet
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    result = evaluate_attack(PGD(eps=8 / 255, steps=2), model, x, y, batch_size=4, seed=0)
    assert result.clean_acc == 1.0
    assert result.acc <= result.clean_acc
    assert result.max_perturbation <= 8 / 255 + 1e-6
    assert all(p.grad is None for p in model.parameters())


def test_l2_projection_matches_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    delta[0] *= 1e-3  # already inside the ball: unchanged
    projected = project_to_ball(delta, "l2", 0.5)
    norms = delta.flatten(1).norm(dim=1)
    expected = delta * (0.5 / norms).clamp(max=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(projected, expected)
    torch.testing.assert_close(projected[0], delta[0])
    torch.testing.assert_close(
        projected.flatten(1).norm(dim=1)[1:], torch.full((5,), 0.5, dtype=torch.float64)
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_inside_the_ball(norm: str) -> None:
    like = torch.zeros(2000, 1, 2, 2, dtype=torch.float64)
    points = sample_in_ball(like, norm, 0.3, generator=torch.Generator().manual_seed(0))
    sizes = perturbation_norm(points, norm)
    assert sizes.max() <= 0.3 + 1e-12
    # uniform in the ball: P(radius <= r) = (r/eps)^D for L2 (D = 4), so the median radius is 0.3·0.5^(1/4)
    if norm == "l2":
        assert sizes.median().item() == pytest.approx(0.3 * 0.5**0.25, rel=0.05)
    else:
        assert points.mean().abs() < 0.02 and points.abs().max() > 0.29
