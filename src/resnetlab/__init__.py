"""resnetlab: the ResNet family (He et al., 2015) on PyTorch.

>>> import resnetlab
>>> model = resnetlab.create_model("resnet50", num_classes=10, in_chans=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .analysis import count_macs, format_summary, model_info, summarize
from .export import export_model, fold_batchnorm
from .models import BasicBlock, Bottleneck, ResNet, list_models
from .models.zoo import build_model
from .optimize import optimize_for_inference
from .weights import load_model, load_weights, read_checkpoint, save_weights

__version__ = "0.1.0"


def create_model(name: str, weights: Optional[Union[str, Path]] = None, strict: bool = False,
                 **options: Any) -> ResNet:
    """Build a zoo model by name, optionally loading weights from a checkpoint file.

    ``options`` are ResNet's keyword arguments (num_classes, in_chans, shortcut, stem,
    zero_init_residual, ...). With a resnetlab checkpoint, the options stored in it are
    the defaults (so its head and input channels match) and ``options`` override them;
    a head of another class count is re-initialised unless ``strict``.
    """
    if weights is None:
        return build_model(name, **options)
    model, _ = load_model(weights, name, strict=strict, **options)
    return model.train()


__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "load_model", "load_weights",
    "read_checkpoint", "save_weights", "model_info", "summarize", "format_summary", "count_macs",
    "optimize_for_inference", "fold_batchnorm", "export_model", "__version__",
]
