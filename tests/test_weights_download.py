"""Downloading weights from a real HTTP server on 127.0.0.1, reached through RESNETLAB_WEIGHTS_MIRROR."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import pytest
import torch

import resnetlab
from helpers import one_line, serve
from resnetlab.errors import DownloadError
from resnetlab.models import build_model
from resnetlab.weights import download_file, get_weights, load_model, mirrored, registry

UPSTREAM = "https://download.pytorch.org/models/"


def torchvision_file(tmp_path: Path, arch: str = "resnet8") -> tuple:
    """A state dict saved with torch.save as torchvision does, named arch-<sha256 prefix>.pth: (name, bytes, sha256)."""
    path = tmp_path / "upstream.pth"
    torch.manual_seed(0)
    torch.save(build_model(arch).state_dict(), path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return f"{arch}-{digest[:8]}.pth", data, digest


def cache(tmp_path: Path) -> Path:
    return tmp_path / "home" / "weights"


def test_the_mirror_replaces_scheme_and_host(monkeypatch):
    monkeypatch.setenv("RESNETLAB_WEIGHTS_MIRROR", "http://mirror.local/weights")
    assert mirrored(UPSTREAM + "resnet50-11ad3fa6.pth") == "http://mirror.local/weights/models/resnet50-11ad3fa6.pth"
    monkeypatch.delenv("RESNETLAB_WEIGHTS_MIRROR")
    assert mirrored(UPSTREAM + "x.pth") == UPSTREAM + "x.pth"


def test_download_then_cache_hit(server, tmp_path):
    name, data, digest = torchvision_file(tmp_path)
    serve(server, UPSTREAM + name, data)
    path = download_file(UPSTREAM + name, progress=False)  # checked against the prefix in the name
    assert path == cache(tmp_path) / name and path.read_bytes() == data
    assert [p for p in cache(tmp_path).iterdir()] == [path]  # no temporary file left
    assert len(server.requests) == 1
    assert download_file(UPSTREAM + name, sha256=digest, progress=False) == path
    assert len(server.requests) == 1  # the second time comes from the cache
    model, _ = load_model(path, "resnet8")
    assert torch.equal(model.fc.weight, torch.load(path, weights_only=True)["fc.weight"])


def test_a_wrong_hash_is_rejected_and_the_file_removed(server, tmp_path):
    name, data, _ = torchvision_file(tmp_path)
    bad = name.replace(name.split("-")[1][:8], "00000000")
    serve(server, UPSTREAM + bad, data)
    with pytest.raises(DownloadError) as err:
        download_file(UPSTREAM + bad, progress=False)
    assert "sha256 mismatch (expected 00000000" in one_line(err) and "removed" in str(err.value)
    assert not cache(tmp_path).exists() or list(cache(tmp_path).iterdir()) == []
    with pytest.raises(DownloadError, match="sha256 mismatch"):  # a full hash given is checked whole
        serve(server, UPSTREAM + "plain.pth", data)
        download_file(UPSTREAM + "plain.pth", sha256="f" * 64, progress=False)


def test_not_found_is_one_line_without_retries(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        download_file(UPSTREAM + "missing-12345678.pth", progress=False, backoff=0.01)
    assert "HTTP 404" in one_line(err) and "/mirror/models/missing-12345678.pth" in str(err.value)
    assert len(server.requests) == 1
    assert not cache(tmp_path).exists()


def test_a_dropped_connection_is_retried_from_zero_and_leaves_nothing(server, tmp_path):
    name, data, _ = torchvision_file(tmp_path)
    serve(server, UPSTREAM + name, data, how="drop")
    with pytest.raises(DownloadError) as err:
        download_file(UPSTREAM + name, progress=False, retries=2, backoff=0.01)
    message = one_line(err)
    assert "after 3 tries" in message and ("connection" in message or "bytes" in message)
    assert len(server.requests) == 3
    assert not cache(tmp_path).exists()
    del server.behaviour["/mirror/models/" + name]  # the server recovers: the next call starts cleanly
    assert download_file(UPSTREAM + name, progress=False).read_bytes() == data


def test_a_server_slower_than_the_timeout(server, tmp_path):
    name, data, _ = torchvision_file(tmp_path)
    serve(server, UPSTREAM + name, data, how="slow")
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download_file(UPSTREAM + name, progress=False, timeout=0.3, retries=1, backoff=0.01)
    assert "timed out" in one_line(err) and "after 2 tries" in str(err.value)
    assert time.monotonic() - start < 3.5
    assert not cache(tmp_path).exists()


def test_offline_uses_the_cache_and_names_the_url_otherwise(server, tmp_path, monkeypatch):
    name, data, _ = torchvision_file(tmp_path)
    serve(server, UPSTREAM + name, data)
    monkeypatch.setenv("RESNETLAB_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        download_file(UPSTREAM + name, progress=False)
    message = one_line(err)
    assert UPSTREAM + name in message and str(cache(tmp_path) / name) in message
    assert server.requests == []
    monkeypatch.delenv("RESNETLAB_OFFLINE")
    download_file(UPSTREAM + name, progress=False)
    monkeypatch.setenv("RESNETLAB_OFFLINE", "1")
    assert download_file(UPSTREAM + name, progress=False).read_bytes() == data
    assert len(server.requests) == 1


def test_torch_hub_cache_is_reused_for_named_weights(server, tmp_path, monkeypatch):
    """torchvision's resnet18 file already in torch hub's cache: the name loads it with no network."""
    import torchvision

    entry = get_weights("resnet18.tv_in1k")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    reference = torchvision.models.resnet18()  # random weights, torchvision's names and format
    torch.save(reference.state_dict(), hub / entry.url.rsplit("/", 1)[1])
    monkeypatch.setenv("RESNETLAB_OFFLINE", "1")
    model = resnetlab.create_model("resnet18", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(model(x), reference.eval()(x), atol=1e-5)
    _, metadata = load_model("resnet18.tv_in1k")
    assert metadata["class_names"][:2] == ["tench", "goldfish"] and metadata["weights"] == "resnet18.tv_in1k"
    assert metadata["preprocessing"]["input_size"] == [224, 224] and server.requests == []


def test_akamaster_weights_load_by_name_through_a_download(server, tmp_path, monkeypatch):
    """An akamaster-format file (wrapped, DataParallel names, 'linear' head) downloaded and loaded by name."""
    reference = build_model("resnet20").eval()
    state = {"module." + k.replace("fc.", "linear."): v for k, v in reference.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "aka.th"
    torch.save({"state_dict": state, "best_prec1": 91.73}, path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    real = get_weights("resnet20.akamaster_cifar10")
    url = real.url.rsplit("/", 1)[0] + f"/resnet20-{digest[:8]}.th"
    entry = dataclasses.replace(real, url=url, hash_prefix=digest[:8])
    monkeypatch.setattr(registry, "_registry", lambda: {entry.name: entry})
    serve(server, url, data)
    model = resnetlab.create_model("resnet20.akamaster_cifar10").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert (cache(tmp_path) / f"resnet20-{digest[:8]}.th").is_file()


def test_an_interrupted_download_leaves_nothing_and_restarts_cleanly(server, tmp_path, monkeypatch):
    """^C in the middle of the file: no partial file in the cache; the next call downloads it whole."""
    from resnetlab.weights import download

    name, data, _ = torchvision_file(tmp_path)
    serve(server, UPSTREAM + name, data)
    real_sha256 = hashlib.sha256

    class Interrupted:
        def __init__(self):
            self.calls = 0

        def update(self, chunk):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(download, "CHUNK", 4096)
    monkeypatch.setattr(download.hashlib, "sha256", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_file(UPSTREAM + name, progress=False)
    assert not cache(tmp_path).exists()  # neither the partial file nor the folders made for it
    monkeypatch.setattr(download.hashlib, "sha256", real_sha256)
    assert download_file(UPSTREAM + name, progress=False).read_bytes() == data
    assert len(server.requests) == 2
