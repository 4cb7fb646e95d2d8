"""Named variants: the ImageNet family, the CIFAR family and their plain counterparts."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .blocks import BasicBlock, Bottleneck
from .resnet import ResNet


@dataclass(frozen=True)
class ModelSpec:
    """What a zoo name builds."""

    name: str
    family: str  # "imagenet" or "cifar"
    block: type
    layers: Tuple[int, ...]
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """Weighted layers: convs on the main path plus the classifier, as the paper counts."""
        convs_per_block = 2 if self.block is BasicBlock else 3
        return convs_per_block * sum(self.layers) + 2

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """The default input (channels, height, width)."""
        side = 224 if self.family == "imagenet" else 32
        return (self.options.get("in_chans", 3), side, side)

    def kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ResNet()."""
        return dict(block=self.block, layers=list(self.layers), **self.options)


CIFAR_OPTIONS: Dict[str, Any] = dict(widths=(16, 32, 64), stem="cifar", shortcut="A", num_classes=10)

def _build_registry() -> Dict[str, ModelSpec]:
    specs: List[ModelSpec] = []
    imagenet = {
        "resnet18": (BasicBlock, (2, 2, 2, 2), {}),
        "resnet34": (BasicBlock, (3, 4, 6, 3), {}),
        "resnet50": (Bottleneck, (3, 4, 6, 3), {}),
        "resnet101": (Bottleneck, (3, 4, 23, 3), {}),
        "resnet152": (Bottleneck, (3, 8, 36, 3), {}),
        "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), dict(groups=32, width_per_group=4)),
        "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), dict(groups=32, width_per_group=8)),
        "resnext101_64x4d": (Bottleneck, (3, 4, 23, 3), dict(groups=64, width_per_group=4)),
        "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), dict(width_per_group=128)),
        "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), dict(width_per_group=128)),
    }
    for name, (block, layers, options) in imagenet.items():
        specs.append(ModelSpec(name, "imagenet", block, layers, options))
    for depth in (18, 34):
        block, layers, _ = imagenet[f"resnet{depth}"]
        specs.append(ModelSpec(f"plain{depth}", "imagenet", block, layers, dict(shortcut="none")))
    for depth in (20, 32, 44, 56, 110, 1202):
        specs.append(cifar_spec(f"resnet{depth}", depth, "A"))
    for depth in (20, 32, 44, 56, 110):
        specs.append(cifar_spec(f"plain{depth}", depth, "none"))
    return {spec.name: spec for spec in specs}


def cifar_spec(name: str, depth: int, shortcut: str) -> ModelSpec:
    """A CIFAR-family spec of depth 6n+2: three stages of n BasicBlocks, 16/32/64 channels."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 26, 32, ...), got {depth}")
    n = (depth - 2) // 6
    options = dict(CIFAR_OPTIONS, shortcut=shortcut)
    return ModelSpec(name, "cifar", BasicBlock, (n, n, n), options)


REGISTRY: Dict[str, ModelSpec] = _build_registry()
_CIFAR_NAME = re.compile(r"^(resnet|plain)(\d+)$")
_RESNET_OPTIONS = set(inspect.signature(ResNet.__init__).parameters) - {"self", "block", "layers"}


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Names in the zoo, in table order; ``pattern`` is a shell-style filter such as 'resnext*'."""
    names = list(REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_spec(name: str) -> ModelSpec:
    """The spec for a zoo name; 'resnetD'/'plainD' with D = 6n+2 builds any CIFAR depth."""
    if name in REGISTRY:
        return REGISTRY[name]
    match = _CIFAR_NAME.match(name)
    if match:
        kind, depth = match.group(1), int(match.group(2))
        if depth >= 8 and (depth - 2) % 6 == 0:
            return cifar_spec(name, depth, "A" if kind == "resnet" else "none")
        raise ValueError(f"unknown model {name!r}: CIFAR depths are 6n+2 (8, 14, 20, 26, 32, ...), "
                         "ImageNet depths are 18, 34, 50, 101, 152")
    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {name!r}{hint} (see `resnetlab models` or list_models())")


def build_model(name: str, **options: Any) -> ResNet:
    """Build a zoo model with randomly initialised weights; options override the spec's.

    The model's ``arch`` attribute holds the zoo name it was built as."""
    spec = get_spec(name)
    unknown = sorted(set(options) - _RESNET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {name}; accepted: "
                         f"{', '.join(sorted(_RESNET_OPTIONS))}")
    kwargs = spec.kwargs()
    kwargs.update(options)
    model = ResNet(**kwargs)
    model.arch = name
    return model
