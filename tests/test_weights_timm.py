"""timm's weights in the registry: their metadata against timm's pretrained configs, their absence
without timm, a timm hub file downloaded through the mirror and loaded by name; an unwritable cache."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest
import torch

import resnetlab
from helpers import one_line, randomize_norms, run_cli, serve
from resnetlab.models import build_model, list_models
from resnetlab.weights import get_weights, list_weights, load_model, registry
from test_weights_download import UPSTREAM, cache, torchvision_file

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
         "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


@pytest.fixture
def fresh_registry():
    """The registry rebuilt for the test, and rebuilt again (as it was) after it."""
    registry._registry.cache_clear()
    yield
    registry._registry.cache_clear()


def timm_file(name: str) -> tuple:
    """timm's model ``name`` with random weights and norms, and its state dict as a hub model.safetensors."""
    from safetensors.torch import save

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    reference = randomize_norms(timm.create_model(name, pretrained=False)).eval()
    return reference, save({k: v.contiguous() for k, v in reference.state_dict().items()})


def test_a_timm_entry_matches_timms_pretrained_config():
    timm = pytest.importorskip("timm")
    from torchvision.models import ResNet50_Weights

    cfg = timm.models.get_pretrained_cfg("resnet50.a1_in1k")
    entry = get_weights("resnet50.a1_in1k")
    assert (entry.name, entry.arch, entry.tag, entry.source) == ("resnet50.a1_in1k", "resnet50", "a1_in1k", "timm")
    assert cfg.hf_hub_id == "timm/resnet50.a1_in1k" and cfg.architecture == "resnet50" and cfg.tag == "a1_in1k"
    assert entry.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"
    assert entry.filename == "resnet50.a1_in1k.safetensors"  # not the hub's model.safetensors, which every one is
    assert entry.sha256 is None and entry.hash_prefix is None  # timm publishes no hash
    assert entry.license == f"{cfg.license} (timm)" == "apache-2.0 (timm)"
    assert entry.num_classes == cfg.num_classes == 1000 and not cfg.custom_load
    assert list(entry.categories) == ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    pre = entry.preprocessing
    assert pre["input_size"] == list(cfg.input_size[1:]) == [224, 224]
    assert pre["crop_fraction"] == cfg.crop_pct == 0.95 and pre["resize_size"] == round(224 / cfg.crop_pct) == 236
    assert pre["interpolation"] == cfg.interpolation == "bicubic"
    assert pre["mean"] == list(cfg.mean) and pre["std"] == list(cfg.std)
    assert pre["test_input_size"] == list(cfg.test_input_size[1:]) == [288, 288]
    assert pre["test_crop_fraction"] == cfg.test_crop_pct == 1.0
    assert entry.accuracy == {} and entry.file_size_mb is None and not entry.default  # timm's config has neither
    metadata = entry.metadata()
    assert metadata["weights"] == "resnet50.a1_in1k" and metadata["preprocessing"] == pre
    assert get_weights("resnet50").name == "resnet50.tv2_in1k"  # torchvision's default stays the default
    assert get_weights("resnet50.tv2_in1k").source == "torchvision"  # and its entries win over timm's copies
    assert get_weights("resnet50.a3_in1k").preprocessing["input_size"] == [160, 160]  # sizes other than 224


def test_timm_entries_are_the_zoos_architectures_without_torchvisions_own():
    timm = pytest.importorskip("timm")

    entries = {e.name: e for e in list_weights() if e.source == "timm"}
    expected = set()
    for arch in ARCHS:
        assert arch in list_models() and arch in timm.list_models(arch)
        for name in timm.list_pretrained(f"{arch}.*"):
            cfg = timm.models.get_pretrained_cfg(name)
            if (cfg.num_classes == 1000 and not cfg.custom_load and (cfg.hf_hub_id or cfg.url)
                    and cfg.tag not in ("tv_in1k", "tv2_in1k")):
                expected.add(name)
    assert set(entries) == expected and "resnet50.a1_in1k" in expected
    assert "resnet50.bamboo" not in entries  # no classifier (num_classes 0)
    assert len({e.filename for e in entries.values()}) == len(entries)  # one cached file each
    for arch in {e.arch for e in entries.values()}:  # the same network: the same keys and shapes
        with torch.device("meta"):
            ours = {k: v.shape for k, v in build_model(arch).state_dict().items()}
            theirs = {k: v.shape for k, v in timm.create_model(arch).state_dict().items()}
        assert ours == theirs, arch
        assert sum(e.default for e in list_weights(arch)) == 1


