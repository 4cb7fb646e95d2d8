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

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

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


# The lock is an flock(2) on .lock, which holds the process id for messages: the kernel releases it when
# its process dies, however it dies, so a stale lock is never mistaken for a live one (a reused process
# id, a lock file copied with the folder). Without fcntl (Windows), the process id is checked instead.
_HELD: Dict[Path, int] = {}  # run folder -> the descriptor of the lock this process holds


def _holder(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):  # no lock, or an unreadable one
        return 0


def _held_by_another(path: Path) -> bool:
    if fcntl is None:
        holder = _holder(path)
        return bool(holder) and holder != os.getpid() and _alive(holder)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _refusal(run_dir: Path) -> ValueError:
    holder = _holder(Path(run_dir) / LOCK_FILE)
    return ValueError(f"run folder {run_dir} is being trained by process {holder or '(unknown)'}; wait for it "
                      "to finish or stop it, then --resume")


def refuse_if_running(run_dir: Path) -> None:
    """A one-line ValueError when another live process holds the lock of ``run_dir``; checked before
    a resume touches anything in the folder."""
    if Path(run_dir).resolve() not in _HELD and _held_by_another(Path(run_dir) / LOCK_FILE):
        raise _refusal(run_dir)


def lock_run(run_dir: Path) -> None:
    """Mark ``run_dir`` as trained by this process; a one-line ValueError when another live process
    holds it. A lock left by a process that died is taken over."""
    path, key = Path(run_dir) / LOCK_FILE, Path(run_dir).resolve()
    if key in _HELD:
        return
    if fcntl is None:
        refuse_if_running(run_dir)
        atomic_write_text(path, f"{os.getpid()}\n")
        _HELD[key] = -1
        return
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(run_dir) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # its holder released and removed it between our open and our lock: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd


def unlock_run(run_dir: Path) -> None:
    """Release the lock of ``run_dir`` if this process holds it."""
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is None:
        return
    (Path(run_dir) / LOCK_FILE).unlink(missing_ok=True)  # removed while still held: see lock_run's check
    if fd >= 0:
        os.close(fd)  # releases the flock
