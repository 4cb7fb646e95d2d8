"""Where a model runs, and in which precision its forward pass computes."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast", "inference_device", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def inference_device(device: str, engine: str, precision: str) -> torch.device:
    """Where a model runs: ONNX Runtime and torch int8 run on the CPU, so there 'auto' means the CPU."""
    if engine == "onnx" or (precision == "int8" and device == "auto"):
        return torch.device("cpu")
    return resolve_device(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: bf16 on CPU or GPU, fp16 on GPU, or nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    # No cast cache: each weight is cast once per forward anyway, and CUDA graphs require it off.
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=False)
