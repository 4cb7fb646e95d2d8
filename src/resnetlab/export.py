"""Fast inference and verified export.

``optimize_for_inference`` prepares a model for CPU or GPU inference: BatchNorm folded into
the convolutions, channels_last, bf16 weights or int8 static quantization (torch FX, x86),
and torch.compile with freezing. ``export_model`` writes ONNX, TorchScript or safetensors,
loads the written file back, runs it on a batch and refuses to keep it when its logits
miss the tolerance. ``OnnxModel`` runs an ONNX file with ONNX Runtime as an nn.Module.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .data.readers import one_line
from .fileio import atomic_write

PathLike = Union[str, Path]

PRECISIONS = ("fp32", "bf16", "int8")
FORMATS = ("onnx", "torchscript", "safetensors")
ENGINES = ("torch", "onnx")
INT8_ENGINES = ("auto",) + ENGINES  # auto: both are built and the faster one is kept
# Which precisions each format can hold (bf16 ONNX does not run on ONNX Runtime's CPU
# provider; int8 weights need the quantized graph, which safetensors cannot describe).
FORMAT_PRECISIONS = {"onnx": ("fp32", "int8"), "torchscript": PRECISIONS, "safetensors": ("fp32", "bf16")}
# Verification: fp32 must match the eager model's logits; bf16 and int8 must agree on top-1.
MAX_ABS_DIFF = 1e-4  # relative to max(1, largest |logit|)
MIN_AGREEMENT = {"fp32": 1.0, "bf16": 0.98, "int8": 0.95}
METADATA_KEY = "resnetlab"


def check_choice(value: str, accepted: Tuple[str, ...], what: str) -> str:
    """Return value if it is one of accepted, else raise a one-line ValueError."""
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value


# ---------------------------------------------------------------- BatchNorm folding


def conv_bn_pairs(model: nn.Module) -> Iterator[Tuple[nn.Module, str, str]]:
    """(parent, conv name, bn name) for each conv that a BatchNorm directly follows.

    Two patterns, which cover resnetlab's and torchvision's ResNets: ``convN`` followed by a
    sibling ``bnN``, and adjacent (Conv2d, BatchNorm2d) children of an nn.Sequential.
    """
    for parent in model.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            candidates = list(zip(names, names[1:]))
        else:
            candidates = [(name, "bn" + name[4:]) for name in children if name.startswith("conv")]
        for conv, bn in candidates:
            if (isinstance(children.get(conv), nn.Conv2d) and isinstance(children.get(bn), nn.BatchNorm2d)
                    and children[bn].running_mean is not None):
                yield parent, conv, bn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with each conv's BatchNorm folded into the conv's weights."""
    folded = copy.deepcopy(model).eval()
    for parent, conv, bn in list(conv_bn_pairs(folded)):
        setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
        setattr(parent, bn, nn.Identity())
    return folded


# ---------------------------------------------------------------- optimize_for_inference


