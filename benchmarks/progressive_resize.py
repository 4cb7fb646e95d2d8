"""Training images/s at each side length progressive resizing uses, against the full size, same run.

    python benchmarks/progressive_resize.py [--model resnet20] [--min-size 16] [--epochs 44]

Fashion-MNIST-shaped synthetic data (1 x 28 x 28), resnetlab's pipeline (device batches,
channels_last, bf16 autocast) with each batch scaled down as the trainer does
(`--progressive-min-size`). Prints images/s per side and its ratio to 28 x 28, then what a
run of --epochs epochs with that schedule costs in full-size epochs (evaluation not
counted). Writes benchmarks/results/progressive_resize.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from common import benchmark_parser, repeat, timed_steps, write_result
from resnetlab.data import DeviceLoader, synthetic_dataset
from resnetlab.machine import describe_machine
from resnetlab.models import build_model
from resnetlab.train.engine import progressive_size, resize_batch


def resized(batches, side: int):
    for x, y in batches:
        yield resize_batch(x, side).contiguous(memory_format=torch.channels_last), y


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-size", type=int, default=16)
    parser.add_argument("--ramp", type=float, nargs=2, default=[0.25, 0.75])
    parser.add_argument("--epochs", type=int, default=44)
    args = parser.parse_args()

    full = 28
    data = synthetic_dataset(num_samples=4096, channels=1, size=full)
    loader = DeviceLoader(data, args.batch, train=True, augment="crop-flip", pad=2, channels_last=True)
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
    schedule = [progressive_size(full, args.min_size, args.ramp, epoch / args.epochs) for epoch in range(args.epochs)]
    speed = {}
    for side in sorted(set(schedule) | {full}, reverse=True):
        speed[side] = timed_steps(model, resized(repeat(loader), side), args.steps, args.warmup, "bf16")
    full_epochs = sum(speed[full] / speed[side] for side in schedule)

    machine = describe_machine()
    print(f"machine: {machine}")
    for side, images_per_s in speed.items():
        ratio = images_per_s / speed[full]
        print(f"{side:>3} x {side:<3} {images_per_s:8.1f} images/s   {ratio:.2f}x of {full} x {full}")
    print(f"schedule ({args.epochs} epochs, from {args.min_size} over {args.ramp[0]:g}..{args.ramp[1]:g} of "
          f"training): {' '.join(map(str, schedule))}")
    print(f"it costs {full_epochs:.1f} full-size epochs: {args.epochs / full_epochs:.2f}x the epochs in the same time")
    result = dict(model=args.model, batch=args.batch, steps=args.steps, machine=machine,
                  images_per_s={str(side): round(v, 1) for side, v in speed.items()},
                  schedule=schedule, full_size_epochs=round(full_epochs, 2),
                  epochs_ratio=round(args.epochs / full_epochs, 2))
    write_result(Path(args.out) / "progressive_resize.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
