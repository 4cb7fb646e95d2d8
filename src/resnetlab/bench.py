"""Inference speed of every path in one run, each as a ratio to torchvision's eager fp32 model
with the same weights, and each path's agreement with fp32 on real images."""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .data.inputs import load_inputs
from .errors import one_line
from .export import OnnxModel, calibration_images, fold_batchnorm, write_export
from .machine import describe_machine
from .models import build_model
from .optimize import optimize_for_inference, time_batches
from .weights import load_model

PATHS = ("torchvision", "eager", "folded-cl", "compiled", "onednn-graph", "bf16", "onnx-fp32", "int8", "onnx-int8")
DESCRIPTIONS = {
    "torchvision": "torchvision eager fp32, same weights (reference)",
    "eager": "resnetlab eager fp32",
    "folded-cl": "BN folded + channels_last, fp32",
    "compiled": "folded + channels_last + torch.compile (freezing), fp32",
    "onednn-graph": "folded + channels_last, TorchScript trace + freeze with oneDNN Graph fusion, fp32",
    "bf16": "folded + channels_last + bf16 weights + torch.compile",
    "onnx-fp32": "ONNX Runtime fp32",
    "int8": "int8 static quantization, torch FX (x86)",
    "onnx-int8": "int8 static quantization, ONNX Runtime (QDQ)",
}


@dataclass
class PathResult:
    """One inference path: speed on the benchmark batch, agreement with fp32 on the check images."""

    name: str
    description: str
    images_per_s: float = 0.0
    latency_ms: float = 0.0  # median time of one batch
    latency_p90_ms: float = 0.0
    ratio: float = 0.0  # images/s over the reference's
    setup_s: float = 0.0  # preparing the path, compiling included
    max_abs_diff: Optional[float] = None  # logits against resnetlab eager fp32, on the check images
    top1_agreement: Optional[float] = None
    accuracy: Optional[float] = None  # top-1 on the check images, when they have labels
    error: str = ""


@dataclass
class BenchReport:
    model: str
    batch: int
    size: int
    in_chans: int
    threads: int
    weights: str
    check_images: str
    machine: str
    torch_version: str
    reference: str
    results: List[PathResult] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def torchvision_twin(model: nn.Module, arch: str) -> Optional[nn.Module]:
    """torchvision's model of the same architecture holding model's weights, or None if it has none."""
    import torchvision

    builder = getattr(torchvision.models, arch, None)
    if builder is None or not callable(builder):
        return None
    try:
        twin = builder(num_classes=model.num_classes)
        if model.in_chans != 3:
            old = twin.conv1
            twin.conv1 = nn.Conv2d(model.in_chans, old.out_channels, old.kernel_size, old.stride, old.padding,
                                   bias=False)
        twin.load_state_dict(model.state_dict(), strict=True)
    except (RuntimeError, TypeError, AttributeError):  # builder options torchvision does not have
        return None
    return twin.eval()


def _build_paths(model: nn.Module, twin: Optional[nn.Module], names: Sequence[str], calibration: Tensor,
                 example: Tensor, folder: Path) -> Dict[str, Callable[[], Callable[[Tensor], Tensor]]]:
    """A builder per path; each returns the function from a float batch to float logits."""

    def onnx(precision: str) -> Callable[[Tensor], Tensor]:
        path = folder / f"{precision}.onnx"
        write_export(model, path, "onnx", precision, example, calibration if precision == "int8" else None,
                     True, {})
        return OnnxModel(path)

    def onednn_graph() -> Callable[[Tensor], Tensor]:
        folded = fold_batchnorm(model).to(memory_format=torch.channels_last)
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(folded, example.contiguous(memory_format=torch.channels_last)))

        def run(x: Tensor) -> Tensor:
            enabled = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(True)  # a process-wide switch: on only while this path runs
            try:
                return traced(x.contiguous(memory_format=torch.channels_last))
            finally:
                torch.jit.enable_onednn_fusion(enabled)

        return run

    builders: Dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
        "eager": lambda: model,
        "folded-cl": lambda: optimize_for_inference(model, "fp32", compile=False),
        "compiled": lambda: optimize_for_inference(model, "fp32", compile=True, example=example),
        "onednn-graph": onednn_graph,
        "bf16": lambda: optimize_for_inference(model, "bf16", compile=True, example=example),
        "onnx-fp32": lambda: onnx("fp32"),
        "int8": lambda: optimize_for_inference(model, "int8", calibration, int8_engine="torch"),
        "onnx-int8": lambda: onnx("int8"),
    }
    if twin is not None:
        builders["torchvision"] = lambda: twin
    return {name: builders[name] for name in names if name in builders}


