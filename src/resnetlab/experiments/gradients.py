"""Gradient flow and residual responses of plain vs residual nets, with and without BatchNorm.

For each norm ("batch", "none"), depth and kind (plain, residual) a net is built right
after ``torch.manual_seed(seed)`` and trained with SGD (momentum 0.9, weight decay
1e-4, constant lr) on augmented batches. At each step in ``steps`` (0 = at
initialization) the gradient L2 norm of every conv weight is measured on one fixed
training batch (the first ``batch_size`` training images, not augmented, train-mode
BN, fp32); see ``measure.conv_grad_norms``. After the last step the BN running
statistics are recomputed exactly on the first 1024 training images (after a few
steps the running averages still remember the initial network and can be far off),
then the std of each block's residual response is measured on the first
``response_images`` test images in eval mode (``measure.response_stds``, Figure 7).

``gradients.csv`` columns: model, kind, depth, norm, step, layer_index (1 = first conv
in forward order), layer_name, grad_norm. ``responses.csv`` columns: model, kind,
depth, norm, step, layer_index (1 = first block), layer_name, response_std.
A net whose loss becomes NaN or infinite stops there; the report says at which step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..data import DeviceLoader
from ..models import build_model
from ..train.config import TrainConfig
from ..train.engine import EpochStats, TrainingDiverged, train_steps
from ..train.optim import build_optimizer, build_scheduler
from ..train.run import resolve_device
from .common import (
    check_common,
    check_depths,
    crop_pad,
    default_out,
    endless,
    fixed_batch,
    load_data,
    write_csv,
)
from .figures import plot_gradients, plot_responses
from .measure import conv_grad_norms, recalibrate_norms, response_stds
from .report import gradients_report

__all__ = ["run_gradients", "GradientsResult", "GRADIENT_COLUMNS", "RESPONSE_COLUMNS", "NORMS"]

GRADIENT_COLUMNS = ("model", "kind", "depth", "norm", "step", "layer_index", "layer_name", "grad_norm")
RESPONSE_COLUMNS = ("model", "kind", "depth", "norm", "step", "layer_index", "layer_name", "response_std")
NORMS = ("batch", "none")
CALIBRATION_IMAGES = 1024  # training images whose exact BN statistics replace the running ones before responses


@dataclass
class GradientsResult:
    """What run_gradients wrote and found."""

    out_dir: Path
    gradients_csv: Path
    gradients_png: Path
    responses_csv: Path
    responses_png: Path
    report: Path
    data: str
    statements: List[str] = field(default_factory=list)
    diverged: Dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0


def model_name(kind: str, depth: int) -> str:
    """Zoo name of a CIFAR net: plainD or resnetD."""
    return f"{'plain' if kind == 'plain' else 'resnet'}{depth}"


def _measure_model(kind: str, depth: int, norm: str, steps: Sequence[int], seed: int, loader: DeviceLoader,
                   grad_batch: Tuple[torch.Tensor, torch.Tensor], calibration_images: torch.Tensor,
                   test_images: torch.Tensor, lr: float,
                   precision: str, device: torch.device, num_classes: int,
                   in_chans: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Optional[int]]:
    """Gradient rows at each step, response rows after the last, and the step it diverged at (or None)."""
    name = model_name(kind, depth)
    torch.manual_seed(seed)
    model = build_model(name, num_classes=num_classes, in_chans=in_chans, norm_layer=norm).to(device)
    base = dict(model=name, kind=kind, depth=depth, norm=norm)
    grads: List[Dict[str, Any]] = []

    def record(step: int) -> None:
        for index, (layer, value) in enumerate(conv_grad_norms(model, *grad_batch), start=1):
            grads.append(dict(base, step=step, layer_index=index, layer_name=layer, grad_norm=value))

    last = max(steps)
    if 0 in steps:
        record(0)
    diverged: Optional[int] = None
    if last > 0:
        config = TrainConfig(lr=lr, momentum=0.9, weight_decay=1e-4, decay_norm_and_bias=True, schedule="constant")
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config, last, len(loader))
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        done = [0]

        def on_step(_stats: EpochStats) -> bool:
            done[0] += 1
            if done[0] in steps:
                record(done[0])
            return done[0] >= last

        try:
            train_steps(model, endless(loader), optimizer, scheduler, device=device, precision=precision,
                        scaler=scaler, on_step=on_step)
        except TrainingDiverged:
            diverged = done[0] + 1
    responses: List[Dict[str, Any]] = []
    if diverged is None:
        recalibrate_norms(model, calibration_images, grad_batch[0].shape[0])
        for index, (block, value) in enumerate(response_stds(model, test_images), start=1):
            responses.append(dict(base, step=last, layer_index=index, layer_name=block, response_std=value))
    return grads, responses, diverged


def run_gradients(depths: Sequence[int] = (20, 56), *, norms: Sequence[str] = NORMS, steps: Sequence[int] = (0, 50),
                  data: str = "auto", data_dir: Optional[str | Path] = None, batch_size: int = 128,
                  lr: float = 0.01, precision: str = "fp32", response_images: int = 500, seed: int = 0,
                  device: str = "auto", out: Optional[str | Path] = None, quiet: bool = False) -> GradientsResult:
    """Measure per-layer gradient norms and residual responses; write CSVs, PNGs and report.md."""
    started = time.perf_counter()
    depth_list = check_depths(depths)
    torch_device = resolve_device(device)
    check_common(batch_size, lr, precision, torch_device)
    norm_list = list(dict.fromkeys(norms))
    bad = [n for n in norm_list if n not in NORMS]
    if bad or not norm_list:
        raise ValueError(f"unknown norm {bad[0] if bad else None!r}; accepted: {', '.join(NORMS)}")
    step_list = sorted({int(s) for s in steps})
    if not step_list or step_list[0] < 0:
        raise ValueError(f"steps must be integers >= 0 (0 = at initialization), got {list(steps)}")
    if response_images < 1:
        raise ValueError(f"response_images must be >= 1, got {response_images}")

    name, data_note, train_set, test_set = load_data(data, data_dir, batch_size)
    grad_batch = fixed_batch(train_set, batch_size, torch_device)
    test_images, _ = fixed_batch(test_set, response_images, torch_device)
    calibration_images, _ = fixed_batch(train_set, CALIBRATION_IMAGES, torch_device)
    out_dir = Path(out) if out is not None else default_out("gradients")
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(norm, depth, kind) for norm in norm_list for depth in depth_list for kind in ("plain", "residual")]
    grads: List[Dict[str, Any]] = []
    responses: List[Dict[str, Any]] = []
    diverged: Dict[str, int] = {}
    for norm, depth, kind in tqdm(jobs, desc="models", unit="model", disable=quiet, leave=False, dynamic_ncols=True):
        loader = DeviceLoader(train_set, batch_size, train=True, device=torch_device, augment="crop-flip",
                              pad=crop_pad(train_set), seed=seed)
        g, r, at = _measure_model(kind, depth, norm, step_list, seed, loader, grad_batch, calibration_images,
                                  test_images, lr, precision, torch_device, train_set.num_classes,
                                  train_set.image_shape[0])
        grads += g
        responses += r
        if at is not None:
            diverged[f"{model_name(kind, depth)} (norm {norm})"] = at

    wall_s = time.perf_counter() - started
    settings = dict(data=data_note, steps=", ".join(map(str, step_list)), last_step=step_list[-1], lr=lr,
                    batch_size=batch_size, precision=precision, seed=seed, response_images=len(test_images),
                    device=torch_device, wall_s=wall_s)
    title = f"{name}, batch {batch_size}, lr {lr:g}"
    grad_csv = write_csv(out_dir / "gradients.csv", GRADIENT_COLUMNS, grads)
    resp_csv = write_csv(out_dir / "responses.csv", RESPONSE_COLUMNS, responses)
    grad_png = plot_gradients(grads, out_dir / "gradients.png", title=title)
    resp_png = plot_responses(responses, out_dir / "responses.png", title=f"{title}, after {step_list[-1]} steps")
    report, statements = gradients_report(grads, responses, diverged, settings, out_dir / "report.md")
    return GradientsResult(out_dir, grad_csv, grad_png, resp_csv, resp_png, report, name, statements, diverged,
                           wall_s)