def check_inputs(x: Tensor, in_chans: int, what: str) -> Tensor:
    """x as a float N x in_chans x H x W tensor, or a one-line ValueError naming its shape."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != in_chans or x.shape[0] == 0:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} has shape {shape}; the model takes N x {in_chans} x H x W images")
    if not x.is_floating_point():
        raise ValueError(f"{what} is {x.dtype}; expected normalized float images")
    return x.float()


def quantize_int8(model: nn.Module, calibration: Tensor, batch_size: int = 64) -> nn.Module:
    """Static int8 quantization with torch FX (x86 backend), calibrated on ``calibration``.

    Conv, BN and ReLU are fused, weights are quantized per channel, activations per tensor
    with ranges observed on the calibration batches (histograms). Activations use the full
    8 bits on CPUs with VNNI; without it, 7 (the x86 default that avoids overflow there).
    """
    from torch.ao.quantization import HistogramObserver, QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import default_per_channel_weight_observer
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    mapping = get_default_qconfig_mapping("x86")
    if getattr(torch.cpu, "_is_vnni_supported", lambda: False)():  # a private helper: absent means unknown
        # Measured on a 2-epoch ResNet-50 (Fashion-MNIST test): 79.7% with 7 bits, 81.8% with 8, 83.3% fp32.
        mapping.set_global(QConfig(activation=HistogramObserver.with_args(reduce_range=False),
                                   weight=default_per_channel_weight_observer))
    model = copy.deepcopy(model).float().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        prepared = prepare_fx(model, mapping, (calibration[:1],))
        with torch.no_grad():
            for batch in calibration.split(batch_size):
                prepared(batch)
        return convert_fx(prepared)


def _freezing(compiled: bool) -> contextlib.AbstractContextManager:
    """Inductor's freezing (weights become constants, convs get prepacked oneDNN kernels) for the
    compiles and recompiles that happen during a call. torch.compile(options={"freezing": True})
    was measured not to freeze (torch 2.15: weights stayed graph inputs, plain aten convolutions)."""
    if not compiled:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


class InferenceModel(nn.Module):
    """A prepared model: takes float32 N x C x H x W batches, returns float32 logits, no gradients."""

    def __init__(self, model: nn.Module, precision: str, compiled: bool) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.channels_last = precision != "int8"
        self.compiled = compiled
        self.choice = ""  # what optimize_for_inference measured and kept
        # Static shapes: a new batch size compiles anew, frozen. With automatic dynamic shapes the
        # recompile kept the weights as graph inputs, for this model and for later ones of its class
        # (measured, torch 2.15).
        runner = torch.compile(model, dynamic=False) if compiled else model
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
        write_export(model, path, "onnx", precision, example, calibration, True, metadata or {})
        return OnnxModel(path)  # the session holds the model; the file can go


def _finish(optimized: InferenceModel, model: nn.Module, choice: str) -> InferenceModel:
    optimized.in_chans = getattr(model, "in_chans", None)
    optimized.num_classes = getattr(model, "num_classes", None)
    optimized.choice = choice
    return optimized


def optimize_for_inference(model: nn.Module, precision: str = "fp32", calibration: Optional[Tensor] = None,
                           compile: Union[bool, str] = "auto", example: Optional[Tensor] = None,
                           int8_engine: str = "auto") -> InferenceModel:
    """``model`` prepared for fast inference in ``precision``.

    fp32 and bf16: BatchNorm folded into the convs, channels_last, bf16 weights for bf16,
    and ``torch.compile`` with freezing. ``compile="auto"`` keeps the compiled model only
    where it measures faster than the uncompiled one on ``example`` (without an example it
    compiles); ``True`` always compiles, ``False`` never. Inductor needs a C++ compiler on
    CPU: if compiling ``example`` fails, the eager path is kept, with a warning.
    int8: static quantization calibrated on ``calibration``, a float N x C x H x W tensor
    of normalized images as the model sees them, by torch FX (``int8_engine="torch"``,
    ``quantize_int8``) or ONNX Runtime (``"onnx"``); ``"auto"`` builds both (when
    onnxruntime is installed) and keeps the faster on ``example`` (else the first 8
    calibration images).
    ``choice`` on the result says what was measured and kept. The model itself is not modified.
    """
    check_choice(precision, PRECISIONS, "precision")
    check_choice(int8_engine, INT8_ENGINES, "int8 engine")
    if compile not in (True, False, "auto"):
        raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
    in_chans = getattr(model, "in_chans", None)
    if precision == "int8":
        if calibration is None:
            raise ValueError("int8 needs calibration images (a float N x C x H x W tensor)")
        device = next(model.parameters()).device
        if device.type != "cpu":
            raise ValueError(f"int8 (torch FX, x86 kernels) runs on the CPU; the model is on {device}")
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
                              f"{one_line(error)[:200]}); keeping torch FX int8", stacklevel=2)
        chosen, choice = _faster(candidates, probe)
        return _finish(chosen, model, choice)
    prepared = fold_batchnorm(model).to(memory_format=torch.channels_last)
    if precision == "bf16":
        prepared = prepared.to(torch.bfloat16)
    eager = InferenceModel(prepared, precision, compiled=False)
    if not compile:
        return _finish(eager, model, f"{precision} eager (not compiled)")
    compiled = InferenceModel(prepared, precision, compiled=True)
    if example is None:
        return _finish(compiled, model, f"{precision} compiled (not measured: no example)")
    try:
        compiled(example)
    except Exception as error:  # inductor raises many kinds (no compiler, unsupported op)
        warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                      "running eagerly", stacklevel=2)
        return _finish(eager, model, f"{precision} eager (torch.compile failed)")
    if compile is True:
        return _finish(compiled, model, f"{precision} compiled")
    chosen, choice = _faster({f"{precision} compiled": compiled, f"{precision} eager": eager}, example)
    return _finish(chosen, model, choice)


# ---------------------------------------------------------------- comparing logits


@dataclass
class Agreement:
    """How closely a candidate's logits follow the reference's on the same inputs."""

    max_abs_diff: float
    logit_scale: float  # the largest |reference logit|
    top1_agreement: float  # fraction of inputs with the same arg-max
    samples: int

    def within(self, precision: str, min_agreement: Optional[float] = None,
               max_abs_diff: Optional[float] = None) -> bool:
        """fp32: logits equal up to ``max_abs_diff`` x max(1, scale); bf16/int8: top-1 agreement."""
        if precision == "fp32":
            limit = (MAX_ABS_DIFF if max_abs_diff is None else max_abs_diff) * max(1.0, self.logit_scale)
            return self.max_abs_diff <= limit
        return self.top1_agreement >= (MIN_AGREEMENT[precision] if min_agreement is None else min_agreement)

    def describe(self) -> str:
        return (f"max abs logit difference {self.max_abs_diff:.3g} (logits up to {self.logit_scale:.3g}), "
                f"top-1 agreement {100 * self.top1_agreement:.2f}% on {self.samples} inputs")


@torch.no_grad()
def compare(reference: Callable[[Tensor], Tensor], candidate: Callable[[Tensor], Tensor], inputs: Tensor,
            batch_size: int = 64) -> Agreement:
    """Run both on ``inputs`` (in batches) and compare their logits."""
    diff, scale, same = 0.0, 0.0, 0
    for x in inputs.split(batch_size):
        expected = reference(x).float()
        actual = candidate(x).float()
        diff = max(diff, (expected - actual).abs().max().item())
        scale = max(scale, expected.abs().max().item())
        same += int((expected.argmax(1) == actual.argmax(1)).sum())
    return Agreement(diff, scale, same / len(inputs), len(inputs))


# ---------------------------------------------------------------- ONNX Runtime


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ValueError("ONNX needs onnxruntime: pip install 'resnetlab[export]'") from error
    return onnxruntime


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime, called like the PyTorch model (float tensors in and out)."""

    def __init__(self, path: PathLike, threads: Optional[int] = None) -> None:
        super().__init__()
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"{path} is not an ONNX model ONNX Runtime can run: "
                             f"{one_line(error)[:160]}") from error
        signature = self.session.get_inputs()[0]
        self.input_name = signature.name
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: Dict[str, Any] = json.loads(stored) if stored else {}
        self.in_chans = int(signature.shape[1])
        self.num_classes = int(self.session.get_outputs()[0].shape[1])
        # A model exported without a dynamic batch takes exactly this many images per run.
        self.fixed_batch = signature.shape[0] if isinstance(signature.shape[0], int) else None

    def _run(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])

    def forward(self, x: Tensor) -> Tensor:
        images = x.detach().float().cpu().contiguous()
        if self.fixed_batch is None or len(images) == self.fixed_batch:
            return self._run(images).to(x.device)
        outputs = []
        for chunk in images.split(self.fixed_batch):
            missing = self.fixed_batch - len(chunk)
            padded = torch.cat([chunk, chunk.new_zeros(missing, *chunk.shape[1:])]) if missing else chunk
            outputs.append(self._run(padded)[: len(chunk)])
        return torch.cat(outputs).to(x.device)