def run_bench(model: nn.Module, arch: str, *, batch: int = 8, size: int = 224, seconds: float = 10.0,
              check: Optional[Tuple[Tensor, Optional[Tensor], str]] = None, calibration: Optional[Tensor] = None,
              paths: Sequence[str] = PATHS, weights: str = "random init",
              progress: Optional[Callable[[PathResult], None]] = None) -> BenchReport:
    """Measure each of ``paths`` on one random batch of ``batch`` x C x ``size`` x ``size``.

    ``check`` = (images, labels or None, description): the images on which each path's
    logits are compared with resnetlab's eager fp32 model (default: 64 random images at
    ``size``). ``calibration`` feeds the int8 paths (default: the check images).
    """
    for name in paths:
        if name not in PATHS:
            raise ValueError(f"unknown path {name!r}; accepted: {', '.join(PATHS)}")
    if batch < 1 or size < 1 or seconds <= 0:
        raise ValueError(f"batch, size and seconds must be positive, got {batch}, {size}, {seconds}")
    model = model.float().eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.in_chans, size, size, generator=generator)
    if check is None:
        images = torch.randn(64, model.in_chans, size, size, generator=generator)
        check = (images, None, f"random normal ({len(images)} images at {size}x{size})")
    images, labels, check_name = check
    calibration = images if calibration is None else calibration
    twin = torchvision_twin(model, arch)
    reference_name = "torchvision" if twin is not None else "eager"
    report = BenchReport(arch, batch, size, model.in_chans, torch.get_num_threads(), weights, check_name,
                         describe_machine(), torch.__version__, DESCRIPTIONS[reference_name])
    fp32_logits = _logits(model, images)
    reference_speed = None
    with tempfile.TemporaryDirectory() as folder:
        builders = _build_paths(model, twin, [reference_name] + [p for p in paths if p != reference_name],
                                calibration, images[:2], Path(folder))
        for name, build in builders.items():
            result = PathResult(name, DESCRIPTIONS[name])
            try:
                tick = time.perf_counter()
                torch._dynamo.reset()  # compiled paths share ResNet.forward: each starts from a clean cache
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    run = build()
                    run(x)  # compiles where the path compiles
                result.setup_s = time.perf_counter() - tick
                times = time_batches(run, x, seconds)
                result.images_per_s = batch * len(times) / sum(times)
                result.latency_ms = 1000 * statistics.median(times)
                result.latency_p90_ms = 1000 * sorted(times)[int(0.9 * (len(times) - 1))]
                logits = _logits(run, images)
                result.max_abs_diff = float((logits - fp32_logits).abs().max())
                result.top1_agreement = float((logits.argmax(1) == fp32_logits.argmax(1)).float().mean())
                if labels is not None:
                    result.accuracy = 100.0 * float((logits.argmax(1) == labels).float().mean())
            except Exception as error:  # a path that cannot run here (no compiler, no onnxruntime) is reported
                result.error = f"{type(error).__name__}: {one_line(error)[:200]}"
            if name == reference_name:
                reference_speed = result.images_per_s or None
            if reference_speed and result.images_per_s:
                result.ratio = result.images_per_s / reference_speed
            report.results.append(result)
            if progress is not None:
                progress(result)
    return report



def bench_checkpoint(model_name: Optional[str] = None, weights: Optional[Union[str, Path]] = None,
                     options: Optional[Dict[str, Any]] = None, *, batch: int = 8, size: int = 224,
                     seconds: float = 10.0, data: Optional[str] = None, data_dir: Optional[str] = None,
                     samples: int = 1000, calibration: Optional[str] = None, paths: Optional[Sequence[str]] = None,
                     progress: Optional[Callable[[PathResult], None]] = None) -> BenchReport:
    """run_bench on the zoo model ``model_name`` with ``weights`` (default: random init, seed 0).

    ``options`` are model options; with weights, those that change the stem or head (e.g.
    in_chans=3 for 1-channel weights) adapt them. ``data``: each path is checked on ``samples``
    images of its test split. int8 calibrates on ``calibration``, else on ``data``'s train split,
    else on the check images.
    """
    options = options or {}
    if weights:
        model, metadata = load_model(weights, model_name, strict=not options, **options)
        arch = model_name or metadata["arch"]
    else:
        if not model_name:
            raise ValueError("pass --model NAME or --weights FILE")
        torch.manual_seed(0)
        model, metadata, arch = build_model(model_name, **options).eval(), {}, model_name
    check = calibration_set = None
    if data:
        sample = load_inputs(data, metadata.get("preprocessing"), model.in_chans, samples, "test", data_dir)
        check = (sample.images, sample.labels, sample.description)
    if calibration or data:  # int8 ranges come from the train split, never from the checked images
        calibration_set = calibration_images(calibration or data, metadata, model.in_chans, data_dir)
    return run_bench(model, arch, batch=batch, size=size, seconds=seconds, check=check, calibration=calibration_set,
                     paths=paths or list(PATHS), weights=str(weights) if weights else "random init (seed 0)",
                     progress=progress)


@torch.inference_mode()
def _logits(run: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    return torch.cat([run(part).float() for part in images.split(64)])


def format_report(report: BenchReport) -> str:
    """The report as a terminal table."""
    lines = [f"{report.model} batch {report.batch} at {report.in_chans}x{report.size}x{report.size}, "
             f"{report.threads} threads, torch {report.torch_version}, {report.machine}",
             f"weights: {report.weights}; agreement with fp32 on {report.check_images}",
             f"{'path':<12} {'img/s':>8} {'x ref':>6} {'lat ms':>8} {'p90 ms':>8} {'max|dlogit|':>11} "
             f"{'top-1 agr':>9} {'acc %':>7} {'setup s':>7}  what"]
    for r in report.results:
        if r.error:
            lines.append(f"{r.name:<12} {'failed':>8}  {r.error}")
            continue
        acc = f"{r.accuracy:7.2f}" if r.accuracy is not None else f"{'-':>7}"
        lines.append(f"{r.name:<12} {r.images_per_s:8.1f} {r.ratio:6.2f} {r.latency_ms:8.1f} {r.latency_p90_ms:8.1f} "
                     f"{r.max_abs_diff:11.2e} {100 * (r.top1_agreement or 0):8.2f}% {acc} {r.setup_s:7.1f}  "
                     f"{r.description}")
    return "\n".join(lines)
