"""Training images/s of CIFAR ResNet-20 with the option-A shortcut as resnetlab builds it, against
the same shortcut written with a strided slice (akamaster's ``x[:, :, ::2, ::2]``), same run.

    python benchmarks/shortcut_layout.py [--model resnet20] [--size 28] [--rounds 5]

Both subsample the same pixels and give bit-identical outputs. They differ in the gradient's
memory format: a slice's gradient comes back contiguous, and when it meets the channels_last
gradients of the residual branch, the additions and ReLU backwards it reaches take torch's slow
mixed-format path. Fashion-MNIST-shaped synthetic data by default (1 x size x size), resnetlab's
pipeline (device batches, channels_last, bf16 autocast). The two models alternate over --rounds
rounds (this CPU's speed drifts by several percent); prints the median images/s of each and the
ratio. Writes benchmarks/results/shortcut_layout.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import benchmark_parser, repeat, timed_steps, write_result
from resnetlab.data import DeviceLoader, synthetic_dataset
from resnetlab.machine import describe_machine
from resnetlab.models import ZeroPadShortcut, build_model


class SlicedShortcut(nn.Module):
    """Option A written with a strided slice: the reference."""

    def __init__(self, shortcut: ZeroPadShortcut) -> None:
        super().__init__()
        self.stride, self.pad_front, self.pad_back = shortcut.stride, shortcut.pad_front, shortcut.pad_back

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, [0, 0, 0, 0, self.pad_front, self.pad_back])


def with_sliced_shortcuts(model: nn.Module) -> nn.Module:
    """Replace every ZeroPadShortcut of ``model`` (in place) by its sliced twin; returns ``model``."""
    for block in model.modules():
        if isinstance(getattr(block, "downsample", None), ZeroPadShortcut):
            block.downsample = SlicedShortcut(block.downsample)
    return model


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    data = synthetic_dataset(num_samples=4096, channels=args.channels, size=args.size)
    loader = DeviceLoader(data, args.batch, train=True, augment="crop-flip", pad=2, channels_last=True)
    torch.manual_seed(0)
    ours = build_model(args.model, num_classes=10, in_chans=args.channels)
    reference = with_sliced_shortcuts(build_model(args.model, num_classes=10, in_chans=args.channels))
    reference.load_state_dict(ours.state_dict())
    if not any(isinstance(m, SlicedShortcut) for m in reference.modules()):
        raise SystemExit(f"{args.model} has no option-A shortcut to compare")
    probe = torch.randn(4, args.channels, args.size, args.size)
    if not torch.equal(ours.eval()(probe), reference.eval()(probe)):
        raise SystemExit("the two shortcuts disagree")

    speeds = {"reference": [], "resnetlab": []}
    for _ in range(args.rounds):
        for name, model in (("reference", reference), ("resnetlab", ours)):
            model = model.train().to(memory_format=torch.channels_last)
            speeds[name].append(timed_steps(model, repeat(loader), args.steps, args.warmup, "bf16"))
    reference_speed, ours_speed = (statistics.median(speeds[name]) for name in ("reference", "resnetlab"))

    result = dict(model=args.model, batch=args.batch, size=args.size, channels=args.channels, steps=args.steps,
                  rounds=args.rounds, machine=describe_machine(),
                  reference_images_per_s=[round(s, 1) for s in speeds["reference"]],
                  resnetlab_images_per_s=[round(s, 1) for s in speeds["resnetlab"]],
                  ratio_of_medians=round(ours_speed / reference_speed, 3))
    print(f"machine: {result['machine']}")
    print(f"reference (sliced shortcut):        median {reference_speed:8.1f} images/s")
    print(f"resnetlab (1x1 average-pool stride): median {ours_speed:8.1f} images/s")
    print(f"ratio: {ours_speed / reference_speed:.3f}x")
    write_result(Path(args.out) / "shortcut_layout.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
