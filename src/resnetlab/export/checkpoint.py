"""Exporting a checkpoint file: what ``resnetlab export`` does, as a function."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..weights import is_weights_name, load_model
from .formats import FORMATS, PRECISIONS, REGISTRY, check_choice
from .inputs import calibration_images, verification_inputs
from .verify import ExportResult, export_model

__all__ = ["default_output", "export_checkpoint", "export_metadata"]

PathLike = Union[str, Path]

# What a training run owns in its folder (the one holding run.json): never an export's target.
RUN_FILES = ("best.safetensors", "last.safetensors", "last.state.pt", "config.toml", "run.json", "metrics.json",
             "metrics.csv")


def export_metadata(metadata: Dict[str, Any], arch: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint metadata an exported file keeps (arch overridden by ``arch`` when given)."""
    keys = ("arch", "options", "class_names", "preprocessing")
    stored = {key: metadata[key] for key in keys if metadata.get(key) is not None}
    if arch:
        stored["arch"] = arch
    return stored


def default_output(weights: PathLike, fmt: str, precision: str) -> Path:
    """Where an export of ``weights`` goes unless told: beside them, e.g. best-fp32.onnx or best-fp32.xml
    (OpenVINO, with best-fp32.bin); for named weights, in the current folder: resnet50.tv2_in1k-fp32.onnx."""
    if is_weights_name(weights):
        return Path(f"{weights}-{precision}{REGISTRY[fmt].suffix}")
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}-{precision}{REGISTRY[fmt].suffix}")


def export_checkpoint(weights: PathLike, fmt: str, precision: str = "fp32", output: Optional[PathLike] = None, *,
                      model_name: Optional[str] = None, data: Optional[str] = None, calibration: Optional[str] = None,
                      data_dir: Optional[str] = None, samples: int = 256, dynamic_batch: bool = True,
                      min_agreement: Optional[float] = None, max_abs_diff: Optional[float] = None) -> ExportResult:
    """Export the checkpoint ``weights`` as ``fmt`` in ``precision``, verified (see export_model).

    int8 calibrates on ``calibration`` (see calibration_images). The file is verified on
    ``samples`` images of ``data``, else of ``calibration``, else of the checkpoint's dataset,
    else on random ones (see verification_inputs). ``output`` defaults to default_output.
    """
    fmt = check_choice(fmt, FORMATS, "format")
    precision = check_choice(precision, PRECISIONS, "precision")
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    model, metadata = load_model(weights, model_name)
    calibration_set = (calibration_images(calibration, metadata, model.in_chans, data_dir)
                       if precision == "int8" else None)
    inputs, described = verification_inputs(data or calibration, metadata, model.in_chans, samples, data_dir)
    output = Path(output or default_output(weights, fmt, precision))
    for written in [output] + [output.with_suffix(suffix) for suffix in REGISTRY[fmt].companions]:
        if written.resolve() == Path(weights).resolve():
            raise ValueError(f"output {written} would overwrite the weights; pass -o")
        if written.name in RUN_FILES and (written.parent / "run.json").is_file():
            raise ValueError(f"output {written} is a file of the training run in {written.parent}; "
                             "pass -o with another name")
    return export_model(model, output, fmt, precision, inputs=inputs, calibration=calibration_set,
                        dynamic_batch=dynamic_batch, metadata=export_metadata(metadata, model_name),
                        min_agreement=min_agreement, max_abs_diff=max_abs_diff, inputs_name=described)
