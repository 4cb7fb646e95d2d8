"""Starting a run from pretrained weights: the model, the inputs the weights expect, a frozen backbone.

Fine-tuning (``weights`` in the config) loads named weights or a checkpoint file, keeps their
classifier only when the data's classes are the weights' own, and normalizes the data as the
weights were trained. For the first ``freeze_epochs`` only the classifier trains: the backbone's
parameters take no gradient and its batch-norm layers keep their running statistics (eval mode).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..models import build_model
from ..weights import load_model
from ..weights.registry import get_weights, resolve_weights
from .config import TrainConfig

__all__ = ["BackboneFreezer", "head_parameter_names", "start_model", "weights_inputs", "weights_name"]

DEFAULT_WEIGHTS = "default"  # --weights default: the architecture's default named weights


def weights_name(config: TrainConfig) -> str:
    """What ``config.weights`` names: a file, a weights name or tag, or ``default`` for the model's default."""
    return get_weights(config.model).name if config.weights == DEFAULT_WEIGHTS else config.weights


def weights_inputs(config: TrainConfig) -> Optional[Dict[str, Any]]:
    """The preprocessing the start weights were trained with (mean, std, input_size, ...), or None.

    None without ``weights``, and for a checkpoint that does not record it."""
    if not config.weights:
        return None
    path, entry = resolve_weights(weights_name(config), config.model)
    if entry is not None:
        return dict(entry.preprocessing) or None
    from ..weights import read_checkpoint

    return dict(read_checkpoint(path)[1].get("preprocessing") or {}) or None


def normalization_for(inputs: Optional[Dict[str, Any]], channels: int
                      ) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """(mean, std) of the start weights for data of ``channels`` channels, or None to keep the data's own.

    RGB statistics for grayscale data are averaged: the adapted first conv sums the RGB filters,
    so it expects one image repeated in all three channels."""
    if not inputs or "mean" not in inputs or "std" not in inputs:
        return None
    mean, std = [float(v) for v in inputs["mean"]], [float(v) for v in inputs["std"]]
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    if len(mean) == 1:
        return tuple(mean) * channels, tuple(std) * channels
    return None


def start_model(config: TrainConfig, classes: Sequence[str], in_chans: int
                ) -> Tuple[nn.Module, Dict[str, Any], str]:
    """The model a run starts from, its options, and a line saying what was loaded ("" for a fresh one).

    Loaded weights keep their classifier only when the data's classes are the weights' own
    (same names, same order); otherwise it is replaced by a fresh one for ``classes``."""
    options = dict(config.model_options, num_classes=len(classes), in_chans=in_chans)
    if not config.weights:
        return build_model(config.model, **options), options, ""
    name = weights_name(config)
    model, metadata = load_model(name, config.model, strict=False, **options)
    kept = list(metadata.get("class_names") or []) == list(classes)
    if not kept:
        model.reset_classifier(len(classes))  # same count, other meanings: the old head would mislead
    frozen = f", backbone frozen for {config.freeze_epochs} epoch(s)" if config.freeze_epochs else ""
    head = "classifier kept" if kept else f"new classifier for {len(classes)} classes"
    return model.train(), options, f"fine-tuning from {name}: {head}{frozen}"


def head_parameter_names(model: nn.Module) -> List[str]:
    """The parameters of the classifier (``fc``); every other parameter is the backbone's."""
    return [name for name, _ in model.named_parameters() if name.split(".", 1)[0] == "fc"]


def _frozen_bn_forward(module: nn.Module, args: Any) -> None:
    module.training = False  # model.train() runs before every pass; the hook keeps frozen statistics frozen


class BackboneFreezer:
    """Freezes and thaws the backbone of a model: gradients off and batch norm in eval mode, or back."""

    def __init__(self, model: nn.Module) -> None:
        head = set(head_parameter_names(model))
        self.backbone = [p for name, p in model.named_parameters() if name not in head]
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.hooks: List[torch.utils.hooks.RemovableHandle] = []

    @property
    def frozen(self) -> bool:
        return bool(self.hooks)

    def set(self, frozen: bool) -> None:
        """Freeze (``True``) or thaw the backbone; does nothing when it already is so."""
        if frozen == self.frozen:
            return
        for p in self.backbone:
            p.requires_grad_(not frozen)
        if frozen:
            self.hooks = [m.register_forward_pre_hook(_frozen_bn_forward) for m in self.norms]
        else:
            for hook in self.hooks:
                hook.remove()
            self.hooks = []