# ---------------------------------------------------------------- writing files


def _onnx_export(model: nn.Module, path: Path, example: Tensor, dynamic_batch: bool,
                 metadata: Dict[str, Any]) -> None:
    """torch.onnx.export (the torch.export-based exporter) of model with BN folded, with our metadata.

    Height and width stay dynamic, as in PyTorch; the batch size too when ``dynamic_batch``
    (else it is fixed at the example's). Folding first halves the graph and the export time.
    """
    import onnx

    model = fold_batchnorm(model)

    smallest = max(2, int(getattr(model, "min_input_size", 2)))
    dims: Dict[int, Any] = {2: torch.export.Dim("height", min=smallest), 3: torch.export.Dim("width", min=smallest)}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch")
    dynamic_shapes = {"x": dims}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=dynamic_shapes, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    onnx.save(proto, str(path))


def _onnx_int8(source: Path, target: Path, calibration: Tensor, batch_size: int = 32) -> None:
    """ONNX Runtime static quantization (QDQ, int8 weights per channel) of the fp32 file at source."""
    _onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.split(batch_size))

        def get_next(self) -> Optional[Dict[str, Any]]:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.float().numpy()}

    prepared = source.with_name("preprocessed.onnx")  # beside source, in its temporary folder
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


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


def _torchscript_module(model: nn.Module, precision: str, example: Tensor,
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


@dataclass
class ExportResult:
    """What export_model wrote and how the written file compared with the PyTorch model."""

    path: str
    format: str
    precision: str
    bytes: int
    agreement: Agreement
    inputs: str

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), agreement=asdict(self.agreement))


