"""Image folders decoded once into memory: every image read, resized to one size and kept as one uint8
tensor, cached on disk, and then trained exactly like the built-in datasets (on-device batches).

The cache is keyed by the folder's file list, sizes and modification times, the image size and
this format's version: a changed, added or removed file makes a new key, so the folder is decoded
again. Cache files live in ``$RESNETLAB_CACHE`` (default ``~/.cache/resnetlab/folders``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import one_line
from ..fileio import atomic_write
from .base import ArrayDataset
from .folders import image_folder, read_rgb

__all__ = ["CACHE_ENV", "cache_dir", "channel_stats", "decode_files", "decode_image_file", "default_budget",
           "folder_key", "folder_splits", "load_folder_in_memory"]

CACHE_ENV = "RESNETLAB_CACHE"
FORMAT_VERSION = 1
BUDGET_FRACTION = 0.25  # of the machine's memory, for decoded images held in memory


def cache_dir() -> Path:
    """Where decoded folders are cached: ``$RESNETLAB_CACHE``, else ``~/.cache/resnetlab/folders``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "resnetlab" / "folders"


def default_budget() -> int:
    """Bytes of decoded images an image folder may take in memory: a quarter of the machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        total = 8 << 30
    return int(total * BUDGET_FRACTION)


def decode_image_file(path: str, size: int) -> torch.Tensor:
    """An image file as a uint8 3 x size x size tensor: the shorter side resized to ``size``
    (antialiased), then the center cropped square.

    torchvision.io decodes JPEG and PNG (libjpeg-turbo, libpng); other formats, and files it
    refuses, go through PIL, and a file neither can read is a one-line ValueError naming it.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms.v2 import functional as TF

    try:
        with warnings.catch_warnings():  # torchvision 0.29 announces the move of its decoders to TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(read_file(path), mode=ImageReadMode.RGB)
        if image.dtype != torch.uint8:  # 16-bit PNG
            raise ValueError(f"{image.dtype} pixels")
    except Exception:  # an unsupported format or a file it cannot read: PIL tries, and names the file
        image = TF.pil_to_tensor(read_rgb(path))
    if image.shape[1:] != (size, size):
        image = TF.resize(image, size, antialias=True)
        image = TF.center_crop(image, [size, size])
    return image


