"""PathSeparation / ActivationSeparation end to end: planted structure, nulls, streaming, errors, timm."""

from __future__ import annotations

import math
import warnings

import pytest
import timm
import torch
from timm.models.vgg import VGG
from torch import nn

from robustdiag.metrics.paths import ActivationSeparation, PathSeparation
from robustdiag.models import Classifier, Normalize
from robustdiag.types import EvalContext, EvalSet, Metric, MetricResult, share_work


def make_ctx(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, **kwargs: object
) -> EvalContext:
    data = EvalSet(x=x, y=y, index=torch.arange(len(y)))
    return EvalContext(
        model=model.eval(), data=data, num_classes=num_classes, batch_size=16, seed=0, **kwargs
    )


def one_hot_inputs(num_classes: int, per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class k lights only input k (random positive strength): classes use disjoint edges."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat(per_class)  # (N,) interleaved classes
    strength = 0.5 + torch.rand(len(y), generator=generator, dtype=torch.float64)
    x = torch.zeros(len(y), num_classes, 1, 1, dtype=torch.float64)
    x[torch.arange(len(y)), y, 0, 0] = strength
    return x, y


def planted_model(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    linear = nn.Linear(num_classes, 5).double()
    linear.weight.data = linear.weight.data.abs() + 0.1  # positive weights
    linear.bias.data.zero_()
    return nn.Sequential(nn.Flatten(), linear)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    ).double()


def randomise_bn(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()


def test_metrics_follow_the_protocol() -> None:
    for metric in (PathSeparation(), ActivationSeparation()):
        assert isinstance(metric, Metric) and metric.under_shift
    assert PathSeparation.name == "path_separation" and ActivationSeparation.name == "activation_separation"


@pytest.mark.parametrize("event", ["effective_path", "positive"])
def test_planted_disjoint_edges_reach_maximum_separation(event: str) -> None:
    x, y = one_hot_inputs(2, per_class=40)
    ctx = make_ctx(planted_model(2), x, y, num_classes=2)
    for separation, maximum in [
        ("js", 1.0),
        ("tv", 1.0),
        ("jaccard", 1.0),
        ("naive_bayes", 1.0),
        ("sym_kl", 2 * (1 - 2e-3) * math.log((1 - 1e-3) / 1e-3)),
        ("bhattacharyya", -math.log(2 * math.sqrt(1e-3 * (1 - 1e-3)))),
    ]:
        result = PathSeparation(event=event, separation=separation, permutations=8)(ctx)
        assert result.scalars["raw"] == pytest.approx(maximum, rel=1e-6), separation
        # jaccard is skipped: with 2 classes a shuffled edge has p_0 = 1 - p_1, so thresholded paths are
        # disjoint by construction and the null sits at the maximum too
        if separation != "jaccard":
            assert result.scalars["excess"] > 0.3 * maximum and result.scalars["z"] > 3, separation
    # the activation analogue sees nothing here: every output unit is on for both classes
    activation = ActivationSeparation(permutations=8)(ctx)
    assert activation.scalars["raw"] == 0.0 and activation.scalars["excess"] == 0.0


def test_planted_separation_is_two_over_k_for_one_hot_classes() -> None:
    num_classes = 4
    x, y = one_hot_inputs(num_classes, per_class=6)
    result = PathSeparation(permutations=3)(make_ctx(planted_model(num_classes), x, y, num_classes))
    # each pair differs on the edges of its two inputs: 2 of K inputs -> mean JS = 2 / K bits
    assert result.scalars["raw"] == pytest.approx(2 / num_classes)
    row = result.per_layer[0]
    assert row["layer"] == "1" and row["type"] == "linear" and row["edges"] == 5 * num_classes


def test_identical_class_distributions_give_no_excess() -> None:
    generator = torch.Generator().manual_seed(3)
    brightness = 4 * torch.rand(120, 1, 1, 1, generator=generator, dtype=torch.float64) - 2
    x = torch.rand(120, 3, 8, 8, generator=generator, dtype=torch.float64) + brightness  # varied events
    y = torch.arange(3).repeat(40)  # labels carry no information about x
    model = small_cnn()
    randomise_bn(model)
    ctx = make_ctx(model, x, y, num_classes=3)
    for metric in (PathSeparation(permutations=20), ActivationSeparation(permutations=20)):
        result = metric(ctx)
        assert abs(result.scalars["z"]) < 3.5, metric.name
        assert abs(result.scalars["excess"]) < 3.5 * result.scalars["null_std"]
        assert result.scalars["null_mean"] > 0  # finite samples: a positive floor the null removes


@pytest.mark.parametrize("event", ["effective_path", "positive", "neuron"])
@pytest.mark.parametrize("separation", ["js", "naive_bayes"])
def test_streaming_over_batches_equals_one_big_batch(event: str, separation: str) -> None:
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(36, 3, 6, 6, generator=generator, dtype=torch.float64)
    y = (x[:, 0].mean((-2, -1)) * 3).long().clamp(max=2)
    y = torch.arange(36) % 3 if torch.bincount(y, minlength=3).min() < 8 else y
    model = small_cnn()
    randomise_bn(model)
    results = []
    for batch_size in (5, 1000):
        ctx = make_ctx(model, x, y, num_classes=3)
        kwargs = dict(separation=separation, permutations=3, samples_per_class=8, batch_size=batch_size)
        results.append(
            (
                PathSeparation(event=event, chunk_elements=40, **kwargs)(ctx),
                ActivationSeparation(**kwargs)(ctx),
            )
        )
    for small, big in zip(*results):
        assert_same_result(small, big)
    assert results[0][0].scalars["raw"] > 0 and results[0][1].scalars["raw"] > 0


def assert_same_result(a: MetricResult, b: MetricResult) -> None:
    """Equal scalars and per-layer rows (floats to 1e-12, NaN equal to NaN)."""
    assert a.scalars.keys() == b.scalars.keys()
    assert a.scalars == pytest.approx(b.scalars, rel=1e-12, abs=1e-15, nan_ok=True)
    assert len(a.per_layer) == len(b.per_layer)
    for row_a, row_b in zip(a.per_layer, b.per_layer):
        assert row_a.keys() == row_b.keys()
        for key, value in row_a.items():
            if isinstance(value, float):
                assert value == pytest.approx(row_b[key], rel=1e-12, abs=1e-15, nan_ok=True), key
            else:
                assert value == row_b[key], key


def test_path_and_activation_share_one_forward_pass_in_either_order() -> None:
    x, y = one_hot_inputs(3, per_class=10)
    model = planted_model(3)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    for first, second in (
        (PathSeparation(), ActivationSeparation()),
        (ActivationSeparation(), PathSeparation()),
    ):
        calls.clear()
        share_work([first, second])  # what the engine does for the metrics of a run
        ctx = make_ctx(model, x, y, num_classes=3)
        first(ctx)
        second(ctx)
        assert len(calls) == 2  # 30 samples in batches of 16: one pass
        assert len([key for key in ctx.cache if key[0] == "robustdiag.paths"]) == 2
    # a metric with different pass settings runs its own pass
    calls.clear()
    ActivationSeparation(samples_per_class=5)(ctx)
    assert len(calls) == 1


def test_result_layout() -> None:
    x = torch.rand(30, 3, 8, 8, dtype=torch.float64)
    y = torch.arange(30) % 3
    model = small_cnn()
    result = PathSeparation(permutations=2, layers=["0", "3", "9"])(make_ctx(model, x, y, 3))
    assert isinstance(result, MetricResult)
    for key in ("raw", "null_mean", "null_std", "excess", "z", "n", "n_layers", "edges"):
        assert key in result.scalars and isinstance(result.scalars[key], float)
    assert result.scalars["n"] == 30 and result.scalars["n_layers"] == 3
    assert result.scalars["edges"] == 6 * 3 + 6 * 2 + 3 * 8
    assert [row["layer"] for row in result.per_layer] == ["0", "3", "9"]
    assert result.per_layer[0]["bn_folded"] == "1" and result.per_layer[1]["groups"] == 3
    for row in result.per_layer:
        assert {"layer", "type", "edges", "raw", "null_mean", "null_std", "excess", "z"} <= set(row)
        assert row["excess"] == pytest.approx(row["raw"] - row["null_mean"])


def test_label_sources() -> None:
    x, y = one_hot_inputs(2, per_class=10)
    model = planted_model(2)
    logits = torch.stack([x[:, 1, 0, 0], x[:, 0, 0, 0]], dim=1)  # predicts the other class
    train = EvalSet(x=x, y=torch.zeros_like(y), index=torch.arange(len(y)), y_trained=1 - y)
    ctx = make_ctx(model, x, y, 2, logits=logits, train_data=train)
    true = PathSeparation(permutations=2)(ctx)
    assert PathSeparation(permutations=2, labels="predicted")(ctx).scalars["raw"] == pytest.approx(
        true.scalars["raw"]
    )
    assert PathSeparation(permutations=2, labels="trained")(ctx).scalars["raw"] == pytest.approx(
        true.scalars["raw"]
    )
    assert PathSeparation(labels=True).settings.labels == "true"  # `labels=true` from a Hydra command line
    with pytest.raises(ValueError, match="train_data"):
        PathSeparation(labels="trained")(make_ctx(model, x, y, 2))


def test_too_few_samples_per_class_names_the_class() -> None:
    x, y = one_hot_inputs(3, per_class=4)
    y[y == 2] = torch.tensor([2, 2, 0, 0])  # class 2 keeps 2 samples
    with pytest.raises(ValueError, match=r"samples_per_class=4 but class 2 has 2"):
        PathSeparation(samples_per_class=4)(make_ctx(planted_model(3), x, y, 3))
    x, y = one_hot_inputs(3, per_class=4)
    with pytest.raises(ValueError, match=r"class 3 has 0"):
        PathSeparation()(make_ctx(planted_model(3), x, y, num_classes=4))


def test_memory_budget_error_says_how_much_and_what_helps() -> None:
    x, y = one_hot_inputs(2, per_class=4)
    # 5 x 2 edges x 2 classes x (1 + 5) labellings x 4 bytes = 480 B
    message = r"need 480 B .* memory_budget_gb=1e-07.*`layers`.*`permutations`.*event=neuron"
    with pytest.raises(MemoryError, match=message):
        PathSeparation(memory_budget_gb=1e-7)(make_ctx(planted_model(2), x, y, 2))


def test_bad_input_errors() -> None:
    x, y = one_hot_inputs(2, per_class=4)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no supported layers"):
        PathSeparation()(make_ctx(pool, x, y, 2))
    with pytest.raises(ValueError, match="matches none.*Available layers: 1"):
        PathSeparation(layers="layer4.*")(make_ctx(planted_model(2), x, y, 2))
    for kwargs, match in [
        (dict(event="edge"), "event='edge' is not valid; valid: effective_path, positive, neuron"),
        (dict(separation="kl"), "separation='kl' is not valid"),
        (dict(labels="random"), "labels='random' is not valid; valid: true, trained, predicted"),
        (dict(theta=0.0), "theta"),
        (dict(permutations=-1), "permutations"),
    ]:
        with pytest.raises(ValueError, match=match):
            PathSeparation(**kwargs)


def test_unmodelled_weight_transform_warns() -> None:
    class Doubled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, 2 * self.weight, self.bias)

    model = nn.Sequential(Doubled(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    x = torch.rand(8, 3, 6, 6, dtype=torch.float64)
    with pytest.warns(UserWarning, match="do not sum to its output"):
        PathSeparation(permutations=2)(make_ctx(model, x, torch.arange(8) % 4, 4))


def tiny_vgg() -> nn.Module:
    return VGG([8, "M", 16, "M"], num_classes=4, mlp_ratio=1 / 512, norm_layer=nn.BatchNorm2d)


@pytest.mark.parametrize(
    "build,size",
    [
        (lambda: timm.create_model("test_resnet", num_classes=4), 16),
        (tiny_vgg, 16),
        (lambda: timm.create_model("test_vit", num_classes=4, img_size=32, patch_size=8), 32),
    ],
    ids=["resnet", "vgg", "vit"],
)
def test_runs_on_tiny_timm_models(build: object, size: int) -> None:
    torch.manual_seed(0)
    net = build()
    randomise_bn(net)
    model = Classifier(net, Normalize((0.5,) * 3, (0.25,) * 3), "tiny").eval()
    x = torch.rand(16, 3, size, size)
    y = torch.arange(16) % 4
    ctx = make_ctx(model, x, y, 4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*do not sum.*")  # folding and contributions are exact
        path = PathSeparation(permutations=2)(ctx)
        activation = ActivationSeparation(permutations=2)(ctx)
    names = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [row["layer"] for row in path.per_layer] == names
    assert len(activation.per_layer) == len(names)
    assert all(math.isfinite(path.scalars[k]) for k in ("raw", "null_mean", "excess"))
    if isinstance(net, VGG) or "resnet" in type(net).__name__.lower():
        assert any(row["bn_folded"] for row in path.per_layer)
    if hasattr(net, "blocks"):
        assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1", "patch_embed.proj"} <= set(
            names
        )


def test_layers_never_called_are_left_out_with_a_warning() -> None:
    class WithSpare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = planted_model(2)
            self.unused = nn.Linear(3, 3).double()  # e.g. a distillation head switched off

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = WithSpare()
    x, y = one_hot_inputs(2, per_class=4)
    with pytest.warns(UserWarning, match=r"\['unused'\] are never called"):
        result = PathSeparation(permutations=2)(make_ctx(model, x, y, 2))
    assert [row["layer"] for row in result.per_layer] == ["body.1"]


@pytest.mark.parametrize("metric", [PathSeparation, ActivationSeparation])
def test_a_train_mode_model_is_measured_in_eval_mode_and_left_unchanged(metric: type) -> None:
    """Before: the metric warned, then ran in train mode: BatchNorm statistics moved and the result
    depended on the batch. Now it switches to eval mode, restores the mode and changes nothing."""
    model = small_cnn()
    randomise_bn(model)
    torch.manual_seed(1)
    x, y = torch.rand(48, 3, 8, 8, dtype=torch.float64), torch.arange(3).repeat(16)
    expected = metric(permutations=2)(make_ctx(model, x, y, 3))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = make_ctx(model, x, y, 3)
    model.train()  # make_ctx puts it in eval mode
    ctx.model = model
    with pytest.warns(UserWarning, match="train mode"):
        result = metric(permutations=2)(ctx)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert_same_result(result, expected)


@pytest.mark.parametrize("separation", ["naive_bayes", "js", "tv", "jaccard"])
def test_permutation_null_is_calibrated_without_class_structure(separation: str) -> None:
    """Labels that carry no information: across 120 draws the excess averages ~0 and z is centred.
    naive_bayes before permuting within its fit/test halves: mean excess +0.027, mean z +0.50."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 6)).double().eval()
    excess, zs = [], []
    for draw in range(120):
        generator = torch.Generator().manual_seed(100 + draw)
        x = torch.rand(36, 3, 2, 2, generator=generator, dtype=torch.float64) * 2 - 1
        y = torch.arange(6).repeat(6)
        metric = PathSeparation(separation=separation, event="positive", permutations=10, seed=draw)
        result = metric(make_ctx(model, x, y, 6))
        excess.append(result.scalars["excess"] / max(result.scalars["null_std"], 1e-12))
        zs.append(result.scalars["z"])
    z = torch.tensor(zs)
    z = z[torch.isfinite(z)]
    assert len(z) >= 100
    assert abs(float(z.mean())) < 0.25, float(z.mean())  # standard error ~0.1 over 120 draws
    assert float((z > 2).float().mean()) < 0.15
