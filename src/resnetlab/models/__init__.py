"""The ResNet family: blocks, the ResNet class and the named zoo."""

from .blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from .features import FeatureInfo, ResNetFeatures
from .resnet import ResNet
from .zoo import REGISTRY, ModelSpec, build_model, get_spec, list_models

__all__ = ["BasicBlock", "Bottleneck", "FeatureInfo", "ZeroPadShortcut", "ResNet", "ResNetFeatures", "REGISTRY",
           "ModelSpec", "build_model", "get_spec", "list_models"]
