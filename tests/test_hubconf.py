"""torch.hub.load from this checkout (source='local') with named weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

import resnetlab

REPO = Path(__file__).resolve().parents[1]


def test_every_zoo_model_is_an_entry_point():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert sorted(entries) == sorted(resnetlab.list_models())  # what torch.hub.list shows
    assert "default weights" in hubconf.resnet50.__doc__ and hubconf.resnet50.__name__ == "resnet50"


def test_torch_hub_load_with_named_weights():
    by_hub = torch.hub.load(str(REPO), "resnet20", source="local", weights="resnetlab_cifar10").eval()
    pretrained = torch.hub.load(str(REPO), "resnet20", source="local", pretrained=True, num_classes=4)
    random = torch.hub.load(str(REPO), "resnet18", source="local", num_classes=7)
    direct = resnetlab.create_model("resnet20.resnetlab_cifar10").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(by_hub(x), direct(x)) and pretrained.fc.out_features == 4
    assert torch.equal(pretrained.conv1.weight, direct.conv1.weight) and random.fc.out_features == 7