class _Files(Dataset):
    """The decoded images of ``paths``, one per item (read in DataLoader workers)."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_image_file(self.paths[index], self.size)


def decode_files(paths: Sequence[str], size: int, workers: int = 2, quiet: bool = False,
                 description: str = "decoding") -> torch.Tensor:
    """The images at ``paths`` decoded into one uint8 N x 3 x size x size tensor, on ``workers`` processes."""
    images = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    # Its own generator: a run's weights must not depend on whether its folder was decoded or read from the cache.
    loader = DataLoader(_Files(paths, size), batch_size=256, num_workers=workers, collate_fn=torch.stack,
                        generator=torch.Generator())
    done = 0
    with tqdm(total=len(paths), desc=description, unit="img", disable=quiet, leave=False,
              dynamic_ncols=True) as bar:
        for batch in loader:
            images[done:done + len(batch)] = batch
            done += len(batch)
            bar.update(len(batch))
    return images


def folder_key(root: Path, samples: Sequence[Tuple[str, int]], classes: Sequence[str], size: int) -> str:
    """A digest of what the decoded folder depends on: each file's path, label, size and modification time."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, size, list(classes)]).encode())
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def channel_stats(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (in chunks, in float64); std >= 1/255."""
    count = images.shape[0] * images.shape[2] * images.shape[3]
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        values = chunk.double().div_(255.0)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    mean = total / count
    # At least one grey level: a channel that never varies (a grey or single-colour folder) must not divide by 0.
    std = (squares / count - mean.square()).clamp(min=0).sqrt().clamp(min=1 / 255)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def _read_cache(path: Path, name: str) -> Optional[ArrayDataset]:
    """The dataset a cache file holds, or None when it cannot be read (it is then rebuilt)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            meta = file.metadata() or {}
            images, labels = file.get_tensor("images"), file.get_tensor("labels")
        info = json.loads(meta["resnetlab"])
        return ArrayDataset(images, labels, list(info["classes"]), tuple(info["mean"]), tuple(info["std"]), name)
    except Exception:  # a truncated or foreign file: decoding again is always correct
        return None


def load_folder_in_memory(root: str | Path, size: int, budget: Optional[int] = None, workers: int = 2,
                          quiet: bool = False, use_cache: bool = True) -> Tuple[Optional[ArrayDataset], str]:
    """The image folder ``root`` (``root/CLASS/IMAGE``) as an in-memory dataset of ``size`` x ``size``
    images, and a line saying which path was taken.

    Returns ``(None, why)`` when the decoded images would take more than ``budget`` bytes
    (default: ``default_budget()``): such a folder streams from disk. With ``use_cache`` the
    decoded images are read from, or written to, the cache (see the module's docstring).
    """
    root = Path(root).expanduser()
    budget = default_budget() if budget is None else budget
    folder = image_folder(root)
    samples: List[Tuple[str, int]] = list(folder.samples)
    needed = len(samples) * 3 * size * size
    if needed > budget:
        return None, (f"{root}: {len(samples)} images at {size}x{size} take {_size(needed)} decoded, over the "
                      f"in-memory budget of {_size(budget)}: streaming from disk")
    name = root.resolve().name or "folder"
    path = cache_dir() / f"{name}-{folder_key(root, samples, folder.classes, size)}.safetensors"
    if use_cache and path.is_file():
        cached = _read_cache(path, name)
        if cached is not None and len(cached) == len(samples):
            return cached, f"{root}: {len(cached)} images read from the decoded cache {path}"
    images = decode_files([p for p, _ in samples], size, workers, quiet, description=f"decoding {name}")
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    mean, std = channel_stats(images)
    dataset = ArrayDataset(images, labels, list(folder.classes), mean, std, name)
    if not use_cache:
        return dataset, f"{root}: {len(dataset)} images decoded into memory (cache off)"
    info = json.dumps(dict(classes=dataset.classes, mean=mean, std=std, root=str(root.resolve()), size=size))
    try:
        atomic_write(path, lambda tmp: save_file({"images": images, "labels": labels}, str(tmp),
                                                 metadata={"resnetlab": info}))
        where = f"cached in {path}"
    except OSError as error:  # a read-only or full cache folder costs the next run a decode, nothing more
        where = f"not cached ({one_line(error, 120)})"
    return dataset, f"{root}: {len(dataset)} images decoded into memory, {where}"



def folder_splits(path: str | Path, size: int, val_split: float = 0.0, seed: int = 0,
                  **load: Any) -> Tuple[Optional[Tuple[ArrayDataset, ArrayDataset, str]], str]:
    """((train, evaluation, split name), note) of an image folder held in memory, or (None, why not).

    A folder with train/ and val/ (or test/) evaluates on those unless ``val_split`` is given;
    another is split by ``val_split`` (0.1 when 0), stratified and seeded. Both parts come in a
    seeded random order: a folder lists its images class by class, and the first N of a part
    must not be its first classes. ``load`` goes to load_folder_in_memory.
    """
    path = Path(path).expanduser()
    held_out = next((path / name for name in ("val", "test") if (path / name).is_dir()), None)
    if (path / "train").is_dir() and held_out is not None and not val_split:
        train_set, note = load_folder_in_memory(path / "train", size, **load)
        eval_set, _ = load_folder_in_memory(held_out, size, **load) if train_set is not None else (None, "")
        if eval_set is None:
            return None, note
        if eval_set.classes != train_set.classes:
            raise ValueError(f"{path}: the class folders of train/ and {held_out.name}/ differ "
                             f"({len(train_set.classes)} vs {len(eval_set.classes)} classes)")
        eval_set = ArrayDataset(eval_set.images, eval_set.labels, train_set.classes, train_set.mean, train_set.std,
                                eval_set.name)
        return (_shuffled(train_set, seed), _shuffled(eval_set, seed), held_out.name), note
    everything, note = load_folder_in_memory(path / "train" if (path / "train").is_dir() else path, size, **load)
    if everything is None:
        return None, note
    train_set, eval_set = everything.split(val_split or 0.1, seed=seed)
    return (_shuffled(train_set, seed), _shuffled(eval_set, seed), "val"), note


def _shuffled(dataset: ArrayDataset, seed: int) -> ArrayDataset:
    return dataset.subset(torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)))
