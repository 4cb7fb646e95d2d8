"""A loader for in-memory datasets that cuts, augments and normalizes whole batches on the device."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .base import ArrayDataset

__all__ = ["DeviceLoader", "augment_batch", "draw_augmentation", "draw_erasing", "erase_batch", "AUGMENTATIONS"]

AUGMENTATIONS = ("crop-flip", "flip", "none")


def mixed_seed(*values: int) -> int:
    """One 32-bit seed from several integers (torch's CPU generator keeps only 32 bits of a seed)."""
    return int(np.random.SeedSequence([v & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(1)[0])


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch); the same on every device and rank."""
    return torch.Generator().manual_seed(mixed_seed(seed, epoch))


def draw_augmentation(n: int, pad: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (n x 2, each in 0..2*pad, as (row, col)) and flip flags (n, bool)."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def augment_batch(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of x (N x C x H x W) at `offsets` of its zero-padded copy and flip where `flips`."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    width = w + 2 * pad
    offsets = offsets.to(x.device)
    flips = flips.to(x.device)
    rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # N x H
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flips[:, None], (w - 1) - cols, cols) + offsets[:, 1:2]  # N x W, flip folded in
    index = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, index).view(n, c, h, w)


def draw_erasing(n: int, height: int, width: int, probability: float,
                 generator: torch.Generator) -> torch.Tensor:
    """Random-erasing boxes (n x 4: top, left, height, width; height 0 where an image is kept).

    As in Zhong et al. 2017 and torchvision's RandomErasing: with ``probability``, a box of
    2%..33% of the image area and aspect ratio 0.3..3.3 (log-uniform), clamped to the image.
    """
    erased = torch.rand(n, generator=generator) < probability
    area = torch.empty(n).uniform_(0.02, 1 / 3, generator=generator) * (height * width)
    ratio = torch.empty(n).uniform_(math.log(0.3), math.log(3.3), generator=generator).exp()
    box_h = (area * ratio).sqrt().round().clamp(1, height).long()
    box_w = (area / ratio).sqrt().round().clamp(1, width).long()
    top = (torch.rand(n, generator=generator) * (height - box_h + 1)).long()
    left = (torch.rand(n, generator=generator) * (width - box_w + 1)).long()
    return torch.stack([top, left, box_h * erased, box_w], dim=1)


def erase_batch(x: torch.Tensor, boxes: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Set each image's box (from draw_erasing) to ``value`` in every channel, in place."""
    boxes = boxes.to(x.device)
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    top, left, box_h, box_w = (boxes[:, i, None] for i in range(4))
    in_rows = (rows >= top) & (rows < top + box_h)  # N x H
    in_cols = (cols >= left) & (cols < left + box_w)  # N x W
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # N x 1 x H x W
    return x.masked_fill_(mask, value)


class DeviceLoader:
    """Batches of an ArrayDataset held on `device`: shuffled, augmented and normalized as tensor ops.

    With ``world_size`` > 1 in training, ``batch_size`` is this rank's share: global batch b is
    samples b*G .. (b+1)*G - 1 of the epoch's order (G = batch_size * world_size) and rank r takes
    its r-th slice of batch_size. So a global batch holds the same samples whatever the number of
    ranks, and a position saved by one number of ranks resumes exactly under another.

    ``erase`` > 0 adds random erasing in training: with that probability an image gets a box set
    to the dataset mean (0 after normalization), after the crop and flip.

    ``prune_easy`` > 0 skips easy samples in training (InfoBatch, Qin et al. 2024): a pass leaves out,
    with that probability, each sample whose last recorded training loss (``record_losses``) is
    below the mean of the known ones, and the easy samples it keeps weigh 1 / (1 - prune_easy) in
    the loss (``batch_weights``), so the pass's gradient keeps its expected sum. Passes get shorter;
    the first, with no loss known yet, keeps every sample. Set it between passes.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        train: bool,
        device: torch.device | str = "cpu",
        augment: str = "crop-flip",
        pad: int = 4,
        erase: float = 0.0,
        seed: int = 0,
        drop_last: Optional[bool] = None,
        channels_last: bool = False,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {augment!r}; choose from {', '.join(AUGMENTATIONS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if not 0 <= erase <= 1:
            raise ValueError(f"erase (a probability) must be in [0, 1], got {erase}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else "none"
        self.pad = pad if self.augment == "crop-flip" else 0
        self.erase = erase if train else 0.0
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.dtype = dtype
        self.rank = rank
        self.world_size = world_size
        channels = self.images.shape[1]
        std = torch.tensor(dataset.std, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        mean = torch.tensor(dataset.mean, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        self.scale = 1.0 / (255.0 * std)  # (x / 255 - mean) / std == x * scale + shift
        self.shift = -mean / std
        self.epoch = 0
        self.batch = 0  # batches of the current epoch already handed out
        self.prune_easy = 0.0
        n = self.images.shape[0]
        self.losses = torch.full((n,), float("nan"), device=self.device)  # last training loss per sample
        self.pass_losses = self.losses.clone()  # the losses the current pass was planned from
        self.recorded = torch.zeros(n, dtype=torch.bool, device=self.device)  # since the last merge_losses
        self.sample_weights = torch.ones(n, device=self.device)
        self._last_index = torch.zeros(0, dtype=torch.long, device=self.device)
        if self.num_samples == 0:
            raise ValueError(f"{dataset.name}: {len(dataset)} samples give no batch of {batch_size} "
                             f"per rank for {world_size} rank(s)")

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (in a pass without pruning)."""
        return len(self._positions(self.images.shape[0]))

    def _positions(self, n: int) -> torch.Tensor:
        """Where this rank's samples stand in the epoch's order of ``n`` (training) or in the dataset (evaluation)."""
        if not self.train:  # every sample once, spread over the ranks
            return torch.arange(self.rank, n, self.world_size)
        global_batch = self.batch_size * self.world_size
        full = n // global_batch
        positions = torch.arange(full * global_batch).view(full, self.world_size, self.batch_size)[:, self.rank]
        positions = positions.flatten()
        if not self.drop_last:  # the last, smaller global batch, in equal slices
            share = (n - full * global_batch) // self.world_size
            positions = torch.cat([positions, full * global_batch + self.rank * share + torch.arange(share)])
        return positions

    def __len__(self) -> int:
        """Batches in the current pass (shorter than a full epoch while easy samples are pruned)."""
        samples = len(self._epoch_plan()[0]) if self.prune_easy > 0 and self.train else self.num_samples
        return self._batches(samples)

    def _batches(self, samples: int) -> int:
        if self.drop_last:
            return samples // self.batch_size
        return math.ceil(samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation is used; the same epoch keeps the resume position."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batch = 0

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batch position and the recorded losses, for exact resume (under any number of ranks
        with the same global batch; under several, after ``merge_losses``)."""
        state = {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "batch_size": self.batch_size,
                 "world_size": self.world_size, "num_samples": self.images.shape[0]}
        if not (self.losses.isnan().all() and self.pass_losses.isnan().all()):  # only runs that prune record any
            state.update(losses=self.losses.cpu(), pass_losses=self.pass_losses.cpu())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the next iteration starts at the saved batch."""
        saved = dict(state, global_batch=state["batch_size"] * state.get("world_size", 1))
        mine = dict(seed=self.seed, global_batch=self.batch_size * self.world_size,
                    num_samples=self.images.shape[0])
        for key, value in mine.items():
            if key in saved and saved[key] != value:
                raise ValueError(f"loader state has {key}={saved[key]}, this loader has {value}")
        self.epoch = int(state["epoch"])
        self.batch = int(state["batch"])
        if "losses" in state:
            self.losses = state["losses"].to(self.device, torch.float32)
            self.pass_losses = state["pass_losses"].to(self.device, torch.float32)
        else:  # a run that never pruned: every loss is still unknown
            self.losses = torch.full_like(self.losses, float("nan"))
            self.pass_losses = torch.full_like(self.pass_losses, float("nan"))

    def batch_weights(self) -> torch.Tensor:
        """The loss weight of each sample of the batch handed out last (1 unless an easy sample was kept)."""
        return self.sample_weights[self._last_index]

    def record_losses(self, losses: torch.Tensor) -> None:
        """Keep the training loss of each sample of the batch handed out last; later passes prune by it."""
        self.losses[self._last_index] = losses.detach().float()
        self.recorded[self._last_index] = True

    def merge_losses(self, all_reduce: Callable[[torch.Tensor], None]) -> None:
        """Give every rank the losses all ranks recorded since the last merge (``all_reduce`` sums in place).

        Each sample is recorded by one rank per pass, so a sum over ranks collects them; every rank must call it.
        """
        recorded = self.recorded.float()
        values = torch.where(self.recorded, self.losses, torch.zeros_like(self.losses))
        all_reduce(recorded)
        all_reduce(values)
        self.losses = torch.where(recorded > 0, values, self.losses)
        self.recorded.zero_()

    def _prune(self, generator: torch.Generator) -> torch.Tensor:
        """Which samples the pass keeps (bool per sample), and their loss weights in ``sample_weights``."""
        losses = self.pass_losses.cpu()
        n = losses.shape[0]
        dropped = torch.rand(n, generator=generator) < self.prune_easy  # drawn even when nothing is known yet
        known = ~losses.isnan()
        easy = losses < losses[known].mean() if known.any() else torch.zeros(n, dtype=torch.bool)
        dropped &= easy
        weights = torch.where(easy & ~dropped, 1.0 / (1.0 - self.prune_easy), 1.0)
        self.sample_weights = weights.to(self.device)
        return ~dropped

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """This rank's sample order and augmentation draws (erasing boxes or None) for the current epoch."""
        n = self.images.shape[0]
        boxes = None
        if self.train:
            generator = epoch_generator(self.seed, self.epoch)
            order = torch.randperm(n, generator=generator)
            offsets, flips = draw_augmentation(n, self.pad, generator)
            if self.erase > 0:  # drawn after the others, so runs without erasing keep their draws
                boxes = draw_erasing(n, self.images.shape[2], self.images.shape[3], self.erase, generator)
            if self.prune_easy > 0:  # drawn last too; a pass not yet begun is planned from the latest losses
                if self.batch == 0:
                    self.pass_losses = self.losses.clone()
                kept = self._prune(generator)[order]  # by position in the order, as the draws are
                order, offsets, flips = order[kept], offsets[kept], flips[kept]
                boxes = None if boxes is None else boxes[kept]
            else:
                self.sample_weights = torch.ones(n, device=self.device)
        else:
            order = torch.arange(n)
            offsets, flips = torch.zeros(n, 2, dtype=torch.long), torch.zeros(n, dtype=torch.bool)
        mine = self._positions(len(order))
        to = self.device
        boxes = None if boxes is None else boxes[mine].to(to)
        return order[mine].to(to), offsets[mine].to(to), flips[mine].to(to), boxes

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, offsets, flips, boxes = self._epoch_plan()
        for b in range(self.batch, self._batches(len(order))):
            part = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index = order[part]
            x = self.images.index_select(0, index)
            self._last_index = index
            if self.augment != "none":
                x = augment_batch(x, offsets[part], flips[part], self.pad)
            x = x.float().mul_(self.scale).add_(self.shift)
            if boxes is not None:
                erase_batch(x, boxes[part])
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.dtype != torch.float32:
                x = x.to(self.dtype)
            self.batch = b + 1
            yield x, self.labels.index_select(0, index)
        self.epoch += 1  # a finished pass moves on; set_epoch(epoch + 1) after it is a no-op
        self.batch = 0
