"""ONNX: writing a model with torch.onnx (fp32) and ONNX Runtime's static quantization (int8),
and ``OnnxModel``, which runs an ONNX file with ONNX Runtime as an nn.Module."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import Tensor, nn

from ..errors import one_line
from ..weights.metadata import check_class_names, check_metadata
from .fuse import fold_batchnorm

__all__ = ["METADATA_KEY", "OnnxModel", "export_onnx", "load_onnx", "quantize_onnx_int8", "write_onnx"]

METADATA_KEY = "resnetlab"  # the metadata_props entry holding our JSON metadata


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise ValueError("ONNX needs onnxruntime: pip install 'resnetlab[export]'") from error
    return onnxruntime


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime, called like the PyTorch model (float tensors in and out)."""

    def __init__(self, path: Union[str, Path], threads: Optional[int] = None) -> None:
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
        try:
            self.metadata: Dict[str, Any] = check_metadata(json.loads(stored), str(path)) if stored else {}
        except (json.JSONDecodeError, AttributeError, TypeError) as error:
            raise ValueError(f"{path} has unreadable resnetlab metadata ({one_line(error, 120)})") from None
        inputs, outputs = signature.shape, self.session.get_outputs()[0].shape
        if len(inputs) != 4 or not isinstance(inputs[1], int) or len(outputs) != 2 or not isinstance(outputs[1], int):
            raise ValueError(f"{path} takes {inputs} and gives {outputs}; accepted: an image classifier taking "
                             "[batch, channels, height, width] and giving [batch, classes], channels and classes fixed")
        self.in_chans, self.num_classes = inputs[1], outputs[1]
        check_class_names(self.metadata, self.num_classes, str(path))
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


def export_onnx(model: nn.Module, path: Path, example: Tensor, dynamic_batch: bool,
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


def quantize_onnx_int8(source: Path, target: Path, calibration: Tensor, batch_size: int = 32) -> None:
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


def write_onnx(model: nn.Module, path: Path, precision: str, example: Tensor, calibration: Optional[Tensor],
               dynamic_batch: bool, metadata: Dict[str, Any]) -> None:
    """Write model to path as ONNX in fp32 or int8 (calibrated on ``calibration``)."""
    example = example if dynamic_batch else example[:1]
    if precision != "int8":
        export_onnx(model, path, example, dynamic_batch, metadata)
        return
    assert calibration is not None
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, example, dynamic_batch, metadata)
        quantize_onnx_int8(fp32, path, calibration, batch_size=32 if dynamic_batch else 1)


def load_onnx(path: Path) -> OnnxModel:
    """An ONNX file as a module run by ONNX Runtime."""
    return OnnxModel(path)
