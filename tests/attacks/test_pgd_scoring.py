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


class CountingModel(nn.Module):
    """Counts the samples that go through each forward pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return self.net(x)


def _labelled_by_the_model(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the model's own predictions as labels: every sample starts correctly classified."""
    x = torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        return x, model(x).argmax(1)


def test_early_stop_gives_the_same_robust_accuracy_with_fewer_passes() -> None:
    """A fooled sample stays fooled: the flags equal the full attack's, but fooled samples take no more steps."""
    torch.manual_seed(0)
    model = CountingModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 4)).double().eval())
    x, y = _labelled_by_the_model(model, 40)
    results = {}
    for early_stop in (False, True):
        model.samples = 0
        pgd = PGD(eps=4 / 255, steps=10, restarts=2, early_stop=early_stop)
        x_adv, logits = pgd.attack_with_logits(model, x, y, generator=torch.Generator().manual_seed(3))
        fooled = logits.argmax(1) != y
        assert (x_adv - x).abs().max() <= 4 / 255 + 1e-12 and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            torch.testing.assert_close(logits, model.net(x_adv))  # still the model's logits at the points
        results[early_stop] = (fooled, model.samples)
    (fooled_all, passes_all), (fooled_early, passes_early) = results[False], results[True]
    assert 0 < int(fooled_all.sum()) < 40  # the check is not vacuous: some fooled, some robust
    assert torch.equal(fooled_all, fooled_early)
    assert passes_all == 40 * (10 + 1) * 2  # every sample, every step and the final forward, both restarts
    assert passes_early < passes_all


def test_early_stop_must_be_a_boolean() -> None:
    import pytest

    with pytest.raises(ValueError, match="early_stop='yes' must be true or false"):
        PGD(early_stop="yes")  # type: ignore[arg-type]
