"""The degradation experiment (He et al. 2015, Figure 6): plain vs residual nets of two or more depths.

Every net is trained with the same recipe and the same number of iterations: SGD with
momentum 0.9 and weight decay 1e-4 (the paper's), lr divided by 10 at 50% and 75% of
the iterations (``schedule="multistep"``, or ``"cosine"``, or ``"constant"``), random crop (pad 4 for
32x32 images, 2 for 28x28) and horizontal flip, bf16 autocast and channels_last.

Every ``eval_every`` iterations it records the training error (the mean over the last
``eval_every`` steps, on the augmented training batches in train mode, as the paper
plots it) and the test error (on the first ``test_subset`` test images).

``degradation.csv`` columns: model (zoo name), kind (plain | residual), depth (weighted
layers), seed, iteration (after that many steps), train_error (%), test_error (%).

With ``cuda_graphs`` each training step's forward and backward replay as CUDA graphs:
small nets on a GPU are bound by kernel launches, not arithmetic.

With a time budget instead of an iteration count, every model first takes a few
throwaway training steps and one evaluation pass, timed; the iteration count is then
the largest one for which all runs (all models x seeds, with their evaluations, and
this calibration) fit in 90% of the budget; without ``eval_every``, evaluations
(at most 20) take at most a quarter of it. All runs get the same number of
iterations, so the budget is shared in proportion to each model's cost per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..data import ArrayDataset, DeviceLoader
from ..device import resolve_device
from ..models import build_model
from ..train.engine import EpochStats, TrainingDiverged, cuda_graphed, evaluate, train_steps
from .common import (
    BUDGET_SHARE,
    TIMING_STEPS,
    check_common,
    check_depths,
    crop_pad,
    default_out,
    endless,
    load_data,
    paper_sgd,
    seconds_per_step,
    sync,
    write_csv,
)
from .figures import plot_degradation
from .report import degradation_report, final_errors

__all__ = ["run_degradation", "DegradationResult", "COLUMNS", "DEFAULT_ITERATIONS"]

COLUMNS = ("model", "kind", "depth", "seed", "iteration", "train_error", "test_error")
DEFAULT_ITERATIONS = 1500
DEFAULT_EVAL_POINTS = 20
SCHEDULES = ("multistep", "cosine", "constant")
SHORTCUTS = ("A", "B")
EVAL_SHARE = 0.25  # with a budget, evaluations take at most this fraction of it


@dataclass
class DegradationResult:
    """What run_degradation wrote and found."""

    out_dir: Path
    csv: Path
    png: Path
    report: Path
    data: str
    iterations: int
    statements: List[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass
class _Setup:
    """Everything the runs share."""

    train_set: ArrayDataset
    test_loader: DeviceLoader
    device: torch.device
    batch_size: int
    lr: float
    schedule: str
    shortcut: str
    precision: str
    pad: int
    cuda_graphs: bool = False

    def model(self, kind: str, depth: int) -> Tuple[str, torch.nn.Module]:
        """A fresh plain or residual net (the caller seeds torch first); with ``cuda_graphs`` its training
        forward and backward replay as CUDA graphs."""
        name = f"{'plain' if kind == 'plain' else 'resnet'}{depth}"
        options: Dict[str, Any] = dict(num_classes=self.train_set.num_classes,
                                       in_chans=self.train_set.image_shape[0])
        if kind == "residual":
            options["shortcut"] = self.shortcut
        model = build_model(name, **options).to(self.device, memory_format=torch.channels_last)
        if self.cuda_graphs:
            example = torch.zeros(self.batch_size, *self.train_set.image_shape, device=self.device)
            model = cuda_graphed(model, example.contiguous(memory_format=torch.channels_last), self.precision)
        return name, model

    def loader(self, seed: int) -> DeviceLoader:
        """Shuffled, augmented training batches; the same order for every model of one seed."""
        return DeviceLoader(self.train_set, self.batch_size, train=True, device=self.device, augment="crop-flip",
                            pad=self.pad, seed=seed, channels_last=True)

    def optim(self, model: torch.nn.Module, iterations: int, steps_per_epoch: int) -> Tuple[Any, Any, Any]:
        """The paper's SGD, the schedule, and a grad scaler for fp16."""
        return paper_sgd(model, self.lr, self.schedule, iterations, steps_per_epoch, self.precision)

    def test_error(self, model: torch.nn.Module) -> float:
        """Top-1 error (%) on the fixed test subset; leaves the model in train mode."""
        stats = evaluate(model, self.test_loader, device=self.device, num_classes=self.train_set.num_classes,
                         precision=self.precision)
        model.train()
        return 100.0 * (1.0 - stats.correct1 / max(1, stats.samples))


