"""The in-memory dataset: uint8 images and int64 labels with their classes and statistics."""

from __future__ import annotations

from dataclasses import dataclass, replace
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

    def normalized_as(self, mean: Sequence[float], std: Sequence[float]) -> ArrayDataset:
        """The same images normalized with ``mean`` and ``std`` (say, those weights were trained with)."""
        return replace(self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def subset(self, indices: Indices) -> ArrayDataset:
        """The samples at `indices`, as a new dataset with the same classes and statistics."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ArrayDataset(self.images[index], self.labels[index], list(self.classes),
                            self.mean, self.std, self.name)

    def split(self, fraction_or_count: float | int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """Split into (train, val), stratified and seeded: val gets a fraction (below 1) or a count
        (a whole number) of the samples, each class its share of them (the remainders go to the
        classes with the largest leftover shares, ties drawn with ``seed``)."""
        n = len(self)
        n_val = validation_count(fraction_or_count, n)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=generator)
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        exact = counts.double() * n_val / n
        quota = exact.floor().long()
        tie_break = torch.randperm(len(counts), generator=generator)
        leftover = (exact - quota)[tie_break].sort(descending=True, stable=True).indices
        quota[tie_break[leftover[: n_val - int(quota.sum())]]] += 1
        # Each class's first quota samples in the shuffled order go to validation.
        labels = self.labels[order]
        by_class = labels.sort(stable=True).indices
        starts = counts.cumsum(0) - counts
        rank = torch.empty(n, dtype=torch.long)
        rank[by_class] = torch.arange(n) - starts[labels[by_class]]
        held_out = rank < quota[labels]
        return self.subset(order[~held_out].sort().values), self.subset(order[held_out].sort().values)


def validation_count(fraction_or_count: float | int, total: int) -> int:
    """How many of ``total`` samples a validation split of ``fraction_or_count`` holds out (one-line
    ValueError when it is not a fraction in (0, 1) or a whole count from 1 to total - 1)."""
    value = float(fraction_or_count)
    if 0.0 < value < 1.0:
        count = round(total * value)
    elif value >= 1.0 and value.is_integer():
        count = int(value)
    else:
        raise ValueError(f"validation split {fraction_or_count} is neither a fraction in (0, 1) nor a whole count")
    if not 0 < count < total:
        raise ValueError(f"validation size {fraction_or_count} gives {count} of {total} samples; need 1 to {total - 1}")
    return count
