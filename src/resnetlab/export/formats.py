"""The export formats: one entry per format with its file suffix, the precisions it can hold,
how to write and load it, and the files written beside the main one (OpenVINO's .bin). A new
format is a module with a write and a load function and an entry in ``REGISTRY``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from torch import Tensor, nn

from .onnx import load_onnx, write_onnx
from .openvino import load_openvino, write_openvino
from .safetensors import load_safetensors, write_safetensors
from .torchscript import load_torchscript, write_torchscript

__all__ = ["FORMATS", "FORMAT_PRECISIONS", "PRECISIONS", "REGISTRY", "Format", "check_choice", "load_export",
           "write_export"]

PRECISIONS = ("fp32", "bf16", "int8")

# write(model, path, precision, example, calibration, dynamic_batch, metadata)
Writer = Callable[[nn.Module, Path, str, Tensor, Optional[Tensor], bool, Dict[str, Any]], None]
# load(path) -> a function from float32 images to float32 logits
Loader = Callable[[Path], Callable[[Tensor], Tensor]]


@dataclass(frozen=True)
class Format:
    """A file format a model can be exported to."""

    name: str
    suffix: str  # of the default output file name
    precisions: Tuple[str, ...]
    write: Writer
    load: Loader
    companions: Tuple[str, ...] = ()  # suffixes of the files written beside the main one, same name


# bf16 ONNX does not run on ONNX Runtime's CPU provider; int8 weights need the quantized graph,
# which safetensors cannot describe. OpenVINO's IR is a .xml file (the graph) and a .bin (the weights).
REGISTRY: Dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", ("fp32", "int8"), write_onnx, load_onnx),
    Format("torchscript", ".ts", PRECISIONS, write_torchscript, load_torchscript),
    Format("safetensors", ".safetensors", ("fp32", "bf16"), write_safetensors, load_safetensors),
    Format("openvino", ".xml", PRECISIONS, write_openvino, load_openvino, (".bin",)),
)}
FORMATS = tuple(REGISTRY)
FORMAT_PRECISIONS = {name: f.precisions for name, f in REGISTRY.items()}


def check_choice(value: str, accepted: Tuple[str, ...], what: str) -> str:
    """Return value if it is one of accepted, else raise a one-line ValueError."""
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value


def write_export(model: nn.Module, path: Path, fmt: str, precision: str, example: Tensor,
                 calibration: Optional[Tensor], dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model to path in fmt/precision (no verification; see export_model)."""
    REGISTRY[check_choice(fmt, FORMATS, "format")].write(model, path, precision, example, calibration,
                                                          dynamic_batch, metadata)


def load_export(path: Path, fmt: str) -> Callable[[Tensor], Tensor]:
    """Load a file written by write_export, as a function from images to float32 logits."""
    return REGISTRY[check_choice(fmt, FORMATS, "format")].load(path)
