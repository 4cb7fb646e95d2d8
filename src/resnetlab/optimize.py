"""Fast inference: ``optimize_for_inference`` prepares a model for CPU or GPU inference with
BatchNorm folded into the convolutions, channels_last, bf16 weights or int8 static quantization
(torch FX or ONNX Runtime), and torch.compile with freezing, or OpenVINO for fp32 on the CPU,
keeping what measures faster."""

from __future__ import annotations

import contextlib
import importlib.util
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .errors import one_line
from .export.formats import PRECISIONS, check_choice
from .export.fuse import check_inputs, fold_batchnorm, quantize_int8
from .export.onnx import OnnxModel, write_onnx
from .export.openvino import cpu_runs_bf16, openvino_model

__all__ = ["ENGINES", "INT8_ENGINES", "InferenceModel", "onnx_runtime_model",
           "optimize_for_inference", "recompile_limit", "time_batches"]

ENGINES = ("torch", "onnx", "openvino")  # what eval and predict run a model on
INT8_ENGINES = ("auto", "torch", "onnx")  # auto: every one installed (OpenVINO too) is built, the fastest kept


def _freezing(compiled: bool) -> contextlib.AbstractContextManager:
    """Inductor's freezing (weights become constants, convs get prepacked oneDNN kernels) for the
    compiles and recompiles that happen during a call. torch.compile(options={"freezing": True})
    was measured not to freeze (torch 2.15: weights stayed graph inputs, plain aten convolutions)."""
    if not compiled:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def recompile_limit(limit: int) -> contextlib.AbstractContextManager:
    """torch.compile's recompiles per function raised to ``limit``, for a process that compiles one
    model's forward many times (several paths, each at several batch sizes)."""
    import torch._dynamo.config as config

    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(limit, getattr(config, name))})


