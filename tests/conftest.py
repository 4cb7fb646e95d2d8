"""Shared test set-up."""

import os
import threading
from pathlib import Path

import pytest
import torch

from helpers import Server
from resnetlab.data import locate
from resnetlab.train import resolve_config, train


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=None,
                     help="examples per property of tests/test_fuzz.py (default 60, or $RESNETLAB_FUZZ_EXAMPLES)")


def pytest_configure(config):
    examples = config.getoption("--fuzz-examples")
    if examples is not None:  # read by test_fuzz.py when it is imported, after this (and by xdist's workers)
        os.environ["RESNETLAB_FUZZ_EXAMPLES"] = str(examples)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n auto starts one worker per core: one thread each, or the workers oversubscribe the cores.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_openvino_candidates_outside_its_own_process(request, monkeypatch):
    """optimize_for_inference builds no OpenVINO candidate here: a process that ran OpenVINO and NNCF has
    crashed later in torch.compile (docs/inference.md, known problem), so OpenVINO is tested only in
    tests/test_openvino.py, which `make test` runs in a pytest process of its own."""
    if request.module.__name__ != "test_openvino":
        import resnetlab.optimize

        monkeypatch.setattr(resnetlab.optimize, "_openvino_candidate", lambda *args, **kwargs: {})


@pytest.fixture(autouse=True)
def restore_torch_global_state():
    """Training with deterministic=True or threads=N changes torch's process-wide settings."""
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A resnet8 trained briefly on the synthetic dataset: (weights path, its fp32 test accuracy)."""
    out = tmp_path_factory.mktemp("runs")
    config = resolve_config("default", overrides=dict(
        model="resnet8", data="synthetic", batch_size=64, epochs=3, precision="fp32", channels_last=False,
        optimizer="adamw", lr=0.003, schedule="cosine", augment="none", flip_tta=False, quiet=True, out=str(out),
        name="r8"))
    result = train(config)
    return Path(result["run_dir"]) / "best.safetensors", result["test_top1"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No test sees the user's data: empty HOME, no $RESNETLAB_DATA, no system folders."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {})


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A server every weights URL is redirected to, with empty resnetlab and torch hub caches."""
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RESNETLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("RESNETLAB_WEIGHTS_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/mirror/")
    monkeypatch.delenv("RESNETLAB_OFFLINE", raising=False)
    yield httpd
    httpd.shutdown()
    httpd.server_close()