def _train_run(setup: _Setup, kind: str, depth: int, seed: int, iterations: int, eval_every: int,
               quiet: bool) -> List[Dict[str, Any]]:
    """Train one net for ``iterations`` steps; one row per evaluation point."""
    torch.manual_seed(seed)
    name, model = setup.model(kind, depth)
    loader = setup.loader(seed)
    optimizer, scheduler, scaler = setup.optim(model, iterations, len(loader))
    rows: List[Dict[str, Any]] = []
    window = [0, 0]  # correct and seen samples at the previous evaluation point
    done = [0]  # steps taken
    bar = tqdm(total=iterations, desc=f"{name} seed {seed}", unit="it", disable=quiet, leave=False,
               dynamic_ncols=True)

    def on_step(stats: EpochStats) -> bool:
        done[0] += 1
        step = done[0]
        bar.update(1)
        if step % eval_every == 0 or step == iterations:
            correct, seen = stats.correct1 - window[0], stats.samples - window[1]
            window[:] = [stats.correct1, stats.samples]
            rows.append(dict(model=name, kind=kind, depth=depth, seed=seed, iteration=step,
                             train_error=100.0 * (1.0 - correct / max(1, seen)),
                             test_error=setup.test_error(model)))
            bar.set_postfix(train=f"{rows[-1]['train_error']:.1f}%", test=f"{rows[-1]['test_error']:.1f}%",
                            refresh=False)
        return step >= iterations

    try:
        train_steps(model, endless(loader), optimizer, scheduler, device=setup.device, precision=setup.precision,
                    scaler=scaler, on_step=on_step)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{name} seed {seed} at iteration {done[0] + 1}: {error}; try a lower --lr") from None
    finally:
        bar.close()
    return rows


def _calibrate(setup: _Setup, runs: Sequence[Tuple[str, int]]) -> Tuple[float, float]:
    """Seconds per training step and per test evaluation, summed over the models in ``runs``."""
    step_s = eval_s = 0.0
    for kind, depth in runs:
        torch.manual_seed(0)
        _, model = setup.model(kind, depth)
        loader = setup.loader(0)
        optimizer, scheduler, scaler = setup.optim(model, sum(TIMING_STEPS), len(loader))
        step_s += seconds_per_step(model, loader, optimizer, scheduler, setup.device, setup.precision, scaler)
        start = time.perf_counter()
        setup.test_error(model)
        sync(setup.device)
        eval_s += time.perf_counter() - start
    return step_s, eval_s


