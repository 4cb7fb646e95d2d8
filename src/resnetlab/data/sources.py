"""Where the small datasets live on disk, how to download them, and how to load them."""

from __future__ import annotations

import os
import shutil
import urllib.error
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST
from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from ..errors import DownloadError, one_line
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
    """Whether folder holds every file the loader of `key` reads, for both splits."""
    if key in CIFAR_FILES:
        train_files, test_files, meta_file = CIFAR_FILES[key][:3]
        return all((folder / name).is_file() for name in (meta_file, *train_files, *test_files))
    stems = _idx_stems("train") + _idx_stems("test")
    return all(_find_idx(folder, stem) is not None for stem in stems)


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


def _writable_root(roots: list[Path]) -> Path:
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise DownloadError(f"no writable folder to download into; tried {', '.join(map(str, roots))}")


def _new_dirs(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist yet."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def _remove(path: Path) -> None:
    """Delete a file or a folder this code wrote."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """A short, one-line reason for a failed download."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason  # "[Errno -3] Temporary failure ..." rather than "<urlopen error ...>"
    return one_line(err, limit=100)


def _fetch(url: str, folder: Path, filename: str, md5: str, extracted: Path) -> None:
    """Download `url` to folder/filename, check its md5 and extract it to `extracted`.

    A failure removes what this call wrote and a file that fails the md5 check.
    """
    archive = folder / filename
    fresh = [path for path in (archive, extracted) if not path.exists()]
    try:
        download_and_extract_archive(url, download_root=str(folder), filename=filename, md5=md5)
    except BaseException as err:  # URLError, HTTPError, md5 mismatch (RuntimeError), disk errors, ^C
        mismatch = archive.is_file() and not check_integrity(str(archive), md5)
        for path in fresh:
            _remove(path)
        if mismatch:
            archive.unlink(missing_ok=True)  # a bad download, from this call or an earlier one
        if not isinstance(err, Exception):
            raise
        reason = "md5 mismatch" if mismatch and type(err) is RuntimeError else _reason(err)
        raise DownloadError(f"{url}: {reason}") from None


def _download(key: str, root: Path) -> Path:
    """Fetch the files of `key` missing under root; the folder holding them."""
    subdir, source = TORCHVISION_LAYOUT[key]
    if key in CIFAR_FILES:
        _fetch(source.url, root, source.filename, source.tgz_md5, root / subdir)
        return root / subdir
    folder = root / subdir
    for filename, md5 in source.resources:
        stem = filename.removesuffix(".gz")
        if _find_idx(folder, stem) not in (None, folder / filename):
            continue  # there already, uncompressed; the fetch md5-checks an archive that is there
        errors = []
        for mirror in source.mirrors:
            try:
                _fetch(mirror + filename, folder, filename, md5, folder / stem)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            tried = f" (tried {len(errors)} mirrors)" if len(errors) > 1 else ""
            raise DownloadError(errors[0] + tried)
    return folder


def download_data(name: str, data_dir: Optional[str | Path] = None) -> Path:
    """Download `name` from its canonical source (md5-checked) into the first writable root.

    Files already there are kept; a failure leaves no partial file and no folder it created, and
    its DownloadError says where the data was looked for and how to get it.
    """
    key = _canonical(name)
    if key == "synthetic":
        raise ValueError("the synthetic dataset is generated, it has no files")
    roots = _roots(data_dir)
    subdir = TORCHVISION_LAYOUT[key][0]
    new_dirs = {path for root in roots for path in _new_dirs(root / subdir)}
    try:
        return _download(key, _writable_root(roots))
    except BaseException as err:
        for folder in sorted(new_dirs, key=lambda path: len(path.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not isinstance(err, DownloadError):
            raise
        looked = ", ".join(str(d) for d in search_dirs(key, data_dir))
        advice = HOW_TO_GET[key].replace("pass --download, ", "")  # not again the advice that just failed
        advice = advice.removeprefix("or ")
        raise DownloadError(f"could not download {key}: {err}; looked in {looked}; {advice}") from None


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
