"""The error analysis of a checkpoint on a dataset (what `resnetlab eval --report` writes): the mistakes it
is most sure of with their activation maps, the most confused class pairs, per-class accuracy and
calibration (the reliability diagram and the expected calibration error)."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import DatasetSource, DeviceLoader, load_dataset, resolve_source
from ..data.inputs import LabelledFolder
from ..device import resolve_device
from ..evaluation import predict_logits
from ..fileio import atomic_write_text
from ..weights import load_model
from .interpret import class_activation_maps, denormalize
from .interpret_plots import plot_per_class, plot_reliability, plot_top_losses

__all__ = ["Outputs", "calibration_bins", "collect_outputs", "confused_pairs", "evaluation_report"]


@dataclass
class Outputs:
    """Every sample's label, top-1 class and its probability, and the ``keep`` wrong predictions made with the
    highest probability (their indices in the data's order and their inputs), most confident first."""

    labels: torch.Tensor
    predictions: torch.Tensor
    confidences: torch.Tensor
    mistakes: torch.Tensor
    mistake_inputs: torch.Tensor


@torch.no_grad()
def collect_outputs(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                    keep: int = 16, flip_tta: bool = False, shift_tta: bool = False) -> Outputs:
    """Run ``model`` over ``batches`` keeping the figures of each sample and the most confident mistakes."""
    model.eval()
    labels, predictions, confidences = [], [], []
    best_conf, best_index, best_inputs = torch.empty(0), torch.empty(0, dtype=torch.long), None
    seen = 0
    for x, y in batches:
        x = x.to(device)
        probs = torch.softmax(predict_logits(model, x, flip_tta, shift_tta), dim=1).cpu()
        confidence, predicted = probs.max(dim=1)
        y = y.cpu()
        labels.append(y)
        predictions.append(predicted)
        confidences.append(confidence)
        wrong = (predicted != y).nonzero().flatten()
        inputs = x[wrong].cpu()
        if best_inputs is not None:  # earlier samples first, so a stable sort keeps them first on ties
            inputs = torch.cat([best_inputs, inputs])
        conf = torch.cat([best_conf, confidence[wrong]])
        index = torch.cat([best_index, wrong + seen])
        order = torch.sort(conf, descending=True, stable=True).indices[:keep]
        best_conf, best_index, best_inputs = conf[order], index[order], inputs[order]
        seen += y.shape[0]
    if not labels:
        raise ValueError("no samples to evaluate")
    return Outputs(torch.cat(labels), torch.cat(predictions), torch.cat(confidences), best_index, best_inputs)


def calibration_bins(confidences: torch.Tensor, correct: torch.Tensor, bins: int = 15
                     ) -> Tuple[float, List[Dict[str, float]]]:
    """The expected calibration error (the sample-weighted mean gap between accuracy and confidence over
    ``bins`` equal-width confidence bins, (low, high]) and each bin's count, accuracy and mean confidence."""
    edges = torch.linspace(0, 1, bins + 1)
    rows, ece, n = [], 0.0, max(1, confidences.numel())
    for low, high in zip(edges[:-1].tolist(), edges[1:].tolist()):
        inside = (confidences > low) & (confidences <= high)
        count = int(inside.sum())
        accuracy = float(correct[inside].float().mean()) if count else 0.0
        confidence = float(confidences[inside].mean()) if count else 0.0
        ece += count / n * abs(accuracy - confidence)
        rows.append(dict(low=low, high=high, count=count, accuracy=accuracy, confidence=confidence))
    return ece, rows


def confused_pairs(labels: torch.Tensor, predictions: torch.Tensor, classes: List[str], top: int = 10
                   ) -> List[Dict[str, Any]]:
    """The ``top`` (true class, predicted class) pairs of mistakes by count, most frequent first."""
    k = len(classes)
    counts = torch.bincount(labels * k + predictions, minlength=k * k).view(k, k)
    counts.fill_diagonal_(0)
    values, flat = counts.flatten().sort(descending=True, stable=True)
    return [dict(true=classes[i // k], predicted=classes[i % k], count=int(v))
            for v, i in zip(values.tolist()[:top], flat.tolist()[:top]) if v > 0]


def _batches(weights: Union[str, Path], data: str, split: str, data_dir: Optional[str], in_chans: int,
             preprocessing: Dict[str, Any], batch_size: int, device: torch.device):
    """The samples ``resnetlab eval`` reads for ``data`` and ``split``: (batches, classes, mean, std)."""
    source = resolve_source(data, data_dir, kinds=("dataset", "folder"))
    if isinstance(source, DatasetSource):
        if split == "val":
            raise ValueError("--report reads a dataset's train or test split; got val")
        dataset = load_dataset(source.name, split, data_dir)
        if dataset.image_shape[0] != in_chans:
            raise ValueError(f"weights {weights} expect {in_chans}-channel images; {data} has "
                             f"{dataset.image_shape[0]}")
        return (DeviceLoader(dataset, batch_size, train=False, device=device), dataset.classes,
                torch.tensor(dataset.mean), torch.tensor(dataset.std))
    if split == "val" and not ((source.path / "val").is_dir() or (source.path / "test").is_dir()):
        raise ValueError(f"--report reads a folder's train/, val/ or test/ part; {source.path} has no val/ or test/")
    folder = LabelledFolder(source.path, split, preprocessing, in_chans)
    return (DataLoader(folder, batch_size=batch_size, shuffle=False, num_workers=0), folder.classes,
            folder.prepare.mean.flatten(), folder.prepare.std.flatten())


def evaluation_report(weights: Union[str, Path], data: str, out: Union[str, Path], split: str = "test",
                      data_dir: Optional[str] = None, model_name: Optional[str] = None, batch_size: int = 256,
                      device: str = "cpu", flip_tta: bool = False, shift_tta: bool = False, top_losses: int = 16,
                      method: str = "gradcam") -> Dict[str, Any]:
    """Write the error analysis of the fp32 checkpoint ``weights`` on ``data`` into the folder ``out``.

    Files: top-losses.png (the ``top_losses`` most confident mistakes, with the predicted class's
    activation map when the grad-cam package is installed), per-class.png, reliability.png and
    report.json (figures, confused pairs, calibration bins, the mistakes' indices). Returns report.json's content.
    """
    if batch_size < 1 or top_losses < 1:
        raise ValueError(f"batch size and top losses must be >= 1, got {batch_size} and {top_losses}")
    target = resolve_device(device)
    model, metadata = load_model(weights, model_name)
    model = model.to(target).eval()
    batches, classes, mean, std = _batches(weights, data, split, data_dir, model.in_chans,
                                           metadata.get("preprocessing") or {}, batch_size, target)
    if len(classes) != model.num_classes:
        raise ValueError(f"weights {weights} have {model.num_classes} classes; {data} has {len(classes)}")
    outputs = collect_outputs(model, batches, target, top_losses, flip_tta, shift_tta)
    out = Path(out)
    correct = outputs.predictions == outputs.labels
    ece, bins = calibration_bins(outputs.confidences, correct)
    k = len(classes)
    per_class = [100.0 * float(correct[outputs.labels == c].float().mean()) if (outputs.labels == c).any() else 0.0
                 for c in range(k)]
    mistakes = outputs.mistakes.tolist()
    predicted = outputs.predictions[outputs.mistakes].tolist()
    labels = outputs.labels.tolist()
    maps = None
    if mistakes and importlib.util.find_spec("pytorch_grad_cam") is not None:  # optional: else no maps
        maps = list(class_activation_maps(model, outputs.mistake_inputs.to(target), predicted, method))
    title = f"{Path(weights).name} on {data} {split}"
    images = [denormalize(x, mean, std) for x in outputs.mistake_inputs]
    plot_top_losses(images, [classes[labels[i]] for i in mistakes], [classes[p] for p in predicted],
                    outputs.confidences[outputs.mistakes].tolist(), out / "top-losses.png", maps,
                    title=f"{title}: the {len(mistakes)} most confident mistakes")
    plot_per_class(classes, per_class, out / "per-class.png", title=f"{title}: accuracy per class")
    plot_reliability(bins, ece, out / "reliability.png", title=title)
    report = dict(weights=str(weights), data=data, split=split, samples=int(correct.numel()),
                  top1=100.0 * float(correct.float().mean()), ece=ece, classes=list(classes), per_class_top1=per_class,
                  confused_pairs=confused_pairs(outputs.labels, outputs.predictions, list(classes)),
                  top_losses=[dict(index=i, true=classes[labels[i]], predicted=classes[p],
                                   confidence=float(outputs.confidences[i])) for i, p in zip(mistakes, predicted)],
                  cam=method if maps is not None else None, calibration_bins=bins)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report
