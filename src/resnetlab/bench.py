"""Inference speed of every path in one run, against torchvision's eager fp32 model with the same
weights: all paths timed together in interleaved rounds, at batch 1 (latency) and at a throughput
batch, each as a share of this machine's peak, and each path's agreement with fp32 on real images."""

from __future__ import annotations

import functools
import importlib.util
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .analysis import count_macs
from .data.inputs import load_inputs
from .errors import one_line
from .export import OnnxModel, calibration_images, fold_batchnorm, openvino_model, write_export
from .export.openvino import cpu_runs_bf16
from .machine import Timing, compare, describe_machine, interleaved, measure_peaks
from .models import build_model
from .optimize import optimize_for_inference, recompile_limit
from .weights import load_model

# Every path: (precision, what it is); the order is the report's.
PATH_TABLE = {
    "torchvision": ("fp32", "torchvision eager fp32, same weights (reference)"),
    "eager": ("fp32", "resnetlab eager fp32"),
    "folded-cl": ("fp32", "BN folded + channels_last, fp32"),
    "compiled": ("fp32", "folded + channels_last + torch.compile (freezing), fp32"),
    "compiled-max-autotune": ("fp32", "folded + channels_last + torch.compile max-autotune (freezing), fp32"),
    "onednn-graph": ("fp32", "folded + channels_last, TorchScript trace + freeze with oneDNN Graph fusion, fp32"),
    "bf16": ("bf16", "folded + channels_last + bf16 weights + torch.compile"),
    "onnx-fp32": ("fp32", "ONNX Runtime fp32"),
    "openvino-fp32": ("fp32", "OpenVINO fp32 (CPU plugin, f32 precision hint)"),
    "openvino-bf16": ("bf16", "OpenVINO bf16 (fp32 IR run with the bf16 precision hint)"),
    "int8": ("int8", "int8 static quantization, torch FX (x86)"),
    "onnx-int8": ("int8", "int8 static quantization, ONNX Runtime (QDQ)"),
    "openvino-int8": ("int8", "int8 post-training quantization, NNCF, run by OpenVINO"),
    **{f"auto-{p}": (p, f"optimize_for_inference {p}, automatic choice") for p in ("fp32", "bf16", "int8")},
}
PATHS = tuple(PATH_TABLE)


def default_paths() -> List[str]:
    """Every path this machine can run: the OpenVINO ones where the openvino extra is installed, its
    bf16 where the CPU runs bf16."""
    if importlib.util.find_spec("openvino") is None:
        return [name for name in PATHS if not name.startswith("openvino")]
    return [name for name in PATHS if name != "openvino-bf16" or cpu_runs_bf16()]


@dataclass
class Speed:
    """One path at one batch size, over the interleaved rounds."""

    batch: int
    images_per_s: float  # the median of the rounds' images/s
    spread: float  # the interquartile range of the rounds' images/s
    latency_ms: float  # the median call (one batch)
    latency_p90_ms: float
    ratio: float = 0.0  # the median of the rounds' images/s over the reference's in the same round
    ratio_spread: float = 0.0  # the interquartile range of those ratios
    verdict: str = ""  # "1.52x faster", "1.31x slower", "within noise" (see machine.Ratio), or "reference"
    gflops: float = 0.0  # 2 x the model's MACs per image x images/s (int8: operations, counted alike)
    share_of_peak: Optional[float] = None  # MACs/s over this machine's measured peak in the path's precision
    best_peer: str = ""  # auto paths: the fastest other path of the same precision at this batch
    against_best_peer: str = ""  # auto paths: their verdict against it, round by round ("within noise", ...)


@dataclass
class PathResult:
    """One inference path: speed on the benchmark batch, agreement with fp32 on the check images.

    ``images_per_s``, ``latency_ms``, ``latency_p90_ms`` and ``ratio`` are those of the throughput
    batch; ``speeds`` holds every batch measured, batch 1 first."""

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
    precision: str = "fp32"  # the peak its share is taken of
    speeds: List[Speed] = field(default_factory=list)