def _plan_iterations(budget_s: float, spent_s: float, step_s: float, eval_s: float, seeds: int,
                     eval_every: Optional[int]) -> Tuple[int, int]:
    """The largest (iterations, eval_every) for which every run and its evaluations fit in the budget left."""
    left = BUDGET_SHARE * budget_s - spent_s
    if left < seeds * (step_s + eval_s):
        need = seeds * (step_s + eval_s) + spent_s
        raise ValueError(f"budget of {budget_s / 60:.2f} minutes is too small: calibration took {spent_s:.0f} s "
                         f"and one iteration of every run with one evaluation needs about {need:.0f} s in all")
    if eval_every is not None:
        return max(1, int(left / (seeds * (step_s + eval_s / eval_every)))), eval_every
    # up to DEFAULT_EVAL_POINTS evaluations, taking at most EVAL_SHARE of the time left
    points = max(1, min(DEFAULT_EVAL_POINTS, int(EVAL_SHARE * left / (seeds * eval_s))))
    iterations = max(1, int((left - points * seeds * eval_s) / (seeds * step_s)))
    return iterations, max(1, iterations // points)


def run_degradation(depths: Sequence[int] = (20, 56), *, data: str = "auto", data_dir: Optional[str | Path] = None,
                    iterations: Optional[int] = None, budget_minutes: Optional[float] = None, seeds: int = 1,
                    shortcut: str = "A", batch_size: int = 128, lr: float = 0.1, schedule: str = "multistep",
                    eval_every: Optional[int] = None, test_subset: int = 2000, precision: str = "bf16",
                    device: str = "auto", cuda_graphs: bool = False, out: Optional[str | Path] = None,
                    quiet: bool = False) -> DegradationResult:
    """Train plain and residual nets of each depth alike; write degradation.csv/.png and report.md."""
    started = time.perf_counter()
    depth_list = check_depths(depths, minimum=2)
    torch_device = resolve_device(device)
    check_common(batch_size, lr, precision, torch_device)
    if iterations is not None and budget_minutes is not None:
        raise ValueError("give --iterations or --budget-minutes, not both")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise ValueError(f"budget must be a positive number of minutes, got {budget_minutes}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; accepted: A (zero-pad identity), B (projection)")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; accepted: {', '.join(SCHEDULES)}")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if test_subset < 0:
        raise ValueError(f"test_subset must be >= 0 (0: the whole test set), got {test_subset}")
    if cuda_graphs and torch_device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got {torch_device}")

    name, data_note, train_set, test_set = load_data(data, data_dir, batch_size, test_subset)
    setup = _Setup(train_set, DeviceLoader(test_set, 500, train=False, device=torch_device, channels_last=True),
                   torch_device, batch_size, lr, schedule, shortcut, precision, crop_pad(train_set), cuda_graphs)
    runs = [(kind, depth) for depth in depth_list for kind in ("plain", "residual")]

    plan_note = f"{iterations} iterations (asked for)" if iterations else f"{DEFAULT_ITERATIONS} iterations (default)"
    if budget_minutes is not None:
        calibration_start = time.perf_counter()
        step_s, eval_s = _calibrate(setup, runs)
        spent = time.perf_counter() - started
        iterations, eval_every = _plan_iterations(60.0 * budget_minutes, spent, step_s, eval_s, seeds, eval_every)
        plan_note = (f"{iterations} iterations, chosen to fit a budget of {budget_minutes:g} minutes: "
                     f"one step of every model took {step_s:.3f} s and one evaluation of every model "
                     f"{eval_s:.2f} s (measured in {time.perf_counter() - calibration_start:.0f} s of throwaway "
                     f"steps); {100 * BUDGET_SHARE:.0f}% of the budget was planned for")
    iterations = iterations or DEFAULT_ITERATIONS
    eval_every = min(eval_every or max(1, iterations // DEFAULT_EVAL_POINTS), iterations)

    out_dir = Path(out) if out is not None else default_out("degradation")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not quiet:
        tqdm.write(f"data: {data_note}; {len(runs) * seeds} runs of {iterations} iterations, "
                   f"evaluated every {eval_every}; outputs in {out_dir}")
    rows: List[Dict[str, Any]] = []
    for seed in range(seeds):
        for kind, depth in runs:
            rows += _train_run(setup, kind, depth, seed, iterations, eval_every, quiet)
            write_csv(out_dir / "degradation.csv", COLUMNS, rows)  # partial results survive an interrupt
            if not quiet:
                last = rows[-1]
                tqdm.write(f"{last['model']:>10} seed {seed}: train error {last['train_error']:.2f}%  "
                           f"test error {last['test_error']:.2f}%")

    wall_s = time.perf_counter() - started
    settings = dict(data=data_note, iterations=iterations, plan=plan_note, eval_every=eval_every,
                    batch_size=batch_size, lr=lr, schedule=schedule, seeds=seeds, shortcut=shortcut,
                    precision=precision, pad=setup.pad, train_images=len(train_set), test_images=len(test_set),
                    device=torch_device, cuda_graphs=cuda_graphs, wall_s=wall_s)
    params: Dict[str, int] = {}
    for kind, depth in runs:
        model_name, model = setup.model(kind, depth)
        params[model_name] = sum(p.numel() for p in model.parameters())
    title = (f"{name}: {iterations} iterations, batch {batch_size}, "
             f"{seeds} seed{'s' if seeds > 1 else ''}, shortcut {shortcut}")
    csv_path = write_csv(out_dir / "degradation.csv", COLUMNS, rows)
    png_path = plot_degradation(rows, out_dir / "degradation.png", title=title)
    report_path, statements = degradation_report(final_errors(rows), params, settings, out_dir / "report.md")
    return DegradationResult(out_dir, csv_path, png_path, report_path, name, iterations, statements, wall_s)
