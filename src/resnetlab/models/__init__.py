"""The ResNet family: blocks, the ResNet class and the named zoo."""

from .blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from .resnet import ResNet
from .zoo import REGISTRY, ModelSpec, build_model, get_spec, list_models

__all__ = ["BasicBlock", "Bottleneck", "ZeroPadShortcut", "ResNet", "REGISTRY", "ModelSpec",
           "build_model", "get_spec", "list_models"]
