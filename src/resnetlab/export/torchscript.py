"""TorchScript: the frozen scripted (fp32, bf16) or traced (int8) module of a model, and a
``torch.jit.script`` safe from the stale operator ids torch.library leaves behind."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from .fuse import fold_batchnorm, quantize_int8

__all__ = ["METADATA_FILE", "CastInput", "load_torchscript", "script_model", "torchscript_module",
           "write_torchscript"]

METADATA_FILE = "resnetlab.json"  # the extra file holding our JSON metadata


class CastInput(nn.Module):
    """Runs a model of another dtype on float32 inputs and returns float32 logits (for TorchScript)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


def _forget_replaced_jit_builtins() -> None:
    """Drop TorchScript's builtin-table entries for operator objects torch has since replaced.

    torch.jit maps id(operator) to its schema name without keeping the operator alive. When
    torch.library defines an overload for an existing op (importing FX quantization does, for
    quantized_decomposed ops), the op's packet gets a new operator and the old one is freed, but
    its id stays in the table. Any later object allocated at that address (a Conv2d's padding
    tuple, in this project's test suite) then fails to script with "builtin cannot be used as a
    value". Outside aten and prim each name has exactly one live operator, its packet's, so an
    entry with another id is stale.
    """
    table = getattr(torch.jit._builtins, "_builtin_table", None)
    for key, qualname in list((table or {}).items()):
        namespace, _, name = qualname.partition("::")
        if namespace in ("aten", "prim"):
            continue  # these names also belong to torch.* functions and Tensor methods
        ops = vars(torch.ops).get(namespace)  # only namespaces and packets that exist: no lookups that create
        packet = vars(ops).get(name) if ops is not None else None
        current = getattr(packet, "_op", None)
        if current is not None and id(current) != key:
            del table[key]


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """torch.jit.script, safe from stale ids that torch.library leaves in TorchScript's builtin table."""
    _forget_replaced_jit_builtins()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        return torch.jit.script(model)


def torchscript_module(model: nn.Module, precision: str, example: Tensor,
                       calibration: Optional[Tensor]) -> torch.jit.ScriptModule:
    """The frozen TorchScript module of model in precision (BN folded; int8 through FX)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        if precision == "int8":
            assert calibration is not None
            # FX's generated code does not script; tracing records the same graph for any batch size.
            with torch.no_grad():
                return torch.jit.freeze(torch.jit.trace(quantize_int8(model, calibration), example))
        prepared = fold_batchnorm(model)
        if precision == "bf16":
            prepared = CastInput(prepared.to(torch.bfloat16), torch.bfloat16)
        return torch.jit.freeze(script_model(prepared.eval()))


def write_torchscript(model: nn.Module, path: Path, precision: str, example: Tensor, calibration: Optional[Tensor],
                      dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model to path as a frozen TorchScript module, our metadata as an extra file."""
    module = torchscript_module(model, precision, example, calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(module, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


def load_torchscript(path: Path) -> Callable[[Tensor], Tensor]:
    """A TorchScript file as a function from images to float32 logits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))
    return lambda x: module(x).float()
