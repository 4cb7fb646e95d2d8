"""Tests for resnetlab.data.download: md5-checked downloads that leave nothing partial, one-line errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils as tv_utils
from torchvision.datasets import FashionMNIST

from helpers import make_idx_dataset, one_line, write_idx
from resnetlab.data import DownloadError, download, load_dataset, locate

pytestmark = pytest.mark.usefixtures("isolated")


def test_download_false_never_downloads(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(download, "download_and_extract_archive", no_network)
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

    monkeypatch.setattr(download, "download_and_extract_archive", fake_download)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert len(ds) == 6 and (tmp_path / "dl" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert len(calls) == 4 and all(url.startswith("http") and len(md5) == 32 for url, md5 in calls)
    load_dataset("fashion-mnist", "test", data_dir=tmp_path / "dl", download=True)
    assert len(calls) == 4  # found now, not downloaded again


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(url, download_root, filename=None, md5=None):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution>\n{url}")

    monkeypatch.setattr(download, "download_and_extract_archive", offline)
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
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
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
