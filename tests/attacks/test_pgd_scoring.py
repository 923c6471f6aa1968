"""PGD scores its own result: the logits it returns are the model's at the returned points, so an evaluation
needs no further forward; evaluate_attack's accuracies equal a fresh forward's."""

from __future__ import annotations

import torch
from torch import nn

from robustdiag.attacks import PGD, evaluate_attack


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


def test_returned_logits_are_the_models_at_the_returned_points() -> None:
    model = small_model()
    x, y = torch.rand(16, 3, 12, 12), torch.randint(0, 4, (16,))
    pgd = PGD(eps=8 / 255, steps=5, restarts=2)
    x_adv, logits = pgd.attack_with_logits(model, x, y, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x_adv))
    again = pgd(model, x, y, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, x_adv)  # __call__ is the same attack


def test_evaluate_attack_accuracy_matches_a_fresh_forward() -> None:
    model = small_model()
    x, y = torch.rand(24, 3, 12, 12), torch.randint(0, 4, (24,))
    result = evaluate_attack(PGD(eps=8 / 255, steps=4), model, x, y, batch_size=10, seed=0, keep_adv=True)
    assert result.x_adv is not None
    with torch.no_grad():
        adv_ok = model(result.x_adv).argmax(1) == y
        clean_ok = model(x).argmax(1) == y
    assert result.adv_acc == float(adv_ok.float().mean())
    assert torch.equal(result.robust, (adv_ok & clean_ok).cpu())
