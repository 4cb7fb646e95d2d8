"""Figures published about the zoo's architectures: the paper's MACs and CIFAR-10 errors,
torchvision's ImageNet top-1 and akamaster's CIFAR-10 reproduction."""

from __future__ import annotations

import re
from typing import Any, Dict

__all__ = ["published_figures"]

# Paper, Table 1: FLOPs (multiply-adds) of the v1 networks, x10^9.
PAPER_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
# torchvision's published ImageNet top-1 (IMAGENET1K_V1, IMAGENET1K_V2).
TORCHVISION_TOP1 = {
    "resnet18": (69.758, None), "resnet34": (73.314, None), "resnet50": (76.130, 80.858),
    "resnet101": (77.374, 81.886), "resnet152": (78.312, 82.284),
    "resnext50_32x4d": (77.618, 81.198), "resnext101_32x8d": (79.312, 82.834),
    "resnext101_64x4d": (83.246, None), "wide_resnet50_2": (78.468, 81.602),
    "wide_resnet101_2": (78.848, 82.510),
}
# Paper, Table 6: CIFAR-10 test error (%), and akamaster's reproduction.
PAPER_CIFAR_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
AKAMASTER_CIFAR_ERROR = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32, 1202: 6.18}


def published_figures(name: str) -> Dict[str, Any]:
    """What is published about the zoo model ``name`` (empty when nothing is)."""
    figures: Dict[str, Any] = {}
    if name in PAPER_GMACS:
        figures["paper_gmacs_v1"] = PAPER_GMACS[name]
    v1, v2 = TORCHVISION_TOP1.get(name, (None, None))
    if v1 is not None:
        figures["torchvision_top1_v1"] = v1
    if v2 is not None:
        figures["torchvision_top1_v2"] = v2
    cifar = re.fullmatch(r"resnet(\d+)", name)
    if cifar and int(cifar.group(1)) in PAPER_CIFAR_ERROR:
        depth = int(cifar.group(1))
        figures["paper_cifar10_error"] = PAPER_CIFAR_ERROR[depth]
        figures["akamaster_cifar10_error"] = AKAMASTER_CIFAR_ERROR[depth]
    return figures