@dataclass
class BenchReport:
    model: str
    batch: int  # the throughput batch
    size: int
    in_chans: int
    threads: int
    weights: str
    check_images: str
    machine: str
    torch_version: str
    reference: str
    results: List[PathResult] = field(default_factory=list)
    batches: List[int] = field(default_factory=list)  # every batch size timed
    rounds: int = 0
    seconds: float = 0.0  # each path's timing per batch size, all rounds together
    macs_per_image: int = 0
    peaks: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # precision -> gmacs_per_s, source

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
                 example: Tensor, folder: Path, timed: Tensor) -> Dict[str, Callable[[], Callable[[Tensor], Tensor]]]:
    """A builder per path; each returns the function from a float batch to float logits. The automatic
    choices are made on ``timed``, the throughput batch."""

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
        "compiled-max-autotune": lambda: optimize_for_inference(model, "fp32", compile="max-autotune", example=example),
        "onednn-graph": onednn_graph,
        "bf16": lambda: optimize_for_inference(model, "bf16", compile=True, example=example),
        "onnx-fp32": lambda: onnx("fp32"),
        "openvino-fp32": lambda: openvino_model(model, "fp32", example),
        "openvino-bf16": lambda: openvino_model(model, "bf16", example),
        "openvino-int8": lambda: openvino_model(model, "int8", example, calibration),
        "int8": lambda: optimize_for_inference(model, "int8", calibration, int8_engine="torch"),
        "onnx-int8": lambda: onnx("int8"),
        "auto-fp32": lambda: optimize_for_inference(model, "fp32", example=timed),
        "auto-bf16": lambda: optimize_for_inference(model, "bf16", example=timed),
        "auto-int8": lambda: optimize_for_inference(model, "int8", calibration, example=timed),
    }
    if twin is not None:
        builders["torchvision"] = lambda: twin
    return {name: builders[name] for name in names if name in builders}


def run_bench(model: nn.Module, arch: str, *, batch: int = 8, size: int = 224, seconds: float = 10.0,
              rounds: int = 10, latency_batch: Optional[int] = 1,
              check: Optional[Tuple[Tensor, Optional[Tensor], str]] = None, calibration: Optional[Tensor] = None,
              paths: Optional[Sequence[str]] = None, weights: str = "random init",
              peaks: Optional[Mapping[str, float]] = None,
              progress: Optional[Callable[[str], None]] = None) -> BenchReport:
    """Measure each of ``paths`` on random batches of ``latency_batch`` (None: not measured) and of
    ``batch`` images of C x ``size`` x ``size``.

    Each path is built and checked first; then, one batch size after the other, all paths are
    timed together in ``rounds`` interleaved rounds (``resnetlab.machine.interleaved``), each path
    for about ``seconds`` over all rounds. A path's ratio to the reference is taken round by round;
    where the rounds disagree by more than the ratio differs from 1, its verdict is "within noise".
    ``peaks``: MACs/s per precision for the share of peak (default: ``measure_peaks`` on this
    machine). ``check`` = (images, labels or None, description): the images on which each path's
    logits are compared with resnetlab's eager fp32 model (default: 64 random images at ``size``).
    ``calibration`` feeds the int8 paths (default: the check images). ``progress`` gets a line
    of text at each step.
    """
    paths = default_paths() if paths is None else paths
    for name in paths:
        if name not in PATHS:
            raise ValueError(f"unknown path {name!r}; accepted: {', '.join(PATHS)}")
    if batch < 1 or size < 1 or seconds <= 0 or (latency_batch is not None and latency_batch < 1):
        raise ValueError(f"batch, latency batch, size and seconds must be positive, got {batch}, {latency_batch}, "
                         f"{size}, {seconds}")
    if rounds < 2:
        raise ValueError(f"rounds must be at least 2 (a spread needs two rounds), got {rounds}")
    say = progress or (lambda line: None)
    model = model.float().eval()
    generator = torch.Generator().manual_seed(0)
    batches = sorted({batch} | ({latency_batch} if latency_batch else set()))
    inputs = {b: torch.randn(b, model.in_chans, size, size, generator=generator) for b in batches}
    if check is None:
        images = torch.randn(64, model.in_chans, size, size, generator=generator)
        check = (images, None, f"random normal ({len(images)} images at {size}x{size})")
    images, labels, check_name = check
    calibration = images if calibration is None else calibration
    twin = torchvision_twin(model, arch)
    reference_name = "torchvision" if twin is not None else "eager"
    report = BenchReport(arch, batch, size, model.in_chans, torch.get_num_threads(), weights, check_name,
                         describe_machine(), torch.__version__, PATH_TABLE[reference_name][1], batches=batches,
                         rounds=rounds, seconds=seconds)
    report.macs_per_image = count_macs(model, (1, model.in_chans, size, size))
    if peaks is None:
        say("measuring this machine's peak")
        measured = measure_peaks(matmul_seconds=min(1.0, seconds / 10))
        peaks, sources = {k: p.macs_per_s for k, p in measured.items()}, {k: p.source for k, p in measured.items()}
    else:
        sources = dict.fromkeys(peaks, "given")
    report.peaks = {k: dict(gmacs_per_s=round(rate / 1e9, 1), source=sources[k]) for k, rate in peaks.items()}
    fp32_logits = _logits(model, images)
    runs: Dict[str, Callable[[Tensor], Tensor]] = {}
    torch._dynamo.reset()  # the compiled paths start from a clean cache
    with tempfile.TemporaryDirectory() as folder, recompile_limit(64), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builders = _build_paths(model, twin, [reference_name] + [p for p in paths if p != reference_name],
                                calibration, images[:2], Path(folder), inputs[batch])
        for name, build in builders.items():
            result = PathResult(name, PATH_TABLE[name][1], precision=PATH_TABLE[name][0])
            report.results.append(result)
            try:
                tick = time.perf_counter()
                run = build()
                if getattr(run, "choice", ""):  # optimize_for_inference says what it measured and kept
                    result.description += f": {run.choice}"
                with torch.inference_mode():
                    for x in inputs.values():
                        run(x)  # compiles where the path compiles, at every batch size timed
                result.setup_s = time.perf_counter() - tick
                _check(result, run, images, labels, fp32_logits)
                runs[name] = run
            except Exception as error:  # a path that cannot run here (no compiler, no onnxruntime) is reported
                result.error = f"{type(error).__name__}: {one_line(error)[:200]}"
            say(f"{name}: {result.error or f'ready in {result.setup_s:.1f} s'}")
        for b, x in inputs.items():
            if not runs:
                break
            say(f"batch {b}: timing {len(runs)} paths in {rounds} interleaved rounds, ~{seconds:g} s each")
            with torch.inference_mode():
                timings = interleaved({name: functools.partial(run, x) for name, run in runs.items()}, rounds,
                                      seconds / rounds, items=b, warmup=2)
            _record(report, timings, reference_name, b, peaks)
    return report


