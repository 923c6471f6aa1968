"""PGD adversarial training (a tiny loop, in this test only) buys robustness that PGD then measures.

Data after Tsipras et al. (2019): one "robust" pixel, right 90% of the time, and many weakly
predictive "non-robust" pixels that together are right ~99% of the time. Standard training leans on
the weak pixels, which an L∞ perturbation of ε > their signal flips together; PGD training learns to
rely on the robust pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustdiag.attacks import PGD, evaluate_attack

EPS = 0.1  # L∞ radius: above the weak pixels' signal (0.05), below the robust pixel's (0.3)


def robust_and_weak_features(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 4, 4) images in [0, 1] and binary labels.

    Pixel 0 is 0.5 ± 0.3 and agrees with the label 90% of the time; the other 15 pixels are
    0.5 ± 0.05 plus noise, and together predict the label ~99% of the time.
    """
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * y - 1).float().view(-1, 1)  # (n, 1)
    agree = torch.where(torch.rand(n, 1, generator=g) < 0.9, 1.0, -1.0)  # (n, 1)
    signal = torch.full((n, 16), 0.05)
    signal[:, :1] = 0.3 * agree
    x = 0.5 + sign * signal + 0.08 * torch.randn(n, 16, generator=g)  # (n, 16)
    x[:, 0] = 0.5 + sign[:, 0] * signal[:, 0]  # the robust pixel is noise-free
    return x.clamp(0, 1).view(n, 1, 4, 4), y


def train(x: torch.Tensor, y: torch.Tensor, attack: PGD | None, *, steps: int = 100) -> nn.Module:
    """Full-batch Adam on a small MLP; with ``attack`` each step trains on its adversarial points."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        inputs = x
        if attack is not None:
            model.eval()  # as the project's training loop does: attack in eval mode, train in train mode
            inputs = attack(model, x, y, generator=generator)
            model.train()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), y).backward()
        optimizer.step()
    return model.eval()


def test_pgd_training_is_more_robust_than_standard_training() -> None:
    x_train, y_train = robust_and_weak_features(512, seed=0)
    x_test, y_test = robust_and_weak_features(256, seed=1)
    train_attack = PGD(norm="linf", eps=EPS, step_size=EPS / 2, steps=3)
    standard = train(x_train, y_train, attack=None)
    robust = train(x_train, y_train, attack=train_attack)

    evaluate = PGD(norm="linf", eps=EPS, step_size=EPS / 8, steps=20)
    standard_result = evaluate_attack(evaluate, standard, x_test, y_test, batch_size=256, seed=0)
    robust_result = evaluate_attack(evaluate, robust, x_test, y_test, batch_size=256, seed=0)

    assert standard_result.clean_acc > 0.95  # the weak pixels together beat the robust one, clean
    assert robust_result.clean_acc > 0.85  # the robust pixel alone: ~90%
    assert standard_result.acc < 0.2  # the weak pixels are flipped together
    assert robust_result.acc > 0.85  # the robust pixel survives ε
    assert robust_result.acc > standard_result.acc + 0.6
