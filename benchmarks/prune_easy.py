"""What pruning easy samples (``prune_easy``) costs per training step, against plain steps, same run.

    python benchmarks/prune_easy.py [--model resnet20] [--size 28] [--rounds 7]

``prune_easy`` keeps the number of steps of a run (``epochs`` is a budget of steps) and spends
them on shorter passes, so a run costs what it did if a step does. A pruned step adds a loss per
sample, its weight, and a record of it; each shorter pass adds the planning of an epoch. Both
arms train the same model on Fashion-MNIST-shaped synthetic data (1 x size x size) through
resnetlab's pipeline (device batches, channels_last, bf16 autocast); the pruned arm's loader
holds a loss for every sample (random, so that about half are easy and a pass is ~3/4 long) and
prunes with probability 0.5. The arms alternate over --rounds rounds, as this CPU's speed
drifts; prints the median images/s of each and the ratio. Writes
benchmarks/results/prune_easy.json.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

from common import benchmark_parser, repeat, timed_steps, write_result
from resnetlab.data import DeviceLoader, synthetic_dataset
from resnetlab.machine import describe_machine
from resnetlab.models import build_model


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    data = synthetic_dataset(num_samples=args.samples, channels=1, size=args.size)
    plain = DeviceLoader(data, args.batch, train=True, augment="crop-flip", pad=2, erase=0.25, channels_last=True)
    pruned = DeviceLoader(data, args.batch, train=True, augment="crop-flip", pad=2, erase=0.25, channels_last=True)
    pruned.losses = torch.rand(args.samples, generator=torch.Generator().manual_seed(0))
    pruned.prune_easy = 0.5
    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, in_chans=1).to(memory_format=torch.channels_last)

    speeds = {"plain": [], "pruned": []}
    for _ in range(args.rounds):
        speeds["plain"].append(timed_steps(model, repeat(plain), args.steps, args.warmup, "bf16"))
        speeds["pruned"].append(timed_steps(model, repeat(pruned), args.steps, args.warmup, "bf16",
                                            sample_losses=pruned))
    plain_speed, pruned_speed = (statistics.median(speeds[name]) for name in ("plain", "pruned"))
    result = dict(model=args.model, batch=args.batch, size=args.size, samples=args.samples, steps=args.steps,
                  rounds=args.rounds, machine=describe_machine(), pruned_pass_steps=len(pruned),
                  plain_pass_steps=len(plain),
                  plain_images_per_s=[round(s, 1) for s in speeds["plain"]],
                  pruned_images_per_s=[round(s, 1) for s in speeds["pruned"]],
                  ratio_of_medians=round(pruned_speed / plain_speed, 3))
    print(f"machine: {result['machine']}")
    print(f"plain steps ({len(plain)} per pass):   median {plain_speed:8.1f} images/s")
    print(f"pruned steps ({len(pruned)} per pass):  median {pruned_speed:8.1f} images/s")
    print(f"ratio: {pruned_speed / plain_speed:.3f}x")
    write_result(Path(args.out) / "prune_easy.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
