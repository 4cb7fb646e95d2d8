"""What a training run writes into its folder: the folder itself, metrics, plots and TensorBoard logs."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..analysis.plots import plot_confusion, plot_curves
from ..fileio import atomic_write_text
from .checkpoint import has_checkpoint
from .config import TrainConfig

__all__ = ["lock_run", "new_run_dir", "open_tensorboard", "run_id", "run_name", "unlock_run",
           "write_final_outputs", "write_metrics"]


def run_name(config: TrainConfig) -> str:
    """The run's folder name: given, or model-data-timestamp."""
    if config.name:
        return config.name
    data = Path(config.data).name if Path(config.data).is_dir() else config.data
    return f"{config.model}-{data}-{datetime.now():%Y%m%d-%H%M%S}"


def new_run_dir(config: TrainConfig) -> Tuple[Path, str]:
    """A new run's folder, and why it cannot be used ('' when it can)."""
    run_dir = Path(config.out) / run_name(config)
    if not (run_dir.is_dir() and any(run_dir.iterdir())):
        return run_dir, ""
    if has_checkpoint(run_dir):
        return run_dir, f"run folder {run_dir} already exists; pick another --name or --resume {run_dir}"
    # Never removed here: it may belong to a run still in its first epoch.
    return run_dir, (f"run folder {run_dir} already exists and holds no checkpoint to resume (a run killed "
                     "before its first one, or one still running); remove it or pick another --name")


def open_tensorboard(run_dir: Path) -> Any:
    """A TensorBoard writer logging into the run folder (needs the tensorboard package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def write_metrics(run_dir: Path, history: List[Dict[str, Any]], config: TrainConfig,
                  summary: Dict[str, Any]) -> None:
    """metrics.csv (one row per epoch) and metrics.json (config, history and summary)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())
    payload = dict(config=config.to_dict(), history=history, summary=summary)
    atomic_write_text(run_dir / "metrics.json", json.dumps(payload, indent=2))


def write_final_outputs(run_dir: Path, history: List[Dict[str, Any]], title: str,
                        confusion: Optional[torch.Tensor], classes: Sequence[str], eval_split: str) -> None:
    """curves.png, and the last evaluation's confusion.png and confusion.csv."""
    plot_curves(history, run_dir / "curves.png", title=title)
    if confusion is None:
        return
    plot_confusion(confusion, classes, run_dir / "confusion.png", title=f"{title}, {eval_split} set")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # quotes class names holding commas, quotes or newlines
    writer.writerow(["true\\predicted", *classes])
    writer.writerows([name, *confusion[i].tolist()] for i, name in enumerate(classes))
    atomic_write_text(run_dir / "confusion.csv", buffer.getvalue())


RUN_FILE = "run.json"  # the run's identity, which its training states carry too
LOCK_FILE = ".lock"  # the process training the run


def run_id(run_dir: Path, create: bool = False) -> str:
    """The identity of the run in ``run_dir`` ('' for a run made before runs had one); ``create``
    gives a new run one."""
    path = Path(run_dir) / RUN_FILE
    if create:
        atomic_write_text(path, json.dumps(dict(id=uuid.uuid4().hex, created=datetime.now().isoformat())) + "\n")
    try:
        return str(json.loads(path.read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def refuse_if_running(run_dir: Path) -> None:
    """A one-line ValueError when another live process holds the lock of ``run_dir``; checked before
    a resume touches anything in the folder."""
    path = Path(run_dir) / LOCK_FILE
    try:
        holder = int(path.read_text().strip() or 0)
    except (OSError, ValueError):  # no lock, or an unreadable one: nobody to wait for
        return
    if holder and holder != os.getpid() and _alive(holder):
        raise ValueError(f"run folder {run_dir} is being trained by process {holder}; wait for it to "
                         "finish or stop it, then --resume")


def lock_run(run_dir: Path) -> None:
    """Mark ``run_dir`` as trained by this process; a one-line ValueError when another live process
    holds it. A lock left by a process that died is taken over."""
    path = Path(run_dir) / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            refuse_if_running(run_dir)
            path.unlink(missing_ok=True)  # a stale lock (or this process's own)
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return


def unlock_run(run_dir: Path) -> None:
    """Release the lock of ``run_dir`` if this process holds it."""
    path = Path(run_dir) / LOCK_FILE
    try:
        if int(path.read_text().strip() or 0) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
