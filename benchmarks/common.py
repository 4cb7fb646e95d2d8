"""What the benchmark scripts share: their parser, the result JSON, and timing training steps.

A script run as ``python benchmarks/NAME.py`` has this folder on sys.path, so ``from common import ...``
works without any path edits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Iterable, Iterator

import torch

from resnetlab.fileio import atomic_write_text
from resnetlab.train.engine import train_steps

RESULTS = Path(__file__).parent / "results"


def benchmark_parser(doc: str, out: bool = True) -> argparse.ArgumentParser:
    """A parser whose help is the script's docstring; ``out``: with --out, the results folder (default results/)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out:
        parser.add_argument("--out", default=str(RESULTS))
    return parser


def write_result(path: str | Path, result: dict) -> Path:
    """Write a benchmark's result as JSON (atomically, making its folder)."""
    return atomic_write_text(path, json.dumps(result, indent=2) + "\n")


def repeat(loader: Iterable) -> Iterator:
    """The loader's batches, over and over."""
    while True:
        yield from loader


def timed_steps(model, batches, steps: int, warmup: int, precision: str, sample_losses=None) -> float:
    """Images/s over ``steps`` training steps after ``warmup`` steps (``sample_losses``: as train_steps takes it)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    iterator = iter(batches)
    count = {"n": 0}

    def stop_after(n):
        def on_step(_stats) -> bool:
            count["n"] += 1
            return count["n"] >= n
        return on_step

    train_steps(model, iterator, optimizer, scheduler, device=torch.device("cpu"), precision=precision,
                on_step=stop_after(warmup), sample_losses=sample_losses)
    count["n"] = 0
    start = time.perf_counter()
    stats = train_steps(model, iterator, optimizer, scheduler, device=torch.device("cpu"), precision=precision,
                        on_step=stop_after(steps), sample_losses=sample_losses)
    return stats.samples / (time.perf_counter() - start)
