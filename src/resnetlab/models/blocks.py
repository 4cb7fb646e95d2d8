"""Residual blocks: BasicBlock (two 3x3 convs) and Bottleneck (1x1, 3x3, 1x1).

The shortcut of a block is one of three kinds:

- ``"A"``: parameter-free identity; when the shape changes it subsamples by the
  stride and zero-pads the new channels (the paper's CIFAR choice).
- ``"B"``: identity, or a 1x1 projection + norm where the shape changes
  (torchvision's choice, state-dict name ``downsample.{0,1}``).
- ``"none"``: no shortcut at all: the plain network of the paper.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

NormLayer = Callable[[int], nn.Module]

SHORTCUTS = ("A", "B", "none")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with 'same' padding."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, dilation=dilation, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=bias)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad channels, no parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"shortcut 'A' cannot reduce channels ({in_planes} -> {out_planes}); "
                             "use shortcut='B'")
        self.stride = stride
        # Split the new channels evenly on both sides, as the paper's reference code does.
        self.pad_front = (out_planes - in_planes) // 2
        self.pad_back = out_planes - in_planes - self.pad_front

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # The same pixels as x[:, :, ::stride, ::stride], but the gradient keeps x's memory
            # format: a slice's gradient comes back contiguous, and mixing it with channels_last
            # gradients made the ops it meets several times slower (resnet20 trained ~6% slower).
            x = F.avg_pool2d(x, kernel_size=1, stride=self.stride)
        return F.pad(x, [0, 0, 0, 0, self.pad_front, self.pad_back])

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int,
                  norm_layer: NormLayer, bias: bool = False,
                  projection_norm: bool = True) -> Optional[nn.Module]:
    """The module that carries x to the addition, or None for an identity (or no) shortcut."""
    if kind == "none" or (stride == 1 and in_planes == out_planes):
        return None
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    if kind == "B":
        projection = conv1x1(in_planes, out_planes, stride, bias=bias)
        if not projection_norm:
            return nn.Sequential(projection)
        return nn.Sequential(projection, norm_layer(out_planes))
    raise ValueError(f"unknown shortcut {kind!r}; accepted: {', '.join(map(repr, SHORTCUTS))}")


class BasicBlock(nn.Module):
    """Two 3x3 convs, each followed by norm; ReLU after the first and after the addition."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: Optional[NormLayer] = None,
                 residual: bool = True, stride_in_1x1: bool = False, bias: bool = False) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError(f"BasicBlock supports only groups=1 and width_per_group=64 "
                             f"(got groups={groups}, width_per_group={base_width}); "
                             "grouped and wide variants use Bottleneck")
        if stride_in_1x1:
            raise ValueError("stride_in_1x1=True applies to Bottleneck blocks only "
                             "(BasicBlock has no 1x1 conv)")
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation, bias=bias)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation, bias=bias)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        return self.relu(out)

    def last_norm(self) -> nn.Module:
        """The norm whose output is the residual function's response (Figure 7 of the paper)."""
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4; norm after each conv.

    The stride sits on the 3x3 conv (v1.5, torchvision) unless ``stride_in_1x1``
    puts it on the first 1x1 conv (v1, the paper).
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, groups: int = 1, base_width: int = 64,
                 dilation: int = 1, norm_layer: Optional[NormLayer] = None,
                 residual: bool = True, stride_in_1x1: bool = False, bias: bool = False) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, stride_1x1, bias=bias)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation, bias=bias)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion, bias=bias)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.residual:
            if self.downsample is not None:
                identity = self.downsample(x)
            out = out + identity
        return self.relu(out)

    def last_norm(self) -> nn.Module:
        """The norm whose output is the residual function's response (Figure 7 of the paper)."""
        return self.bn3


def zero_last_norm_(block: nn.Module) -> None:
    """Zero the scale of a block's last norm so the block starts as an identity."""
    norm = block.last_norm()
    if isinstance(norm, (nn.BatchNorm2d, nn.GroupNorm)) and norm.weight is not None:
        nn.init.zeros_(norm.weight)

