"""Bad settings raise errors that name the key; unreliable evaluations warn, each sign tested."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from attack_models import Linear, tiny_cnn
from torch import nn

from robustdiag.attacks import (
    FGSM,
    PGD,
    AttackContractError,
    AttackReliabilityWarning,
    AttackResult,
    AutoAttack,
    compare_attacks,
    evaluate_attack,
)
from robustdiag.attacks.checks import robust_above_clean_message

# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: PGD(eps=-0.1), r"eps=-0.1 must be >= 0"),
        (lambda: PGD(eps=8), r"eps=8 .*\[0, 1\] pixel units.*eps=8/255 ≈ 0\.0314"),
        (lambda: FGSM(eps=8), r"eps=8 .*\[0, 1\] pixel units.*eps=8/255"),
        (lambda: FGSM(eps=float("nan")), r"eps=nan must be a finite number"),
        (lambda: PGD(norm="l3"), r"norm='l3' .*valid values: linf, l2"),
        (lambda: PGD(steps=0), r"steps=0 must be an integer >= 1"),
        (lambda: PGD(steps=2.5), r"steps=2.5 must be an integer >= 1"),
        (lambda: PGD(restarts=0), r"restarts=0 must be an integer >= 1"),
        (lambda: PGD(step_size=0.0), r"step_size=0.0 must be a finite number > 0"),
        (lambda: PGD(restarts=3, random_start=False), r"restarts=3 needs random_start=True"),
    ],
)
def test_bad_settings_raise_and_name_the_key(build, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        build()


def test_l2_radius_above_one_is_allowed_and_defaults_are_documented() -> None:
    assert PGD(norm="l2", eps=3.0).eps == 3.0  # ImageNet L2 eps = 3 is a standard setting
    assert PGD().step_size == pytest.approx(2 / 255)  # paper 2's step at eps 8/255
    assert PGD(norm="l2", eps=0.5, steps=20).step_size == pytest.approx(0.0625)  # 2.5 eps / steps
    assert PGD(norm="L2").name == "pgd_l2" and PGD(norm="Linf").norm == "linf"


def test_autoattack_settings_are_checked() -> None:
    pytest.importorskip("pyautoattack")
    with pytest.raises(ValueError, match=r"eps=8 .*did you mean|eps=8 .*Did you mean"):
        AutoAttack(eps=8)
    with pytest.raises(ValueError, match=r"norm='L3' .*valid values: linf, l2, l1"):
        AutoAttack(norm="L3")
    with pytest.raises(ValueError, match=r"version='fast' .*valid values: standard, plus, rand, custom"):
        AutoAttack(version="fast")
    with pytest.raises(ValueError, match=r"attacks has unknown entries \['pgd'\]"):
        AutoAttack(version="custom", attacks=["apgd-ce", "pgd"])
    with pytest.raises(ValueError, match=r"version='custom' needs attacks"):
        AutoAttack(version="custom")


def test_autoattack_without_the_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes `import pyautoattack` fail
    with pytest.raises(ImportError, match=r'pip install "robustdiag\[autoattack\]"'):
        AutoAttack()


def test_bad_inputs_raise(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"x must be pixels in \[0, 1\].*normalises inside"):
        PGD()(model, (x - 0.5) / 0.25, y)  # normalised tensors instead of pixels
    with pytest.raises(ValueError, match=r"y must have shape \(16,\)"):
        FGSM()(model, x, y[:3])
    with pytest.raises(ValueError, match=r"batch_size=0 must be >= 1"):
        evaluate_attack(FGSM(), model, x, y, batch_size=0, seed=0)


# ------------------------------------------------------------------------------------ contract errors


class _Cheat:
    """A fake attack that breaks the threat model in a chosen way."""

    norm = "linf"

    def __init__(self, how: str, eps: float = 0.03) -> None:
        self.how, self.eps, self.name = how, eps, f"cheat_{how}"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator=None) -> torch.Tensor:
        if self.how == "too_far":
            return (x + 2 * self.eps).clamp(0, 1)
        if self.how == "out_of_box":
            return x + self.eps
        return x[:, :, :-1]  # wrong shape


@pytest.mark.parametrize(
    ("how", "pattern"),
    [
        ("too_far", r"perturbed a sample by 0\.06.* more than eps=0\.03"),
        ("out_of_box", r"outside \[0, 1\]"),
        ("shape", "shape"),
    ],
)
def test_contract_violations_raise(how: str, pattern: str, images: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = images
    x = x.clamp(0.1, 0.9) if how == "too_far" else x
    with pytest.raises(AttackContractError, match=pattern):
        evaluate_attack(_Cheat(how), tiny_cnn(), x, y, batch_size=8, seed=0)


# ------------------------------------------------------------------------------------------- warnings


def _warned(record: list[warnings.WarningMessage], text: str) -> bool:
    return any(issubclass(w.category, AttackReliabilityWarning) and text in str(w.message) for w in record)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack=None) -> tuple[AttackResult, list]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = evaluate_attack(attack or PGD(eps=0.03, steps=2), model, x, y, batch_size=8, seed=0)
    return result, record


def test_healthy_model_gives_no_warnings(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    result, record = _evaluate(tiny_cnn(), *images)
    assert result.warnings == []
    assert not [w for w in record if issubclass(w.category, AttackReliabilityWarning)]


def test_train_mode_warns_switches_to_eval_and_restores(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = tiny_cnn().train()
    model[1].eval()  # a submodule the user froze in eval mode keeps its own mode
    bn_mean = model[1].running_mean.clone()
    result, record = _evaluate(model, *images)
    assert _warned(record, "train mode")
    assert any("train mode" in m for m in result.warnings)
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, bn_mean)  # evaluated in eval mode: no BN update


def test_direct_attack_call_on_train_mode_model_warns(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = tiny_cnn().train()
    with pytest.warns(AttackReliabilityWarning, match="train mode"):
        FGSM()(model, *images)


def test_probability_outputs_warn(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = nn.Sequential(tiny_cnn(), nn.Softmax(dim=1))
    result, record = _evaluate(model, *images)
    assert _warned(record, "look like probabilities")
    assert any("Remove the final softmax" in m for m in result.warnings)


class _Quantised(nn.Module):
    """Rounds pixels to 8 levels before a linear layer: zero input gradient almost everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x * 7).round().flatten(1) / 7)


