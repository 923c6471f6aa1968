import pytest
import torch

from robustdiag.models import Classifier, UnknownModelError, adapt_small_input_stem, build_model


def _build(name: str, size: int = 32, chans: int = 3, **kw) -> Classifier:
    return build_model(
        name, num_classes=10, in_chans=chans, img_size=size, mean=[0.5] * chans, std=[0.25] * chans, **kw
    )


def test_normalisation_is_inside_the_model() -> None:
    model = _build("test_resnet", size=16).eval()
    x = torch.rand(4, 3, 16, 16)
    expected = model.net((x - 0.5) / 0.25)
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize(
    ("name", "size", "kwargs"),
    [
        ("test_resnet", 8, {}),
        ("test_vit", 8, {"patch_size": 2}),
        ("wrn28_1", 32, {}),
        ("preact_resnet18", 32, {}),
    ],
)
def test_any_timm_name_builds_and_returns_logits(name: str, size: int, kwargs: dict) -> None:
    model = _build(name, size=size, kwargs=kwargs)
    assert model(torch.rand(2, 3, size, size)).shape == (2, 10)


def test_small_input_stem_keeps_resolution_for_resnet() -> None:
    import timm

    net = timm.create_model("resnet18", num_classes=10)
    changes = adapt_small_input_stem(net)
    assert net.conv1.stride == (1, 1) and net.conv1.kernel_size == (3, 3)
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert len(changes) == 2
    # a 32 px input reaches the last stage at 4x4 (32 / 8) instead of 1x1
    assert net.forward_features(torch.rand(1, 3, 32, 32)).shape[-1] == 4


def test_small_input_stem_leaves_patchify_stems_alone() -> None:
    import timm

    net = timm.create_model("test_vit", num_classes=10)
    assert adapt_small_input_stem(net) == []


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(UnknownModelError, match="resnet18"):
        _build("resnt18")


def test_channel_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match="channel"):
        build_model("test_resnet", num_classes=10, in_chans=3, img_size=16, mean=[0.5], std=[0.2])


def test_image_size_too_small_for_model_is_reported() -> None:
    with pytest.raises(ValueError, match="cannot take"):
        _build("test_vit", size=8, kwargs={"patch_size": 16, "img_size": 8})


def test_feature_models_are_refused() -> None:
    with pytest.raises(ValueError, match="not a logits tensor"):
        _build("test_resnet", size=16, kwargs={"features_only": True})


def test_explicit_stem_adaptation_that_breaks_says_so() -> None:
    with pytest.raises(ValueError, match="Set model.small_input_stem=false") as err:
        _build("levit_128s", size=32, small_input_stem=True)
    assert "small_input_stem=true breaks" in str(err.value)


@pytest.mark.parametrize("name", ["repvgg_a0", "mobileone_s0"])
def test_multi_branch_stems_are_adapted_on_every_branch(name: str) -> None:
    model = _build(name, size=32)
    stem = [
        m for n, m in model.net.named_modules() if n.startswith("stem") and isinstance(m, torch.nn.Conv2d)
    ]
    assert stem and all(conv.stride == (1, 1) for conv in stem[:2])  # both branches of the first block
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_an_automatic_adaptation_that_does_not_fit_falls_back_to_the_models_own_stem(caplog) -> None:
    from robustdiag import models

    def break_it(net):  # an adaptation that makes the forward fail
        net.pretrained_cfg = {}
        net.forward = lambda x: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
        return ["stem: broken"]

    original = models.adapt_small_input_stem
    models.adapt_small_input_stem = break_it
    try:
        model = _build("test_resnet", size=16)
    finally:
        models.adapt_small_input_stem = original
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    assert "keeping its own stem" in caplog.text


def test_patch_models_get_the_image_size() -> None:
    for name in ("deit_tiny_patch16_224", "levit_128s"):
        assert _build(name, size=32)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
