"""Verified export: the written file is loaded back, run, and compared with the PyTorch model;
a file whose logits miss the tolerance is not kept."""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..fileio import atomic_write
from .formats import FORMAT_PRECISIONS, FORMATS, PRECISIONS, REGISTRY, check_choice, load_export, write_export
from .fuse import check_inputs

__all__ = ["MAX_ABS_DIFF", "MIN_AGREEMENT", "Agreement", "ExportResult", "compare", "export_model"]

# Verification: fp32 must match the eager model's logits; bf16 and int8 must agree on top-1.
MAX_ABS_DIFF = 1e-4  # relative to max(1, largest |logit|)
MIN_AGREEMENT = {"fp32": 1.0, "bf16": 0.98, "int8": 0.95}


@dataclass
class Agreement:
    """How closely a candidate's logits follow the reference's on the same inputs."""

    max_abs_diff: float
    logit_scale: float  # the largest |reference logit|
    top1_agreement: float  # fraction of inputs with the same arg-max
    samples: int
    non_finite: int = 0  # inputs on which either model gave a NaN or infinite logit

    def within(self, precision: str, min_agreement: Optional[float] = None,
               max_abs_diff: Optional[float] = None) -> bool:
        """fp32: logits equal up to ``max_abs_diff`` x max(1, scale); bf16/int8: top-1 agreement. Never
        when a logit of either model is NaN or infinite."""
        if self.non_finite or not math.isfinite(self.max_abs_diff):
            return False
        if precision == "fp32":
            limit = (MAX_ABS_DIFF if max_abs_diff is None else max_abs_diff) * max(1.0, self.logit_scale)
            return self.max_abs_diff <= limit
        return self.top1_agreement >= (MIN_AGREEMENT[precision] if min_agreement is None else min_agreement)

    def describe(self) -> str:
        text = (f"max abs logit difference {self.max_abs_diff:.3g} (logits up to {self.logit_scale:.3g}), "
                f"top-1 agreement {100 * self.top1_agreement:.2f}% on {self.samples} inputs")
        if self.non_finite:
            text += f", NaN or infinite logits on {self.non_finite} of them"
        return text


@torch.no_grad()
def compare(reference: Callable[[Tensor], Tensor], candidate: Callable[[Tensor], Tensor], inputs: Tensor,
            batch_size: int = 64) -> Agreement:
    """Run both on ``inputs`` (in batches) and compare their logits (a NaN difference counts as infinite)."""
    diff, scale, same, non_finite = 0.0, 0.0, 0, 0
    for x in inputs.split(batch_size):
        expected = reference(x).float()
        actual = candidate(x).float()
        finite = torch.isfinite(expected).all(1) & torch.isfinite(actual).all(1)
        non_finite += int((~finite).sum())
        gap = (expected - actual).abs().nan_to_num(nan=math.inf).max().item()
        diff = max(diff, gap)
        scale = max(scale, expected.abs().nan_to_num(nan=math.inf).max().item())
        same += int(((expected.argmax(1) == actual.argmax(1)) & finite).sum())
    return Agreement(diff, scale, same / len(inputs), len(inputs), non_finite)


@dataclass
class ExportResult:
    """What export_model wrote and how the written file compared with the PyTorch model."""

    path: str
    format: str
    precision: str
    bytes: int  # with the files written beside it (OpenVINO's .bin)
    agreement: Agreement
    inputs: str  # what the file was verified on

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), agreement=asdict(self.agreement))


def export_model(model: nn.Module, output: Union[str, Path], fmt: str = "onnx", precision: str = "fp32", *,
                 inputs: Tensor, calibration: Optional[Tensor] = None, dynamic_batch: bool = True,
                 metadata: Optional[Dict[str, Any]] = None, min_agreement: Optional[float] = None,
                 max_abs_diff: Optional[float] = None, inputs_name: str = "given inputs") -> ExportResult:
    """Write ``model`` as ``fmt`` in ``precision`` to ``output``, verified.

    The written file is loaded back and run on ``inputs`` (normalized float N x C x H x W);
    its logits are compared with the eager fp32 model's. When they miss the tolerance
    (fp32: max abs difference <= 1e-4 x max(1, largest |logit|); bf16 >= 98% and int8
    >= 95% top-1 agreement, unless given) a ValueError is raised and nothing is written.
    int8 needs ``calibration`` images. ``metadata`` (arch, options, class_names,
    preprocessing) is stored in the file. OpenVINO's IR is ``output`` (a .xml) and the .bin
    of the same name beside it, both written or neither.
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
    companions = REGISTRY[fmt].companions
    if companions and output.suffix != REGISTRY[fmt].suffix:
        raise ValueError(f"output {output}: {fmt} is written as a {REGISTRY[fmt].suffix} file and its "
                         f"{', '.join(companions)} beside it; accepted: a {REGISTRY[fmt].suffix} file name")
    example = inputs[:2]
    results: Dict[str, Any] = {}

    def write_and_verify(tmp: Path) -> None:
        write_export(model, tmp, fmt, precision, example, calibration, dynamic_batch, metadata or {})
        agreement = compare(model, load_export(tmp, fmt), inputs)
        if not agreement.within(precision, min_agreement, max_abs_diff):
            raise ValueError(f"the exported {fmt} {precision} model misses the tolerance: {agreement.describe()}; "
                             f"nothing written to {output}")
        written = [tmp] + [tmp.with_suffix(suffix) for suffix in companions]
        results.update(agreement=agreement, size=sum(path.stat().st_size for path in written))

    try:
        _write_files(output, companions, write_and_verify)
    except OSError as error:
        raise OSError(f"cannot write {output}: {error.strerror or error}") from None
    return ExportResult(str(output), fmt, precision, results["size"], results["agreement"], inputs_name)


def _write_files(output: Path, companions: Tuple[str, ...], write: Callable[[Path], None]) -> None:
    """``write(path)``, then a rename to ``output`` (fileio.atomic_write). With files written beside the
    main one (``companions``: OpenVINO's .bin), all are written under their final names in a
    temporary folder beside ``output``, then the companions are renamed into place and the main
    file last. Nothing is left when writing or renaming fails."""
    if not companions:
        atomic_write(output, write)
        return
    moved: List[Path] = []

    def write_all(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{output.name}.") as folder:
            staged = Path(folder) / output.name
            write(staged)
            for suffix in companions:
                os.replace(staged.with_suffix(suffix), output.with_suffix(suffix))
                moved.append(output.with_suffix(suffix))
            os.replace(staged, tmp)  # which atomic_write renames to output

    try:
        atomic_write(output, write_all)
    except BaseException:
        for path in moved:
            path.unlink(missing_ok=True)
        raise