def test_zero_gradients_warn_gradient_masking(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    result, record = _evaluate(_Quantised().eval(), *images)
    assert _warned(record, "possible gradient masking: 8/8 samples have an exactly zero input gradient")
    assert len(result.warnings) == 1


class _ArgmaxModel(nn.Module):
    """Returns one-hot scores of a linear layer's argmax: the output is detached from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * F.one_hot(self.linear(x.flatten(1)).argmax(dim=1), 10).float()


def test_detached_outputs_warn_and_attack_still_runs(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    result, record = _evaluate(_ArgmaxModel().eval(), *images)
    assert _warned(record, "exactly zero input gradient")
    assert result.max_perturbation > 0  # PGD's random start still moves the points


class _NaNGradient(nn.Module):
    """sqrt at 0 has an infinite derivative: finite outputs, NaN input gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(192, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)) + torch.sqrt(0.0 * x.flatten(1)).sum(dim=1, keepdim=True)


def test_nonfinite_gradients_warn(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    result, record = _evaluate(_NaNGradient().eval(), *images)
    assert _warned(record, "8/8 samples have non-finite input gradients")
    assert 0 <= result.acc <= result.clean_acc


class _AlwaysDropout(nn.Module):
    """Dropout that ignores eval mode: a stochastic model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.net(x), p=0.5, training=True)


def test_stochastic_model_warns(images: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, record = _evaluate(_AlwaysDropout().eval(), *images)
    assert _warned(record, "two identical forward passes differ")


class _Helpful:
    """A broken 'attack' that descends the loss: it fixes misclassified samples."""

    norm, name, strength = "linf", "helpful", 1.0

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator=None) -> torch.Tensor:
        return FGSM(eps=self.eps)(model, x, 1 - y)  # ascend the loss of the other class


def test_accuracy_under_attack_above_clean_warns() -> None:
    g = torch.Generator().manual_seed(0)
    model = Linear(torch.randn(2, 12, generator=g), torch.zeros(2)).eval()
    x = torch.rand(64, 3, 2, 2, generator=g)
    with torch.no_grad():
        y = 1 - model(x).argmax(dim=1)  # every sample misclassified: clean accuracy 0
    result, record = _evaluate(model, x, y, attack=_Helpful(eps=0.5))
    assert result.clean_acc == 0 and result.adv_acc > 0.5
    assert result.acc == 0  # the AND convention keeps robust accuracy <= clean accuracy
    assert _warned(record, "exceeds clean accuracy")
    assert robust_above_clean_message("x", 0.5, 0.5) is None


# ---------------------------------------------------------------------------------- compare_attacks


def _result(
    name: str, robust: list[bool], *, norm: str = "linf", eps: float = 8 / 255, strength: float = 1.0
) -> AttackResult:
    flags = torch.tensor(robust)
    clean = torch.ones_like(flags)
    return AttackResult(
        name=name,
        robust=flags,
        clean_correct=clean,
        acc=flags.float().mean().item(),
        clean_acc=1.0,
        adv_acc=flags.float().mean().item(),
        max_perturbation=eps,
        norm=norm,
        eps=eps,
        strength=strength,
    )


def test_compare_attacks_warns_when_the_stronger_attack_does_worse() -> None:
    fgsm = _result("fgsm", [False] * 8 + [True] * 2, strength=1)
    pgd = _result("pgd_linf", [False] * 5 + [True] * 5, strength=20)
    with pytest.warns(
        AttackReliabilityWarning,
        match=r"'pgd_linf' \(50\.00% robust\).*'fgsm' \(20\.00% robust\).*3/10 samples",
    ):
        messages = compare_attacks({"fgsm": fgsm, "pgd_linf": pgd}, ["fgsm", "pgd_linf"])
    assert len(messages) == 1
    with pytest.warns(AttackReliabilityWarning, match="3/10 samples"):
        assert len(compare_attacks({"fgsm": fgsm, "pgd_linf": pgd})) == 1  # ordered by strength by default


def test_compare_attacks_per_sample_disagreement_warns_at_equal_accuracy() -> None:
    fgsm = _result("fgsm", [False] * 5 + [True] * 5)
    pgd = _result("pgd_linf", [True] * 5 + [False] * 5, strength=20)
    with pytest.warns(AttackReliabilityWarning, match="5/10 samples are fooled by 'fgsm' only"):
        assert len(compare_attacks({"fgsm": fgsm, "pgd_linf": pgd}, ["fgsm", "pgd_linf"])) == 1
    assert (
        compare_attacks({"fgsm": fgsm, "pgd_linf": pgd}, ["fgsm", "pgd_linf"], per_sample_tolerance=0.5) == []
    )


def test_compare_attacks_is_quiet_when_consistent_or_not_comparable() -> None:
    fgsm = _result("fgsm", [False] * 2 + [True] * 8)
    pgd = _result("pgd_linf", [False] * 6 + [True] * 4, strength=20)
    weak_l2 = _result("pgd_l2", [True] * 10, norm="l2", eps=0.5, strength=20)
    small_eps = _result("pgd_small", [True] * 10, eps=1 / 255, strength=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compare_attacks({"fgsm": fgsm, "pgd_linf": pgd}, ["fgsm", "pgd_linf"]) == []
        assert compare_attacks({"fgsm": fgsm, "pgd_l2": weak_l2}, ["fgsm", "pgd_l2"]) == []  # other norm
        assert compare_attacks({"fgsm": fgsm, "pgd_small": small_eps}) == []  # smaller eps may be weaker
        assert compare_attacks({"pgd_linf": pgd}, ["fgsm", "pgd_linf", "autoattack"]) == []


def test_real_fgsm_and_pgd_compare_cleanly() -> None:
    model = tiny_cnn()
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttackReliabilityWarning)
        results = {
            a.name: evaluate_attack(a, model, x, y, batch_size=64, seed=0)
            for a in (FGSM(eps=0.1), PGD(eps=0.1, steps=10))
        }
        assert compare_attacks(results) == []
    assert results["pgd_linf"].acc < results["fgsm"].acc
