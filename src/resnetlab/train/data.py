"""The data of a training run: this rank's training and evaluation loaders and what the model and
checkpoints need to know about them (classes, channels, input size, normalization)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Tuple

import torch

from ..data import ArrayDataset, DatasetSource, DeviceLoader, ImageFolderData, load_dataset, resolve_source
from .config import TrainConfig
from .distributed import ALONE, Ranks

__all__ = ["DataBundle", "prepare_data", "set_epoch"]


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


def prepare_data(config: TrainConfig, device: torch.device, ranks: Ranks = ALONE) -> DataBundle:
    """Training and evaluation loaders for a named small dataset or an image folder: this rank's share."""
    channels_last = config.channels_last
    batch = config.batch_size // ranks.world_size  # this rank's share of the global batch
    shard = dict(rank=ranks.rank, world_size=ranks.world_size)
    source = resolve_source(config.data, config.data_dir, kinds=("dataset", "folder"))
    if isinstance(source, DatasetSource):
        train_set = load_dataset(source.name, "train", config.data_dir, config.download)
        if config.val_split > 0:
            train_set, eval_set = train_set.split(config.val_split, seed=config.seed)
            split = "val"
        else:
            eval_set, split = load_dataset(source.name, "test", config.data_dir, config.download), "test"
        train_set = _head(train_set, config.train_subset)
        eval_set = _head(eval_set, config.test_subset)
        train = DeviceLoader(train_set, batch, train=True, device=device, augment=config.augment,
                             pad=config.pad, erase=config.erase, seed=config.seed, channels_last=channels_last,
                             **shard)
        test = DeviceLoader(eval_set, max(batch, 256), train=False, device=device,
                            channels_last=channels_last, **shard)
        c, h, w = train_set.image_shape
        return DataBundle(train, test, list(train_set.classes), c, (h, w), train_set.mean, train_set.std, split)
    data = ImageFolderData(source.path, image_size=config.image_size, val_fraction=config.val_split or 0.1,
                           seed=config.seed, erase=config.erase)
    train = data.train_loader(batch, workers=config.workers, seed=config.seed, **shard)
    test = data.val_loader(max(batch, 64), workers=config.workers, **shard)
    size = (config.image_size, config.image_size)
    return DataBundle(train, test, list(data.classes), 3, size, data.mean, data.std, "val")


def set_epoch(loader: Any, epoch: int) -> None:
    """Select the epoch's shuffle for a DeviceLoader or a DataLoader with a DistributedSampler."""
    target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def _head(dataset: ArrayDataset, count: int) -> ArrayDataset:
    return dataset.subset(range(min(count, len(dataset)))) if count else dataset