def test_without_timm_there_are_no_timm_entries(monkeypatch, fresh_registry, capsys):
    pytest.importorskip("timm")  # only meaningful where timm would add them
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails
    entries = list_weights()
    assert entries and all(e.source != "timm" for e in entries)
    assert get_weights("resnet50").name == "resnet50.tv2_in1k"
    with pytest.raises(ValueError) as err:
        get_weights("resnet50.a1_in1k")
    assert "unknown weights 'resnet50.a1_in1k'" in one_line(err)
    code, out, _ = run_cli(capsys, "weights", "resnet50")
    assert code == 0 and "are listed when timm is installed" in out.splitlines()[-1]


def test_a_timm_hub_file_downloads_through_the_mirror_and_loads_by_name(server, tmp_path, monkeypatch):
    """timm's model.safetensors (torchvision's key names) served as the hub serves it, loaded by its name."""
    x = torch.randn(2, 3, 64, 64)
    for name in ("resnet18.a1_in1k", "resnet18.a2_in1k"):  # the same file name on the hub, distinct in the cache
        reference, data = timm_file(name)
        entry = get_weights(name)
        serve(server, entry.url, data)
        assert f"/mirror/timm/{name}/resolve/main/model.safetensors" in server.files
        model = resnetlab.create_model(name).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), reference(x), atol=1e-5), name
        assert (cache(tmp_path) / f"{name}.safetensors").read_bytes() == data
    assert sorted(p.name for p in cache(tmp_path).iterdir()) == ["resnet18.a1_in1k.safetensors",
                                                                 "resnet18.a2_in1k.safetensors"]
    assert len(server.requests) == 2
    monkeypatch.setenv("RESNETLAB_OFFLINE", "1")  # the cached file serves the next loads
    model, metadata = load_model("resnet18.a2_in1k")
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference(x), atol=1e-5)
    assert metadata["weights"] == "resnet18.a2_in1k" and metadata["class_names"][:2] == ["tench", "goldfish"]
    assert metadata["preprocessing"]["interpolation"] == "bicubic" and len(server.requests) == 2


def test_an_unwritable_cache_is_one_line_and_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    """A cache that cannot be written: one line naming the folder, exit status 2, no file anywhere."""
    from PIL import Image

    name, data, digest = torchvision_file(tmp_path, "resnet18")
    real = get_weights("resnet18.tv_in1k")
    entry = dataclasses.replace(real, url=UPSTREAM + name, hash_prefix=digest[:8])
    monkeypatch.setattr(registry, "_registry", lambda: {entry.name: entry})
    serve(server, entry.url, data)
    root = tmp_path / "root"
    root.mkdir()
    home = root / "home"
    if os.geteuid() == 0:  # root writes anywhere: the cache's parent is a file instead
        home.write_text("a file, not a folder\n")
    else:
        home.mkdir(mode=0o500)
    monkeypatch.setenv("RESNETLAB_HOME", str(home))
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    try:
        with pytest.raises(OSError) as err:
            resnetlab.create_model("resnet18.tv_in1k")
        message = one_line(err)
        assert str(home / "weights") in message and "Traceback" not in message
        code, out, err_text = run_cli(capsys, "predict", "--weights", "resnet18.tv_in1k", image, "--device", "cpu")
        assert code == 2 and out == "" and err_text.count("\n") == 1
        assert err_text.startswith("resnetlab: error: ") and str(home / "weights") in err_text
        assert "Traceback" not in err_text
        assert sorted(root.rglob("*")) == [home]  # nothing partial, no folder made
        assert home.is_dir() or home.read_text() == "a file, not a folder\n"
        assert server.requests == []  # it fails before fetching anything
    finally:
        if home.is_dir():
            home.chmod(0o700)
