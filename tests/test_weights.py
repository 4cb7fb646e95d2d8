"""Checkpoints from torchvision, timm, akamaster and resnetlab load into the zoo models exactly."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import Tensor, nn

from resnetlab.models import build_model
from resnetlab.weights import load_weights, read_checkpoint, save_weights

IMAGENET_ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                  "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]
ATOL = 1e-5


def randomise_norms(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-default affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(123)
    return model.eval()


def logits(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.eval()(x)


def max_diff(a: Tensor, b: Tensor) -> float:
    return (a - b).abs().max().item()


def snapshot(model: nn.Module) -> Dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: Dict[str, Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def assert_matches(reference: nn.Module, model: nn.Module, x: Tensor) -> None:
    expected = logits(reference, x)
    assert torch.isfinite(expected).all()
    assert max_diff(expected, logits(model, x)) <= ATOL


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", IMAGENET_ARCHS)
def test_torchvision_checkpoint_gives_same_logits(name: str, tmp_path: Path) -> None:
    reference = randomise_norms(getattr(torchvision.models, name)(weights=None))
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    expected = logits(reference, x)
    assert torch.isfinite(expected).all()
    assert max_diff(expected, logits(model, x)) > 1e-3  # the comparison can fail
    result = load_weights(model, path, verbose=False)
    path.unlink()  # the big ones are hundreds of MB; do not leave them in pytest's tmp dirs
    assert not result.head_replaced and not result.adapted_in_chans
    assert result.missing == [] and result.unexpected == []
    assert max_diff(expected, logits(model, x)) <= ATOL
    assert int(model.bn1.num_batches_tracked) == 123


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_gives_same_logits(name: str, suffix: str, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    reference = randomise_norms(timm.create_model(name, pretrained=False))
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    model = build_model(name)
    load_weights(model, path, verbose=False)
    path.unlink()
    assert_matches(reference, model, torch.randn(2, 3, 64, 64))


def akamaster_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """A state dict as akamaster's trainer saves it: DataParallel prefix, 'linear' head."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("fc."):
            key = "linear." + key[len("fc."):]
        state["module." + key] = value
    return state


def test_akamaster_checkpoint_gives_same_logits(tmp_path: Path) -> None:
    reference = randomise_norms(build_model("resnet20"))
    state = akamaster_state_dict(reference)
    assert "module.linear.weight" in state and not any("downsample" in k for k in state)
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save({"state_dict": state, "best_prec1": 91.7}, path)
    model = build_model("resnet20")
    result = load_weights(model, path, verbose=False)
    assert result.metadata == {"best_prec1": 91.7}
    assert_matches(reference, model, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("wrap", ["model", "model_state_dict", "ddp", "compiled", "plain"])
def test_wrapped_and_prefixed_state_dicts_load(wrap: str, tmp_path: Path) -> None:
    reference = randomise_norms(build_model("resnet20", shortcut="B"))
    state = reference.state_dict()
    if wrap == "ddp":
        obj: object = {"module." + k: v for k, v in state.items()}
    elif wrap == "compiled":
        obj = {"_orig_mod." + k: v for k, v in state.items()}
    elif wrap == "plain":
        obj = state
    else:
        obj = {wrap: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "ckpt.pt")
    loaded, _ = read_checkpoint(tmp_path / "ckpt.pt")
    assert list(loaded) == list(state)
    model = build_model("resnet20", shortcut="B")
    load_weights(model, tmp_path / "ckpt.pt", verbose=False)
    assert_matches(reference, model, torch.randn(2, 3, 32, 32))


def test_state_dict_without_num_batches_tracked_loads() -> None:
    reference = randomise_norms(build_model("resnet18"))
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = build_model("resnet18")
    result = load_weights(model, state, verbose=False)
    assert result.path is None and result.missing == []
    assert_matches(reference, model, torch.randn(1, 3, 64, 64))


def test_own_safetensors_round_trip(tmp_path: Path) -> None:
    reference = randomise_norms(build_model("resnet20", num_classes=3))
    options = {"num_classes": 3, "in_chans": 3, "shortcut": "A"}
    names = ["cat", "dog", "émeu"]
    path = save_weights(reference, tmp_path / "run" / "model.safetensors", "resnet20", options, names)
    assert path == tmp_path / "run" / "model.safetensors"
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no temp file left
    state, metadata = read_checkpoint(path)
    assert metadata["format"] == "resnetlab" and metadata["arch"] == "resnet20"
    assert metadata["options"] == options and metadata["class_names"] == names
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())
    model = build_model("resnet20", num_classes=3)
    result = load_weights(model, path, verbose=False)
    assert result.metadata["class_names"] == names
    assert_matches(reference, model, torch.randn(2, 3, 32, 32))