def write_export(model: nn.Module, path: Path, fmt: str, precision: str, example: Tensor,
                 calibration: Optional[Tensor], dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model to path in fmt/precision (no verification; see export_model)."""
    if fmt == "onnx":
        example = example if dynamic_batch else example[:1]
        if precision == "int8":
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                _onnx_export(model, fp32, example, dynamic_batch, metadata)
                assert calibration is not None
                _onnx_int8(fp32, path, calibration, batch_size=32 if dynamic_batch else 1)
        else:
            _onnx_export(model, path, example, dynamic_batch, metadata)
    elif fmt == "torchscript":
        module = _torchscript_module(model, precision, example, calibration)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(module, str(path), _extra_files={METADATA_KEY + ".json": json.dumps(metadata)})
    else:
        from .weights import save_weights

        save_weights(model, path, metadata.get("arch") or "resnet", options=metadata.get("options"),
                     class_names=metadata.get("class_names"), preprocessing=metadata.get("preprocessing"),
                     dtype=torch.bfloat16 if precision == "bf16" else None)


def load_export(path: Path, fmt: str) -> Callable[[Tensor], Tensor]:
    """Load a file written by write_export, as a function from images to float32 logits."""
    if fmt == "onnx":
        return OnnxModel(path)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path))
        return lambda x: module(x).float()
    from .weights import load_model

    model, _ = load_model(path)
    return model


def export_model(model: nn.Module, output: PathLike, fmt: str = "onnx", precision: str = "fp32", *,
                 inputs: Tensor, calibration: Optional[Tensor] = None, dynamic_batch: bool = True,
                 metadata: Optional[Dict[str, Any]] = None, min_agreement: Optional[float] = None,
                 max_abs_diff: Optional[float] = None, inputs_name: str = "given inputs") -> ExportResult:
    """Write ``model`` as ``fmt`` in ``precision`` to ``output``, verified.

    The written file is loaded back and run on ``inputs`` (normalized float N x C x H x W);
    its logits are compared with the eager fp32 model's. When they miss the tolerance
    (fp32: max abs difference <= 1e-4 x max(1, largest |logit|); bf16 >= 98% and int8
    >= 95% top-1 agreement, unless given) a ValueError is raised and nothing is written.
    int8 needs ``calibration`` images. ``metadata`` (arch, options, class_names,
    preprocessing) is stored in the file.
    """
    check_choice(fmt, FORMATS, "format")
    check_choice(precision, PRECISIONS, "precision")
    if precision not in FORMAT_PRECISIONS[fmt]:
        accepted = ", ".join(f for f in FORMATS if precision in FORMAT_PRECISIONS[f])
        raise ValueError(f"{precision} cannot be exported as {fmt}; {precision} formats: {accepted}")
    model = model.eval()
    in_chans = getattr(model, "in_chans", inputs.shape[1] if inputs.dim() == 4 else 3)
    inputs = check_inputs(inputs, in_chans, "verification data")
    if precision == "int8":
        if calibration is None:
            raise ValueError("int8 export needs calibration images (--calibration DATA)")
        calibration = check_inputs(calibration, in_chans, "calibration data")
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output {output} is a folder; give a file name")
    example = inputs[:2]
    results: Dict[str, Any] = {}

    def write_and_verify(tmp: Path) -> None:
        write_export(model, tmp, fmt, precision, example, calibration, dynamic_batch, metadata or {})
        agreement = compare(model, load_export(tmp, fmt), inputs)
        if not agreement.within(precision, min_agreement, max_abs_diff):
            raise ValueError(f"the exported {fmt} {precision} model misses the tolerance: {agreement.describe()}; "
                             f"nothing written to {output}")
        results.update(agreement=agreement, size=tmp.stat().st_size)

    try:
        atomic_write(output, write_and_verify)
    except OSError as error:
        raise OSError(f"cannot write {output}: {error.strerror or error}") from None
    return ExportResult(str(output), fmt, precision, results["size"], results["agreement"], inputs_name)
