"""The learning-rate range test (Smith 2017): train briefly while the lr grows exponentially, record the loss.

The loss falls fastest somewhere below the lr at which training diverges; that lr is a good
maximum for one-cycle or cosine schedules. Nothing of the test is kept: the model is built and
thrown away, like a run that writes no folder.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch

from ..analysis.plots import pyplot, save_figure
from ..device import resolve_device
from ..errors import TrainingDiverged
from .config import TrainConfig, validate
from .data import prepare_data, set_epoch
from .engine import resize_batch, train_steps
from .finetune import start_model
from .optim import build_optimizer

__all__ = ["LrFindResult", "lr_find", "plot_lr_find", "suggest_lr"]


@dataclass
class LrFindResult:
    """The lr of each step, its loss (raw and smoothed), and the suggested lr."""

    lrs: List[float]
    losses: List[float]
    smoothed: List[float]
    suggestion: Optional[float]  # steepest descent of the smoothed loss before its minimum
    minimum: Optional[float]  # the lr at the smoothed loss's minimum
    stopped: str  # why the test ended: "steps" or "diverged"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def suggest_lr(lrs: List[float], smoothed: List[float], skip_start: int = 5) -> tuple:
    """(steepest, minimum): the lr where the smoothed loss falls fastest (per log-lr) before its minimum,
    and the lr of that minimum; None where the curve is too short to say."""
    if len(lrs) < skip_start + 3:
        return None, None
    lowest = min(range(skip_start, len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
              for i in range(skip_start, lowest)]
    if not slopes:
        return None, lrs[lowest]
    steepest = skip_start + min(range(len(slopes)), key=slopes.__getitem__)
    return lrs[steepest], lrs[lowest]


def lr_find(config: TrainConfig, start_lr: float = 1e-5, end_lr: float = 10.0, steps: int = 100,
            smoothing: float = 0.9, diverge_factor: float = 4.0) -> LrFindResult:
    """Run the range test on ``config``'s model and data: ``steps`` steps from ``start_lr`` to ``end_lr``.

    Each optimizer group keeps its share of the lr (``backbone_lr_mult``); fine-tuning starts from
    ``config.weights`` with every layer training. The test stops early when the smoothed loss
    exceeds ``diverge_factor`` times its lowest value or becomes NaN.
    """
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ValueError(f"lr-find needs 0 < start_lr < end_lr, got {start_lr:g} and {end_lr:g}")
    if steps < 10:
        raise ValueError(f"lr-find needs at least 10 steps, got {steps}")
    validate(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    data = prepare_data(config, device)
    model, _, _ = start_model(config, data.classes, data.in_chans)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    growth = (end_lr / start_lr) ** (1 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: start_lr / config.lr * growth ** min(step, steps - 1))

    lrs: List[float] = []
    losses: List[float] = []
    smoothed: List[float] = []
    average, seen = 0.0, 0.0

    def on_step(stats: Any) -> bool:
        nonlocal average, seen
        loss = (stats.loss_sum - seen) / config.batch_size  # this step's mean loss
        seen = stats.loss_sum
        lrs.append(start_lr * growth ** len(losses))
        losses.append(loss)
        average = smoothing * average + (1 - smoothing) * loss
        smoothed.append(average / (1 - smoothing ** len(losses)))  # bias-corrected, as in Adam
        return len(losses) >= steps or smoothed[-1] > diverge_factor * min(smoothed)

    def batches():
        for epoch in itertools.count():
            set_epoch(data.train, epoch)
            for x, y in data.train:
                x = resize_batch(x.to(device), data.input_size[0])
                yield x.contiguous(memory_format=torch.channels_last if config.channels_last
                                   else torch.contiguous_format), y.to(device)

    try:
        train_steps(model, itertools.islice(batches(), steps), optimizer, scheduler, device=device,
                    precision=config.precision, label_smoothing=config.label_smoothing,
                    clip_grad_norm=config.clip_grad_norm, on_step=on_step)
        stopped = "diverged" if smoothed[-1] > diverge_factor * min(smoothed) else "steps"
    except TrainingDiverged:  # the loss became NaN or infinite
        stopped = "diverged"
    suggestion, minimum = suggest_lr(lrs, smoothed)
    return LrFindResult(lrs, losses, smoothed, suggestion, minimum, stopped)


def plot_lr_find(result: LrFindResult, path: Union[str, Path], title: str = "") -> Path:
    """The loss (raw and smoothed) against the lr on a log axis, the suggestion marked; a PNG."""
    from matplotlib.ticker import FuncFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss of each step")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2, label="smoothed")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="tab:red", linestyle="--",
                   label=f"suggested lr {result.suggestion:.3g} (steepest descent)")
    if result.minimum is not None:
        ax.axvline(result.minimum, color="0.4", linestyle=":", label=f"lowest loss at lr {result.minimum:.3g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # one label a decade: 1e-05 .. 10
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the divergence at the end would squash the curve
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title or "learning-rate range test")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)
