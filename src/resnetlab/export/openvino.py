"""OpenVINO IR: writing a model as OpenVINO's ``model.xml`` + ``model.bin`` in fp32, bf16 or int8, and
``OpenVinoIR``, which runs an IR (read from a file or converted in memory) on the CPU as an nn.Module.

- fp32: the model with BatchNorm folded, converted by ``openvino.convert_model``; the weights stay
  fp32 (``save_model`` would compress them to fp16).
- bf16: the same fp32 IR, recorded as bf16: it is compiled with OpenVINO's
  ``INFERENCE_PRECISION_HINT`` bf16, which casts the weights and runs the convolutions in bf16 when
  the IR is compiled. The IR format stores no bf16 weights (its compressed form is fp16, which
  would round them a second time), so the files are as large as fp32's. Only CPUs that run bf16
  (AVX512-BF16 or AMX) run it: elsewhere export and loading refuse it.
- int8: NNCF post-training quantization (``nncf.quantize``: int8 weights and activations, fast
  bias correction) of the fp32 IR, calibrated on the calibration images one at a time.

fp32 and int8 IRs are compiled with the hint f32, since where the CPU runs bf16 OpenVINO's default
is bf16. The IR's rt_info holds resnetlab's metadata (JSON under ``resnetlab/metadata``, as ONNX
files hold it) and the precision (``resnetlab/precision``); both are checked when an IR is read.
Height and width stay dynamic, and the batch too unless ``dynamic_batch`` is False (then it is 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import one_line
from ..weights.metadata import check_class_names, check_metadata
from .fuse import fold_batchnorm

__all__ = ["METADATA_KEY", "OpenVinoIR", "build_openvino", "convert_to_openvino", "cpu_runs_bf16", "load_openvino",
           "openvino_model", "quantize_openvino_int8", "read_ir", "write_openvino"]

METADATA_KEY = "resnetlab"  # the rt_info section holding our metadata (JSON) and the precision
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # INFERENCE_PRECISION_HINT per recorded precision
MAX_COMPILED = 8  # input shapes kept compiled at once


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as error:
        raise ValueError("OpenVINO is not installed: pip install 'resnetlab[openvino]'") from error
    return openvino


def _nncf() -> Any:
    _openvino()
    try:
        with _quiet():
            import nncf
    except ImportError as error:
        raise ValueError("OpenVINO int8 needs nncf: pip install 'resnetlab[openvino]'") from error
    return nncf


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF's progress bars and log lines kept off stdout, where `export --json` prints its result, and
    torch's warning, which NNCF's use of torch's extension builder logs on machines without CUDA."""
    loggers = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _reason(error: BaseException) -> str:
    """OpenVINO's message without the lines naming its source files: the last line says what failed."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return one_line(lines[-1] if lines else error, 160)


def cpu_runs_bf16(core: Any = None) -> bool:
    """Whether OpenVINO runs bf16 on this CPU (AVX512-BF16 or AMX)."""
    core = core or _openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _require_bf16(core: Any = None) -> None:
    if not cpu_runs_bf16(core):
        raise ValueError("OpenVINO bf16 needs a CPU that runs bf16 (AVX512-BF16 or AMX), and this one does not; "
                         "accepted here: fp32, int8")


class OpenVinoIR(nn.Module):
    """An OpenVINO model run on the CPU, called like the PyTorch model (float tensors in and out).

    ``model`` is an ``openvino.Model`` (see read_ir and build_openvino); ``source`` names it in errors.
    It is compiled once per input shape (static shapes get OpenVINO's fastest kernels), in the
    precision its rt_info records, on ``threads`` threads (default: torch's).
    """

    def __init__(self, model: Any, source: str, threads: Optional[int] = None) -> None:
        super().__init__()
        ov = _openvino()
        self.source = source
        self.in_chans, self.num_classes, self.fixed_batch = _signature(model, source)
        self.metadata: Dict[str, Any] = _read_metadata(model, source)
        check_class_names(self.metadata, self.num_classes, source)
        self.precision = _read_info(model, "precision") or "fp32"
        if self.precision not in HINTS:
            raise ValueError(f"{source}: rt_info precision is {self.precision[:20]!r}; accepted: {', '.join(HINTS)}")
        self._core = ov.Core()
        if self.precision == "bf16":
            _require_bf16(self._core)
        self._model = model
        self._config = {"INFERENCE_PRECISION_HINT": HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        self._compiled: Dict[Tuple[int, ...], Any] = {}

    def _run(self, x: Tensor) -> Tensor:
        shape = tuple(x.shape)
        compiled = self._compiled.get(shape)
        if compiled is None:
            try:
                static = self._model.clone()
                static.reshape({0: list(shape)})
                compiled = self._core.compile_model(static, "CPU", self._config)
            except RuntimeError as error:
                raise ValueError(f"{self.source} cannot run on {list(shape)} inputs: {_reason(error)}") from None
            if len(self._compiled) >= MAX_COMPILED:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = compiled
        return torch.from_numpy(compiled(x.numpy())[0])

    def forward(self, x: Tensor) -> Tensor:
        images = x.detach().float().cpu().contiguous()
        if self.fixed_batch is None or len(images) == self.fixed_batch:
            return self._run(images).to(x.device)
        outputs = []  # an IR exported with a fixed batch takes exactly that many images per run
        for chunk in images.split(self.fixed_batch):
            missing = self.fixed_batch - len(chunk)
            padded = torch.cat([chunk, chunk.new_zeros(missing, *chunk.shape[1:])]) if missing else chunk
            outputs.append(self._run(padded)[: len(chunk)])
        return torch.cat(outputs).to(x.device)


def _signature(model: Any, source: str) -> Tuple[int, int, Optional[int]]:
    """(input channels, classes, fixed batch or None) of an image classifier's IR, else a one-line error."""
    inputs, outputs = model.inputs, model.outputs
    image = inputs[0].get_partial_shape() if len(inputs) == 1 else None
    logits = outputs[0].get_partial_shape() if len(outputs) == 1 else None
    if (image is None or logits is None or image.rank.is_dynamic or logits.rank.is_dynamic
            or image.rank.get_length() != 4 or logits.rank.get_length() != 2
            or image[1].is_dynamic or logits[1].is_dynamic):
        raise ValueError(f"{source} is not an image classifier: inputs {[str(i.get_partial_shape()) for i in inputs]}"
                         f", outputs {[str(o.get_partial_shape()) for o in outputs]}; accepted: one N x C x H x W "
                         "input, one N x classes output")
    batch = image[0].get_length() if image[0].is_static else None
    return image[1].get_length(), logits[1].get_length(), batch


def _read_info(model: Any, key: str) -> Optional[str]:
    path = [METADATA_KEY, key]
    return model.get_rt_info(path).astype(str) if model.has_rt_info(path) else None


def _read_metadata(model: Any, source: str) -> Dict[str, Any]:
    stored = _read_info(model, "metadata")
    try:
        return check_metadata(json.loads(stored), source) if stored else {}
    except (json.JSONDecodeError, AttributeError, TypeError) as error:
        raise ValueError(f"{source} has unreadable resnetlab metadata ({one_line(error, 120)})") from None


def read_ir(path: Union[str, Path]) -> Any:
    """The ``openvino.Model`` of the IR at ``path`` (its .bin beside it), or a one-line error."""
    _openvino()
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("ir")  # never tried as another framework's file
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return frontend.convert(frontend.load(str(path)))
    except Exception as error:  # OpenVINO raises RuntimeError and its own types
        raise ValueError(f"{path} is not an OpenVINO IR OpenVINO can read: {_reason(error)}") from None


def convert_to_openvino(model: nn.Module, example: Tensor, dynamic_batch: bool = True) -> Any:
    """``model`` with BatchNorm folded, converted by ``openvino.convert_model`` (traced on ``example``):
    one input ``input`` (N x C x H x W, H and W dynamic, N too unless ``dynamic_batch``, else 1) and
    one output ``logits``. The model itself is not modified."""
    ov = _openvino()
    folded = fold_batchnorm(model).cpu().float()
    example = example.detach().cpu().float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and shape-check warnings
        converted = ov.convert_model(folded, example_input=example if dynamic_batch else example[:1])
    converted.reshape({0: ov.PartialShape([-1 if dynamic_batch else 1, example.shape[1], -1, -1])})
    converted.inputs[0].get_tensor().set_names({"input"})
    converted.outputs[0].get_tensor().set_names({"logits"})
    return converted


def quantize_openvino_int8(converted: Any, calibration: Tensor) -> Any:
    """NNCF post-training int8 quantization of the OpenVINO model ``converted``, calibrated on every
    image of ``calibration`` (float N x C x H x W, normalized as the model sees them)."""
    nncf = _nncf()
    images = [image.unsqueeze(0).numpy() for image in calibration.detach().float().cpu()]
    with _quiet():
        return nncf.quantize(converted, nncf.Dataset(images), subset_size=len(images))


def build_openvino(model: nn.Module, precision: str, example: Tensor, calibration: Optional[Tensor] = None,
                   dynamic_batch: bool = True, metadata: Optional[Dict[str, Any]] = None) -> Any:
    """``model`` as an ``openvino.Model`` in ``precision`` (see the module's description), with
    ``metadata`` and the precision in its rt_info. int8 needs ``calibration``."""
    if precision not in HINTS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(HINTS)}")
    if precision == "bf16":
        _require_bf16()
    if precision == "int8" and calibration is None:
        raise ValueError("OpenVINO int8 needs calibration images")
    converted = convert_to_openvino(model, example, dynamic_batch)
    if precision == "int8":
        converted = quantize_openvino_int8(converted, calibration)
    converted.set_rt_info(json.dumps(metadata or {}, sort_keys=True), [METADATA_KEY, "metadata"])
    converted.set_rt_info(precision, [METADATA_KEY, "precision"])
    return converted


def write_openvino(model: nn.Module, path: Path, precision: str, example: Tensor, calibration: Optional[Tensor],
                   dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model as the IR ``path`` (a .xml) and its weights beside it (the same name, .bin)."""
    if Path(path).suffix != ".xml":
        raise ValueError(f"an OpenVINO IR is written as a .xml file and its .bin; got {path}")
    converted = build_openvino(model, precision, example, calibration, dynamic_batch, metadata)
    _openvino().save_model(converted, str(path), compress_to_fp16=False)


def load_openvino(path: Path) -> OpenVinoIR:
    """An IR file (.xml, its .bin beside it) as a module run by OpenVINO."""
    return OpenVinoIR(read_ir(path), str(path))


def openvino_model(model: nn.Module, precision: str, example: Tensor, calibration: Optional[Tensor] = None,
                   metadata: Optional[Dict[str, Any]] = None) -> OpenVinoIR:
    """``model`` converted to OpenVINO in ``precision`` (int8: calibrated on ``calibration``) and run by
    OpenVINO, as a module; no file is written."""
    return OpenVinoIR(build_openvino(model, precision, example, calibration, True, metadata), "the converted model")
