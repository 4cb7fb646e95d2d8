"""Tests for resnetlab.data.readers through load_dataset: idx files (gzip or not), CIFAR pickles, the
restricted unpickler, checksums of full-size files, and the real Fashion-MNIST when installed."""

from __future__ import annotations

import gzip
import hashlib
import resource
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import Exploit, dump, make_cifar10, make_cifar100, make_idx_dataset, one_line, write_idx
from resnetlab.data import catalog, load_dataset, locate, readers

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_returns_exact_pixels_and_labels(tmp_path, gz):
    written = make_idx_dataset(tmp_path / "data", gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path / "data")
        images, labels = written[split]
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(labels), 1, 28, 28)
        assert ds.labels.dtype == torch.int64
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert np.array_equal(ds.labels.numpy(), labels)
        assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
        assert ds.mean == (0.2860,) and ds.std == (0.3530,)


def test_idx_wrong_magic(tmp_path):
    folder = tmp_path / "d"
    make_idx_dataset(folder)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((12, 28, 28)), magic=0x00000801 + 0x1000)
    with pytest.raises(ValueError) as err:
        load_dataset("fashion-mnist", data_dir=folder)
    assert "train-images-idx3-ubyte" in one_line(err) and "magic" in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    folder = tmp_path / "d"
    make_idx_dataset(folder, gz=gz)
    path = folder / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError) as err:
        load_dataset("fashion-mnist", data_dir=folder)
    assert str(path) in one_line(err) and "truncated" in str(err.value)


def test_idx_count_mismatch_and_label_range(tmp_path):
    folder = tmp_path / "d"
    make_idx_dataset(folder)
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(11))
    with pytest.raises(ValueError) as err:
        load_dataset("fashion-mnist", data_dir=folder)
    assert "11 labels for 12 images" in one_line(err)
    write_idx(folder / "train-labels-idx1-ubyte", np.full(12, 10))
    with pytest.raises(ValueError) as err:
        load_dataset("fashion-mnist", data_dir=folder)
    assert "label 10 out of range" in one_line(err)


def test_full_size_idx_file_is_checksummed(tmp_path):
    # 10,000 labels are exactly the size of upstream's t10k-labels, so the sha256 must match.
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10000))
    assert path.stat().st_size == catalog.KNOWN_IDX["fashion-mnist"]["t10k-labels-idx1-ubyte"][0]
    with pytest.raises(ValueError) as err:
        readers.read_idx(path, readers.IDX_LABELS_MAGIC, "fashion-mnist", "t10k-labels-idx1-ubyte")
    assert "sha256" in one_line(err)
    assert readers.read_idx(path, readers.IDX_LABELS_MAGIC).shape == (10000,)  # unknown dataset: no check


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader_returns_exact_pixels(tmp_path, protocol):
    written = make_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    for split, n in (("train", 15), ("test", 3)):
        ds = load_dataset("cifar10", split, data_dir=tmp_path)
        assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images.numpy(), written[split][0])
        assert np.array_equal(ds.labels.numpy(), written[split][1])
        assert ds.classes[-1] == "truck" and len(ds.mean) == 3


def test_cifar10_test_split_needs_only_its_own_batch(tmp_path, capsys):
    from helpers import run_cli
    from resnetlab.models import build_model
    from resnetlab.weights import save_weights

    folder = tmp_path / "data" / "cifar-10-batches-py"
    written = make_cifar10(folder)
    for i in range(1, 6):  # the official layout, with the test batch only
        (folder / f"data_batch_{i}").unlink()
    ds = load_dataset("cifar10", "test", data_dir=tmp_path / "data")
    assert np.array_equal(ds.images.numpy(), written["test"][0]) and ds.classes[0] == "airplane"
    with pytest.raises(FileNotFoundError) as err:  # the train split still needs its five batches
        load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    assert "cifar10 not found" in one_line(err) and "data_batch_5" in str(err.value)
    options = {"num_classes": 10, "in_chans": 3}
    weights = save_weights(build_model("resnet8", **options), tmp_path / "r8.safetensors", "resnet8", options=options)
    code, out, err = run_cli(capsys, "eval", "--weights", weights, "--data", "cifar10", "--data-dir", tmp_path / "data",
                             "--device", "cpu", "--json")
    assert code == 0 and '"samples": 3' in out, err


def test_cifar100_uses_fine_labels(tmp_path):
    written = make_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset("cifar100", "test", data_dir=tmp_path)
    assert np.array_equal(ds.images.numpy(), written["test"][0])
    assert np.array_equal(ds.labels.numpy(), written["test"][1])
    assert len(ds.classes) == 100 and ds.classes[7] == "fine7"


def test_cifar_truncated_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in one_line(err)


def test_cifar_pickle_importing_os_system_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    marker = tmp_path / "MARKER"
    dump(folder / "data_batch_2", {b"labels": [0], b"data": Exploit(f"touch {marker}")})
    assert b"system" in (folder / "data_batch_2").read_bytes()
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    message = one_line(err)
    assert "system" in message and "refused" in message and "data_batch_2" in message
    assert not marker.exists()


def test_cifar_bad_labels_and_shape(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10(folder)
    data = np.zeros((2, 3072), np.uint8)
    dump(folder / "test_batch", {b"labels": [3, 10], b"data": data})
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert "label 10 out of range" in one_line(err)
    dump(folder / "test_batch", {b"labels": [3, 1], b"data": np.zeros((2, 3000), np.uint8)})
    with pytest.raises(ValueError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert "3072" in one_line(err)


@pytest.mark.realdata
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": [DEBIAN_FASHION]})
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert abs(train.images.float().mean().item() / 255 - train.mean[0]) < 1e-4
    assert abs(train.images.float().std().item() / 255 - train.std[0]) < 1e-4
    # the loader verified the sha256 of every full-size file; check one independently here
    raw = gzip.decompress((DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    expected = catalog.KNOWN_IDX["fashion-mnist"]["t10k-labels-idx1-ubyte"][2]
    assert hashlib.sha256(raw).hexdigest() == expected


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    from resnetlab.data import readers

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as file:  # 1 GiB of zeros in about 1 MB
        header = struct.pack(">IIII", 0x803, 1_000_000, 32, 32)
        file.write(header)
        block = bytes(2**20)
        for _ in range(1024):
            file.write(block)
    assert bomb.stat().st_size < 3 * 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"decompresses to more than 200 MiB") as error:
        readers.read_idx(bomb, readers.IDX_IMAGES_MAGIC)
    assert str(bomb) in str(error.value)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss is in KiB
    assert grown_mib < 600  # the limit, not the gigabyte
    monkeypatch.setenv("RESNETLAB_LIMITS", "idx_mib=1025")
    two = tmp_path / "two-members.gz"  # upstream files are one gzip member; several are read like gzip does
    two.write_bytes(gzip.compress(b"abc") + gzip.compress(b"def"))
    assert readers._read_maybe_gzip(two) == b"abcdef"