def _check(result: PathResult, run: Callable[[Tensor], Tensor], images: Tensor, labels: Optional[Tensor],
           fp32_logits: Tensor) -> None:
    """The path's agreement with fp32 logits, and its accuracy where there are labels."""
    logits = _logits(run, images)
    result.max_abs_diff = float((logits - fp32_logits).abs().max())
    result.top1_agreement = float((logits.argmax(1) == fp32_logits.argmax(1)).float().mean())
    if labels is not None:
        result.accuracy = 100.0 * float((logits.argmax(1) == labels).float().mean())


def _record(report: BenchReport, timings: Dict[str, Timing], reference_name: str, batch: int,
            peaks: Mapping[str, float]) -> None:
    """Each timed path's Speed at ``batch``; the throughput batch's also in the result's own fields."""
    reference = timings.get(reference_name)
    if reference is not None and reference.error:
        reference = None
    for result in report.results:
        timing = timings.get(result.name)
        if timing is None:
            continue
        if timing.error:
            result.error = f"batch {batch}: {timing.error}"
            continue
        speed = Speed(batch, timing.rate, timing.spread, 1000 * timing.latency(50), 1000 * timing.latency(90))
        if result.name == reference_name:
            speed.ratio, speed.verdict = 1.0, "reference"
        elif reference is not None:
            ratio = compare(timing, reference)
            speed.ratio, speed.ratio_spread, speed.verdict = ratio.median, ratio.spread, ratio.verdict
        macs_per_s = report.macs_per_image * timing.rate
        speed.gflops = 2 * macs_per_s / 1e9
        if peaks.get(result.precision):
            speed.share_of_peak = macs_per_s / peaks[result.precision]
        if result.name.startswith("auto-"):
            _against_best_peer(speed, result, report, timings)
        result.speeds.append(speed)
        if batch == report.batch:
            result.images_per_s, result.latency_ms, result.latency_p90_ms = (speed.images_per_s, speed.latency_ms,
                                                                              speed.latency_p90_ms)
            result.ratio = speed.ratio


