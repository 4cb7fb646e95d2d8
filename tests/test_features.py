"""features_only and forward_intermediates: the stage maps, their feature_info, timm's convention."""

from __future__ import annotations

import pytest
import torch

import resnetlab
from helpers import one_line, randomize_norms
from resnetlab.models import ResNetFeatures, build_model


def hooked_outputs(model, x, names):
    """The outputs of the named modules during an ordinary forward."""
    seen = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o.clone()))
             for name in names]
    logits = model(x)
    for hook in hooks:
        hook.remove()
    return logits, seen


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("resnet50", 64), ("resnet20", 32)])
def test_stage_maps_equal_the_full_models_intermediate_outputs(name, size):
    torch.manual_seed(0)
    model = randomize_norms(build_model(name)).eval()
    x = torch.randn(2, 3, size, size)
    stages = model.stage_names
    logits, seen = hooked_outputs(model, x, stages)
    features = ResNetFeatures(model, out_indices=range(1, len(stages) + 1)).eval()
    maps = features(x)
    assert len(maps) == len(stages)
    for stage, feature in zip(stages, maps):
        assert torch.equal(feature, seen[stage])
    final, intermediates = model.forward_intermediates(x)
    assert all(torch.equal(a, seen[s]) for a, s in zip(intermediates, stages))
    assert torch.equal(final, model.forward_features(x))
    assert torch.allclose(model.forward_head(final), logits)
    for info, feature in zip(features.feature_info, maps):  # channels and reduction describe the real shapes
        assert feature.shape[1] == info["num_chs"] and feature.shape[-1] == size // info["reduction"]


def test_create_model_features_only_with_weights_and_the_stem():
    full = resnetlab.create_model("resnet20", pretrained=True).eval()
    features = resnetlab.create_model("resnet20", pretrained=True, features_only=True, out_indices=(0, 2)).eval()
    x = torch.randn(2, 3, 32, 32)
    stem, layer2 = features(x)
    assert torch.equal(stem, full.relu(full.bn1(full.conv1(x))))
    assert torch.equal(layer2, full.forward_intermediates(x, indices=[2], intermediates_only=True)[0])
    assert features.feature_info.channels() == [16, 32] and features.feature_info.reduction() == [1, 2]
    assert features.feature_info.module_name() == ["relu", "layer2"]
    assert set(features.state_dict()) < set(full.state_dict())  # the same names; layer3 and fc left out
    assert not any(k.startswith(("layer3", "fc")) for k in features.state_dict())
    last_two = full.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[1] for t in last_two] == [32, 64]


def test_matches_timm_features_only():
    timm = pytest.importorskip("timm")
    ours = resnetlab.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    theirs = timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours(x), theirs(x)))
    assert ours.feature_info.channels() == theirs.feature_info.channels()
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()


def test_bad_indices_are_one_line():
    model = build_model("resnet20")
    with pytest.raises(ValueError) as err:
        resnetlab.create_model("resnet20", features_only=True, out_indices=(1, 4))
    assert one_line(err) == "feature indices [1, 4] out of range; accepted: 0 (stem) to 3 (stage 3)"
    with pytest.raises(ValueError, match="accepted: 1 to 4"):
        model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=5)
