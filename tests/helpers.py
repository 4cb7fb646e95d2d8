"""Helpers shared by the test files: running the CLI, writing files in upstream formats, hostile pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from resnetlab.cli import main
from resnetlab.train import resolve_config

TINY = dict(model="resnet8", data="synthetic", batch_size=32, epochs=2, precision="fp32", channels_last=False,
            optimizer="adamw", lr=0.003, schedule="cosine", augment="none", flip_tta=False, quiet=True,
            train_subset=512, test_subset=256)


def run_cli(capsys, *argv):
    """Run ``resnetlab ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: Optional[int] = None) -> Path:
    """Write an idx file of unsigned bytes: magic 0x0000080N, N big-endian dims, data (``gz``: as NAME.gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


class Exploit:
    """Runs a shell command when unpickled by an unrestricted unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
    return model.eval()


def tiny_config(tmp_path: Path, **overrides):
    """The config of a short fp32 run of resnet8 on synthetic data, written under tmp_path/runs."""
    return resolve_config("default", overrides=dict(TINY, out=str(tmp_path / "runs"), **overrides))


def make_idx_dataset(folder: Path, gz: bool = False, n_train: int = 12, n_test: int = 5, seed: int = 0,
                     dotted: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(Fashion-)MNIST idx files of both splits in folder (``dotted``: MNIST's names): {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        sep = "." if dotted else "-"
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte", labels, gz)
        written[split] = (images, labels)
    return written


def dump(path: Path, obj: object, protocol: int = 2) -> None:
    """Pickle obj to path, as CIFAR's files are pickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(folder: Path, per_batch: int = 3, seed: int = 0, protocol: int = 2) -> dict[str, tuple]:
    """A CIFAR-10 folder (batches.meta, five train batches, test_batch): {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship",
             b"truck"]
    dump(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names,
                                   b"num_vis": 3072}, protocol)
    written: dict[str, list] = {"train": [[], []], "test": [[], []]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        dump(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                             b"filenames": [b"img%d.png" % i for i in range(per_batch)]}, protocol)
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(data)
        written[split][1] += labels
    return {k: (np.concatenate(v[0]).reshape(-1, 3, 32, 32), np.array(v[1])) for k, v in written.items()}


def make_cifar100(folder: Path, protocol: int = 4) -> dict[str, tuple]:
    """A CIFAR-100 folder (meta, train, test) with 100 fine labels: {split: (images, fine labels)}."""
    rng = np.random.default_rng(1)
    fine = [f"fine{i}".encode() for i in range(100)]
    dump(folder / "meta", {b"fine_label_names": fine, b"coarse_label_names": [b"c%d" % i for i in range(20)]},
         protocol)
    written = {}
    for split, n in (("train", 7), ("test", 4)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine_labels = [int(v) for v in rng.integers(0, 100, n)]
        dump(folder / split, {b"filenames": [b"x"] * n, b"batch_label": b"b", b"fine_labels": fine_labels,
                              b"coarse_labels": [0] * n, b"data": data}, protocol)
        written[split] = (data.reshape(-1, 3, 32, 32), np.array(fine_labels))
    return written


def assert_same_prediction(weights: Path, exported: Path, engine: str, folder: Path) -> None:
    """The exported file predicts one random PNG as the checkpoint does: same classes, probabilities to 1e-4."""
    from PIL import Image

    from resnetlab.inference import Predictor

    image = folder / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    torch_top = next(Predictor(weights).predict([image]))
    exported_top = next(Predictor(exported, engine=engine).predict([image]))
    assert exported_top.classes == torch_top.classes
    assert exported_top.probabilities == pytest.approx(torch_top.probabilities, abs=1e-4)


def require_real_data(available: bool, missing: str) -> None:
    """Skip a real-data test when its data is missing; fail instead where CI could install it
    (RESNETLAB_REQUIRE_REAL_DATA, set by .ci/run)."""
    if available:
        return
    if os.environ.get("RESNETLAB_REQUIRE_REAL_DATA"):
        pytest.fail(missing)
    pytest.skip(missing)


def real_fashion_mnist() -> None:
    """Skip (or fail in CI) unless the real Fashion-MNIST can be found."""
    require_real_data(Path("/usr/share/datasets/fashion-mnist").is_dir() or bool(os.environ.get("RESNETLAB_DATA")),
                      "real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def one_line(err: pytest.ExceptionInfo) -> str:
    """The message of a raised error, checked to be one non-empty line."""
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    return message


class Server(ThreadingHTTPServer):
    """A weights server on 127.0.0.1 (the `server` fixture): serves ``files`` (URL path -> bytes);
    ``behaviour`` (URL path -> 'drop' or 'slow') misbehaves."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.behaviour, self.requests = {}, {}, []


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        how = self.server.behaviour.get(self.path)
        if how == "slow":
            time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how == "drop":  # half the file, then the connection closes
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(server: Server, url: str, data: bytes, how: str = "") -> None:
    path = "/mirror/" + url.split("/", 3)[3]
    server.files[path] = data
    if how:
        server.behaviour[path] = how
