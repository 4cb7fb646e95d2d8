"""resnetlab: the ResNet family (He et al., 2015) on PyTorch.

>>> import resnetlab
>>> model = resnetlab.create_model("resnet50", num_classes=10, in_chans=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .analysis import count_macs, format_summary, model_info, summarize
from .models import BasicBlock, Bottleneck, ResNet, list_models
from .models.zoo import build_model

__version__ = "0.1.0"


def create_model(name: str, weights: Optional[Union[str, Path]] = None, strict: bool = False,
                 **options: Any) -> ResNet:
    """Build a zoo model by name, optionally loading weights from a checkpoint file.

    ``options`` are ResNet's keyword arguments (num_classes, in_chans, shortcut, stem,
    zero_init_residual, ...). With a resnetlab checkpoint, the options stored in it are
    the defaults (so its head and input channels match) and ``options`` override them.
    """
    if weights is None:
        return build_model(name, **options)
    from .weights import load_weights, read_checkpoint

    state_dict, metadata = read_checkpoint(weights)
    stored_arch = metadata.get("arch")
    if stored_arch and stored_arch != name:
        raise ValueError(f"checkpoint {weights} holds a {stored_arch}, not a {name}")
    merged = dict(metadata.get("options") or {})
    merged.update(options)
    model = build_model(name, **merged)
    load_weights(model, state_dict, strict=strict)
    return model


def load_weights(model: ResNet, path: Union[str, Path], strict: bool = False) -> Any:
    """Load a torchvision, timm, akamaster or resnetlab checkpoint into ``model``."""
    from . import weights

    return weights.load_weights(model, path, strict=strict)


__all__ = [
    "BasicBlock", "Bottleneck", "ResNet", "create_model", "list_models", "model_info", "load_weights",
    "summarize", "format_summary", "count_macs", "__version__",
]
