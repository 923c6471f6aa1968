"""Every family in zoo.py builds at 32 px and goes through each evaluation stage once.

One tiny forward/backward, the exact Fisher on 2 samples (finite, non-negative, equal to the dense
Jacobian answer), one path-separation pass (a result or a recorded "not applicable"), one PGD step
that stays in the ε-ball. The fast suite runs zoo.FAST; CI runs all (``slow``).
"""

from __future__ import annotations

import pytest
import torch
from zoo import FAST, ZOO

from robustdiag.attacks import PGD
from robustdiag.metrics.fisher import FisherMetric
from robustdiag.metrics.paths import PathSeparation
from robustdiag.models import build_model
from robustdiag.types import EvalContext, EvalSet, MetricNotApplicable

CLASSES = 10


def reference_lambda(model: torch.nn.Module, xi: torch.Tensor) -> torch.Tensor:
    """λ_max of Jᵀ(diag p − ppᵀ)J from autograd's Jacobian: the nonzero spectrum of (J Jᵀ)(diag p − ppᵀ)."""
    J = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), xi)  # (K, C, H, W)
    J = J.reshape(J.shape[0], -1).double()  # (K, D)
    with torch.no_grad():
        p = model(xi.unsqueeze(0)).squeeze(0).double().softmax(-1)  # (K,)
    C = torch.diag(p) - torch.outer(p, p)  # (K, K)
    return torch.linalg.eigvals((J @ J.T) @ C).real.max()


def _cases() -> list:
    return [
        pytest.param(name, kwargs, id=name, marks=() if name in FAST else (pytest.mark.slow,))
        for name, kwargs in ZOO.items()
    ]


@pytest.mark.parametrize(("name", "kwargs"), _cases())
def test_family_goes_through_every_stage(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model(
        name, num_classes=CLASSES, in_chans=3, img_size=32, mean=[0.5] * 3, std=[0.25] * 3, kwargs=kwargs
    )
    x = torch.rand(2 * CLASSES, 3, 32, 32)
    y = torch.arange(CLASSES).repeat(2)

    model.train()
    model(x[:4]).logsumexp(dim=1).sum().backward()  # a training step's forward/backward
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()

    ctx = EvalContext(model=model, data=EvalSet(x=x, y=y, index=torch.arange(len(y))), num_classes=CLASSES,
                      batch_size=8, seed=0)  # fmt: skip
    fisher = FisherMetric(estimator="exact", n_samples=2)(ctx)
    lam = torch.as_tensor(fisher.per_sample["lambda"][:2], dtype=torch.float64)
    torch.testing.assert_close(
        lam, torch.stack([reference_lambda(model, x[i]) for i in range(2)]), rtol=1e-3, atol=1e-6
    )

    try:
        paths = PathSeparation(permutations=2, max_class_pairs=10)(ctx)
        assert all(v == v for k, v in paths.scalars.items() if isinstance(v, float) and k == "excess")
    except MetricNotApplicable as reason:
        assert str(reason)  # says why

    eps = 2 / 255
    x_adv = PGD(norm="linf", eps=eps, step_size=eps, steps=1, random_start=True)(model, x[:4], y[:4],
                                                                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert (x_adv - x[:4]).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
