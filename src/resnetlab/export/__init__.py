"""Verified export.

``export_model`` writes ONNX, TorchScript, safetensors or OpenVINO IR (see ``formats.REGISTRY``),
loads the written file back, runs it on a batch and refuses to keep it when its logits miss the
tolerance; ``export_checkpoint`` does so for a checkpoint file. ``OnnxModel`` runs an ONNX
file with ONNX Runtime as an nn.Module, ``OpenVinoIR`` an IR with OpenVINO. ``resnetlab.optimize``
builds fast inference models from these pieces.
"""

from __future__ import annotations

from .checkpoint import default_output, export_checkpoint, export_metadata
from .formats import FORMAT_PRECISIONS, FORMATS, PRECISIONS, REGISTRY, Format, check_choice, load_export, write_export
from .fuse import check_inputs, conv_bn_pairs, fold_batchnorm, quantize_int8
from .inputs import CALIBRATION_IMAGES, calibration_images, verification_inputs
from .onnx import METADATA_KEY, OnnxModel
from .openvino import OpenVinoIR, load_openvino, openvino_model
from .torchscript import CastInput, script_model
from .verify import MAX_ABS_DIFF, MIN_AGREEMENT, Agreement, ExportResult, compare, export_model

__all__ = [
    "Agreement", "CALIBRATION_IMAGES", "CastInput", "ExportResult", "FORMATS", "FORMAT_PRECISIONS",
    "Format", "MAX_ABS_DIFF", "METADATA_KEY", "MIN_AGREEMENT", "OnnxModel", "OpenVinoIR",
    "PRECISIONS", "REGISTRY", "calibration_images", "check_choice", "check_inputs", "compare", "conv_bn_pairs",
    "default_output", "export_checkpoint", "export_metadata", "export_model", "fold_batchnorm", "load_export",
    "load_openvino", "openvino_model", "quantize_int8", "script_model", "verification_inputs", "write_export",
]
