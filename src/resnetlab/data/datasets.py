"""Loading a small dataset into memory: found on disk (or downloaded), read, checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .base import ArrayDataset
from .catalog import SYNTHETIC, DatasetRecord, canonical_name, record
from .download import download_data
from .locate import find_data, find_idx
from .readers import read_cifar_batch, read_cifar_meta, read_idx_pair
from .synthetic import synthetic_dataset

__all__ = ["SPLITS", "load_dataset"]

SPLITS = ("train", "test")


def _load_idx(entry: DatasetRecord, folder: Path, split: str) -> ArrayDataset:
    """One split of an idx dataset (MNIST's format) from folder."""
    paths = []
    for stem in entry.files[split]:
        path = find_idx(folder, stem)
        if path is None:
            raise FileNotFoundError(f"{entry.name}: {stem} (or {stem}.gz) missing in {folder}")
        paths.append(path)
    images, labels = read_idx_pair(paths[0], paths[1], len(entry.classes), dataset=entry.name)
    return ArrayDataset(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=list(entry.classes), mean=entry.mean, std=entry.std, name=entry.name,
    )


def _load_cifar(entry: DatasetRecord, folder: Path, split: str) -> ArrayDataset:
    """One split of a CIFAR dataset (python pickles) from folder; the class names come from its meta file."""
    classes = read_cifar_meta(folder / entry.meta_file, entry.meta_key)
    images, labels = [], []
    for filename in entry.files[split]:
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{entry.name}: {filename} missing in {folder}")
        data, targets = read_cifar_batch(path, entry.label_key, len(classes))
        images.append(data)
        labels.append(targets)
    return ArrayDataset(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(np.concatenate(labels)),
        classes=classes, mean=entry.mean, std=entry.std, name=entry.name,
    )


def load_dataset(name: str, split: str = "train", data_dir: Optional[str | Path] = None,
                 download: bool = False, **synthetic_options: Any) -> ArrayDataset:
    """Load a small dataset into memory as uint8 tensors; `split` is 'train' or 'test'."""
    key = canonical_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if key == SYNTHETIC:
        return synthetic_dataset(split=split, **synthetic_options)
    if synthetic_options:
        options = ", ".join(sorted(synthetic_options))
        raise ValueError(f"options {options} apply only to the synthetic dataset, not {key}")
    try:
        folder = find_data(key, data_dir, split)
    except FileNotFoundError:
        if not download:
            raise
        folder = download_data(key, data_dir)
    entry = record(key)
    if entry.file_format == "cifar":
        return _load_cifar(entry, folder, split)
    return _load_idx(entry, folder, split)
