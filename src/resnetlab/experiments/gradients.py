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

With a time budget, every net is first timed on a throwaway copy (a few training steps
at lr 0, one gradient measurement, the response measurement); the last measured step
is then the most training steps for which all nets and their measurements fit in 90%
of the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..data import DeviceLoader
from ..device import resolve_device
from ..models import build_model
from ..train.engine import EpochStats, TrainingDiverged, train_steps
from .common import (
    BUDGET_SHARE,
    TIMING_STEPS,
    check_common,
    check_depths,
    crop_pad,
    default_out,
    endless,
    fixed_batch,
    load_data,
    paper_sgd,
    seconds_per_step,
    sync,
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


def _new_model(kind: str, depth: int, norm: str, seed: int, device: torch.device, num_classes: int,
               in_chans: int) -> torch.nn.Module:
    """The net built right after seeding torch: the same initial weights for every use."""
    torch.manual_seed(seed)
    return build_model(model_name(kind, depth), num_classes=num_classes, in_chans=in_chans, norm_layer=norm).to(device)


def _measure_responses(model: torch.nn.Module, calibration_images: torch.Tensor, batch_size: int,
                       test_images: torch.Tensor) -> List[Tuple[str, float]]:
    """Exact BN statistics on the calibration images, then each block's response std on the test images."""
    recalibrate_norms(model, calibration_images, batch_size)
    return response_stds(model, test_images)


def _measure_model(kind: str, depth: int, norm: str, steps: Sequence[int], seed: int, loader: DeviceLoader,
                   grad_batch: Tuple[torch.Tensor, torch.Tensor], calibration_images: torch.Tensor,
                   test_images: torch.Tensor, lr: float,
                   precision: str, device: torch.device, num_classes: int,
                   in_chans: int) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]], Optional[int]]:
    """Gradient rows at each step, response rows after the last, and the step it diverged at (or None)."""
    name = model_name(kind, depth)
    model = _new_model(kind, depth, norm, seed, device, num_classes, in_chans)
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
        optimizer, scheduler, scaler = paper_sgd(model, lr, "constant", last, len(loader), precision)
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
        stds = _measure_responses(model, calibration_images, grad_batch[0].shape[0], test_images)
        for index, (block, value) in enumerate(stds, start=1):
            responses.append(dict(base, step=last, layer_index=index, layer_name=block, response_std=value))
    return grads, responses, diverged


def _time_model(kind: str, depth: int, norm: str, loader: DeviceLoader, grad_batch: Tuple[torch.Tensor, torch.Tensor],
                calibration_images: torch.Tensor, test_images: torch.Tensor, precision: str, device: torch.device,
                num_classes: int, in_chans: int) -> Tuple[float, float, float]:
    """Seconds of one training step, one gradient measurement and the final response measurement of a
    throwaway net (trained at lr 0, so that timing never diverges)."""
    model = _new_model(kind, depth, norm, 0, device, num_classes, in_chans)
    start = time.perf_counter()
    conv_grad_norms(model, *grad_batch)
    sync(device)
    measure_s = time.perf_counter() - start
    optimizer, scheduler, scaler = paper_sgd(model, 0.0, "constant", sum(TIMING_STEPS), len(loader), precision)
    try:
        step_s = seconds_per_step(model, loader, optimizer, scheduler, device, precision, scaler)
    except TrainingDiverged:  # non-finite already at initialization: the real run stops at its first step
        step_s = 0.0
    start = time.perf_counter()
    _measure_responses(model, calibration_images, grad_batch[0].shape[0], test_images)
    sync(device)
    return step_s, measure_s, time.perf_counter() - start


def _plan_steps(asked: Sequence[int], budget_s: float, spent_s: float, step_s: float, measure_s: float,
                final_s: float) -> List[int]:
    """``asked`` (sorted) with its last step replaced by the most training steps that fit the budget left.

    ``step_s`` is one training step of every model, ``measure_s`` one gradient measurement of every
    model and ``final_s`` the final response measurements. Only the asked-for steps below the
    planned last one are measured, so only those are counted: the fewest kept steps whose plan
    keeps no more of them."""
    for kept in range(len(asked) + 1):
        left = BUDGET_SHARE * budget_s - spent_s - measure_s * (kept + 1) - final_s
        if left < step_s:
            raise ValueError(f"budget of {budget_s / 60:.2f} minutes is too small: timing took {spent_s:.0f} s, the "
                             f"measurements need about {measure_s * (kept + 1) + final_s:.0f} s and one step of "
                             f"every model {step_s:.2f} s")
        last = int(left / step_s) if step_s > 0 else 1
        below = [s for s in asked if s < last]
        if len(below) <= kept:
            return below + [last]
    raise AssertionError("unreachable: keeping every asked-for step is always consistent")


