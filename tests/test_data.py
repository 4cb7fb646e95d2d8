"""Tests for resnetlab.data: readers, search order, corrupt files, the device loader, image folders."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.utils as tv_utils
from PIL import Image
from torchvision.datasets import FashionMNIST

from resnetlab.data import (
    ArrayDataset,
    DeviceLoader,
    DownloadError,
    ImageFolderData,
    augment_batch,
    draw_augmentation,
    draw_erasing,
    erase_batch,
    find_data,
    load_dataset,
    readers,
    sources,
    synthetic_dataset,
)
from resnetlab.data.loader import epoch_generator

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's data: empty HOME, no $RESNETLAB_DATA, no system folders."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {})


# ---------------------------------------------------------------- writers of upstream formats

def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: int | None = None) -> Path:
    """Write an idx file of unsigned bytes: magic 0x0000080N, N big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_dataset(folder: Path, gz: bool = False, n_train: int = 12, n_test: int = 5, seed: int = 0,
                     dotted: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def make_cifar10(folder: Path, per_batch: int = 3, seed: int = 0, protocol: int = 2) -> dict[str, tuple]:
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


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# ---------------------------------------------------------------- idx files

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


def test_mnist_dotted_names_in_torchvision_layout(tmp_path):
    written = make_idx_dataset(tmp_path / "root" / "MNIST" / "raw", gz=True, dotted=True)
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "root")
    assert np.array_equal(ds.images[:, 0].numpy(), written["test"][0])
    assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)]


def test_search_order(tmp_path, monkeypatch):
    arg, env, home = tmp_path / "arg", tmp_path / "env", Path(os.environ["HOME"])
    make_idx_dataset(arg, seed=1)
    env_data = make_idx_dataset(env / "FashionMNIST" / "raw", seed=2)  # torchvision's layout
    home_data = make_idx_dataset(home / ".cache" / "resnetlab" / "fashion-mnist", seed=3)
    assert find_data("fashion-mnist") == home / ".cache" / "resnetlab" / "fashion-mnist"
    assert np.array_equal(load_dataset("fashion-mnist").labels.numpy(), home_data["train"][1])
    monkeypatch.setenv("RESNETLAB_DATA", str(env))
    assert find_data("fashion-mnist") == env / "FashionMNIST" / "raw"
    assert np.array_equal(load_dataset("fashion-mnist").labels.numpy(), env_data["train"][1])
    assert find_data("fashion-mnist", data_dir=arg) == arg  # data_dir beats $RESNETLAB_DATA
    assert find_data("FashionMNIST", data_dir=tmp_path / "empty") == env / "FashionMNIST" / "raw"


def test_system_dir_is_searched_last(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    make_idx_dataset(system, gz=True)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [system]})
    assert find_data("fashion-mnist", data_dir=tmp_path / "nothing") == system
    with pytest.raises(FileNotFoundError):
        find_data("mnist")  # Debian's Fashion-MNIST is not MNIST


def test_nothing_found_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "arg")
    message = one_line(err)
    for place in ("arg", "env", "env/FashionMNIST/raw", "home/.cache/resnetlab", "debian"):
        assert str(tmp_path / place) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "arg")
    assert "cifar-10-batches-py" in one_line(err)


