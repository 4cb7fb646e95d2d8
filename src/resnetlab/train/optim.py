"""Optimizers and learning-rate schedules (stepped once per iteration)."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from .config import TrainConfig
from .finetune import head_parameter_names


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool, lr: float,
                     backbone_lr_mult: float = 1.0) -> List[dict]:
    """Weights with decay, and norm parameters and biases (1-D) without unless asked; with a
    ``backbone_lr_mult`` other than 1, the backbone's groups take that fraction of the classifier's lr."""
    head = set(head_parameter_names(model)) if backbone_lr_mult != 1.0 else set()
    groups: Dict[Tuple[bool, bool], List[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decayed = decay_norm_and_bias or p.ndim > 1
            groups.setdefault((name in head, decayed), []).append(p)
    return [dict(params=params, weight_decay=weight_decay if decayed else 0.0,
                 lr=lr if in_head or not head else lr * backbone_lr_mult)
            for (in_head, decayed), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW, as the config says."""
    groups = parameter_groups(model, config.weight_decay, config.decay_norm_and_bias, config.lr,
                              config.backbone_lr_mult)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


def lr_factor(config: TrainConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr at each step: warmup, then the schedule."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    milestones = [int(round(m * total_steps)) for m in config.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "multistep":
            return config.gamma ** sum(step >= m for m in milestones)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        # one-cycle: linear up for 25% of training from lr/25, cosine down to lr/1e4 (torch's shape)
        peak = 0.25
        if progress < peak:
            return 1 / 25 + (1 - 1 / 25) * progress / peak
        down = (progress - peak) / (1 - peak)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * down))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps, steps_per_epoch))
