"""Training checkpoints: the full state to resume from, written atomically.

``<tag>.state.pt`` holds everything a resume needs (model, optimizer, scheduler, scaler,
EMA, data position, epoch, step, history, RNG states, config) as tensors and plain
data, so it loads with ``torch.load(weights_only=True)``. ``<tag>.safetensors`` holds
the weights to ship, with how to rebuild the model and its class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

from ..errors import one_line
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
        reason = one_line(error)[:160]
        raise ValueError(f"{path} is not a readable training state: {reason}") from None


def latest_state(run_dir: Union[str, Path]) -> Path:
    """The state file to resume a run from."""
    run_dir = Path(run_dir)
    path = run_dir / f"last{STATE_SUFFIX}"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint to resume from (expected {path.name})")
    return path