def test_save_handles_shared_and_non_contiguous_tensors(tmp_path: Path) -> None:
    model = nn.Module()
    model.a = nn.Linear(4, 4)
    model.b = nn.Linear(4, 4)
    model.b.weight = model.a.weight  # tied
    model.register_buffer("t", torch.arange(12.0).reshape(3, 4).t())  # non-contiguous view
    path = save_weights(model, tmp_path / "tied.safetensors", "custom")
    state, metadata = read_checkpoint(path)
    assert torch.equal(state["b.weight"], model.a.weight) and torch.equal(state["t"], model.t)
    assert metadata["options"] == {} and "class_names" not in metadata


def test_save_rejects_options_that_are_not_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="options must be JSON"):
        save_weights(build_model("resnet20"), tmp_path / "m.safetensors", "resnet20",
                     {"norm_layer": nn.BatchNorm2d})
    assert list(tmp_path.iterdir()) == []


def test_head_of_another_size_is_reinitialised(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = randomise_norms(build_model("resnet18"))
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", num_classes=10)
    fresh_fc = model.fc.weight.clone()
    result = load_weights(model, path)
    err = capsys.readouterr().err
    assert err == "resnetlab: checkpoint head has 1000 classes, model has 10: fc re-initialised\n"
    assert result.head_replaced and result.missing == ["fc.weight", "fc.bias"]
    assert torch.equal(model.fc.weight, fresh_fc)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(reference.forward_features(x), model.eval().forward_features(x)) <= ATOL

    strict_model = build_model("resnet18", num_classes=10)
    before = snapshot(strict_model)
    with pytest.raises(ValueError, match="head has 1000 classes, model has 10") as info:
        load_weights(strict_model, path, strict=True)
    assert "\n" not in str(info.value)
    assert_unchanged(strict_model, before)


def test_headless_model_drops_fc_silently(capsys: pytest.CaptureFixture) -> None:
    reference = randomise_norms(build_model("resnet18"))
    model = build_model("resnet18", num_classes=0)
    result = load_weights(model, reference.state_dict())
    assert capsys.readouterr().err == ""
    assert not result.head_replaced and result.unexpected == ["fc.weight", "fc.bias"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert max_diff(reference.forward_head(reference.forward_features(x), pre_logits=True),
                        model.eval()(x)) <= ATOL


def test_checkpoint_without_head_gives_model_a_fresh_one(capsys: pytest.CaptureFixture) -> None:
    reference = randomise_norms(build_model("resnet20", num_classes=0))
    model = build_model("resnet20")
    result = load_weights(model, {"state_dict": reference.state_dict(), "epoch": 3})
    assert capsys.readouterr().err == ("resnetlab: checkpoint has no classifier, model has 10: "
                                       "fc re-initialised\n")
    assert result.head_replaced and result.metadata == {"epoch": 3}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(reference(x), model.eval().forward_head(model.forward_features(x), True)) <= ATOL


def test_strict_reports_another_architecture_before_the_head() -> None:
    with pytest.raises(ValueError, match="does not fit this resnet50: .*missing keys"):
        load_weights(build_model("resnet50", num_classes=10), build_model("resnet18").state_dict(),
                     strict=True)


def test_one_input_channel_sums_over_rgb(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = randomise_norms(build_model("resnet18"))
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("resnet18", in_chans=1)
    result = load_weights(model, path)
    assert capsys.readouterr().err == ("resnetlab: checkpoint conv1.weight takes 3 input channels, "
                                       "model takes 1: summed over RGB\n")
    assert result.adapted_in_chans and not result.head_replaced
    x = torch.randn(2, 1, 64, 64)
    assert max_diff(logits(model, x), logits(reference, x.repeat(1, 3, 1, 1))) <= ATOL


def test_five_input_channels_tile_and_rescale(tmp_path: Path) -> None:
    reference = build_model("resnet18")
    model = build_model("resnet18", in_chans=5)
    result = load_weights(model, reference.state_dict(), verbose=False)
    assert result.adapted_in_chans
    rgb, adapted = reference.conv1.weight, model.conv1.weight
    assert adapted.shape == (64, 5, 7, 7)
    assert torch.allclose(adapted, torch.cat([rgb, rgb[:, :2]], dim=1) * 3 / 5)
    with pytest.raises(ValueError, match="takes 3 input channels, model takes 5"):
        load_weights(build_model("resnet18", in_chans=5), reference.state_dict(), strict=True)


def test_deep_stem_input_conv_is_adapted() -> None:
    reference = randomise_norms(build_model("resnet18", stem="deep"))
    model = build_model("resnet18", stem="deep", in_chans=1)
    assert load_weights(model, reference.state_dict(), verbose=False).adapted_in_chans
    x = torch.randn(2, 1, 64, 64)
    assert max_diff(logits(model, x), logits(reference, x.repeat(1, 3, 1, 1))) <= ATOL


@pytest.mark.parametrize("source, target, kinds", [
    ("resnet18", "resnet50", ["165 missing keys (", "24 shape mismatches ("]),
    ("resnet50", "resnet18", ["198 unexpected keys (", "24 shape mismatches ("]),
    ("resnet20", "resnet32", ["60 missing keys ("]),
])
def test_other_architecture_is_one_line_error_and_leaves_model_unchanged(
        source: str, target: str, kinds: list, tmp_path: Path) -> None:
    path = tmp_path / f"{source}.pth"
    torch.save(build_model(source).state_dict(), path)
    model = build_model(target)
    before = snapshot(model)
    with pytest.raises(ValueError) as info:
        load_weights(model, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path} does not fit this {target}: ")
    assert all(kind in message for kind in kinds)
    assert message.count(", ...") == len(kinds)  # at most three names of each kind
    assert_unchanged(model, before)


def test_shape_mismatch_names_key_and_shapes() -> None:
    state = build_model("resnet50", stride_in_1x1=True).state_dict()
    state["layer1.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    model = build_model("resnet50")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"^state dict does not fit this resnet50: 1 shape mismatch "
                       r"\(layer1\.0\.conv2\.weight: checkpoint \(64, 64, 1, 1\) vs model "
                       r"\(64, 64, 3, 3\)\)$"):
        load_weights(model, state)
    assert_unchanged(model, before)


class _Trap:
    """Creates a marker file when unpickled by an unrestricted unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("save", [pickle.dump, torch.save])
def test_pickled_object_is_refused_without_unpickling(save, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        save({"state_dict": _Trap(marker)}, f)
    if save is pickle.dump:  # the trap works: a plain unpickler would create the marker
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()
        marker.unlink()
    model = build_model("resnet20")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"is not a checkpoint \((it pickles|weights_only loading refused)") as info:
        load_weights(model, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    assert_unchanged(model, before)


@pytest.mark.parametrize("save", [lambda obj, f: pickle.dump(obj, f, protocol=2), torch.save], ids=["pickle", "zip"])
def test_a_pickle_calling_os_system_is_refused_naming_the_global(save, tmp_path: Path) -> None:
    import os

    from helpers import Exploit

    marker = tmp_path / "ran"
    path = tmp_path / "exploit.pth"
    with open(path, "wb") as f:
        save({"state_dict": {"fc.weight": Exploit(f"touch {marker}")}}, f)
    with pytest.raises(ValueError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and not marker.exists()
    # pickle records os.system under its defining module: posix.system here, nt.system on Windows
    assert f"it pickles {os.system.__module__}.system, which weights_only loading refuses" in message, message


def test_whole_pickled_model_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(build_model("resnet20"), path)
    with pytest.raises(ValueError, match=r"it pickles resnetlab\.models\.resnet\.ResNet, .*"
                                         r"save a state_dict\(\)") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", bytes(range(256)) * 8, b""])
def test_file_that_is_not_a_checkpoint_is_refused(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value) and "accepted:" in str(info.value)


@pytest.mark.parametrize("obj", [{"epoch": 3, "best_prec1": 91.7}, {"state_dict": {}}, [1, 2], torch.ones(3)])
def test_checkpoint_without_a_state_dict_is_refused(obj: object, tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save(obj, path)
    with pytest.raises(ValueError, match="is not a checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_corrupt_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_weights(build_model("resnet20"), path, "resnet20")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="is not a checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        load_weights(build_model("resnet20"), tmp_path / "nope.pth")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not a regular file"):
        read_checkpoint(tmp_path)


def test_grayscale_weights_adapt_to_rgb_with_equal_logits_on_gray_images():
    gray = build_model("resnet18", in_chans=1, num_classes=10).eval()
    rgb = build_model("resnet18", in_chans=3, num_classes=10).eval()
    result = load_weights(rgb, gray.state_dict(), verbose=False)
    assert result.adapted_in_chans
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(rgb(x.repeat(1, 3, 1, 1)), gray(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="takes 1 input channels, model takes 3"):
        load_weights(build_model("resnet18", num_classes=10), gray.state_dict(), strict=True)
