"""The data of a training run: this rank's training and evaluation loaders and what the model and
checkpoints need to know about them (classes, channels, input size, normalization)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..data import ArrayDataset, DatasetSource, DeviceLoader, ImageFolderData, load_dataset, resolve_source
from ..data.folder_cache import folder_splits
from .config import TrainConfig
from .distributed import ALONE, Ranks, from_main
from .finetune import normalization_for, weights_inputs

__all__ = ["DataBundle", "no_full_batch", "prepare_data", "set_epoch"]

DEFAULT_IMAGE_SIZE = 224  # image folders, unless fine-tuning weights say otherwise


@dataclass
class DataBundle:
    """Loaders and what the model and checkpoints need to know about the data."""

    train: Any
    test: Any
    classes: List[str]
    in_chans: int
    input_size: Tuple[int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    eval_split: str
    note: str = ""  # which path the data took (an image folder in memory, from the cache, or streamed)
    crop_fraction: Optional[float] = 0.875  # how predict prepares images: see data.inputs.ImagePreprocess


def prepare_data(config: TrainConfig, device: torch.device, ranks: Ranks = ALONE) -> DataBundle:
    """Training and evaluation loaders for a named small dataset or an image folder: this rank's share.

    Small datasets, and image folders whose decoded images fit the in-memory budget, are held as
    uint8 tensors and batched on the device (DeviceLoader); larger folders stream from disk through
    DataLoader workers, and options only the in-memory path has are refused there. Fine-tuning
    (``config.weights``) normalizes as the weights were trained, at their input size unless
    ``image_size`` says otherwise.
    """
    source = resolve_source(config.data, config.data_dir, kinds=("dataset", "folder"))
    inputs = weights_inputs(config)
    if not config.image_size:
        config = replace(config, image_size=int((inputs or {}).get("input_size", [DEFAULT_IMAGE_SIZE])[0]))
    note = ""
    if isinstance(source, DatasetSource):
        train_set = load_dataset(source.name, "train", config.data_dir, config.download)
        if config.val_split > 0:
            train_set, eval_set = train_set.split(config.val_split, seed=config.seed)
            split = "val"
        else:
            eval_set, split = load_dataset(source.name, "test", config.data_dir, config.download), "test"
    else:
        # Rank 0 decodes the folder and caches it; then the other ranks read the cache.
        sets, note = _folder_in_memory(source.path, config, main=True) if ranks.main else (None, "")
        in_memory, note = from_main(ranks, (sets is not None, note))
        if not in_memory:
            return _streamed_folder(source.path, config, ranks, note, normalization_for(inputs, 3))
        if not ranks.main:
            sets, _ = _folder_in_memory(source.path, config, main=False)
        train_set, eval_set, split = sets
    train_set = _normalized(_head(train_set, config.train_subset), inputs)
    eval_set = _normalized(_head(eval_set, config.test_subset), inputs)
    batch = config.batch_size // ranks.world_size  # this rank's share of the global batch
    if len(train_set) // ranks.world_size < batch:
        raise no_full_batch(config.batch_size)
    shard = dict(rank=ranks.rank, world_size=ranks.world_size)
    train = DeviceLoader(train_set, batch, train=True, device=device, augment=config.augment,
                         pad=config.pad, erase=config.erase, seed=config.seed, channels_last=config.channels_last,
                         **shard)
    test = DeviceLoader(eval_set, max(batch, 256), train=False, device=device,
                        channels_last=config.channels_last, **shard)
    c, h, w = train_set.image_shape
    return DataBundle(train, test, list(train_set.classes), c, (h, w), train_set.mean, train_set.std, split, note,
                      crop_fraction=None if isinstance(source, DatasetSource) else 1.0)


def no_full_batch(batch_size: int) -> ValueError:
    """The error for a training set too small for one batch of ``batch_size`` (per process)."""
    return ValueError(f"batch_size {batch_size} is larger than the training set (per process): not one full batch "
                      "per epoch; pass a smaller --batch-size")


def _folder_in_memory(path: Path, config: TrainConfig, main: bool) -> Tuple[Optional[tuple], str]:
    """((train, eval, split name), note) of an image folder decoded into memory, or (None, why not);
    only ``main`` may write the cache and show progress."""
    if not config.cache:
        return None, f"{path}: --no-cache: streaming from disk"
    budget = int(config.cache_budget_gb * 2**30) if config.cache_budget_gb > 0 else None
    return folder_splits(path, config.image_size, config.val_split, config.seed, budget=budget,
                         workers=config.workers, quiet=config.quiet or not main)


# What only the in-memory path does, with the default that means "not asked for".
# augment is honoured on streamed folders too (data/folders.py train_transform); their crop is RandomResizedCrop,
# which has no padding, and the note printed says so.
IN_MEMORY_ONLY = ("train_subset", "test_subset", "progressive_min_size", "prune_easy")


def _streamed_folder(path: Path, config: TrainConfig, ranks: Ranks, note: str,
                     normalization: Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]) -> DataBundle:
    """An image folder read from disk by DataLoader workers (for training: RandomResizedCrop and flip with
    augment crop-flip, flip alone or nothing after a center crop with flip or none)."""
    defaults = TrainConfig()
    asked = [name for name in IN_MEMORY_ONLY if getattr(config, name) != getattr(defaults, name)]
    if asked:
        raise ValueError(f"{', '.join(asked)}: only for data held in memory, and {note}; "
                         "raise --cache-budget-gb (GiB) or leave them out")
    if config.val_split >= 1:
        raise ValueError(f"val_split {config.val_split:g} (a count) needs the folder held in memory, and {note}; "
                         "give a fraction in (0, 1)")
    data = ImageFolderData(path, image_size=config.image_size, val_fraction=config.val_split or 0.1,
                           seed=config.seed, erase=config.erase, augment=config.augment,
                           **dict(zip(("mean", "std"), normalization or ())))
    # Every header is read before the first step, not when a corrupt file is first sampled (rank 0 reads, all stop).
    problem = from_main(ranks, data.first_unreadable(config.workers, config.quiet) if ranks.main else None)
    if problem:
        raise ValueError(problem)
    batch = config.batch_size // ranks.world_size
    shard = dict(rank=ranks.rank, world_size=ranks.world_size)
    train = data.train_loader(batch, workers=config.workers, seed=config.seed, **shard)
    test = data.val_loader(max(batch, 64), workers=config.workers, **shard)
    size = (config.image_size, config.image_size)
    if config.augment == "crop-flip":
        note += "; crops: RandomResizedCrop (--pad applies only to data held in memory)"
    return DataBundle(train, test, list(data.classes), 3, size, data.mean, data.std, "val", note)


def set_epoch(loader: Any, epoch: int) -> None:
    """Select the epoch's shuffle for a DeviceLoader or a DataLoader with a DistributedSampler."""
    target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def _normalized(dataset: ArrayDataset, inputs: Optional[Dict[str, Any]]) -> ArrayDataset:
    """``dataset`` normalized with the start weights' statistics when fine-tuning, else as it is."""
    normalization = normalization_for(inputs, dataset.image_shape[0])
    return dataset if normalization is None else dataset.normalized_as(*normalization)


def _head(dataset: ArrayDataset, count: int) -> ArrayDataset:
    return dataset.subset(range(min(count, len(dataset)))) if count else dataset
