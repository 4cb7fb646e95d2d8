"""Evaluation: loss, top-1/top-5 and the confusion matrix over batches, and the logits of test-time
augmentation (the mirror and 1-pixel shifts averaged in). Training, inference and the experiments
all evaluate through here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast

__all__ = ["EpochStats", "TEST_SHIFTS", "evaluate", "predict_logits", "shift_image"]


@dataclass
class EpochStats:
    """Running sums over an epoch, turned into means at the end."""

    loss_sum: float = 0.0
    correct1: int = 0
    correct5: int = 0
    samples: int = 0
    seconds: float = 0.0
    confusion: Optional[torch.Tensor] = field(default=None, repr=False)

    def update(self, loss: float, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add a batch (its mean loss and logits); returns its top-1 predictions."""
        n = target.shape[0]
        self.loss_sum += loss * n
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(target[:, None])
        self.correct1 += int(hits[:, 0].sum())
        self.correct5 += int(hits.any(dim=1).sum())
        self.samples += n
        return top[:, 0]

    def result(self, prefix: str) -> Dict[str, float]:
        n = max(1, self.samples)
        return {f"{prefix}_loss": self.loss_sum / n, f"{prefix}_top1": 100.0 * self.correct1 / n,
                f"{prefix}_top5": 100.0 * self.correct5 / n,
                f"{prefix}_images_per_s": self.samples / max(self.seconds, 1e-9)}


# The four 1-pixel shifts (right, left, down, up) that shift_tta averages in, as (dx, dy).
TEST_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def shift_image(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` (N x C x H x W) moved ``dx`` pixels right and ``dy`` down (at most 1 each way), the
    vacated edge filled by repeating the border pixels."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    height, width = x.shape[-2:]
    return padded[..., 1 - dy:1 - dy + height, 1 - dx:1 - dx + width]


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, flip_tta: bool = False, shift_tta: bool = False) -> torch.Tensor:
    """float32 logits of ``x``, averaged over test views: with ``shift_tta`` the image and its four
    1-pixel shifts; with ``flip_tta`` each of those and its horizontal mirror (10 views with both)."""
    views = [x] + ([shift_image(x, dx, dy) for dx, dy in TEST_SHIFTS] if shift_tta else [])
    if flip_tta:
        views += [view.flip(3) for view in views]
    logits = model(views[0]).float()
    for view in views[1:]:
        logits = logits + model(view).float()
    return logits / len(views)


def evaluate(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], *,
             device: torch.device, num_classes: int, precision: str = "fp32",
             flip_tta: bool = False, shift_tta: bool = False) -> EpochStats:
    """Loss, top-1, top-5 and the confusion matrix (rows: true class, columns: predicted).

    The logits are averaged over the test views ``flip_tta`` and ``shift_tta`` ask for (predict_logits).
    """
    model.eval()
    stats = EpochStats(confusion=torch.zeros(num_classes, num_classes, dtype=torch.long))
    start = time.perf_counter()
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = predict_logits(model, x, flip_tta, shift_tta)
        loss = F.cross_entropy(logits, y)
        predicted = stats.update(float(loss), logits, y)  # the same top-1 as the accuracy (ties included)
        pairs = (y * num_classes + predicted).cpu()
        stats.confusion += torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)
    stats.seconds = time.perf_counter() - start
    return stats
