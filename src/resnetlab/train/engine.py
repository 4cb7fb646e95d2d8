"""One training pass over batches (mixed precision, accumulation, pruned samples), progressive resizing."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, ContextManager, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast
from ..errors import TrainingDiverged
from ..evaluation import EpochStats, evaluate, predict_logits  # noqa: F401  (re-exported)


def cuda_graphed(model: nn.Module, example: torch.Tensor, precision: str = "fp32") -> nn.Module:
    """``model`` with its training-mode forward and backward replayed as CUDA graphs.

    One graph launch replaces hundreds of kernel launches per step, which bound small nets
    on a GPU. Inputs must keep ``example``'s shape; eval mode runs the ordinary forward. The
    batch-norm running statistics are restored after the capture's warm-up passes on ``example``.
    """
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    with autocast(example.device, precision):
        graphed = torch.cuda.make_graphed_callables(model, (example,))
    with torch.no_grad():  # the warm-up passes ran on ``example``: the statistics go back to what they were
        for name, buffer in graphed.named_buffers():
            buffer.copy_(buffers[name])
    return graphed


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
