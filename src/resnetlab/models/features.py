"""Feature extraction (timm's ``features_only``): a ResNet's stem and stages returning their feature maps."""

from __future__ import annotations

from typing import List, Optional, Sequence

from torch import Tensor, nn

from .resnet import ResNet, check_input_size

__all__ = ["FeatureInfo", "ResNetFeatures"]


class FeatureInfo(list):
    """One dict per returned feature map (num_chs, reduction, module, index), with timm's accessors."""

    def channels(self) -> List[int]:
        """The channels of each returned map."""
        return [info["num_chs"] for info in self]

    def reduction(self) -> List[int]:
        """The input-to-map size ratio of each returned map."""
        return [info["reduction"] for info in self]

    def module_name(self) -> List[str]:
        """The module each map is the output of."""
        return [info["module"] for info in self]


class ResNetFeatures(nn.Module):
    """The feature maps of ``model`` at ``out_indices`` (0: stem before the max-pool, 1..: stages).

    The modules keep the ResNet's names, so its state dict loads (without the head); stages
    after the last index asked for are left out.
    """

    def __init__(self, model: ResNet, out_indices: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.out_indices = model.feature_indices(out_indices)
        self.feature_info = FeatureInfo(model.feature_info_at(self.out_indices))
        self.arch = getattr(model, "arch", None)
        self.in_chans = model.in_chans
        self.min_input_size, self.stem_kind = model.min_input_size, model.stem_kind
        for name in ("conv1", "bn1", "relu", "maxpool"):
            self.add_module(name, getattr(model, name))
        self.stage_names = model.stage_names[: max(self.out_indices)]
        for name in self.stage_names:
            self.add_module(name, getattr(model, name))

    def forward(self, x: Tensor) -> List[Tensor]:
        check_input_size(x, self.min_input_size, self.stem_kind)
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for index, name in enumerate(self.stage_names, start=1):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                features.append(x)
        return features

    def extra_repr(self) -> str:
        return f"out_indices={self.out_indices}"

