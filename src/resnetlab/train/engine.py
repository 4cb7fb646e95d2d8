"""One training epoch and one evaluation pass: short loops over batches."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 on CPU or GPU, fp16 on GPU, or nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    # No cast cache: each weight is cast once per forward anyway, and CUDA graphs require it off.
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)


def cuda_graphed(model: nn.Module, example: torch.Tensor, precision: str = "fp32") -> nn.Module:
    """``model`` with its training-mode forward and backward replayed as CUDA graphs.

    One graph launch replaces hundreds of kernel launches per step, which bound small nets
    on a GPU. Inputs must keep ``example``'s shape; eval mode runs the ordinary forward. The
    capture's warm-up passes (3) update batch-norm running statistics, on ``example``.
    """
    with autocast(example.device, precision):
        return torch.cuda.make_graphed_callables(model, (example,))


def progressive_size(full: int, smallest: int, ramp: Sequence[float], progress: float) -> int:
    """The training side length at ``progress`` (0..1, the fraction of training done) under progressive resizing.

    ``smallest`` until ``ramp[0]``, then growing linearly to ``full`` at ``ramp[1]`` in steps of 2
    pixels (fewer shapes: torch.compile and oneDNN prepare each new one). ``smallest`` 0 (or not
    below ``full``) switches it off.
    """
    if smallest <= 0 or smallest >= full:
        return full
    start, end = ramp
    if progress >= end:
        grown = 1.0
    elif progress <= start:
        grown = 0.0
    else:
        grown = (progress - start) / (end - start)
    return min(full, smallest + 2 * round((full - smallest) * grown / 2))


def resize_batch(x: torch.Tensor, side: int) -> torch.Tensor:
    """``x`` (N x C x H x W) with its height scaled to ``side`` and its width in proportion (antialiased)."""
    height, width = x.shape[2:]
    if side == height:
        return x
    size = (side, max(1, round(width * side / height)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


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


def train_steps(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                optimizer: torch.optim.Optimizer, scheduler: Any, *, device: torch.device,
                precision: str = "fp32", label_smoothing: float = 0.0, clip_grad_norm: float = 0.0,
                scaler: Optional[torch.amp.GradScaler] = None, ema: Optional[nn.Module] = None,
                on_step: Optional[Callable[[EpochStats], bool]] = None, accum_steps: int = 1,
                no_sync: Callable[[], ContextManager] = contextlib.nullcontext,
                sample_losses: Optional[Any] = None) -> EpochStats:
    """Train on ``batches``; ``on_step`` is called after each step and may return True to stop.

    Each batch is one optimizer step, taken in ``accum_steps`` equal micro-batches whose gradients
    add up to those of the whole batch (each loss is scaled by 1 / accum_steps). ``no_sync`` is
    DistributedDataParallel's: it holds back the gradient exchange until the last micro-batch.
    ``sample_losses`` (a DeviceLoader that prunes easy samples) weighs each sample's loss by its
    ``batch_weights()`` and is given the per-sample losses (``record_losses``) after each step.
    """
    model.train()
    stats = EpochStats()
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        weights = sample_losses.batch_weights() if sample_losses is not None else None
        micro_batches = list(zip(x.chunk(accum_steps), y.chunk(accum_steps),
                                 weights.chunk(accum_steps) if weights is not None else [None] * accum_steps))
        loss_sum = torch.zeros((), device=device)
        logits_parts, per_sample_parts = [], []
        for index, (xm, ym, wm) in enumerate(micro_batches):
            with no_sync() if index < len(micro_batches) - 1 else contextlib.nullcontext():
                with autocast(device, precision):
                    logits = model(xm)
                    if wm is None:
                        loss = F.cross_entropy(logits.float(), ym, label_smoothing=label_smoothing)
                    else:
                        per_sample = F.cross_entropy(logits.float(), ym, label_smoothing=label_smoothing,
                                                     reduction="none")
                        per_sample_parts.append(per_sample.detach())
                        loss = (per_sample * wm).mean()
                    loss = loss / len(micro_batches)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            loss_sum += loss.detach()
            logits_parts.append(logits.detach())
        value = float(loss_sum)  # the loss is read back once per step
        if not math.isfinite(value):
            raise TrainingDiverged(f"loss became {value} at lr {scheduler.get_last_lr()[0]:.4g}")
        if scaler is not None:
            scaler.unscale_(optimizer)
        if clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        if sample_losses is not None:
            sample_losses.record_losses(torch.cat(per_sample_parts))
        stats.update(value, torch.cat(logits_parts), y)
        stats.seconds = time.perf_counter() - start
        if on_step is not None and on_step(stats):
            break
    return stats


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
