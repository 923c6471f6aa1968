"""The worked examples of docs/architecture.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from robustdiag.types import EvalContext, EvalSet, Metric

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def block(language: str, containing: str) -> str:
    """The documentation's code block in ``language`` that contains ``containing``."""
    (found,) = [
        b for b in re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S) if containing in b
    ]
    return found


def test_the_metric_example_is_a_metric_the_engine_can_run(monkeypatch) -> None:
    import sys
    import types

    module = types.ModuleType("robustdiag.metrics.margin_gap")
    exec(block("python", "class MarginGap"), module.__dict__)  # noqa: S102 - the documentation's own code
    monkeypatch.setitem(sys.modules, "robustdiag.metrics.margin_gap", module)
    node = yaml.safe_load(block("yaml", "margin_gap:"))["margin_gap"]
    metric = instantiate(node)
    assert isinstance(metric, Metric)
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 0.4, 0.0]])
    data = EvalSet(x=torch.zeros(2, 1, 2, 2), y=torch.tensor([0, 1]), index=torch.arange(2))
    result = metric(
        EvalContext(model=torch.nn.Identity(), data=data, num_classes=3, batch_size=2, seed=0, logits=logits)
    )
    assert result.scalars["mean"] == pytest.approx((2.0 + 0.1) / 2, rel=1e-6)
    assert result.per_sample["gap"].tolist() == pytest.approx([-2.0, -0.1], rel=1e-6)


def test_the_bound_example_registers_a_rule_for_its_class() -> None:
    from robustdiag.metrics.bounds import registry

    namespace: dict = {}
    saved = dict(registry._CONVERTERS)
    supported = list(registry._SUPPORTED)
    try:
        exec(block("python", "@register(MobileNetV3"), namespace)  # noqa: S102
        from timm.models.mobilenetv3 import MobileNetV3

        assert registry._CONVERTERS[MobileNetV3] is namespace["mobilenetv3_ops"]
    finally:
        registry._CONVERTERS.clear()
        registry._CONVERTERS.update(saved)
        registry._SUPPORTED[:] = supported
