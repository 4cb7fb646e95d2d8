"""What machine a figure was measured on: one description for bench, experiments and benchmarks."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

import torch

__all__ = ["cpu_name", "describe_machine"]


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: Optional[torch.device] = None) -> str:
    """One line: CPU, cores, torch threads and version, OS, and the GPU when ``device`` is one
    (``None``: whenever CUDA is available)."""
    text = (f"{cpu_name()}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, {platform.system()}")
    gpu = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if gpu:
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text
