"""Tests for resnetlab.data's catalog, locate (search roots, find_data, image folders) and resolve_source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST

from helpers import make_cifar10, make_idx_dataset, one_line, write_idx
from resnetlab.data import (
    CLASSES,
    DATASETS,
    MEAN,
    STD,
    DatasetSource,
    FolderSource,
    TensorSource,
    catalog,
    find_data,
    load_dataset,
    locate,
    resolve_source,
)

pytestmark = pytest.mark.usefixtures("isolated")


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
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": [system]})
    assert find_data("fashion-mnist", data_dir=tmp_path / "nothing") == system
    with pytest.raises(FileNotFoundError):
        find_data("mnist")  # Debian's Fashion-MNIST is not MNIST


def test_nothing_found_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": [tmp_path / "debian"]})
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "arg")
    message = one_line(err)
    for place in ("arg", "env", "env/FashionMNIST/raw", "home/.cache/resnetlab", "debian"):
        assert str(tmp_path / place) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--download" in message
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path / "arg")
    assert "cifar-10-batches-py" in one_line(err)


def test_a_partial_folder_is_skipped(tmp_path, monkeypatch):
    partial, system = tmp_path / "arg", tmp_path / "debian"
    write_idx(partial / "train-images-idx3-ubyte", np.zeros((12, 28, 28)))  # train images only
    written = make_idx_dataset(system, gz=True)
    monkeypatch.setattr(locate, "SYSTEM_DIRS", {"fashion-mnist": [system]})
    assert find_data("fashion-mnist", data_dir=partial) == system
    ds = load_dataset("fashion-mnist", "test", data_dir=partial)
    assert np.array_equal(ds.images[:, 0].numpy(), written["test"][0])
    make_cifar10(tmp_path / "env" / "cifar-10-batches-py")
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "env"))
    for missing in ("test_batch", "data_batch_5", "batches.meta"):
        make_cifar10(tmp_path / "arg" / "cifar-10-batches-py")
        (tmp_path / "arg" / "cifar-10-batches-py" / missing).unlink()
        assert find_data("cifar10", data_dir=tmp_path / "arg") == tmp_path / "env" / "cifar-10-batches-py"


def test_unknown_name_and_split():
    with pytest.raises(ValueError) as err:
        load_dataset("imagenet")
    assert "fashion-mnist" in one_line(err)
    with pytest.raises(ValueError):
        load_dataset("synthetic", split="val")


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


# ---------------------------------------------------------------- the catalog

def test_derived_tables_equal_the_old_tables():
    assert DATASETS == ("fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic")
    assert CLASSES == {
        "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        "mnist": [str(i) for i in range(10)],
        "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    }
    assert MEAN == {"fashion-mnist": (0.2860,), "mnist": (0.1307,), "cifar10": (0.4914, 0.4822, 0.4465),
                    "cifar100": (0.5071, 0.4865, 0.4409)}
    assert STD == {"fashion-mnist": (0.3530,), "mnist": (0.3081,), "cifar10": (0.2470, 0.2435, 0.2616),
                   "cifar100": (0.2673, 0.2564, 0.2762)}
    assert catalog.TORCHVISION_LAYOUT == {
        "fashion-mnist": ("FashionMNIST/raw", FashionMNIST), "mnist": ("MNIST/raw", MNIST),
        "cifar10": ("cifar-10-batches-py", CIFAR10), "cifar100": ("cifar-100-python", CIFAR100),
    }
    assert catalog.SYSTEM_DIRS == {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
    assert catalog.HOW_TO_GET == {
        "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, pass --download, "
                         "or point --data-dir at a folder with the idx files",
        "mnist": "pass --download, or point --data-dir at a folder with the idx files",
        "cifar10": "pass --download, or point --data-dir at a folder holding cifar-10-batches-py "
                   "(from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)",
        "cifar100": "pass --download, or point --data-dir at a folder holding cifar-100-python "
                    "(from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)",
    }
    assert catalog.CIFAR_FILES == {
        "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "label_names",
                    "labels"),
        "cifar100": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
    }
    assert catalog.KNOWN_IDX == {
        "fashion-mnist": {
            "train-images-idx3-ubyte": (
                47040016, "sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            "train-labels-idx1-ubyte": (
                60008, "sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            "t10k-images-idx3-ubyte": (
                7840016, "sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            "t10k-labels-idx1-ubyte": (
                10008, "sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        },
        "mnist": {
            "train-images-idx3-ubyte": (47040016, "md5", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels-idx1-ubyte": (60008, "md5", "a25bea736e30d166cdddb491f175f624"),
            "t10k-images-idx3-ubyte": (7840016, "md5", "2646ac647ad5339dbf082846283269ea"),
            "t10k-labels-idx1-ubyte": (10008, "md5", "27ae3e4e09519cfbb04c329615203637"),
        },
    }


@pytest.mark.parametrize("name", list(catalog.CATALOG))
def test_each_record_is_consistent(name):
    entry = catalog.CATALOG[name]
    channels = entry.image_shape[0]
    assert entry.name == name and len(entry.mean) == len(entry.std) == channels
    assert set(entry.files) == {"train", "test"}
    if entry.file_format == "idx":
        assert channels == 1 and len(entry.classes) == 10 and entry.meta_file is None
        assert set(entry.checksums) == set(entry.files["train"] + entry.files["test"])
    else:
        assert channels == 3 and entry.meta_file and entry.meta_key and entry.label_key
        assert entry.torchvision_folder == entry.upstream.base_folder
    assert entry.how_to_get and catalog.record(name) is entry


def test_aliases_and_case_name_the_same_dataset():
    for spelling, name in (("FashionMNIST", "fashion-mnist"), ("fashion_mnist", "fashion-mnist"),
                           (" MNIST ", "mnist"), ("CIFAR-10", "cifar10"), ("cifar-100", "cifar100"),
                           ("Synthetic", "synthetic")):
        assert catalog.dataset_name(spelling) == name and catalog.canonical_name(spelling) == name
    assert catalog.dataset_name("imagenet") is None and catalog.dataset_name(None) is None
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose from fashion-mnist"):
        catalog.canonical_name("imagenet")
    with pytest.raises(ValueError, match="synthetic dataset is generated"):
        catalog.record("synthetic")


# ---------------------------------------------------------------- resolve_source

def test_resolve_source_names_datasets_by_any_alias():
    for name in DATASETS:
        source = resolve_source(name)
        assert source == DatasetSource(name) and source.kind == "dataset"
    assert resolve_source("CIFAR-10") == DatasetSource("cifar10")
    assert resolve_source("FashionMNIST", kinds=("dataset",)) == DatasetSource("fashion-mnist")


def test_resolve_source_finds_folders_by_path_and_by_name_under_the_roots(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    source = resolve_source(str(tmp_path / "images"))
    assert source == FolderSource(tmp_path / "images") and source.kind == "folder"
    assert resolve_source(tmp_path / "images", kinds=("folder",)).path == tmp_path / "images"
    (tmp_path / "root" / "imagenet").mkdir(parents=True)
    (tmp_path / "given" / "imagenet").mkdir(parents=True)
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "root"))
    assert resolve_source("imagenet") == FolderSource(tmp_path / "root" / "imagenet")
    assert resolve_source("imagenet", tmp_path / "given") == FolderSource(tmp_path / "given" / "imagenet")
    (tmp_path / "root" / "mnist").mkdir()
    assert resolve_source("mnist") == DatasetSource("mnist")  # a dataset name first
    assert resolve_source("mnist", kinds=("folder",)) == FolderSource(tmp_path / "root" / "mnist")


def test_resolve_source_finds_tensor_files(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((2, 1, 4, 4), dtype=np.float32))
    torch.save(torch.zeros(2, 1, 4, 4), tmp_path / "images.pt")
    for name in ("images.npy", "images.pt"):
        source = resolve_source(str(tmp_path / name))
        assert source == TensorSource(tmp_path / name) and source.kind == "tensor"
    with pytest.raises(ValueError) as err:  # not accepted where only datasets and folders are
        resolve_source(str(tmp_path / "images.npy"), kinds=("dataset", "folder"))
    assert "is not a dataset name" in one_line(err) and "tensor" not in str(err.value)


def test_resolve_source_refuses_a_missing_path_in_one_line(tmp_path):
    missing = str(tmp_path / "missing" / "images.npy")
    with pytest.raises(ValueError) as err:
        resolve_source(missing)
    message = one_line(err)
    assert message.startswith(f"unknown dataset {missing!r}: it is not a dataset name (fashion-mnist, ")
    assert "not a .npy / .pt tensor file and not a folder" in message and "no folder" not in message
    with pytest.raises(ValueError) as err:
        resolve_source(str(tmp_path / "missing"), kinds=("dataset", "folder"))
    assert "and not a folder; pass --data PATH" in one_line(err)


def test_resolve_source_refuses_an_unknown_name_saying_where_it_looked(tmp_path):
    with pytest.raises(ValueError) as err:
        resolve_source("places365", tmp_path / "given")
    message = one_line(err)
    assert "unknown dataset 'places365'" in message and ", ".join(DATASETS) in message
    assert f"no folder places365 in {tmp_path / 'given'}, {tmp_path / 'home' / '.cache' / 'resnetlab'}" in message
    with pytest.raises(ValueError) as err:
        resolve_source("places365", kinds=("dataset",))
    assert one_line(err) == f"unknown dataset 'places365': it is not a dataset name ({', '.join(DATASETS)})"
    with pytest.raises(ValueError, match="kinds must be some of dataset, folder, tensor"):
        resolve_source("mnist", kinds=("file",))
