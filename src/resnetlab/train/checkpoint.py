"""Training checkpoints: what they contain, how they are written (atomically) and how a run is restored.

``<tag>.state.pt`` holds everything a resume needs (model, optimizer, scheduler, scaler,
EMA, data position, epoch, step, history, RNG states, config) as tensors and plain
data, so it loads with ``torch.load(weights_only=True)``. ``<tag>.safetensors`` holds
the weights to ship, with how to rebuild the model and its class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..errors import load_failure, one_line
from ..fileio import atomic_write

STATE_SUFFIX = ".state.pt"


def rng_state() -> Dict[str, Any]:
    """The torch RNG states (CPU and every CUDA device)."""
    state: Dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Union[str, Path], state: Dict[str, Any]) -> Path:
    """Write a training state atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a training state (tensors and plain data only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable training state: {load_failure(error)}") from None


def latest_state(run_dir: Union[str, Path]) -> Path:
    """The state file to resume a run from."""
    run_dir = Path(run_dir)
    path = run_dir / f"last{STATE_SUFFIX}"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from (expected {path.name})")
    return path


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a training state to resume from."""
    return (Path(run_dir) / f"last{STATE_SUFFIX}").exists()


def weights_preprocessing(config: Any, data: Any) -> Dict[str, Any]:
    """What the shipped weights record about their inputs (a TrainConfig's and a DataBundle's)."""
    preprocessing = dict(mean=list(data.mean), std=list(data.std), input_size=list(data.input_size),
                         dataset=config.data,
                         flip_tta=config.flip_tta,  # eval and predict average the views training did
                         shift_tta=config.shift_tta,
                         val_split=config.val_split, split_seed=config.seed)  # eval --split val holds out the same
    if data.crop_fraction is not None:  # images are resized by their shorter side, then center-cropped
        preprocessing["crop_fraction"] = data.crop_fraction
    return preprocessing


def training_state(trainer: Any, partial_seconds: float) -> Dict[str, Any]:
    """Everything a resume of ``trainer`` (a Trainer) needs, ``partial_seconds`` into its current epoch."""
    loader = trainer.data.train
    return dict(
        model=trainer.model.state_dict(), optimizer=trainer.optimizer.state_dict(),
        scheduler=trainer.scheduler.state_dict(),
        scaler=trainer.scaler.state_dict() if trainer.scaler else None,
        ema=trainer.ema.state_dict() if trainer.ema else None,
        loader=loader.state_dict() if hasattr(loader, "state_dict") else None,
        epoch=trainer.epoch, step=trainer.step, epoch_start_step=trainer.epoch_start_step,
        elapsed=trainer.elapsed + partial_seconds,
        eval_seconds=trainer.eval_seconds,
        best_top1=trainer.best_top1, history=trainer.history, rng=rng_state(), config=trainer.config.to_dict(),
        run_id=trainer.run_id, train_samples=training_samples(loader),
    )


def training_samples(loader: Any) -> int:
    """How many training samples ``loader`` draws from, over all ranks (in memory or streamed)."""
    return len(loader.images) if hasattr(loader, "images") else len(loader.dataset)


# What a resumed run may not change: the network and the data it learns from.
RUN_DEFINING = ("model", "model_options", "data")


def check_state_belongs(state: Dict[str, Any], path: Path, config: Any, run_id: str) -> None:
    """A one-line ValueError unless the training state at ``path`` is one of this run's (its id, when both
    record one) and was trained with ``config``'s model, options and data."""
    recorded = state.get("config") if isinstance(state.get("config"), dict) else {}
    if run_id and state.get("run_id") and state["run_id"] != run_id:
        raise ValueError(f"{path} is the training state of another run (id {state['run_id']}, this run's is "
                         f"{run_id}); resume a run from its own folder")
    for key in RUN_DEFINING:
        if key in recorded and recorded[key] != getattr(config, key):
            raise ValueError(f"{path} was trained with {key} {recorded[key]!r}, not {getattr(config, key)!r}; "
                             f"a resumed run keeps its {key} (drop --{key.replace('_', '-')})")


def restore_training_state(trainer: Any, state: Dict[str, Any], path: Union[str, Path] = "the state") -> None:
    """Put ``trainer`` (a Trainer) back where ``training_state`` found it."""
    recorded, now = state.get("train_samples"), training_samples(trainer.data.train)
    if recorded is not None and int(recorded) != now:  # an image folder that changed while the run was stopped
        raise ValueError(f"{path} was trained on {int(recorded):,} training samples and {trainer.config.data} now "
                         f"gives {now:,}: the data changed since; restore it, or start a new run")
    try:
        trainer.model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: its weights do not fit this {trainer.config.model}: "
                         f"{one_line(error, 160)}") from None
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.scaler is not None and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    if trainer.ema is not None and state.get("ema"):
        trainer.ema.load_state_dict(state["ema"])
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.epoch_start_step = int(state.get("epoch_start_step", trainer.epoch * trainer.steps_per_epoch))
    loader = trainer.data.train
    if state.get("loader") and hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state["loader"])
    elif hasattr(getattr(loader, "sampler", None), "skip"):  # an image folder's DataLoader
        loader.sampler.skip((trainer.step - trainer.epoch_start_step) * loader.batch_size)
    trainer.elapsed = float(state["elapsed"])
    trainer.eval_seconds = float(state["eval_seconds"])
    trainer.best_top1 = float(state["best_top1"])
    trainer.history = list(state["history"])
    set_rng_state(state["rng"])