def _against_best_peer(speed: Speed, auto: PathResult, report: BenchReport, timings: Dict[str, Timing]) -> None:
    """Set ``speed``'s best peer: the fastest path of ``auto``'s precision that is not an automatic choice,
    and the automatic choice's verdict against it (what optimize_for_inference promises to match)."""
    peers = [timings[r.name] for r in report.results if r.precision == auto.precision and not r.name.startswith("auto-")
             and r.name in timings and not timings[r.name].error]
    best = max(peers, key=lambda timing: timing.rate, default=None)
    if best is not None:
        speed.best_peer, speed.against_best_peer = best.name, compare(timings[auto.name], best).verdict


def bench_checkpoint(model_name: Optional[str] = None, weights: Optional[Union[str, Path]] = None,
                     options: Optional[Dict[str, Any]] = None, *, batch: int = 8, size: int = 224,
                     seconds: float = 10.0, data: Optional[str] = None, data_dir: Optional[str] = None,
                     samples: int = 1000, calibration: Optional[str] = None, paths: Optional[Sequence[str]] = None,
                     rounds: int = 10, latency_batch: Optional[int] = 1,
                     progress: Optional[Callable[[str], None]] = None) -> BenchReport:
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
                     paths=paths or None, weights=str(weights) if weights else "random init (seed 0)",
                     rounds=rounds, latency_batch=latency_batch, progress=progress)


@torch.inference_mode()
def _logits(run: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    return torch.cat([run(part).float() for part in images.split(64)])


def format_report(report: BenchReport) -> str:
    """The report as terminal tables: speed at each batch size, then agreement with fp32."""
    width = max([14] + [len(r.name) for r in report.results])  # the path column
    peaks = ", ".join(f"{k} {p['gmacs_per_s']:.1f} ({p['source']})" for k, p in report.peaks.items()) or "none"
    lines = [f"{report.model} at {report.in_chans}x{report.size}x{report.size}; {report.machine}",
             f"{report.rounds} interleaved rounds, ~{report.seconds:g} s per path and batch size; "
             f"{report.macs_per_image / 1e9:.3f} GMACs per image; peak GMAC/s: {peaks}",
             f"x ref: median of the rounds' ratios to {report.reference.split(',')[0]} (interquartile range)"]
    for batch in report.batches:
        kind = "throughput" if batch == report.batch else "latency"
        lines += ["", f"batch {batch} ({kind})",
                  f"{'path':<{width}} {'img/s':>8} {'iqr':>6} {'x ref (iqr)':>14}  {'verdict':<13} {'p50 ms':>8} "
                  f"{'p90 ms':>8} {'GFLOP/s':>8} {'of peak':>8}"]
        for r in report.results:
            speed = next((s for s in r.speeds if s.batch == batch), None)
            if speed is None:
                lines.append(f"{r.name:<{width}} {'failed':>8}  {r.error}")
                continue
            share = f"{100 * speed.share_of_peak:7.1f}%" if speed.share_of_peak is not None else f"{'-':>8}"
            ratio = f"{speed.ratio:.2f} ({speed.ratio_spread:.2f})" if speed.ratio else "-"
            peer = f"  against {speed.best_peer}: {speed.against_best_peer}" if speed.best_peer else ""
            lines.append(f"{r.name:<{width}} {speed.images_per_s:8.1f} {speed.spread:6.1f} {ratio:>14}  "
                         f"{speed.verdict or '-':<13} {speed.latency_ms:8.2f} {speed.latency_p90_ms:8.2f} "
                         f"{speed.gflops:8.1f} {share}{peer}")
    lines += ["", f"agreement with fp32 on {report.check_images}; weights: {report.weights}",
              f"{'path':<{width}} {'max|dlogit|':>11} {'top-1 agr':>9} {'acc %':>7} {'setup s':>7}  what"]
    for r in report.results:
        if r.max_abs_diff is None:
            lines.append(f"{r.name:<{width}} {'failed':>11}  {r.error}")
            continue
        acc = f"{r.accuracy:7.2f}" if r.accuracy is not None else f"{'-':>7}"
        lines.append(f"{r.name:<{width}} {r.max_abs_diff:11.2e} {100 * (r.top1_agreement or 0):8.2f}% {acc} "
                     f"{r.setup_s:7.1f}  {r.description}")
    return "\n".join(lines)
