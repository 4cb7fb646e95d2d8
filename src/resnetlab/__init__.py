"""resnetlab: the ResNet family (He et al., 2015) on PyTorch.

>>> import resnetlab
>>> model = resnetlab.create_model("resnet50", num_classes=10, in_chans=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

from .analysis import count_macs, format_summary, model_info, summarize
from .export import export_model, fold_batchnorm
from .models import BasicBlock, Bottleneck, ResNet, ResNetFeatures, list_models
from .models.zoo import build_model
from .optimize import optimize_for_inference
from .weights import get_weights, list_weights, load_model, load_weights, read_checkpoint, save_weights

__version__ = "0.1.0"


def create_model(name: str, weights: Optional[Union[str, Path]] = None, pretrained: bool = False,
                 strict: bool = False, features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                 **options: Any) -> Union[ResNet, ResNetFeatures]:
    """Build a zoo model by name, optionally loading named weights or a checkpoint file.

    ``name`` may carry a weights tag (``"resnet50.tv2_in1k"``); ``weights`` is a tag of ``name``
    (``"tv2_in1k"``), a full weights name or a checkpoint file; ``pretrained=True`` loads the
    architecture's default weights (see list_weights). ``options`` are ResNet's keyword arguments
    (num_classes, in_chans, shortcut, stem, zero_init_residual, ...). The weights' own options are
    the defaults and ``options`` override them: a head of another class count is re-initialised and
    another input channel count adapted, unless ``strict``. ``features_only`` returns the feature
    maps at ``out_indices`` (0: stem, 1..: stages; default every stage) instead of logits.
    """
    if "." in name:
        if weights is not None:
            raise ValueError(f"{name!r} already names its weights; leave weights={weights!r} out")
        name, weights = name.split(".", 1)[0], name
    if pretrained and weights is None:
        weights = get_weights(name).name
    if weights is None:
        model = build_model(name, **options)
    else:
        model = load_model(weights, name, strict=strict, **options)[0].train()
    return ResNetFeatures(model, out_indices) if features_only else model


__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "ResNetFeatures", "create_model", "get_weights", "list_models",
    "list_weights", "load_model", "load_weights", "read_checkpoint", "save_weights", "model_info", "summarize",
    "format_summary", "count_macs", "optimize_for_inference", "fold_batchnorm", "export_model", "__version__",
]
