"""Where the small datasets live on disk, how to download them, and how to load them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST
from torchvision.datasets.utils import download_and_extract_archive

from .base import CLASSES, MEAN, STD, ArrayDataset
from .readers import read_cifar_batch, read_cifar_meta, read_idx_pair
from .synthetic import synthetic_dataset

__all__ = ["DATASETS", "DownloadError", "find_data", "find_image_folder", "download_data", "load_dataset",
           "search_dirs"]

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic")
SPLITS = ("train", "test")
ENV_VAR = "RESNETLAB_DATA"

# Sub-folder torchvision uses inside a root, and the upstream class with urls and md5s.
TORCHVISION_LAYOUT = {
    "fashion-mnist": ("FashionMNIST/raw", FashionMNIST),
    "mnist": ("MNIST/raw", MNIST),
    "cifar10": (CIFAR10.base_folder, CIFAR10),
    "cifar100": (CIFAR100.base_folder, CIFAR100),
}
# Folders system packages install into (Debian's dataset-fashion-mnist).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}
HOW_TO_GET = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, pass --download, "
                     "or point --data-dir at a folder with the idx files",
    "mnist": "pass --download, or point --data-dir at a folder with the idx files",
    "cifar10": f"pass --download, or point --data-dir at a folder holding {CIFAR10.base_folder} "
               f"(from {CIFAR10.url})",
    "cifar100": f"pass --download, or point --data-dir at a folder holding {CIFAR100.base_folder} "
                f"(from {CIFAR100.url})",
}
# CIFAR: (train files, test files, meta file, meta key, label key).
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta",
                "label_names", "labels"),
    "cifar100": (["train"], ["test"], "meta", "fine_label_names", "fine_labels"),
}


class DownloadError(RuntimeError):
    """A download failed (no network, or a checksum mismatch)."""


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return key


def _roots(data_dir: Optional[str | Path]) -> list[Path]:
    """The user-level roots in search order: data_dir, $RESNETLAB_DATA, ~/.cache/resnetlab."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(Path.home() / ".cache" / "resnetlab")
    return roots


def search_dirs(name: str, data_dir: Optional[str | Path] = None) -> list[Path]:
    """Every folder searched for `name`, in order."""
    key = _canonical(name)
    if key == "synthetic":
        return []
    dirs: list[Path] = []
    for root in _roots(data_dir):
        dirs += [root, root / key, root / TORCHVISION_LAYOUT[key][0]]
    dirs += SYSTEM_DIRS.get(key, [])
    return list(dict.fromkeys(dirs))


def find_image_folder(data: str, data_dir: Optional[str | Path] = None) -> Path:
    """The image folder ``data`` names: a path, or a folder of that name under the data roots
    (``--data-dir``, ``$RESNETLAB_DATA``, ``~/.cache/resnetlab``), e.g. ``imagenet``."""
    path = Path(data).expanduser()
    if path.is_dir():
        return path
    candidates = [root / data for root in _roots(data_dir)] if len(path.parts) == 1 else []
    for folder in candidates:
        if folder.is_dir():
            return folder
    looked = f"; no folder {data} in {', '.join(str(c.parent) for c in candidates)}" if candidates else ""
    raise ValueError(f"unknown dataset {data!r}: not one of {', '.join(DATASETS)} and not a folder{looked}; "
                     "pass --data PATH to a folder of images with one subfolder per class (or train/ and val/)")


def _idx_stems(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    """The idx file for `stem` in folder, under the upstream name or MNIST's dotted one, .gz or not."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _holds(key: str, folder: Path) -> bool:
    if key in CIFAR_FILES:
        train_files, _, meta_file = CIFAR_FILES[key][:3]
        return (folder / meta_file).is_file() and (folder / train_files[0]).is_file()
    return _find_idx(folder, _idx_stems("train")[0]) is not None


def find_data(name: str, data_dir: Optional[str | Path] = None) -> Path:
    """The folder holding the files of dataset `name`; FileNotFoundError says where it looked."""
    key = _canonical(name)
    if key == "synthetic":
        raise ValueError("the synthetic dataset is generated, it has no files")
    dirs = search_dirs(key, data_dir)
    for folder in dirs:
        if _holds(key, folder):
            return folder
    raise FileNotFoundError(
        f"{key} not found; looked in {', '.join(str(d) for d in dirs)}; {HOW_TO_GET[key]}"
    )


def _writable_root(data_dir: Optional[str | Path]) -> Path:
    roots = _roots(data_dir)
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise DownloadError(f"no writable folder to download into; tried {', '.join(map(str, roots))}")


def _fetch(url: str, folder: Path, filename: str, md5: str) -> None:
    try:
        download_and_extract_archive(url, download_root=str(folder), filename=filename, md5=md5)
    except Exception as err:  # URLError, HTTPError, md5 mismatch (RuntimeError), disk errors
        message = " ".join(str(err).split()) or type(err).__name__
        raise DownloadError(f"download of {url} into {folder} failed: {message}") from None


def download_data(name: str, data_dir: Optional[str | Path] = None) -> Path:
    """Download `name` from its canonical source (md5-checked) into the first writable root."""
    key = _canonical(name)
    if key == "synthetic":
        raise ValueError("the synthetic dataset is generated, it has no files")
    root = _writable_root(data_dir)
    subdir, source = TORCHVISION_LAYOUT[key]
    if key in CIFAR_FILES:
        _fetch(source.url, root, source.filename, source.tgz_md5)
        return root / subdir
    folder = root / subdir
    for filename, md5 in source.resources:
        errors = []
        for mirror in source.mirrors:
            try:
                _fetch(mirror + filename, folder, filename, md5)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            raise DownloadError("; ".join(errors))
    return folder


def _load_idx(key: str, folder: Path, split: str) -> ArrayDataset:
    paths = []
    for stem in _idx_stems(split):
        path = _find_idx(folder, stem)
        if path is None:
            raise FileNotFoundError(f"{key}: {stem} (or {stem}.gz) missing in {folder}")
        paths.append(path)
    images, labels = read_idx_pair(paths[0], paths[1], len(CLASSES[key]), dataset=key)
    return ArrayDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(CLASSES[key]), mean=MEAN[key], std=STD[key], name=key,
    )


def _load_cifar(key: str, folder: Path, split: str) -> ArrayDataset:
    train_files, test_files, meta_file, meta_key, label_key = CIFAR_FILES[key]
    classes = read_cifar_meta(folder / meta_file, meta_key)
    images, labels = [], []
    for filename in train_files if split == "train" else test_files:
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{key}: {filename} missing in {folder}")
        data, targets = read_cifar_batch(path, label_key, len(classes))
        images.append(data)
        labels.append(targets)
    return ArrayDataset(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes, mean=MEAN[key], std=STD[key], name=key,
    )


def load_dataset(name: str, split: str = "train", data_dir: Optional[str | Path] = None,
                 download: bool = False, **synthetic_options: Any) -> ArrayDataset:
    """Load a small dataset into memory as uint8 tensors; `split` is 'train' or 'test'."""
    key = _canonical(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if key == "synthetic":
        return synthetic_dataset(split=split, **synthetic_options)
    if synthetic_options:
        options = ", ".join(sorted(synthetic_options))
        raise ValueError(f"options {options} apply only to the synthetic dataset, not {key}")
    try:
        folder = find_data(key, data_dir)
    except FileNotFoundError:
        if not download:
            raise
        folder = download_data(key, data_dir)
    if key in CIFAR_FILES:
        return _load_cifar(key, folder, split)
    return _load_idx(key, folder, split)
