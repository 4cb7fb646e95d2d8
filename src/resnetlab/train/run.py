"""A training run: data, model, optimizer, the epoch loop, checkpoints, metrics and plots."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..device import resolve_device
from ..errors import TrainingDiverged
from ..evaluation import EpochStats, evaluate
from ..fileio import atomic_write_text
from ..weights import all_finite, save_weights
from .checkpoint import (
    STATE_SUFFIX,
    check_state_belongs,
    has_checkpoint,
    latest_state,
    load_state,
    restore_training_state,
    save_state,
    training_state,
    weights_preprocessing,
)
from .config import TrainConfig, apply_overrides, load_toml, to_toml, validate
from .data import no_full_batch, prepare_data, set_epoch
from .distributed import (
    ALONE,
    Ranks,
    copy_buffers_from_main,
    from_main,
    merge_sample_losses,
    process_group,
    rank_device,
    sum_stats,
)
from .engine import cuda_graphed, progressive_size, resize_batch, train_steps
from .finetune import BackboneFreezer, start_model
from .optim import build_optimizer, build_scheduler
from .outputs import (
    lock_run,
    new_run_dir,
    open_tensorboard,
    refuse_if_running,
    run_id,
    unlock_run,
    write_final_outputs,
    write_metrics,
)


class Trainer:
    """Owns one run: build everything, loop over epochs, write outputs. ``run()`` does it all.

    Under torchrun (``ranks`` from ``process_group``) every rank trains its share of each global
    batch in DistributedDataParallel, metrics are summed over the ranks, and only rank 0 writes
    the run folder and prints.
    """

    def __init__(self, config: TrainConfig, resume: Optional[Path] = None, ranks: Ranks = ALONE) -> None:
        validate(config)
        self.config = config
        self.ranks = ranks
        share = ranks.world_size * config.accum_steps
        if config.batch_size % share:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of processes x accum_steps = "
                             f"{ranks.world_size} x {config.accum_steps} = {share}")
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (CUDA >= 10.2)
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(config.seed)
        self.device = rank_device(resolve_device(config.device), ranks)
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
        if config.sync_bn and ranks.distributed and self.device.type != "cuda":
            raise ValueError("sync_bn needs CUDA devices: torch's SyncBatchNorm does not run on the CPU")
        if config.cuda_graphs:
            check_cuda_graphs(config, self.device, ranks)
        if config.freeze_epochs and ranks.distributed:  # DDP fixes the parameters it reduces when it is built
            raise ValueError("freeze_epochs cannot be combined with torchrun processes; fine-tune in one process")
        # Everything that can fail on bad input happens before the run folder exists.
        self.run_id = ""  # a new run's is made with its folder
        if resume is not None:  # the state must be this run's before anything is built for it
            self.run_id = run_id(resume)
            state_path = latest_state(resume)
            state = load_state(state_path)
            check_state_belongs(state, state_path, config, self.run_id)
        self.data = prepare_data(config, self.device, ranks)
        if self.data.note and not config.quiet:
            self._print(self.data.note)
        height = self.data.input_size[0]
        if config.progressive_min_size >= height:
            raise ValueError(f"progressive_min_size {config.progressive_min_size} must be below the training "
                             f"image height {height} (or 0 for no progressive resizing)")
        self.model, self.model_options, start = start_model(config, self.data.classes, self.data.in_chans)
        if start and not config.quiet and resume is None:
            self._print(start)
        if config.sync_bn and ranks.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.set_grad_checkpointing(config.checkpoint_activations)
        self.model = self.model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps_per_epoch = len(self.data.train)
        if self.steps_per_epoch == 0:
            raise no_full_batch(config.batch_size)
        self.total_steps = config.iterations or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.optimizer = build_optimizer(self.model, config)
        self.freezer = BackboneFreezer(self.model) if config.freeze_epochs else None
        self.scheduler = build_scheduler(self.optimizer, config, self.total_steps, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self.ema = None
        if config.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay),
                                     use_buffers=True)
        self.epoch = 0  # passes over the training set done (shorter than epochs while easy samples are pruned)
        self.step = 0
        self.epoch_start_step = 0  # the step the current pass began at
        self.train_side = height
        self.elapsed = 0.0  # seconds spent training (evaluation not included)
        self.eval_seconds = 0.0
        self.best_top1 = -1.0
        self.history: List[Dict[str, float]] = []
        self.last_stats: Optional[EpochStats] = None
        self.resumed = resume is not None
        if resume is not None:
            self.run_dir = resume
            if ranks.main:  # before a temporary file or the config of a run still training is touched
                refuse_if_running(resume)
            restore_training_state(self, state, state_path)
            if ranks.main:  # a process killed while writing leaves its temporary file behind
                for orphan in resume.glob(".*.tmp"):
                    orphan.unlink(missing_ok=True)
        else:
            self.run_dir, error = from_main(ranks, new_run_dir(config))
            if error:
                raise ValueError(error)
        if config.cuda_graphs:  # captured on a batch of zeros; the batch-norm statistics are kept as they were
            micro_batch = config.batch_size // config.accum_steps
            example = torch.zeros(micro_batch, self.data.in_chans, *self.data.input_size, device=self.device)
            memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
            self.model = cuda_graphed(self.model, example.contiguous(memory_format=memory_format), config.precision)
        # DistributedDataParallel starts every rank from rank 0's weights and averages gradients in backward.
        self.ddp = None
        if ranks.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        wrapped: nn.Module = self.ddp or self.model
        self.forward_model: nn.Module = torch.compile(wrapped) if config.compile else wrapped
        self.tensorboard = None
        if ranks.main:
            self.tensorboard = open_tensorboard(self.run_dir) if config.tensorboard else None
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.resumed:
                self.run_id = run_id(self.run_dir, create=True)
            atomic_write_text(self.run_dir / "config.toml", to_toml(config))
        self.run_id = from_main(ranks, self.run_id)

    # ---------------------------------------------------------------- the loop

    def run(self) -> Dict[str, Any]:
        """Train until the step budget is spent (or a requested stop); return the final metrics.

        A new run that fails before its first checkpoint leaves no run folder behind. While it trains,
        the run folder is locked against a second process resuming it."""
        if self.ranks.main:
            lock_run(self.run_dir)
        try:
            return self._train()
        except BaseException:
            if self.ranks.main and not self.resumed and not has_checkpoint(self.run_dir):
                if self.tensorboard is not None:
                    self.tensorboard.close()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        finally:
            if self.ranks.main:
                unlock_run(self.run_dir)

    def _train(self) -> Dict[str, Any]:
        while self.step < self.total_steps:
            set_epoch(self.data.train, self.epoch)
            self._plan_pass()
            pass_steps = len(self.data.train)
            start_batch = self._steps_into_epoch()  # > 0 in a resumed epoch
            self._bar = tqdm(total=min(pass_steps, start_batch + self.total_steps - self.step),
                             initial=start_batch, desc=f"epoch {self._epoch_label(self.epoch + 1)}", unit="batch",
                             disable=self.config.quiet or not self.ranks.main, leave=False, dynamic_ncols=True)
            self._epoch_began = time.perf_counter()
            self._stop_requested = False
            try:
                stats = train_steps(self.forward_model, self._batches(), self.optimizer, self.scheduler,
                                    device=self.device, precision=self.config.precision,
                                    label_smoothing=self.config.label_smoothing,
                                    clip_grad_norm=self.config.clip_grad_norm, scaler=self.scaler,
                                    ema=self.ema, on_step=self._on_step, accum_steps=self.config.accum_steps,
                                    no_sync=self.ddp.no_sync if self.ddp else contextlib.nullcontext,
                                    sample_losses=self.data.train if self.config.prune_easy else None)
            except TrainingDiverged as error:
                raise TrainingDiverged(f"training stopped at step {self.step + 1}: {error}; "
                                       f"{self._last_good()}") from None
            finally:
                self._bar.close()
            seconds = time.perf_counter() - self._epoch_began
            epoch_done = self._steps_into_epoch() == pass_steps or self.step >= self.total_steps
            if self._stop_requested and not epoch_done:
                self.save("last", seconds)
            else:  # an epoch ended, stopped there or not: evaluated and checkpointed as usual
                self.elapsed += seconds
                self.epoch += 1
                self.epoch_start_step = self.step
                self._end_epoch(sum_stats(stats, self.ranks, self.device))
            if self._stop_requested and self.step < self.total_steps:
                self._print(f"stopped after step {self.step} as asked; resume with --resume {self.run_dir}")
                return self.summary()
        self._finish()
        return self.summary()

    def _on_step(self, stats: EpochStats) -> bool:
        """After each step: progress bar, mid-epoch checkpoints, and whether to stop the epoch."""
        self.step += 1
        self._bar.update(1)
        self._bar.set_postfix(dict(loss=f"{stats.loss_sum / stats.samples:.3f}",  # a dict keeps this order
                                   acc=f"{100 * stats.correct1 / stats.samples:.1f}",
                                   img_s=f"{stats.samples / max(stats.seconds, 1e-9):.0f}"), refresh=False)
        if self.config.stop_after_steps and self.step >= self.config.stop_after_steps:
            self._stop_requested = True
        elif self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
            self.save("last", time.perf_counter() - self._epoch_began)
        return self._stop_requested or self.step >= self.total_steps

    def _batches(self):
        channels_last = torch.channels_last if self.config.channels_last else torch.contiguous_format
        for x, y in self.data.train:
            x = resize_batch(x.to(self.device, non_blocking=True), self.train_side)
            yield x.contiguous(memory_format=channels_last), y.to(self.device)

    def _plan_pass(self) -> None:
        """What depends on how far training was when the current pass began (the same on resume): the
        training image height (progressive resizing) and whether easy samples are pruned."""
        progress = self.epoch_start_step / self.total_steps
        self.train_side = progressive_size(self.data.input_size[0], self.config.progressive_min_size,
                                           self.config.progressive_ramp, progress)
        if self.config.prune_easy:
            self.data.train.prune_easy = self.config.prune_easy if progress < self.config.prune_until else 0.0
        if self.freezer is not None:
            self.freezer.set(self.epoch_start_step < self.config.freeze_epochs * self.steps_per_epoch)

    def _epoch_label(self, epoch: int) -> str:
        """'3/10'; just '3' while easy samples are pruned, as the number of passes is not known ahead."""
        return str(epoch) if self.config.prune_easy else f"{epoch}/{self.epochs}"

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _print(self, line: str) -> None:
        if self.ranks.main:
            tqdm.write(line)

    def _end_epoch(self, train_stats: EpochStats) -> None:
        row = dict(epoch=self.epoch, step=self.step, lr=self.scheduler.get_last_lr()[0],
                   **train_stats.result("train"))
        if self.config.progressive_min_size:
            row["train_size"] = self.train_side  # the finished epoch's
        if self.config.prune_easy:
            row["train_samples"] = train_stats.samples  # the pass's, after pruning
        evaluated = self.epoch % self.config.eval_every == 0 or self.step >= self.total_steps
        if evaluated:
            copy_buffers_from_main(self._eval_model(), self.ranks)
            test = evaluate(self._eval_model(), self.data.test, device=self.device,
                            num_classes=len(self.data.classes), precision=self.config.precision,
                            flip_tta=self.config.flip_tta, shift_tta=self.config.shift_tta)
            test = sum_stats(test, self.ranks, self.device)
            self.last_stats = test
            self.eval_seconds += test.seconds
            row.update(test.result("test"))
        else:  # the columns stay the same in every row; skipped evaluations are empty
            row.update(dict.fromkeys(EpochStats().result("test")))
        row.update(elapsed_s=self.elapsed, wall_s=self.elapsed + self.eval_seconds)
        self.history.append(row)
        is_best = evaluated and row["test_top1"] > self.best_top1
        if is_best:
            self.best_top1 = row["test_top1"]
        # Best before last: a run killed between the two resumes from the previous epoch's state and
        # writes this best again; the other way round, the resumed state would already count it as written.
        if is_best:
            self.save("best", 0.0, state=False)
        self.save("last", 0.0)
        if not self.ranks.main:
            return
        write_metrics(self.run_dir, self.history, self.config, self.summary())
        if self.tensorboard is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and value is not None:
                    self.tensorboard.add_scalar(key, value, self.step)
            self.tensorboard.flush()
        if not self.config.quiet or self.step >= self.total_steps:
            tested = (f"{self.data.eval_split} loss {row['test_loss']:.4f} acc {row['test_top1']:.2f}% "
                      f"top5 {row['test_top5']:.2f}%  " if evaluated else "")
            size = f"size {row['train_size']}  " if "train_size" in row else ""
            self._print(f"epoch {self._epoch_label(self.epoch):>3}  step {self.step}  {size}"
                        f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2f}%  {tested}"
                        f"{row['train_images_per_s']:.0f} img/s  {self.elapsed:.0f}s")

    def _finish(self) -> None:
        if not self.ranks.main:
            return
        if self.tensorboard is not None:
            self.tensorboard.close()
        confusion = self.last_stats.confusion if self.last_stats is not None else None
        write_final_outputs(self.run_dir, self.history, f"{self.config.model} on {Path(self.config.data).name}",
                            confusion, self.data.classes, self.data.eval_split)

    # ---------------------------------------------------------------- outputs

    def summary(self) -> Dict[str, Any]:
        """Final figures of the run."""
        last = next((row for row in reversed(self.history) if row["test_top1"] is not None), {})
        return dict(run_dir=str(self.run_dir), finished=self.step >= self.total_steps, epochs=self.epoch,
                    steps=self.step,
                    test_top1=last.get("test_top1"), test_top5=last.get("test_top5"),
                    best_test_top1=self.best_top1 if last else None, eval_split=self.data.eval_split,
                    elapsed_s=self.elapsed)

    def save(self, tag: str, partial_seconds: float, state: bool = True) -> None:
        """Write ``<tag>.safetensors`` (weights to ship) and, with ``state``, ``<tag>.state.pt`` (rank 0 only)."""
        # A step can leave NaN weights behind a finite loss (or NaN running statistics, or an EMA that
        # averaged them in); they never overwrite a good checkpoint.
        if not all(all_finite(module) for module in {self.model, self._eval_model()}):
            raise TrainingDiverged(f"training stopped at step {self.step}: the weights became NaN or infinite; "
                                   f"{self._last_good()}")
        if state and self.config.prune_easy:  # the state holds the losses every rank recorded
            merge_sample_losses(self.data.train, self.ranks)
        if not self.ranks.main:
            return
        save_weights(self._eval_model(), self.run_dir / f"{tag}.safetensors", self.config.model,
                     options=self.model_options, class_names=self.data.classes,
                     preprocessing=weights_preprocessing(self.config, self.data))
        if not state:
            return
        save_state(self.run_dir / f"{tag}{STATE_SUFFIX}", training_state(self, partial_seconds))

    def _steps_into_epoch(self) -> int:
        return self.step - self.epoch_start_step

    def _last_good(self) -> str:
        if has_checkpoint(self.run_dir):
            return f"the last good checkpoint is in {self.run_dir}"
        return "no checkpoint had been written yet, so no run folder is kept"


def check_cuda_graphs(config: TrainConfig, device: torch.device, ranks: Ranks) -> None:
    """One-line errors for what CUDA graphs of the training step cannot be combined with."""
    if device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got {device}")
    conflicts = [name for name, asked in (("torchrun processes", ranks.distributed), ("compile", config.compile),
                                          ("progressive_min_size", config.progressive_min_size > 0),
                                          ("checkpoint_activations", config.checkpoint_activations),
                                          ("freeze_epochs", config.freeze_epochs > 0))
                 if asked]
    if conflicts:
        raise ValueError(f"cuda_graphs replays one fixed-shape step and cannot be combined with "
                         f"{', '.join(conflicts)}")


def train(config: TrainConfig) -> Dict[str, Any]:
    """Train as ``config`` says and return the final metrics (under torchrun: one rank's part of the run)."""
    with process_group(resolve_device(config.device), config.dist_timeout) as ranks:
        return Trainer(config, ranks=ranks).run()


def resume(run_dir: str | Path, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Continue the run in ``run_dir`` exactly where its last checkpoint left it."""
    run_dir = Path(run_dir)
    latest_state(run_dir)  # a clear error before anything else
    config = apply_overrides(TrainConfig(), load_toml(run_dir / "config.toml"), str(run_dir / "config.toml"))
    config = dataclasses.replace(config, stop_after_steps=0)  # a stop asked for once is not asked for again
    if overrides:
        config = apply_overrides(config, overrides, "the command line")
    with process_group(resolve_device(config.device), config.dist_timeout) as ranks:
        return Trainer(config, resume=run_dir, ranks=ranks).run()
