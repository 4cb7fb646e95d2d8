"""The in-memory dataset: uint8 images and int64 labels with their classes and statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

__all__ = ["ArrayDataset"]

Indices = Union[torch.Tensor, Sequence[int], range]


@dataclass
class ArrayDataset:
    """A small image dataset held in memory as a uint8 N x C x H x W tensor."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"{self.name}: images must be uint8 N x C x H x W, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{self.name}: labels must be int64 of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean/std need {channels} values, got {self.mean} / {self.std}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.images.shape[1:])
        return (f"ArrayDataset(name={self.name!r}, samples={len(self)}, shape={shape}, "
                f"classes={self.num_classes})")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """C, H, W of one image."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    def subset(self, indices: Indices) -> ArrayDataset:
        """The samples at `indices`, as a new dataset with the same classes and statistics."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ArrayDataset(self.images[index], self.labels[index], list(self.classes),
                            self.mean, self.std, self.name)

    def split(self, fraction_or_count: float | int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """Split into (train, val): val gets a fraction (float) or a count (int) of random samples."""
        n = len(self)
        if isinstance(fraction_or_count, float):
            if not 0.0 < fraction_or_count < 1.0:
                raise ValueError(f"validation fraction must be in (0, 1), got {fraction_or_count}")
            n_val = round(n * fraction_or_count)
        else:
            n_val = int(fraction_or_count)
        if not 0 < n_val < n:
            raise ValueError(
                f"validation size {fraction_or_count} gives {n_val} of {n} samples; need 1 to {n - 1}"
            )
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator)
        val_index, train_index = order[:n_val].sort().values, order[n_val:].sort().values
        return self.subset(train_index), self.subset(val_index)
