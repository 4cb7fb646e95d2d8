"""Pieces the experiments share: data choice, validation, batches, CSV, machine description."""

from __future__ import annotations

import csv
import io
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..data import DATASETS, ArrayDataset, DeviceLoader, find_data, load_dataset, resolve_source
from ..data.folder_cache import load_folder_in_memory
from ..fileio import atomic_write_text
from ..models import get_spec
from ..train.config import TrainConfig
from ..train.engine import EpochStats, train_steps
from ..train.optim import build_optimizer, build_scheduler

__all__ = ["choose_data", "load_split", "check_depths", "endless", "fixed_batch", "write_csv",
           "mean_std", "default_out", "crop_pad", "sync", "seconds_per_step", "paper_sgd",
           "BUDGET_SHARE", "TIMING_STEPS"]

SYNTHETIC_SAMPLES = {"train": 2048, "test": 1000}
PRECISIONS = ("fp32", "bf16", "fp16")
FOLDER_SIZE = 32  # image folders are decoded at the CIFAR nets' input size
BUDGET_SHARE = 0.9  # fraction of a time budget planned for; the rest absorbs timing noise
TIMING_STEPS = (2, 3)  # untimed warm-up steps, then timed steps


def choose_data(data: str, data_dir: Optional[str | Path] = None) -> Tuple[str, str]:
    """The dataset to use and a sentence saying why: 'auto' is CIFAR-10 when found, else Fashion-MNIST."""
    if data.strip().lower() != "auto":
        try:
            key = resolve_source(data, data_dir, kinds=("dataset",)).name
        except ValueError:
            raise ValueError(f"unknown dataset {data!r}; accepted: auto, {', '.join(DATASETS)}") from None
        return key, f"{key} (asked for)"
    try:
        folder = find_data("cifar10", data_dir)
    except FileNotFoundError:
        return "fashion-mnist", "fashion-mnist (CIFAR-10 was not found, so the Fashion-MNIST fallback)"
    return "cifar10", f"cifar10 (found in {folder})"


def load_data(data: str, data_dir: Optional[str | Path], batch_size: int,
              test_subset: int = 0) -> Tuple[str, str, ArrayDataset, ArrayDataset]:
    """The chosen dataset's name, why it was chosen, its train split and (first ``test_subset``) test split.

    An image folder (``FOLDER/CLASS/IMAGE``) is decoded at 32 x 32 (the CIFAR nets' input) and a
    stratified tenth of it is held out as the test split (the paper's 45k/5k for CIFAR-10's 50k)."""
    folder = Path(data).expanduser()
    if data.strip().lower() != "auto" and folder.is_dir():
        images, why = load_folder_in_memory(folder, FOLDER_SIZE)
        if images is None:
            raise ValueError(why)
        train_set, test_set = images.split(0.1, seed=0)
        name, note = folder.resolve().name, f"image folder {folder} ({len(train_set)} train, {len(test_set)} held out)"
    else:
        name, note = choose_data(data, data_dir)
        train_set = load_split(name, "train", data_dir)
        test_set = load_split(name, "test", data_dir)
    if test_subset:
        test_set = test_set.subset(range(min(test_subset, len(test_set))))
    if batch_size > len(train_set):
        raise ValueError(f"batch size {batch_size} is larger than the {len(train_set)} training images")
    return name, note, train_set, test_set


def load_split(name: str, split: str, data_dir: Optional[str | Path] = None) -> ArrayDataset:
    """One split of a named dataset in memory; the synthetic one is 32x32 RGB, 10 classes."""
    if name == "synthetic":
        return load_dataset("synthetic", split, num_samples=SYNTHETIC_SAMPLES[split])
    return load_dataset(name, split, data_dir)


def crop_pad(dataset: ArrayDataset) -> int:
    """Padding of the random crop: 4 pixels for 32x32 images (the paper's), 2 for 28x28."""
    return 4 if dataset.image_shape[1] >= 32 else 2


def check_depths(depths: Sequence[int], minimum: int = 1) -> List[int]:
    """Distinct CIFAR depths (6n+2) in increasing order; ValueError names a bad one."""
    if len(depths) == 0:
        raise ValueError("give at least one depth, e.g. --depths 20 56")
    for depth in depths:
        get_spec(f"resnet{int(depth)}")  # raises with the accepted depths
    unique = sorted({int(d) for d in depths})
    if len(unique) < minimum:
        raise ValueError(f"need at least {minimum} different depths, got {list(depths)}")
    return unique


def check_common(batch_size: int, lr: float, precision: str, device: torch.device) -> None:
    """Reject impossible training settings in one line."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")


def endless(loader: DeviceLoader) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``loader`` epoch after epoch, each epoch with its own shuffle."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(model: torch.nn.Module, loader: DeviceLoader, optimizer: Any, scheduler: Any,
                     device: torch.device, precision: str, scaler: Any = None) -> float:
    """Seconds per training step of ``model`` (it is trained): TIMING_STEPS untimed, then timed steps."""
    warm, timed = TIMING_STEPS
    marks: List[float] = []

    def on_step(_stats: EpochStats) -> bool:
        sync(device)
        marks.append(time.perf_counter())
        return len(marks) >= warm + timed

    train_steps(model, endless(loader), optimizer, scheduler, device=device, precision=precision, scaler=scaler,
                on_step=on_step)
    return (marks[-1] - marks[warm - 1]) / timed


def paper_sgd(model: torch.nn.Module, lr: float, schedule: str, steps: int, steps_per_epoch: int,
              precision: str) -> Tuple[Any, Any, Any]:
    """The paper's SGD (momentum 0.9, weight decay 1e-4 on every parameter) with ``schedule``
    (multistep: lr /10 at 50% and 75% of ``steps``), and a grad scaler for fp16."""
    config = TrainConfig(lr=lr, momentum=0.9, weight_decay=1e-4, decay_norm_and_bias=True, schedule=schedule,
                         milestones=[0.5, 0.75], gamma=0.1)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return optimizer, scheduler, scaler


def fixed_batch(dataset: ArrayDataset, count: int, device: torch.device,
                channels_last: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images, normalized, not augmented: the same batch for every model."""
    head = dataset.subset(range(min(count, len(dataset))))
    loader = DeviceLoader(head, len(head), train=False, device=device, channels_last=channels_last)
    return next(iter(loader))


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Dict[str, Any]]) -> Path:
    """Write rows (dicts with exactly ``columns``) as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def default_out(prefix: str) -> Path:
    """runs/<prefix>-<timestamp>."""
    return Path("runs") / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}"