class InferenceModel(nn.Module):
    """A prepared model: takes float32 N x C x H x W batches, returns float32 logits, no gradients."""

    def __init__(self, model: nn.Module, precision: str, compiled: bool, channels_last: Optional[bool] = None,
                 dtype: Optional[torch.dtype] = None, mode: Optional[str] = None) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        # what the runner takes: PyTorch's bf16 model bf16 inputs; OpenVINO float32 whatever its precision
        self.dtype = dtype or (torch.bfloat16 if precision == "bf16" else torch.float32)
        # channels_last inputs for PyTorch's fp32 and bf16 convolutions (default); int8 and OpenVINO take NCHW.
        self.channels_last = precision != "int8" if channels_last is None else channels_last
        self.compiled = compiled
        self.choice = ""  # what optimize_for_inference measured and kept
        # Static shapes: a new batch size compiles anew, frozen. With automatic dynamic shapes the
        # recompile kept the weights as graph inputs, for this model and for later ones of its class
        # (measured, torch 2.15).
        # ``mode``: torch.compile's ("max-autotune", ...); None: its default.
        runner = torch.compile(model, dynamic=False, mode=mode) if compiled else model
        # Kept out of the module tree so state_dict() has the model's keys only once.
        object.__setattr__(self, "_runner", runner)

    def forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode(), _freezing(self.compiled):
            x = x.to(self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self._runner(x).float()


@torch.inference_mode()
def time_batches(run: Callable[[Tensor], Tensor], x: Tensor, seconds: float, warmup: int = 3) -> List[float]:
    """Seconds per call of run(x), repeated for about ``seconds`` (at least 3 calls) after ``warmup`` calls."""
    for _ in range(warmup):
        run(x)
    times: List[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        tick = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - tick)
    return times


def _faster(candidates: Dict[str, InferenceModel], x: Tensor, seconds: float = 1.0) -> Tuple[InferenceModel, str]:
    """The candidate with the lowest median time on ``x``, and a line with every candidate's time
    (a single candidate is returned untimed, with its name)."""
    if len(candidates) == 1:
        ((name, only),) = candidates.items()
        return only, name
    times = {name: statistics.median(time_batches(run, x, seconds)) for name, run in candidates.items()}
    best = min(times, key=times.__getitem__)
    measured = ", ".join(f"{name} {1000 * t:.1f} ms" for name, t in times.items())
    return candidates[best], f"{best} (measured per batch of {len(x)}: {measured})"


def onnx_runtime_model(model: nn.Module, precision: str, example: Tensor, calibration: Optional[Tensor] = None,
                       metadata: Optional[Dict[str, Any]] = None) -> OnnxModel:
    """``model`` exported to ONNX in ``precision`` (int8: ONNX Runtime's static QDQ, calibrated on
    ``calibration``) and run by ONNX Runtime, as a module; no file is kept."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{precision}.onnx"
        write_onnx(model, path, precision, example, calibration, True, metadata or {})
        return OnnxModel(path)  # the session holds the model; the file can go


def _openvino_candidate(model: nn.Module, precision: str, example: Tensor,
                        calibration: Optional[Tensor] = None) -> Dict[str, InferenceModel]:
    """OpenVINO in ``precision`` (int8: NNCF, calibrated on ``calibration``), to be timed against the other
    engines: where openvino is installed, the model runs on the CPU and, for bf16, the CPU runs bf16
    (else nothing, and nothing is said: OpenVINO is an optional extra)."""
    if importlib.util.find_spec("openvino") is None or next(model.parameters()).device.type != "cpu":
        return {}
    try:
        if precision == "bf16" and not cpu_runs_bf16():
            return {}
        openvino = openvino_model(model, precision, example, calibration)
        openvino(example)  # compiled for the example's shape before it is timed
    except Exception as error:  # a conversion, quantization or compilation failure: the other engines remain
        warnings.warn(f"OpenVINO {precision} could not be built ({type(error).__name__}: {one_line(error)[:200]}); "
                      "keeping the other engines", stacklevel=3)
        return {}
    name = "OpenVINO int8" if precision == "int8" else f"{precision} OpenVINO"  # as the other candidates read
    return {name: InferenceModel(openvino, precision, compiled=False, channels_last=False, dtype=torch.float32)}


def _finish(optimized: InferenceModel, model: nn.Module, choice: str) -> InferenceModel:
    optimized.in_chans = getattr(model, "in_chans", None)
    optimized.num_classes = getattr(model, "num_classes", None)
    optimized.choice = choice
    return optimized


def _int8(model: nn.Module, calibration: Tensor, example: Optional[Tensor], int8_engine: str) -> InferenceModel:
    """int8 by torch FX and/or ONNX Runtime (see optimize_for_inference); the faster of those built."""
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 (torch FX, x86 kernels) runs on the CPU; the model is on {device}")
    in_chans = getattr(model, "in_chans", None)
    if in_chans is not None:
        calibration = check_inputs(calibration, in_chans, "calibration data")
    probe = example if example is not None else calibration[:8]
    if int8_engine == "auto" and importlib.util.find_spec("onnxruntime") is None:
        int8_engine = "torch"
    candidates: Dict[str, InferenceModel] = {}
    if int8_engine in ("auto", "torch"):
        candidates["torch FX int8"] = InferenceModel(quantize_int8(model, calibration), "int8", compiled=False)
    if int8_engine in ("auto", "onnx"):
        try:
            onnx = onnx_runtime_model(model, "int8", probe[:2], calibration)
            candidates["ONNX Runtime int8"] = InferenceModel(onnx, "int8", compiled=False)
        except Exception as error:  # no onnx/onnxscript, or an export or quantization failure
            if int8_engine == "onnx":
                raise
            warnings.warn(f"ONNX Runtime int8 could not be built ({type(error).__name__}: "
                          f"{one_line(error)[:200]}); keeping the other engines", stacklevel=3)
    if int8_engine == "auto":
        candidates.update(_openvino_candidate(model, "int8", probe, calibration))
    chosen, choice = _faster(candidates, probe)
    return _finish(chosen, model, choice)


def optimize_for_inference(model: nn.Module, precision: str = "fp32", calibration: Optional[Tensor] = None,
                           compile: Union[bool, str] = "auto", example: Optional[Tensor] = None,
                           int8_engine: str = "auto") -> InferenceModel:
    """``model`` prepared for fast inference in ``precision``.

    fp32 and bf16: BatchNorm folded into the convs, channels_last, bf16 weights for bf16,
    and ``torch.compile`` with freezing. ``compile="auto"`` keeps the compiled model only
    where it measures faster than the uncompiled one on ``example`` (without an example it
    compiles); ``True`` always compiles, ``"max-autotune"`` always compiles in torch.compile's
    max-autotune mode (it times kernel choices while compiling; no CUDA graphs), ``False`` never
    compiles.
    Inductor needs a C++ compiler on CPU: if compiling ``example`` fails, the eager path is
    kept, with a warning. On the CPU with ``compile="auto"`` and an example, OpenVINO (when
    installed; for bf16, where the CPU runs bf16) is timed too, and kept where it is the
    fastest of the three.
    int8: static quantization calibrated on ``calibration``, a float N x C x H x W tensor
    of normalized images as the model sees them, by torch FX (``int8_engine="torch"``,
    ``quantize_int8``) or ONNX Runtime (``"onnx"``); ``"auto"`` builds both (when
    onnxruntime is installed) and OpenVINO's NNCF int8 (when openvino is installed), and
    keeps the fastest on ``example`` (else the first 8 calibration images).
    ``choice`` on the result says what was measured and kept. The model itself is not modified.
    """
    check_choice(precision, PRECISIONS, "precision")
    check_choice(int8_engine, INT8_ENGINES, "int8 engine")
    if compile not in (True, False, "auto", "max-autotune"):
        raise ValueError(f"compile must be True, False, 'auto' or 'max-autotune', got {compile!r}")
    if precision == "int8":
        if calibration is None:
            raise ValueError("int8 needs calibration images (a float N x C x H x W tensor)")
        return _int8(model, calibration, example, int8_engine)
    prepared = fold_batchnorm(model).to(memory_format=torch.channels_last)
    if precision == "bf16":
        prepared = prepared.to(torch.bfloat16)
    eager = InferenceModel(prepared, precision, compiled=False)
    if not compile:
        return _finish(eager, model, f"{precision} eager (not compiled)")
    # Without CUDA graphs: their outputs belong to the graph, and the next call overwrites them.
    mode = "max-autotune-no-cudagraphs" if compile == "max-autotune" else None
    name = f"{precision} compiled" + (" (max-autotune)" if mode else "")
    compiled = InferenceModel(prepared, precision, compiled=True, mode=mode)
    if example is None:
        return _finish(compiled, model, f"{name} (not measured: no example)")
    try:
        compiled(example)
    except Exception as error:  # inductor raises many kinds (no compiler, unsupported op)
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                      "running eagerly", stacklevel=2)
        return _finish(eager, model, f"{precision} eager (torch.compile failed)")
    if compile != "auto":
        return _finish(compiled, model, name)
    candidates = {f"{precision} compiled": compiled, f"{precision} eager": eager,
                  **_openvino_candidate(model, precision, example)}
    chosen, choice = _faster(candidates, example)
    return _finish(chosen, model, choice)
