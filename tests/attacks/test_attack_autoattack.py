"""AutoAttack adapter (needs the optional pyautoattack package; skipped without it).

On a tiny MLP the sub-attacks cost about: APGD-CE 1 s, APGD-T 2 s, FAB-T 5 s, Square 7 s (Python
overhead per iteration dominates), so the fast tests use the white-box part and one `slow` test runs
the standard version end to end.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustdiag.attacks import PGD, AttackReliabilityWarning, AttackResult, AutoAttack, evaluate_attack
from robustdiag.attacks.geometry import perturbation_norm

pytest.importorskip("pyautoattack")


def mlp(num_classes: int) -> nn.Module:
    """A random 16-32-K MLP whose first layer is scaled up so ε ≈ 0.03 attacks fool some samples."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_classes)).eval()
    with torch.no_grad():
        model[1].weight.mul_(10)
    return model


def correctly_classified(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, model(x).argmax(dim=1)


def pgd20_and_autoattack(attack: AutoAttack) -> tuple[AttackResult, AttackResult]:
    model = mlp(10)
    x, y = correctly_classified(model, 12)
    pgd = evaluate_attack(
        PGD(eps=attack.eps, step_size=attack.eps / 4, steps=20), model, x, y, batch_size=12, seed=0
    )
    aa = evaluate_attack(attack, model, x, y, batch_size=12, seed=0, keep_adv=True)
    assert 0 < pgd.acc < 1  # a non-trivial comparison
    assert aa.acc <= pgd.acc
    assert not (aa.robust & ~aa.clean_correct).any()
    assert aa.x_adv is not None
    assert perturbation_norm(aa.x_adv - x, "linf").max() <= attack.eps + 1e-6
    assert aa.x_adv.min() >= 0 and aa.x_adv.max() <= 1
    return pgd, aa


def test_autoattack_white_box_part_is_at_least_as_strong_as_pgd20() -> None:
    pgd20_and_autoattack(AutoAttack(eps=0.03, version="custom", attacks=["apgd-ce", "apgd-t"]))


@pytest.mark.slow
def test_autoattack_standard_is_at_least_as_strong_as_pgd20() -> None:
    pgd, aa = pgd20_and_autoattack(AutoAttack(eps=0.03))  # ~15 s on 2 CPU cores
    assert aa.acc < pgd.acc  # on this model and these samples APGD-T finds one more


def test_autoattack_is_deterministic_and_leaves_global_rng_and_parameters_alone() -> None:
    model = mlp(10)
    x, y = correctly_classified(model, 8)
    attack = AutoAttack(norm="L2", eps=0.1, version="custom", attacks=["apgd-ce"])
    state = torch.get_rng_state()
    a = attack(model, x, y, generator=torch.Generator().manual_seed(3))
    b = attack(model, x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b)
    assert perturbation_norm(a - x, "l2").max() <= 0.1 + 1e-6
    assert not torch.equal(a, x)  # it fooled some samples
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_autoattack_with_three_classes_skips_dlr_with_a_warning() -> None:
    model = mlp(3)
    x, y = correctly_classified(model, 6)
    attack = AutoAttack(eps=0.03, version="custom", attacks=["apgd-ce", "apgd-t", "fab-t"])
    with pytest.warns(AttackReliabilityWarning, match="skipping apgd-t, running apgd-ce, fab-t"):
        x_adv = attack(model, x, y)
    assert perturbation_norm(x_adv - x, "linf").max() <= 0.03 + 1e-6
    assert all(p.grad is None for p in model.parameters())  # FAB calls .backward(): parameters were frozen


def test_autoattack_counts_its_model_calls_and_says_how_long_it_can_take(monkeypatch, caplog) -> None:
    """Before: 20 samples of a tiny model ran for minutes with no sign of life. Now the log states the
    worst-case number of model calls and its cost here, and a progress bar counts the calls."""
    import logging

    import pyautoattack

    from robustdiag.attacks import autoattack

    standard = pyautoattack.AutoAttack(mlp(10), norm="Linf", eps=8 / 255, version="standard", device="cpu")
    planned = ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert autoattack.worst_case_calls(standard, planned) == 101 + 9 * 101 + 9 * 201 + 5001

    counted = []

    class Bar:
        def __init__(self, *args, **kwargs) -> None:
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            counted.append(self.n)

        def update(self, n: int) -> None:
            self.n += n

    monkeypatch.setattr(autoattack, "progress", Bar)
    model = mlp(10)
    x, y = correctly_classified(model, 6)
    attack = AutoAttack(eps=1e-6, version="custom", attacks=["apgd-ce"])  # nothing is fooled: worst case
    with caplog.at_level(logging.INFO, logger="robustdiag.attacks.autoattack"):
        attack(model, x, y, generator=torch.Generator().manual_seed(0))
    assert "at most ~505 model calls" in caplog.text and "forward+backward" in caplog.text  # 5 restarts x 101
    assert 450 <= counted[0] <= 520  # the bar saw every call
