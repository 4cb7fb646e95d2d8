"""Training images/s on an image folder: decoded into memory (cached) against streamed from disk, same run.

    python benchmarks/folder_throughput.py --folder cifar10-jpg/train [--steps 30] [--rounds 2]

The folder is a class-per-subfolder image folder (the CIFAR-10 JPEG training images). Three ways
to train ResNet-20 on it, each through what `resnetlab train --data FOLDER` builds
(train.data.prepare_data), with the same initial weights, SGD step, bf16 autocast and channels_last:

(a) cached: the folder decoded once into uint8 tensors, batches cut and augmented on the device;
(b) streamed: `--no-cache`, torchvision ImageFolder + transforms in DataLoader workers;
(c) in memory: the same decoded pixels given as an in-memory dataset straight to DeviceLoader.

The paths alternate in rounds (a b c a b c ...) and each one's median is kept. Also timed: the
cold decode of the whole folder into a fresh cache, and the warm load from that cache. Writes
benchmarks/results/folder_throughput.json.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import benchmark_parser, repeat, timed_steps, write_result
from resnetlab.data import DeviceLoader
from resnetlab.data.folder_cache import load_folder_in_memory
from resnetlab.machine import describe_machine
from resnetlab.models import build_model
from resnetlab.train import resolve_config
from resnetlab.train.data import prepare_data


def channels_last(batches):
    """Batches as the Trainer feeds them: channels_last images."""
    for x, y in batches:
        yield x.contiguous(memory_format=torch.channels_last), y


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--folder", required=True, help="image folder, one subfolder per class")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        os.environ["RESNETLAB_CACHE"] = cache
        start = time.perf_counter()
        decoded, _ = load_folder_in_memory(args.folder, 32, workers=args.workers)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        load_folder_in_memory(args.folder, 32, workers=args.workers)
        warm = time.perf_counter() - start
        print(f"cold decode of {len(decoded)} images: {cold:.1f} s; warm load from the cache: {warm:.2f} s")

        config = resolve_config("default", overrides=dict(
            data=args.folder, model=args.model, image_size=32, batch_size=args.batch, precision="bf16",
            channels_last=True, augment="crop-flip", pad=4, val_split=0.1, workers=args.workers, quiet=True))
        cpu = torch.device("cpu")
        loaders = {
            "cached": prepare_data(config, cpu).train,
            "streamed": prepare_data(dataclasses.replace(config, cache=False), cpu).train,
            "in memory": DeviceLoader(decoded, args.batch, train=True, device=cpu, augment="crop-flip", pad=4,
                                      channels_last=True),
        }
        torch.manual_seed(0)
        initial = build_model(args.model).state_dict()
        speeds = {name: [] for name in loaders}
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                model = build_model(args.model)
                model.load_state_dict(initial)
                model = model.to(memory_format=torch.channels_last)
                batches = channels_last(repeat(loader))
                speeds[name].append(timed_steps(model, batches, args.steps, args.warmup, "bf16"))
                print(f"  {name}: {speeds[name][-1]:.1f} images/s", file=sys.stderr, flush=True)

    median = {name: statistics.median(values) for name, values in speeds.items()}
    result = dict(
        folder=Path(args.folder).name, images=len(decoded), model=args.model, batch=args.batch, steps=args.steps,
        rounds=args.rounds, workers=args.workers, machine=describe_machine(),
        command=" ".join(["python", "benchmarks/folder_throughput.py", *sys.argv[1:]]),
        date=time.strftime("%Y-%m-%d"), cold_decode_s=round(cold, 2), warm_load_s=round(warm, 2),
        images_per_s={name: round(value, 1) for name, value in median.items()},
        spread={name: [round(v, 1) for v in values] for name, values in speeds.items()},
        cached_vs_in_memory=round(median["cached"] / median["in memory"], 3),
        cached_vs_streamed=round(median["cached"] / median["streamed"], 2),
    )
    print(f"machine: {result['machine']}")
    for name, value in median.items():
        print(f"{name:>10}: {value:8.1f} images/s")
    print(f"cached / in memory: {result['cached_vs_in_memory']:.3f}x; cached / streamed: "
          f"{result['cached_vs_streamed']:.2f}x")
    write_result(Path(args.out) / "folder_throughput.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
