"""safetensors: resnetlab's checkpoint format (see resnetlab.weights), in fp32 or bf16."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..weights import load_model, save_weights

__all__ = ["load_safetensors", "write_safetensors"]


def write_safetensors(model: nn.Module, path: Path, precision: str, example: Tensor, calibration: Optional[Tensor],
                      dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model's weights to path with save_weights (bf16 weights for bf16)."""
    save_weights(model, path, metadata.get("arch") or "resnet", options=metadata.get("options"),
                 class_names=metadata.get("class_names"), preprocessing=metadata.get("preprocessing"),
                 dtype=torch.bfloat16 if precision == "bf16" else None)


def load_safetensors(path: Path) -> nn.Module:
    """The model a safetensors checkpoint holds."""
    model, _ = load_model(path)
    return model
