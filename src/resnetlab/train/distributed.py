"""Several processes under torchrun: the process group, and what the ranks share.

torchrun starts one process per device and tells each its place through the environment
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). The model is wrapped in
DistributedDataParallel, which averages gradients across the ranks in backward; this module
holds the few collectives around it: metrics summed over ranks, values decided by rank 0.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ..errors import RankLost, one_line
from .engine import EpochStats


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run; one process alone is rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


ALONE = Ranks()


def ranks_from_environment() -> Ranks:
    """The place torchrun gives this process (RANK, LOCAL_RANK, WORLD_SIZE); rank 0 of 1 without torchrun."""
    try:
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                     int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError:
        raise ValueError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them), got "
                         f"{os.environ.get('RANK')!r}, {os.environ.get('LOCAL_RANK')!r}, "
                         f"{os.environ.get('WORLD_SIZE')!r}") from None


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Under torchrun each process on a machine takes the GPU of its local rank."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    if ranks.local_rank >= torch.cuda.device_count():
        raise ValueError(f"local rank {ranks.local_rank} has no GPU: this machine has "
                         f"{torch.cuda.device_count()}; start at most that many processes per node")
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


@contextlib.contextmanager
def process_group(device: torch.device, timeout_s: float) -> Iterator[Ranks]:
    """Join the run's process group (gloo on CPU, nccl on CUDA) while inside; nothing to join alone.

    A collective that waits longer than ``timeout_s`` for another rank, or whose peer is gone,
    raises RankLost instead of hanging.
    """
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield ranks
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield ranks
    except RuntimeError as error:
        if not _from_the_backend(error):
            raise
        raise RankLost(f"rank {ranks.rank} of {ranks.world_size} lost contact with the other ranks "
                       f"({_reason(error)}; dist_timeout {timeout_s:g} s): another rank died or stopped "
                       "answering; its own output says why") from None
    finally:
        dist.destroy_process_group()


def _from_the_backend(error: RuntimeError) -> bool:
    # gloo raises plain RuntimeErrors that name its sources; nccl raises DistBackendError.
    text = str(error).lower()
    return isinstance(error, dist.DistError) or "gloo" in text or "nccl" in text


def _reason(error: RuntimeError) -> str:
    """The first sentence of a backend error, without the source location in front."""
    text = one_line(error)
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".")


def from_main(ranks: Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_stats(stats: EpochStats, ranks: Ranks, device: torch.device) -> EpochStats:
    """The stats of all ranks together: sums added, the slowest rank's time."""
    if not ranks.distributed:
        return stats
    sums = torch.tensor([stats.loss_sum, stats.correct1, stats.correct5, stats.samples], dtype=torch.float64,
                        device=device)
    dist.all_reduce(sums)
    seconds = torch.tensor([stats.seconds], dtype=torch.float64, device=device)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    confusion = None
    if stats.confusion is not None:
        confusion = stats.confusion.to(device)
        dist.all_reduce(confusion)
        confusion = confusion.cpu()
    loss_sum, correct1, correct5, samples = sums.tolist()
    return EpochStats(loss_sum, int(correct1), int(correct5), int(samples), float(seconds), confusion)


def merge_sample_losses(loader: Any, ranks: Ranks) -> None:
    """Every rank's recorded per-sample training losses on every rank (the pruning plans from them)."""
    if ranks.distributed:
        loader.merge_losses(dist.all_reduce)


def copy_buffers_from_main(model: nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers on every rank, so that all evaluate the model rank 0 saves.

    Each rank updates its batch-norm running statistics from its own share of the batch.
    """
    if ranks.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
