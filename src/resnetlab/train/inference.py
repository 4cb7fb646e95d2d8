"""Evaluate a checkpoint on a dataset, and predict the classes of image files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..data import DATASETS, DeviceLoader, ImageFolderData, load_dataset
from ..weights import load_model
from .engine import evaluate
from .run import resolve_device

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _check_arch(metadata: Dict[str, Any], model_name: Optional[str], weights: Union[str, Path]) -> None:
    arch = metadata.get("arch")
    if model_name and arch and model_name != arch:
        raise ValueError(f"weights {weights} are a {arch}, not a {model_name}")


def evaluate_checkpoint(weights: Union[str, Path], data: str, data_dir: Optional[str] = None,
                        model_name: Optional[str] = None, batch_size: int = 256, device: str = "auto",
                        split: str = "test", flip_tta: bool = False) -> Dict[str, Any]:
    """Top-1, top-5, loss, per-class accuracy and the confusion matrix of a checkpoint on a dataset."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    target = resolve_device(device)
    model, metadata = load_model(weights, model_name)
    _check_arch(metadata, model_name, weights)
    model = model.to(target)
    if data.lower() in DATASETS:
        dataset = load_dataset(data, split, data_dir)
        classes, channels = dataset.classes, dataset.image_shape[0]
        batches: Any = DeviceLoader(dataset, batch_size, train=False, device=target)
    else:
        folder = ImageFolderData(data, image_size=_input_size(metadata)[0])
        classes, channels = folder.classes, 3
        batches = folder.val_loader(batch_size, workers=2)
    if channels != model.in_chans:
        raise ValueError(f"weights {weights} expect {model.in_chans}-channel images; {data} has {channels}")
    if len(classes) != model.num_classes:
        raise ValueError(f"weights {weights} have {model.num_classes} classes; {data} has {len(classes)}")
    stats = evaluate(model, batches, device=target, num_classes=len(classes), flip_tta=flip_tta)
    confusion = stats.confusion
    per_class = (100.0 * confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return dict(stats.result("test"), classes=list(classes), per_class_top1=per_class,
                confusion=confusion.tolist(), samples=stats.samples)


def _input_size(metadata: Dict[str, Any]) -> Tuple[int, int]:
    size = (metadata.get("preprocessing") or {}).get("input_size") or [224, 224]
    return int(size[0]), int(size[1])


@dataclass
class Prediction:
    """The top classes of one image, or why it could not be read."""

    path: str
    classes: List[str] = field(default_factory=list)
    probabilities: List[float] = field(default_factory=list)
    error: str = ""


class Predictor:
    """A checkpoint ready to classify image files as its training prepared them."""

    def __init__(self, weights: Union[str, Path], model_name: Optional[str] = None, device: str = "auto") -> None:
        self.device = resolve_device(device)
        model, metadata = load_model(weights, model_name)
        _check_arch(metadata, model_name, weights)
        self.model: nn.Module = model.to(self.device).eval()
        pre = metadata.get("preprocessing") or {}
        self.in_chans = model.in_chans
        self.size = _input_size(metadata)
        self.mean = torch.tensor(pre.get("mean") or [0.485, 0.456, 0.406][: self.in_chans]).view(-1, 1, 1)
        self.std = torch.tensor(pre.get("std") or [0.229, 0.224, 0.225][: self.in_chans]).view(-1, 1, 1)
        self.class_names = metadata.get("class_names") or [str(i) for i in range(model.num_classes)]
        # Small datasets were trained at their native size: resize the whole image to it.
        # Image-folder models were evaluated with resize + center crop.
        self.center_crop = pre.get("dataset") not in DATASETS if pre else True

    def load_image(self, path: Union[str, Path]) -> torch.Tensor:
        """Read any image file as a normalized C x H x W tensor (grayscale or RGB as the model needs)."""
        from PIL import Image
        from torchvision.transforms import functional as TF

        with Image.open(path) as image:
            image = image.convert("L" if self.in_chans == 1 else "RGB")
            if self.center_crop:
                image = TF.resize(image, int(round(self.size[0] / 0.875)))
                image = TF.center_crop(image, list(self.size))
            else:
                image = TF.resize(image, list(self.size))
            x = TF.pil_to_tensor(image).float().div_(255.0)
        if x.shape[0] != self.in_chans:  # a model with in_chans not 1 or 3: tile the channels
            x = x.repeat(self.in_chans // x.shape[0] + 1, 1, 1)[: self.in_chans]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def predict(self, paths: Sequence[Union[str, Path]], topk: int = 5) -> Iterator[Prediction]:
        """Top-k classes with probabilities for each file; unreadable files give an error entry."""
        k = max(1, min(topk, len(self.class_names)))
        for path in expand_paths(paths):
            try:
                x = self.load_image(path)
            except Exception as error:  # PIL raises many kinds for a bad file
                reason = " ".join(str(error).split())[:160] or type(error).__name__
                yield Prediction(str(path), error=f"cannot read image: {reason}")
                continue
            probs = torch.softmax(self.model(x.unsqueeze(0).to(self.device)).float(), dim=1)[0]
            top = probs.topk(k)
            yield Prediction(str(path), [self.class_names[i] for i in top.indices.tolist()],
                             [round(float(p), 6) for p in top.values])


def expand_paths(paths: Sequence[Union[str, Path]]) -> Iterator[Path]:
    """Files as given, and the image files inside given folders (sorted, recursive)."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path
