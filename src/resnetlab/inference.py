"""Evaluate a checkpoint on a dataset and predict the classes of image files, on PyTorch, ONNX
Runtime or OpenVINO, in fp32, bf16 or int8."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from .data import ArrayDataset, DatasetSource, DeviceLoader, FolderSource, load_dataset, resolve_source
from .data.folder_cache import folder_splits
from .data.inputs import ImagePreprocess, LabelledFolder, expand_paths, input_size
from .device import inference_device
from .errors import one_line
from .evaluation import evaluate, predict_logits
from .export import FORMAT_PRECISIONS, PRECISIONS, OnnxModel, calibration_images, check_choice
from .export.openvino import load_openvino, openvino_model
from .optimize import ENGINES, onnx_runtime_model, optimize_for_inference
from .weights import load_model

# Exported files eval and predict run: suffix -> (the engine that runs them, what they are).
EXPORTED = {".onnx": ("onnx", "an ONNX model"), ".xml": ("openvino", "an OpenVINO IR")}


def is_exported(weights: Union[str, Path]) -> bool:
    """Whether ``weights`` names an exported file (.onnx, OpenVINO's .xml) rather than a checkpoint."""
    return Path(weights).suffix in EXPORTED


def engine_device(device: str, engine: str, precision: str) -> torch.device:
    """Where a model runs: OpenVINO runs on the CPU, as ONNX Runtime does (see inference_device)."""
    return torch.device("cpu") if engine == "openvino" else inference_device(device, engine, precision)


def _check_arch(metadata: Dict[str, Any], model_name: Optional[str], weights: Union[str, Path]) -> None:
    arch = metadata.get("arch")
    if model_name and arch and model_name != arch:
        raise ValueError(f"weights {weights} are a {arch}, not a {model_name}")


def load_for_inference(weights: Union[str, Path], model_name: Optional[str] = None, engine: str = "torch",
                       precision: str = "fp32", calibration: Optional[str] = None, data_dir: Optional[str] = None,
                       device: str = "auto", compile: bool = False) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model in ``weights`` ready to run on ``engine`` (torch, onnx or openvino) in ``precision``,
    and its metadata.

    ``weights`` is a checkpoint load_model reads or a file from ``resnetlab export``: an .onnx
    file for the onnx engine, an OpenVINO IR (.xml, its .bin beside it) for the openvino engine.
    With the onnx and openvino engines a checkpoint is converted on the fly. int8 calibrates
    on ``calibration`` (see calibration_images).
    """
    check_choice(engine, ENGINES, "engine")
    check_choice(precision, PRECISIONS, "precision")
    if is_exported(weights):
        needed, what = EXPORTED[Path(weights).suffix]
        if engine != needed:
            raise ValueError(f"{weights} is {what}: run it with --engine {needed}")
        if precision != "fp32":
            raise ValueError(f"{weights}: an exported file keeps the precision it was exported in; "
                             f"leave --precision out (got {precision})")
        exported = OnnxModel(weights) if needed == "onnx" else load_openvino(Path(weights))
        _check_arch(exported.metadata, model_name, weights)
        return exported, exported.metadata
    model, metadata = load_model(weights, model_name)
    _check_arch(metadata, model_name, weights)
    target = engine_device(device, engine, precision)
    calibration_set = (calibration_images(calibration, metadata, model.in_chans, data_dir)
                       if precision == "int8" else None)
    if engine == "onnx":
        check_choice(precision, FORMAT_PRECISIONS["onnx"], "ONNX Runtime precision")
        example = torch.zeros(2, model.in_chans, *input_size(metadata.get("preprocessing") or {}))
        return onnx_runtime_model(model, precision, example, calibration_set, metadata), metadata
    if engine == "openvino":
        example = torch.zeros(2, model.in_chans, *input_size(metadata.get("preprocessing") or {}))
        return openvino_model(model, precision, example, calibration_set, metadata), metadata
    if precision == "fp32":
        return model.to(target), metadata
    if precision == "int8" and target.type != "cpu":
        raise ValueError(f"int8 (torch) runs on the CPU; got device {target}: pass --device cpu")
    return optimize_for_inference(model.to(target), precision, calibration_set, compile=compile,
                                  int8_engine="torch"), metadata


def recorded_tta(metadata: Dict[str, Any], view: str) -> bool:
    """Whether the checkpoint's training evaluated with the test views ``view`` ("flip_tta" or
    "shift_tta") averaged in; checkpoints that do not say were evaluated without."""
    return bool((metadata.get("preprocessing") or {}).get(view, False))


def evaluate_checkpoint(weights: Union[str, Path], data: str, data_dir: Optional[str] = None,
                        model_name: Optional[str] = None, batch_size: int = 256, device: str = "auto",
                        split: str = "test", flip_tta: Optional[bool] = None, engine: str = "torch",
                        precision: str = "fp32", calibration: Optional[str] = None,
                        shift_tta: Optional[bool] = None) -> Dict[str, Any]:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a checkpoint on a dataset.

    ``data`` is a dataset name (its ``split``) or an image folder, a path or a folder of that name
    under the data roots (see LabelledFolder: its val/ or train/ part, else all its images).
    ``flip_tta`` and ``shift_tta`` None average the mirror and the 1-pixel shifts in when the
    checkpoint's training did. int8 calibrates on
    ``calibration``, else on the train split of ``data`` when it is a dataset name, else on the
    checkpoint's own dataset. The result also names what was evaluated: ``data`` (dataset or
    folder name), ``split``, ``description``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = engine_device(device, engine, precision)
    source = resolve_source(data, data_dir, kinds=("dataset", "folder"))
    if precision == "int8" and calibration is None and isinstance(source, DatasetSource):
        calibration = source.name
    model, metadata = load_for_inference(weights, model_name, engine, precision, calibration, data_dir,
                                         str(target))
    flip_tta = recorded_tta(metadata, "flip_tta") if flip_tta is None else flip_tta
    shift_tta = recorded_tta(metadata, "shift_tta") if shift_tta is None else shift_tta
    preprocessing = metadata.get("preprocessing") or {}
    held_out = split == "val" and (isinstance(source, DatasetSource) or not _has_val_folder(source.path))
    if isinstance(source, DatasetSource) or held_out:
        dataset = (validation_set(source, preprocessing, weights, data_dir) if held_out
                   else load_dataset(source.name, split, data_dir))
        if dataset.image_shape[0] != model.in_chans:
            raise ValueError(f"weights {weights} expect {model.in_chans}-channel images; "
                             f"{data} has {dataset.image_shape[0]}")
        if len(preprocessing.get("mean") or ()) == len(preprocessing.get("std") or ()) == model.in_chans:
            dataset = dataset.normalized_as(preprocessing["mean"], preprocessing["std"])  # as training did
        name = source.name if isinstance(source, DatasetSource) else source.path.resolve().name or "folder"
        classes, description = dataset.classes, f"{data} {split}"
        batches: Any = DeviceLoader(dataset, batch_size, train=False, device=target)
    else:
        folder = LabelledFolder(source.path, split, metadata.get("preprocessing"), model.in_chans)
        classes, split, description = folder.classes, folder.split, folder.description
        name = folder.path.resolve().name or "folder"
        batches = DataLoader(folder, batch_size=batch_size, shuffle=False, num_workers=2)
    if len(classes) != model.num_classes:
        raise ValueError(f"weights {weights} have {model.num_classes} classes; {data} has {len(classes)}")
    stats = evaluate(model, batches, device=target, num_classes=len(classes), flip_tta=flip_tta,
                     shift_tta=shift_tta)
    if not math.isfinite(stats.loss_sum):
        raise ValueError(f"weights {weights} give NaN or infinite scores on {data}: no accuracy to report "
                         "(broken weights?)")
    confusion = stats.confusion
    per_class = (100.0 * confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return dict(stats.result("test"), classes=list(classes), per_class_top1=per_class,
                confusion=confusion.tolist(), samples=stats.samples, engine=engine,
                precision="as exported" if is_exported(weights) else precision,
                flip_tta=flip_tta, shift_tta=shift_tta, data=name, split=split, description=description)


def _has_val_folder(path: Path) -> bool:
    return (path / "val").is_dir() or (path / "test").is_dir()


def validation_set(source: Union[DatasetSource, FolderSource], preprocessing: Dict[str, Any],
                   weights: Union[str, Path], data_dir: Optional[str] = None) -> ArrayDataset:
    """The validation part that training held out of ``source``'s training images, as the checkpoint
    records it (``val_split`` and ``split_seed`` in its preprocessing)."""
    if "split_seed" not in preprocessing:
        raise ValueError(f"weights {weights} do not record a validation split; evaluate on --split test")
    val_split, seed = float(preprocessing.get("val_split") or 0), int(preprocessing["split_seed"])
    if isinstance(source, DatasetSource):
        if not val_split:
            raise ValueError(f"weights {weights} were trained without --val-split; evaluate on --split test")
        return load_dataset(source.name, "train", data_dir).split(val_split, seed=seed)[1]
    parts, note = folder_splits(source.path, input_size(preprocessing)[0], val_split, seed)
    if parts is None:
        raise ValueError(note)
    return parts[1]


@dataclass
class Prediction:
    """The top classes of one image, or why it could not be read."""

    path: str
    classes: List[str] = field(default_factory=list)
    probabilities: List[float] = field(default_factory=list)
    error: str = ""


class Predictor:
    """A checkpoint ready to classify image files as its training prepared them."""

    def __init__(self, weights: Union[str, Path], model_name: Optional[str] = None, device: str = "auto",
                 engine: str = "torch", precision: str = "fp32", calibration: Optional[str] = None,
                 flip_tta: Optional[bool] = None, shift_tta: Optional[bool] = None) -> None:
        self.device = engine_device(device, engine, precision)
        model, metadata = load_for_inference(weights, model_name, engine, precision, calibration,
                                             device=str(self.device))
        self.model: nn.Module = model.eval()
        self.in_chans = model.in_chans
        self.preprocess = ImagePreprocess(metadata.get("preprocessing"), self.in_chans)
        self.class_names = metadata.get("class_names") or [str(i) for i in range(model.num_classes)]
        # None: average the test views in that the checkpoint's training evaluated with.
        self.flip_tta = recorded_tta(metadata, "flip_tta") if flip_tta is None else flip_tta
        self.shift_tta = recorded_tta(metadata, "shift_tta") if shift_tta is None else shift_tta

    def load_image(self, path: Union[str, Path]) -> torch.Tensor:
        """Read any image file as a normalized C x H x W tensor (grayscale or RGB as the model needs)."""
        return self.preprocess(path)

    @torch.no_grad()
    def predict(self, paths: Sequence[Union[str, Path]], topk: int = 5) -> Iterator[Prediction]:
        """Top-k classes with probabilities for each file; unreadable files give an error entry."""
        k = max(1, min(topk, len(self.class_names)))
        for path in expand_paths(paths):
            try:
                x = self.load_image(path)
            except Exception as error:  # PIL raises many kinds for a bad file
                reason = one_line(error)[:160]
                yield Prediction(str(path), error=f"cannot read image: {reason}")
                continue
            logits = predict_logits(self.model, x.unsqueeze(0).to(self.device), self.flip_tta, self.shift_tta)
            probs = torch.softmax(logits, dim=1)[0]
            if not bool(torch.isfinite(probs).all()):  # broken weights give no prediction, not "nan"
                yield Prediction(str(path), error="the model's scores are NaN or infinite (broken weights?)")
                continue
            top = probs.topk(k)
            yield Prediction(str(path), [self.class_names[i] for i in top.indices.tolist()],
                             [round(float(p), 6) for p in top.values])
