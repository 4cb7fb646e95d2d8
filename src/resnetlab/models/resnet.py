"""One ResNet class for every variant: stem -> stages -> head.

State-dict names follow torchvision (``conv1 bn1 layer1..4.N.{conv,bn}{1,2,3}
downsample.{0,1} fc``), so torchvision and timm checkpoints load without mapping.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import Tensor, nn

from ..limits import ceiling, over_ceiling
from .blocks import SHORTCUTS, BasicBlock, Bottleneck, NormLayer, conv3x3, make_shortcut, zero_last_norm_
from .recompute import checkpoint_stage

Block = Type[Union[BasicBlock, Bottleneck]]

STEMS = ("imagenet", "cifar", "deep")
MAX_STAGES = 4


def resolve_norm_layer(norm_layer: Union[None, str, NormLayer]) -> Optional[NormLayer]:
    """Turn a norm option into a callable ``f(channels) -> module``; None means no norm."""
    if norm_layer is None or norm_layer == "batch":
        return nn.BatchNorm2d
    if norm_layer == "none":
        return None
    if callable(norm_layer):
        return norm_layer
    raise ValueError(f"unknown norm_layer {norm_layer!r}; accepted: 'batch', 'none' "
                     "or a callable taking the channel count")


def _no_norm(_: int) -> nn.Module:
    return nn.Identity()


def check_input_size(x: Tensor, min_size: int, stem: str) -> None:
    """Raise a readable ValueError unless x is N x C x H x W with H, W >= min_size."""
    if x.dim() != 4 or x.shape[-1] < min_size or x.shape[-2] < min_size:
        raise ValueError("input of shape " + str(list(x.shape)) + " is too small for the " + stem
                         + " stem: expected N x C x H x W with H, W >= " + str(min_size))


# torch.fx (int8 quantization) records the check as one call instead of tracing into it.
torch.fx.wrap("check_input_size")


class ResNet(nn.Module):
    """A residual (or plain) network.

    Args:
        block: BasicBlock or Bottleneck.
        layers: number of blocks per stage, e.g. [3, 4, 6, 3] for ResNet-50.
        num_classes: size of the classifier; 0 gives a network without one (pre-logits).
        in_chans: input channels (1 for grayscale).
        widths: the planes of each stage (64, 128, 256, 512 for ImageNet; 16, 32, 64 for CIFAR).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max-pool), "cifar" (3x3/1 conv) or
            "deep" (three 3x3 convs, the first with stride 2, + max-pool).
        stem_pool: whether the stem ends with the 3x3/2 max-pool; by default it does for
            the "imagenet" and "deep" stems.
        shortcut: "A" (zero-pad identity), "B" (projection where the shape changes) or
            "none" (a plain network).
        groups, width_per_group: ResNeXt cardinality and width (Bottleneck only).
        stride_in_1x1: put the stride on the first 1x1 conv of Bottleneck (v1, the paper)
            instead of the 3x3 conv (v1.5, torchvision).
        replace_stride_with_dilation: for stages 2.., replace the stride by dilation.
        norm_layer: "batch" (default), "none", or a callable taking the channel count.
        conv_bias: give convs a bias; by default only when there is no norm.
        projection_norm: whether a "B" projection shortcut has a norm after its 1x1 conv.
        zero_init_residual: start each residual branch at zero (its last norm's scale is 0).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_pool: Optional[bool] = None,
        shortcut: str = "B",
        groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        replace_stride_with_dilation: Optional[Sequence[bool]] = None,
        norm_layer: Union[None, str, NormLayer] = None,
        conv_bias: Optional[bool] = None,
        projection_norm: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        _check_options(block, layers, widths, num_classes, in_chans, stem, shortcut, groups,
                       width_per_group)
        norm = resolve_norm_layer(norm_layer)
        bias = (norm is None) if conv_bias is None else bool(conv_bias)
        norm = norm or _no_norm
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False] * (len(layers) - 1)
        if len(replace_stride_with_dilation) != len(layers) - 1:
            raise ValueError(f"replace_stride_with_dilation needs {len(layers) - 1} values "
                             f"(one per stage after the first), got {list(replace_stride_with_dilation)}")
        if stem_pool is None:
            stem_pool = stem != "cifar"

        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = widths[-1] * block.expansion
        self.stem_kind = stem
        self.shortcut = shortcut
        self._norm_layer = norm
        self._bias = bias
        self._projection_norm = projection_norm
        self.groups = groups
        self.base_width = width_per_group
        self.stride_in_1x1 = stride_in_1x1
        self.inplanes = widths[0]
        self.dilation = 1

        # Stem. The smallest input it accepts is its own reduction: below that it would
        # see only padding.
        if stem == "imagenet":
            self.conv1: nn.Module = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2,
                                              padding=3, bias=bias)
        elif stem == "cifar":
            self.conv1 = conv3x3(in_chans, self.inplanes, bias=bias)
        else:  # deep
            mid = self.inplanes // 2
            self.conv1 = nn.Sequential(
                conv3x3(in_chans, mid, stride=2, bias=bias), norm(mid), nn.ReLU(inplace=True),
                conv3x3(mid, mid, bias=bias), norm(mid), nn.ReLU(inplace=True),
                conv3x3(mid, self.inplanes, bias=bias),
            )
        self.bn1 = norm(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
                                   if stem_pool else nn.Identity())
        stem_reduction = (1 if stem == "cifar" else 2) * (2 if stem_pool else 1)
        self.min_input_size = stem_reduction
        # The stem's output before the max-pool: feature index 0 (timm's convention).
        self.stem_info: Dict[str, Any] = dict(num_chs=widths[0], reduction=1 if stem == "cifar" else 2,
                                              module="relu")

        # Stages: layer1, layer2, ... (torchvision names).
        self.feature_info: List[Dict[str, Any]] = []
        reduction = stem_reduction
        stage_names: List[str] = []
        for index, (planes, num_blocks) in enumerate(zip(widths, layers)):
            stride = 1 if index == 0 else 2
            dilate = False if index == 0 else bool(replace_stride_with_dilation[index - 1])
            if not dilate:
                reduction *= stride
            name = f"layer{index + 1}"
            self.add_module(name, self._make_layer(block, planes, num_blocks, stride, dilate))
            stage_names.append(name)
            self.feature_info.append(dict(num_chs=planes * block.expansion, reduction=reduction,
                                          module=name))
        # Nets with fewer than four stages (CIFAR) keep the names layer1..layer4 with empty
        # stages, so forward stays explicit and scriptable and the state dict gains nothing.
        for index in range(len(layers), MAX_STAGES):
            self.add_module(f"layer{index + 1}", nn.Identity())
        self.stage_names = stage_names
        self.grad_checkpointing = False

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc: nn.Module = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                              else nn.Identity())

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    zero_last_norm_(m)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int,
                    dilate: bool) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        out_planes = planes * block.expansion
        common = dict(groups=self.groups, base_width=self.base_width, norm_layer=self._norm_layer,
                      residual=self.shortcut != "none", stride_in_1x1=self.stride_in_1x1,
                      bias=self._bias)
        downsample = make_shortcut(self.shortcut, self.inplanes, out_planes, stride,
                                   self._norm_layer, bias=self._bias,
                                   projection_norm=self._projection_norm)
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation,
                        **common)]
        self.inplanes = out_planes
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation, **common))
        return nn.Sequential(*layers)

    def forward_stem(self, x: Tensor) -> Tensor:
        """The stem: conv1, bn1, relu and (for ImageNet stems) max-pool."""
        check_input_size(x, self.min_input_size, self.stem_kind)
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        return self.maxpool(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last stage's feature map (N x num_features x h x w)."""
        x = self.forward_stem(x)
        if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
            return self._forward_stages_checkpointed(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return x

    def feature_indices(self, indices: Union[None, int, Sequence[int]] = None) -> List[int]:
        """Feature indices checked: 0 the stem, 1.. the stages; None all stages, an int n the last n."""
        last = len(self.stage_names)
        if indices is None:
            return list(range(1, last + 1))
        if isinstance(indices, int):
            if not 1 <= indices <= last + 1:
                raise ValueError(f"indices={indices} asks for the last {indices} feature maps; accepted: 1 to "
                                 f"{last + 1}")
            return list(range(last + 1 - indices, last + 1))
        chosen = sorted({int(i) for i in indices})
        if not chosen or chosen[0] < 0 or chosen[-1] > last:
            raise ValueError(f"feature indices {list(indices)} out of range; accepted: 0 (stem) to {last} "
                             f"(stage {last})")
        return chosen

    def feature_info_at(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        """channels, reduction and module of the feature maps at ``indices`` (see feature_indices)."""
        infos = [self.stem_info] + self.feature_info
        return [dict(infos[i], index=i) for i in indices]

    @torch.jit.unused
    def forward_intermediates(self, x: Tensor, indices: Union[None, int, Sequence[int]] = None,
                              intermediates_only: bool = False) -> Any:
        """The feature maps at ``indices`` (0: stem, 1..: stages) and the last stage's map, as timm returns them."""
        take = self.feature_indices(indices)
        check_input_size(x, self.min_input_size, self.stem_kind)
        x = self.relu(self.bn1(self.conv1(x)))
        intermediates = [x] if 0 in take else []
        x = self.maxpool(x)
        for index, name in enumerate(self.stage_names, start=1):
            x = getattr(self, name)(x)
            if index in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    @torch.jit.unused
    def _forward_stages_checkpointed(self, x: Tensor) -> Tensor:
        for name in self.stage_names:
            x = checkpoint_stage(getattr(self, name), x)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """In training, recompute the stages' activations in backward instead of keeping them (less memory)."""
        self.grad_checkpointing = enable

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool, then the classifier unless ``pre_logits``."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one with ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The classifier layer."""
        return self.fc

    def residual_blocks(self) -> List[nn.Module]:
        """All blocks in forward order."""
        return [b for name in self.stage_names for b in getattr(self, name)]


def _whole(name: str, value: object, low: int, limit: str) -> None:
    """A ValueError unless ``value`` is a whole number from ``low`` to the ceiling ``limit`` (see limits)."""
    high = ceiling(limit)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high:,}, got {value!r}"
                         f"{over_ceiling(limit, value)}")


def _check_options(block: Block, layers: Sequence[int], widths: Sequence[int], num_classes: int,
                   in_chans: int, stem: str, shortcut: str, groups: int,
                   width_per_group: int) -> None:
    if block not in (BasicBlock, Bottleneck):
        raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
    if not isinstance(layers, (list, tuple)) or not isinstance(widths, (list, tuple)):
        raise ValueError(f"layers and widths must be lists, got {layers!r} and {widths!r}")
    if not 1 <= len(layers) <= MAX_STAGES or len(layers) != len(widths):
        raise ValueError(f"layers {list(layers)} and widths {list(widths)} must have the same "
                         f"length, 1 to {MAX_STAGES} (one entry per stage)")
    if any(isinstance(n, int) and not isinstance(n, bool) and n < 1 for n in layers):
        raise ValueError(f"every stage needs at least one block, got layers={list(layers)}")
    for n in layers:
        _whole("each entry of layers", n, 1, "blocks")
    for width in widths:
        _whole("each entry of widths", width, 1, "width")
    if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    _whole("num_classes", num_classes, 0, "classes")
    if isinstance(in_chans, int) and not isinstance(in_chans, bool) and in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    _whole("in_chans", in_chans, 1, "channels")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; accepted: {', '.join(map(repr, STEMS))}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; accepted: {', '.join(map(repr, SHORTCUTS))}")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (groups, width_per_group)) and \
            (groups < 1 or width_per_group < 1):
        raise ValueError(f"groups and width_per_group must be >= 1, got {groups}, {width_per_group}")
    _whole("groups", groups, 1, "groups")
    _whole("width_per_group", width_per_group, 1, "width")


Builder = Callable[..., ResNet]