def run_gradients(depths: Sequence[int] = (20, 56), *, norms: Sequence[str] = NORMS, steps: Sequence[int] = (0, 50),
                  data: str = "auto", data_dir: Optional[str | Path] = None, batch_size: int = 128,
                  budget_minutes: Optional[float] = None, lr: float = 0.01, precision: str = "fp32",
                  response_images: int = 500, seed: int = 0, device: str = "auto", out: Optional[str | Path] = None,
                  quiet: bool = False) -> GradientsResult:
    """Measure per-layer gradient norms and residual responses; write CSVs, PNGs and report.md.

    With ``budget_minutes`` the last of ``steps`` becomes the most training steps that fit the budget
    (timed on throwaway nets first); the earlier steps below it are kept."""
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
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"budget must be a positive number of minutes, got {budget_minutes}")
    if response_images < 1:
        raise ValueError(f"response_images must be >= 1, got {response_images}")

    name, data_note, train_set, test_set = load_data(data, data_dir, batch_size)
    grad_batch = fixed_batch(train_set, batch_size, torch_device)
    test_images, _ = fixed_batch(test_set, response_images, torch_device)
    calibration_images, _ = fixed_batch(train_set, CALIBRATION_IMAGES, torch_device)

    jobs = [(norm, depth, kind) for norm in norm_list for depth in depth_list for kind in ("plain", "residual")]
    num_classes, in_chans = train_set.num_classes, train_set.image_shape[0]

    def new_loader() -> DeviceLoader:
        return DeviceLoader(train_set, batch_size, train=True, device=torch_device, augment="crop-flip",
                            pad=crop_pad(train_set), seed=seed)

    plan_note = "asked for"
    if budget_minutes is not None:
        timing_start = time.perf_counter()
        step_s = measure_s = final_s = 0.0
        for norm, depth, kind in jobs:
            one_step, one_measure, final = _time_model(kind, depth, norm, new_loader(), grad_batch,
                                                       calibration_images, test_images, precision, torch_device,
                                                       num_classes, in_chans)
            step_s += one_step
            measure_s += one_measure
            final_s += final
        step_list = _plan_steps(step_list, 60.0 * budget_minutes, time.perf_counter() - started, step_s, measure_s,
                                final_s)
        planned_measure_s = measure_s * len(step_list) + final_s
        plan_note = (f"the last chosen to fit a budget of {budget_minutes:g} minutes: one training step of every "
                     f"model took {step_s:.3f} s and the measurements about {planned_measure_s:.0f} s in all (timed in "
                     f"{time.perf_counter() - timing_start:.0f} s on throwaway nets); {100 * BUDGET_SHARE:.0f}% "
                     "of the budget was planned for")
    grads: List[Dict[str, Any]] = []
    responses: List[Dict[str, Any]] = []
    diverged: Dict[str, int] = {}
    out_dir = Path(out) if out is not None else default_out("gradients")
    out_dir.mkdir(parents=True, exist_ok=True)
    for norm, depth, kind in tqdm(jobs, desc="models", unit="model", disable=quiet, leave=False, dynamic_ncols=True):
        g, r, at = _measure_model(kind, depth, norm, step_list, seed, new_loader(), grad_batch, calibration_images,
                                  test_images, lr, precision, torch_device, num_classes, in_chans)
        grads += g
        responses += r
        if at is not None:
            diverged[f"{model_name(kind, depth)} (norm {norm})"] = at

    wall_s = time.perf_counter() - started
    settings = dict(data=data_note, steps=f"{', '.join(map(str, step_list))} ({plan_note})",
                    last_step=step_list[-1], lr=lr, batch_size=batch_size, precision=precision, seed=seed,
                    response_images=len(test_images), device=torch_device, wall_s=wall_s)
    title = f"{name}, batch {batch_size}, lr {lr:g}"
    grad_csv = write_csv(out_dir / "gradients.csv", GRADIENT_COLUMNS, grads)
    resp_csv = write_csv(out_dir / "responses.csv", RESPONSE_COLUMNS, responses)
    grad_png = plot_gradients(grads, out_dir / "gradients.png", title=title)
    resp_png = plot_responses(responses, out_dir / "responses.png", title=f"{title}, after {step_list[-1]} steps")
    report, statements = gradients_report(grads, responses, diverged, settings, out_dir / "report.md")
    return GradientsResult(out_dir, grad_csv, grad_png, resp_csv, resp_png, report, name, statements, diverged,
                           wall_s)
