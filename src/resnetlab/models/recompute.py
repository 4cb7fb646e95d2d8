"""Activation checkpointing: keep few activations of a stage and recompute the others in backward."""

from __future__ import annotations

import contextlib
import functools
import math
from typing import ContextManager, Iterator, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def checkpoint_stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    """Run a stage's blocks in segments of about sqrt(n) blocks, keeping only each segment's input.

    Segments of sqrt(n) blocks (Chen et al., 2016) keep sqrt(n) inputs plus one segment's
    activations at a time, instead of all n blocks' activations.
    """
    blocks = list(stage)
    size = math.ceil(math.sqrt(len(blocks)))
    for start in range(0, len(blocks), size):
        segment = blocks[start:start + size]
        x = checkpoint(_run_blocks, segment, x, use_reentrant=False,
                       context_fn=functools.partial(_contexts, segment))
    return x


def _run_blocks(blocks: Sequence[nn.Module], x: Tensor) -> Tensor:
    for block in blocks:
        x = block(x)
    return x


def _contexts(blocks: Sequence[nn.Module]) -> Tuple[ContextManager, ContextManager]:
    return contextlib.nullcontext(), buffers_kept(blocks)


@contextlib.contextmanager
def buffers_kept(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Undo what the enclosed code does to the modules' buffers.

    The recomputation in backward runs batch norm in training mode a second time, which would
    update its running statistics (and batch count) twice per step.
    """
    buffers = [b for module in modules for b in module.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