def test_download_false_never_downloads(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(sources, "download_and_extract_archive", no_network)
    for name in ("fashion-mnist", "mnist", "cifar10", "cifar100"):
        with pytest.raises(FileNotFoundError):
            load_dataset(name, data_dir=tmp_path)


def test_download_puts_files_where_the_search_finds_them(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root, filename=None, md5=None):  # writes what extraction would
        calls.append((url, md5))
        stem = filename[:-3]
        array = np.zeros((6, 28, 28)) if "images" in stem else np.arange(6) % 10
        write_idx(Path(download_root) / stem, array)

    monkeypatch.setattr(sources, "download_and_extract_archive", fake_download)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert len(ds) == 6 and (tmp_path / "dl" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert len(calls) == 4 and all(url.startswith("http") and len(md5) == 32 for url, md5 in calls)
    load_dataset("fashion-mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert len(calls) == 4  # found now, not downloaded again


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(url, download_root, filename=None, md5=None):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution>\n{url}")

    monkeypatch.setattr(sources, "download_and_extract_archive", offline)
    with pytest.raises(DownloadError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "dl", download=True)
    message = one_line(err)
    assert "cifar-10-python.tar.gz" in message and "name resolution" in message
    assert f"looked in {tmp_path / 'dl'}" in message and "cifar-10-batches-py" in message
    assert not (tmp_path / "dl").exists()  # the folder made to download into is gone again


UPSTREAM_IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz"]


def md5sum(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Fashion-MNIST's four upstream .gz files, served from a local folder as its only mirror.

    torchvision's download code runs (md5 check, extraction); only the transfer is replaced, as its
    progress bar needs an HTTP response. The transfer refuses anything but file:// URLs.
    """
    def transfer(url, filename, chunk_size=0):
        assert url.startswith("file://"), f"a test tried the network: {url}"
        with urllib.request.urlopen(url) as response, open(filename, "wb") as out:
            shutil.copyfileobj(response, out)

    monkeypatch.setattr(tv_utils, "_urlretrieve", transfer)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    folder = tmp_path / "mirror"
    written = make_idx_dataset(folder, gz=True)
    monkeypatch.setattr(FashionMNIST, "mirrors", [folder.as_uri() + "/"])
    monkeypatch.setattr(FashionMNIST, "resources", [(name, md5sum(folder / name)) for name in UPSTREAM_IDX])
    return written


def test_a_partial_folder_is_skipped(tmp_path, monkeypatch):
    partial, system = tmp_path / "arg", tmp_path / "debian"
    write_idx(partial / "train-images-idx3-ubyte", np.zeros((12, 28, 28)))  # train images only
    written = make_idx_dataset(system, gz=True)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [system]})
    assert find_data("fashion-mnist", data_dir=partial) == system
    ds = load_dataset("fashion-mnist", "test", data_dir=partial)
    assert np.array_equal(ds.images[:, 0].numpy(), written["test"][0])
    make_cifar10(tmp_path / "env" / "cifar-10-batches-py")
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "env"))
    for missing in ("test_batch", "data_batch_5", "batches.meta"):
        make_cifar10(tmp_path / "arg" / "cifar-10-batches-py")
        (tmp_path / "arg" / "cifar-10-batches-py" / missing).unlink()
        assert find_data("cifar10", data_dir=tmp_path / "arg") == tmp_path / "env" / "cifar-10-batches-py"


def test_download_completes_a_partial_folder(tmp_path, mirror):
    raw = tmp_path / "dl" / "FashionMNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", mirror["train"][0])  # left by an earlier download
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path / "dl", download=True)
        assert np.array_equal(ds.images[:, 0].numpy(), mirror[split][0])
        assert np.array_equal(ds.labels.numpy(), mirror[split][1])
    assert (raw / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not (raw / "train-images-idx3-ubyte.gz").exists()  # there already, not downloaded again


def test_md5_mismatch_removes_the_bad_file(tmp_path, monkeypatch, mirror):
    url = FashionMNIST.mirrors[0] + "t10k-images-idx3-ubyte.gz"
    resources = [(name, "0" * 32 if name == "t10k-images-idx3-ubyte.gz" else md5)
                 for name, md5 in FashionMNIST.resources]
    monkeypatch.setattr(FashionMNIST, "resources", resources)
    with pytest.raises(DownloadError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "dl", download=True)
    assert url in one_line(err) and "md5" in str(err.value)
    raw = tmp_path / "dl" / "FashionMNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == [  # the good files stay, the bad one is gone
        "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
        "train-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(FashionMNIST, "resources", [("train-images-idx3-ubyte.gz", "0" * 32)])
    with pytest.raises(DownloadError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "new", download=True)
    assert FashionMNIST.mirrors[0] + "train-images-idx3-ubyte.gz" in one_line(err)
    assert not (tmp_path / "new").exists() and not (Path(os.environ["HOME"]) / ".cache").exists()


def test_offline_download_says_where_it_looked_and_how_to_get_the_data(tmp_path, monkeypatch, mirror):
    nowhere = [(tmp_path / "nowhere" / str(i)).as_uri() + "/" for i in (1, 2)]
    monkeypatch.setattr(FashionMNIST, "mirrors", nowhere)
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
    with pytest.raises(DownloadError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "arg", download=True)
    message = one_line(err)
    assert nowhere[0] + "train-images-idx3-ubyte.gz: [Errno 2] No such file or directory" in message
    assert nowhere[1] not in message and "tried 2 mirrors" in message  # only the first mirror's reason
    for place in ("arg", "arg/FashionMNIST/raw", "home/.cache/resnetlab", "debian"):
        assert str(tmp_path / place) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "pass --download" not in message  # not the advice that just failed
    assert not (tmp_path / "arg").exists() and not (tmp_path / "home" / ".cache").exists()


def test_unknown_name_and_split():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    assert "fashion-mnist" in one_line(err)
    with pytest.raises(ValueError):
        load_dataset("synthetic", split="val")


# ---------------------------------------------------------------- corrupt idx files

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
    assert path.stat().st_size == readers.KNOWN_IDX["fashion-mnist"]["t10k-labels-idx1-ubyte"][0]
    with pytest.raises(ValueError) as err:
        readers.read_idx(path, readers.IDX_LABELS_MAGIC, "fashion-mnist", "t10k-labels-idx1-ubyte")
    assert "sha256" in one_line(err)
    assert readers.read_idx(path, readers.IDX_LABELS_MAGIC).shape == (10000,)  # unknown dataset: no check


# ---------------------------------------------------------------- CIFAR pickles

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader_returns_exact_pixels(tmp_path, protocol):
    written = make_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    for split, n in (("train", 15), ("test", 3)):
        ds = load_dataset("cifar10", split, data_dir=tmp_path)
        assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
        assert np.array_equal(ds.images.numpy(), written[split][0])
        assert np.array_equal(ds.labels.numpy(), written[split][1])
        assert ds.classes[-1] == "truck" and len(ds.mean) == 3


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


class Exploit:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


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


# ---------------------------------------------------------------- ArrayDataset

def indexed_dataset(n: int = 50, channels: int = 3, size: int = 8) -> ArrayDataset:
    """Image i is filled with the value i, label i: every batch shows where its samples came from."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).clone()
    return ArrayDataset(images, torch.arange(n), [f"c{i}" for i in range(n)],
                        (0.5,) * channels, (0.25,) * channels, "indexed")


def test_split_and_subset():
    ds = indexed_dataset(50)
    train, val = ds.split(0.2, seed=3)
    assert len(train) == 40 and len(val) == 10
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert torch.equal(ds.split(0.2, seed=3)[1].labels, val.labels)
    assert not torch.equal(ds.split(0.2, seed=4)[1].labels, val.labels)
    assert len(ds.split(7)[1]) == 7
    assert ds.subset([3, 1]).labels.tolist() == [3, 1]
    with pytest.raises(ValueError):
        ds.split(50)


# ---------------------------------------------------------------- DeviceLoader

def reference_augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample crop of the zero-padded image, then flip: the obvious slow implementation."""
    out = []
    h, w = x.shape[-2:]
    for image, (dy, dx), flip in zip(x, offsets.tolist(), flips.tolist()):
        crop = F.pad(image, (pad, pad, pad, pad))[:, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def test_augment_batch_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8, generator=g)
    for pad in (0, 1, 4):
        offsets, flips = draw_augmentation(16, pad, g)
        assert offsets.min() >= 0 and offsets.max() <= 2 * pad and flips.any() and not flips.all()
        assert torch.equal(augment_batch(x, offsets, flips, pad), reference_augment(x, offsets, flips, pad))


def test_erasing_draws_and_batch_match_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    boxes = draw_erasing(2000, 10, 12, 0.5, g)
    top, left, box_h, box_w = boxes.unbind(1)
    erased = box_h > 0
    assert 0.4 < erased.float().mean() < 0.6
    assert (top + box_h <= 10).all() and (left + box_w <= 12).all() and (top >= 0).all() and (left >= 0).all()
    area = (box_h * box_w)[erased].float() / 120
    assert area.min() >= 0.005 and area.max() <= 0.45 and 0.1 < area.mean() < 0.25
    x = torch.randn(16, 3, 10, 12)
    expected = x.clone()
    for image, (t, lft, h, w) in zip(expected, boxes[:16].tolist()):
        image[:, t:t + h, lft:lft + w] = 0.0
    assert torch.equal(erase_batch(x, boxes[:16]), expected)
    assert draw_erasing(100, 10, 12, 0.0, g)[:, 2].eq(0).all()


def test_loader_erasing_is_an_extra_draw_after_crop_and_flip():
    ds = synthetic_dataset(num_samples=20, size=8)
    plain = next(iter(DeviceLoader(ds, 8, train=True, seed=5, pad=2)))[0]
    erasing = DeviceLoader(ds, 8, train=True, seed=5, pad=2, erase=1.0)
    x = next(iter(erasing))[0]
    g = epoch_generator(5, 0)
    torch.randperm(20, generator=g)
    draw_augmentation(20, 2, g)
    boxes = draw_erasing(20, 8, 8, 1.0, g)
    assert torch.equal(x, erase_batch(plain.clone(), boxes[:8]))
    assert not torch.equal(x, plain)
    assert DeviceLoader(ds, 8, train=False, erase=1.0).erase == 0.0  # evaluation is never erased
    with pytest.raises(ValueError, match="erase"):
        DeviceLoader(ds, 8, train=True, erase=1.5)


def test_loader_shapes_and_normalization():
    ds = synthetic_dataset(num_samples=10, channels=3, size=16)
    loader = DeviceLoader(ds, 4, train=False, channels_last=True)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]  # eval keeps the last batch
    x, y = batches[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    for i in range(4):
        for c in range(3):
            manual = (ds.images[i, c].double() / 255 - ds.mean[c]) / ds.std[c]
            assert torch.allclose(x[i, c].double(), manual, atol=1e-5)
    assert torch.equal(y, ds.labels[:4])
    half = next(iter(DeviceLoader(ds, 4, train=False, dtype=torch.bfloat16)))[0]
    assert half.dtype == torch.bfloat16


def test_train_batch_is_the_documented_draw():
    ds = synthetic_dataset(num_samples=20, size=8)
    loader = DeviceLoader(ds, 8, train=True, seed=5, pad=2)
    loader.set_epoch(3)
    x, y = next(iter(loader))
    g = epoch_generator(5, 3)
    order = torch.randperm(20, generator=g)
    offsets, flips = draw_augmentation(20, 2, g)
    expected = reference_augment(ds.images[order[:8]], offsets[:8], flips[:8], 2)
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    assert torch.equal(y, ds.labels[order[:8]])
    assert torch.allclose(x, (expected.float() / 255 - mean) / std, atol=1e-5)


def epoch_labels(loader: DeviceLoader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [y.tolist() for _, y in loader]


def test_loader_determinism_and_epochs():
    ds = indexed_dataset(50)
    a, b = DeviceLoader(ds, 8, train=True, seed=1), DeviceLoader(ds, 8, train=True, seed=1)
    assert len(a) == 6  # drop_last in training
    assert epoch_labels(a, 2) == epoch_labels(b, 2)
    xa = torch.cat([x for x, _ in DeviceLoader(ds, 8, train=True, seed=1)])
    xb = torch.cat([x for x, _ in DeviceLoader(ds, 8, train=True, seed=1)])
    assert torch.equal(xa, xb)
    assert epoch_labels(a, 2) != epoch_labels(a, 3)
    assert epoch_labels(a, 2) != epoch_labels(DeviceLoader(ds, 8, train=True, seed=2), 2)
    for x, y in DeviceLoader(ds, 8, train=True, seed=1, pad=2):  # the centre pixel identifies the sample
        assert torch.allclose(x[:, 0, 4, 4], (y.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_loader_moves_to_next_epoch_after_a_pass():
    loader = DeviceLoader(indexed_dataset(50), 8, train=True)
    first = [y.tolist() for _, y in loader]
    second = [y.tolist() for _, y in loader]
    assert loader.epoch == 2 and first == epoch_labels(DeviceLoader(indexed_dataset(50), 8, train=True), 0)
    assert first != second


def test_shards_are_disjoint_and_equal():
    ds = indexed_dataset(51)
    shards = [sum(epoch_labels(DeviceLoader(ds, 5, train=True, rank=r, world_size=2), 4), []) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 25
    assert set(shards[0]).isdisjoint(shards[1])
    evals = [sum(epoch_labels(DeviceLoader(ds, 5, train=False, rank=r, world_size=2), 0), []) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == list(range(51))  # evaluation sees every sample once


def test_a_global_batch_holds_the_same_samples_on_any_number_of_ranks():
    ds = indexed_dataset(50)
    one = epoch_labels(DeviceLoader(ds, 12, train=True, seed=3), 1)
    for ranks in (2, 3, 4):
        shards = [epoch_labels(DeviceLoader(ds, 12 // ranks, train=True, seed=3, rank=r, world_size=ranks), 1)
                  for r in range(ranks)]
        assert [sum(parts, []) for parts in zip(*shards)] == one  # rank r's slice of each global batch, in order
    loose = [epoch_labels(DeviceLoader(ds, 4, train=True, seed=3, rank=r, world_size=2, drop_last=False), 1)
             for r in range(2)]
    assert [len(b) for b in loose[1]] == [4] * 6 + [1]  # the last 2 samples, one per rank
    assert sorted(sum(sum(loose, []), [])) == list(range(50))


def test_resume_under_another_number_of_ranks():
    ds = indexed_dataset(50)
    two = [DeviceLoader(ds, 4, train=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for loader in two:
        loader.set_epoch(2)
        iterator = iter(loader)
        next(iterator), next(iterator)
    one = DeviceLoader(ds, 8, train=True, seed=5)
    one.load_state_dict(two[0].state_dict())
    one.set_epoch(2)
    reference = epoch_labels(DeviceLoader(ds, 8, train=True, seed=5), 2)
    assert [y.tolist() for _, y in one] == reference[2:]
    with pytest.raises(ValueError, match="global_batch=8, this loader has 12"):
        DeviceLoader(ds, 6, train=True, seed=5, rank=0, world_size=2).load_state_dict(two[0].state_dict())


def test_resume_mid_epoch():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 8, train=True, seed=7)
    loader.set_epoch(1)
    reference = DeviceLoader(ds, 8, train=True, seed=7)
    reference.set_epoch(1)
    full = list(reference)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 3
    resumed = DeviceLoader(ds, 8, train=True, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # a training loop calls this again after resuming: keeps the position
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for (xr, yr), (xf, yf) in zip(rest, full[3:]):
        assert torch.equal(yr, yf) and torch.equal(xr, xf)
    with pytest.raises(ValueError):
        DeviceLoader(ds, 4, train=True, seed=7).load_state_dict(state)


def pruned_pass(loader: DeviceLoader) -> dict[int, tuple[torch.Tensor, float]]:
    """One pass in which each sample's recorded loss is its label (its index): {index: (image, loss weight)}."""
    seen = {}
    for x, y in loader:
        for image, label, weight in zip(x, y.tolist(), loader.batch_weights().tolist()):
            seen[label] = (image, weight)
        loader.record_losses(y.float())
    return seen


def test_pruning_leaves_out_easy_samples_at_random_and_weighs_the_kept_ones():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 1, train=True, seed=1, pad=2, erase=0.5)
    loader.prune_easy = 0.5
    assert len(loader) == 50  # no loss known yet: every sample
    first = pruned_pass(loader)
    assert sorted(first) == list(range(50)) and {w for _, w in first.values()} == {1.0}
    assert len(loader) < 50  # the next pass is planned from the losses just recorded: 0..49, mean 24.5
    second = pruned_pass(loader)
    easy_kept = {i for i in second if i < 25}
    assert set(range(25, 50)) <= set(second)  # hard samples are always kept, with weight 1
    assert 5 <= len(easy_kept) <= 20  # about half of the 25 easy ones (p = 0.5)
    assert all(second[i][1] == (2.0 if i < 25 else 1.0) for i in second)  # kept easy ones count 1 / (1 - p)
    # The kept samples come in the order, and with the crops, flips and erasing, of an unpruned pass.
    plain = DeviceLoader(ds, 1, train=True, seed=1, pad=2, erase=0.5)
    plain.set_epoch(1)
    unpruned = [(int(y), x[0]) for x, y in plain]
    assert list(second) == [i for i, _ in unpruned if i in second]
    assert all(torch.equal(second[i][0], x) for i, x in unpruned if i in second)
    # Switched off, a pass keeps every sample again, with weight 1.
    loader.prune_easy = 0.0
    third = pruned_pass(loader)
    assert sorted(third) == list(range(50)) and {w for _, w in third.values()} == {1.0}


def test_pruned_pass_resumes_mid_pass():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 4, train=True, seed=3)
    loader.prune_easy = 0.5
    pruned_pass(loader)
    reference = DeviceLoader(ds, 4, train=True, seed=3)
    reference.load_state_dict(loader.state_dict())
    reference.prune_easy = 0.5
    full = [y.tolist() for _, y in reference]
    assert len(full) < 12
    it = iter(loader)
    for _ in range(2):
        _, y = next(it)
        loader.record_losses(torch.zeros(len(y)))  # changes the losses, not the pass already planned
    resumed = DeviceLoader(ds, 4, train=True, seed=3)
    resumed.load_state_dict(loader.state_dict())
    resumed.prune_easy = 0.5
    assert [y.tolist() for _, y in resumed] == full[2:]


def test_loader_state_holds_losses_only_once_some_are_recorded():
    ds = indexed_dataset(50)
    plain = DeviceLoader(ds, 5, train=True, seed=3)
    list(plain)
    assert "losses" not in plain.state_dict()  # a run that does not prune saves no per-sample tensors
    pruning = DeviceLoader(ds, 5, train=True, seed=3)
    pruning.prune_easy = 0.5
    pruned_pass(pruning)
    assert torch.equal(pruning.state_dict()["losses"], torch.arange(50.0))
    planned = len(pruning)
    assert planned < 10 and len(list(pruning)) == planned  # the pass yields the batches it planned
    pruning.load_state_dict(plain.state_dict())  # a state without losses leaves none known
    assert pruning.losses.isnan().all() and pruning.pass_losses.isnan().all()


def test_merge_losses_gives_every_rank_the_losses_all_recorded():
    import threading

    barrier, slots = threading.Barrier(2), {}

    def all_reduce(tensor: torch.Tensor) -> None:  # two threads standing in for two ranks
        slots[threading.get_ident()] = tensor.clone()
        barrier.wait()
        tensor.copy_(sum(slots.values()))
        barrier.wait()

    ds = indexed_dataset(48)
    ranks = [DeviceLoader(ds, 4, train=True, seed=2, rank=r, world_size=2) for r in (0, 1)]
    for loader in ranks:
        loader.prune_easy = 0.5
        pruned_pass(loader)
        assert int((~loader.losses.isnan()).sum()) == 24  # its own half
    threads = [threading.Thread(target=loader.merge_losses, args=(all_reduce,)) for loader in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for loader in ranks:
        assert torch.equal(loader.losses, torch.arange(48.0))
    # Planned from the same losses, the ranks' slices make up the global batches one process would cut.
    one = DeviceLoader(ds, 8, train=True, seed=2)
    one.losses = torch.arange(48.0)
    one.prune_easy, one.epoch = 0.5, 1
    shards = [[y.tolist() for _, y in loader] for loader in ranks]
    assert [a + b for a, b in zip(*shards)] == [y.tolist() for _, y in one]


# ---------------------------------------------------------------- synthetic data

def test_synthetic_is_deterministic_and_learnable():
    a, b = synthetic_dataset(200, seed=3), synthetic_dataset(200, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, synthetic_dataset(200, seed=4).images)
    test = synthetic_dataset(200, seed=3, split="test")
    assert not torch.equal(a.images, test.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)
    assert torch.bincount(a.labels).tolist() == [20] * 10
    # Nearest class mean of the train split classifies the test split: classes share templates.
    means = torch.stack([a.images[a.labels == k].float().mean(0) for k in range(10)]).flatten(1)
    predicted = torch.cdist(test.images.float().flatten(1), means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.5
    gray = load_dataset("synthetic", num_samples=8, channels=1, size=12, num_classes=3)
    assert gray.images.shape == (8, 1, 12, 12) and gray.num_classes == 3 and len(gray.mean) == 1


# ---------------------------------------------------------------- image folders

def write_pngs(folder: Path, classes: list[str], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = "L" if i == 0 else "RGB"  # a grayscale file must come out RGB
            shape = (20, 24) if mode == "L" else (20, 24, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_image_folder_train_val_layout(tmp_path):
    write_pngs(tmp_path / "images" / "train", ["cat", "dog"], 3)
    write_pngs(tmp_path / "images" / "val", ["cat", "dog"], 2)
    data = ImageFolderData(tmp_path / "images", image_size=16)
    assert data.classes == ["cat", "dog"] and data.layout == "train/val"
    assert len(data.train_dataset) == 6 and len(data.val_dataset) == 4
    x, y = next(iter(data.train_loader(4, workers=0)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(iter(data.val_loader(4, workers=0)))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]


def test_image_folder_erasing_in_training_only(tmp_path):
    write_pngs(tmp_path / "images" / "train", ["cat", "dog"], 3)
    write_pngs(tmp_path / "images" / "val", ["cat", "dog"], 2)
    data = ImageFolderData(tmp_path / "images", image_size=16, erase=1.0)
    x, _ = next(iter(data.train_loader(6, workers=0)))
    zeros = (x == 0).all(dim=1).flatten(1).sum(1)  # pixels set to the mean in every channel
    assert (zeros >= 0.02 * 16 * 16 - 1).all()
    x, _ = next(iter(data.val_loader(4, workers=0)))
    assert (x == 0).all(dim=1).sum() == 0


def test_image_folder_single_folder_split(tmp_path):
    write_pngs(tmp_path / "images", ["a", "b"], 5)
    data = ImageFolderData(tmp_path / "images", image_size=8, val_fraction=0.2, seed=1)
    assert data.layout == "split" and len(data.train_dataset) == 8 and len(data.val_dataset) == 2
    again = ImageFolderData(tmp_path / "images", image_size=8, val_fraction=0.2, seed=1)
    assert again.val_dataset.indices == data.val_dataset.indices
    assert set(data.val_dataset.indices).isdisjoint(data.train_dataset.indices)
    x, _ = next(iter(data.val_loader(2, workers=0)))
    assert x.shape == (2, 3, 8, 8)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "empty")
    assert "no class folders" in one_line(err)
    write_pngs(tmp_path / "one", ["only"], 2)
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "one")
    assert "one class" in one_line(err)
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "b").mkdir(parents=True)
    (tmp_path / "noimages" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "noimages")
    one_line(err)
    with pytest.raises(FileNotFoundError):
        ImageFolderData(tmp_path / "missing")


# ---------------------------------------------------------------- the real Fashion-MNIST

@pytest.mark.realdata
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(sources, "SYSTEM_DIRS", {"fashion-mnist": [DEBIAN_FASHION]})
    train, test = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert abs(train.images.float().mean().item() / 255 - train.mean[0]) < 1e-4
    assert abs(train.images.float().std().item() / 255 - train.std[0]) < 1e-4
    # the loader verified the sha256 of every full-size file; check one independently here
    raw = gzip.decompress((DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    expected = readers.KNOWN_IDX["fashion-mnist"]["t10k-labels-idx1-ubyte"][2]
    assert hashlib.sha256(raw).hexdigest() == expected


def test_a_named_image_folder_is_found_under_the_data_roots(tmp_path, monkeypatch):
    from resnetlab.data import find_image_folder

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "root"))
    (tmp_path / "root" / "imagenet").mkdir(parents=True)
    (tmp_path / "given" / "imagenet").mkdir(parents=True)
    assert find_image_folder("imagenet") == tmp_path / "root" / "imagenet"
    assert find_image_folder("imagenet", tmp_path / "given") == tmp_path / "given" / "imagenet"  # --data-dir first
    assert find_image_folder(str(tmp_path / "root")) == tmp_path / "root"
    with pytest.raises(ValueError) as info:
        find_image_folder("places365")
    message = str(info.value)
    assert "no folder places365 in" in message and str(tmp_path / "root") in message and "\n" not in message
    with pytest.raises(ValueError, match="not a folder; pass --data PATH"):
        find_image_folder(str(tmp_path / "missing" / "deeper"))


def test_image_folders_read_16bit_images_scaled_as_predict_does(tmp_path):
    from PIL import Image

    from resnetlab.data.folders import _image_folder

    for label, image in (("eight", Image.new("L", (8, 8), 128)),
                         ("sixteen", Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)))):
        (tmp_path / "images" / label).mkdir(parents=True)
        image.save(tmp_path / "images" / label / "grey.png")
    folder = _image_folder(tmp_path / "images")
    eight, sixteen = (np.asarray(folder[i][0]) for i in range(2))
    assert folder.classes == ["eight", "sixteen"] and sixteen.shape == (8, 8, 3)
    assert np.array_equal(eight, sixteen)  # mid-grey both, where PIL's convert would make the 16-bit one white


def test_an_unreadable_image_is_named_in_every_folder_layout(tmp_path):
    from PIL import Image

    from resnetlab.data.folders import _image_folder

    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / label / "0.png")
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folder = _image_folder(tmp_path / "train")
    with pytest.raises(ValueError, match=f"^cannot read image {bad}: "):
        folder[2]
