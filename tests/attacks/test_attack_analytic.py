"""Attacks on linear softmax models, where the worst case is known in closed form (float64).

For two classes the margin of sample i is m = (w_y − w_o)·x + (b_y − b_o), and while the box [0, 1]
is inactive the smallest margin over the ε-ball is m − ε‖w_y − w_o‖_q (q the dual norm: ‖·‖₁ for L∞,
‖·‖₂ for L2), reached at δ = ε·sign(w_o − w_y) (L∞) or ε·(w_o − w_y)/‖w_o − w_y‖₂ (L2).
"""

from __future__ import annotations

import pytest
import torch
from attack_models import Linear

from robustdiag.attacks import FGSM, PGD, evaluate_attack

D = 48  # 3 x 4 x 4 pixels


def binary_problem(n: int = 200, seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """A random linear 2-class model and images in [0.3, 0.7] (so the box stays inactive for ε ≤ 0.3 in L∞)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(2, D, generator=g, dtype=torch.float64) * 0.5
    bias = -0.5 * weight.sum(dim=1)  # margins of x = 0.5 are zero: a mix of robust and fooled samples
    model = Linear(weight, bias).eval()
    x = 0.3 + 0.4 * torch.rand(n, 3, 4, 4, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[::5] = 1 - y[::5]  # some misclassified samples too
    return model, x, y


def margins_and_direction(
    model: Linear, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins m (N,) and the per-sample loss-ascent direction w_o − w_y (N, D)."""
    w, b = model.weight.detach(), model.bias.detach()
    diff = w[y] - w[1 - y]  # (N, D): w_y − w_o
    margin = (x.flatten(1) * diff).sum(dim=1) + b[y] - b[1 - y]  # (N,)
    return margin, -diff


def test_fgsm_is_the_exact_linf_optimum() -> None:
    model, x, y = binary_problem()
    eps = 0.1
    _, ascent = margins_and_direction(model, x, y)
    x_adv = FGSM(eps=eps)(model, x, y)
    torch.testing.assert_close(x_adv, x + eps * ascent.sign().view_as(x), rtol=0, atol=1e-15)


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_linf_reaches_the_optimum_and_the_analytic_robust_flags(random_start: bool) -> None:
    model, x, y = binary_problem()
    eps = 0.02
    margin, ascent = margins_and_direction(model, x, y)
    attack = PGD(norm="linf", eps=eps, step_size=eps / 4, steps=20, random_start=random_start)
    result = evaluate_attack(attack, model, x, y, batch_size=64, seed=0, keep_adv=True)
    # steps of ε/4 cross the whole ball (2ε) in 8 steps, so 20 steps end exactly on the optimal vertex
    assert result.x_adv is not None
    torch.testing.assert_close(result.x_adv, x + eps * ascent.sign().view_as(x), rtol=0, atol=1e-15)
    expected = margin - eps * ascent.abs().sum(dim=1) > 0  # (N,)
    assert torch.equal(result.robust, expected & (margin > 0))
    assert 0.1 < result.acc < result.clean_acc - 0.1  # a non-trivial split


def test_pgd_l2_reaches_the_optimum_without_random_start() -> None:
    model, x, y = binary_problem()
    eps = 0.1
    margin, ascent = margins_and_direction(model, x, y)
    unit = ascent / ascent.norm(dim=1, keepdim=True)  # (N, D)
    assert (x.flatten(1) + eps * unit).min() > 0 and (x.flatten(1) + eps * unit).max() < 1  # box inactive
    attack = PGD(norm="l2", eps=eps, steps=20, random_start=False)  # step 2.5ε/20: on the sphere in 8
    result = evaluate_attack(attack, model, x, y, batch_size=64, seed=0, keep_adv=True)
    assert result.x_adv is not None
    torch.testing.assert_close(result.x_adv, x + eps * unit.view_as(x), rtol=0, atol=1e-12)
    expected = (margin - eps * ascent.norm(dim=1) > 0) & (margin > 0)
    assert torch.equal(result.robust, expected)
    assert 0.1 < result.acc < result.clean_acc - 0.1  # a non-trivial split


def test_pgd_l2_with_random_start_matches_the_analytic_flags_away_from_the_boundary() -> None:
    model, x, y = binary_problem(n=400)
    eps = 0.1
    margin, ascent = margins_and_direction(model, x, y)
    worst = margin - eps * ascent.norm(dim=1)  # (N,) the optimal adversarial margin
    result = evaluate_attack(PGD(norm="l2", eps=eps, steps=20), model, x, y, batch_size=128, seed=0)
    clear = (worst.abs() > 0.05 * eps * ascent.norm(dim=1)) | (margin <= 0)  # not within 5% of the boundary
    assert clear.float().mean() > 0.8
    assert torch.equal(result.robust[clear], ((worst > 0) & (margin > 0))[clear])


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.25), ("l2", 3.0)])
def test_pgd_drives_a_linear_softmax_model_to_zero_at_large_eps(norm: str, eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(10, D, generator=g), torch.zeros(10)).eval()
    x = torch.rand(256, 3, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # clean accuracy 100%
    result = evaluate_attack(PGD(norm=norm, eps=eps, steps=20), model, x, y, batch_size=128, seed=0)
    assert result.clean_acc == 1.0
    assert result.acc <= 0.01
