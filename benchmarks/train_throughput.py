"""Training images/s of CIFAR ResNet-20, resnetlab's pipeline against the usual one, same run.

    python benchmarks/train_throughput.py [--steps 40] [--batch 128] [--model resnet20]

Reference: a Dataset of uint8 HWC images with torchvision per-sample transforms
(RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) through a
DataLoader with 2 workers, eager fp32, contiguous memory.
resnetlab: the dataset held as one uint8 tensor, batches cut, cropped, flipped and
normalized as whole-batch tensor ops (DeviceLoader), channels_last, bf16 autocast.
Both train the same model (same initial weights) with the same SGD step. Prints
images/s of each and the ratio; writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from resnetlab.data import DeviceLoader, synthetic_dataset
from resnetlab.models import build_model
from resnetlab.train.engine import train_steps

sys.path.insert(0, str(Path(__file__).parent))
from time_to_accuracy import machine, write_result  # noqa: E402


class PerSampleDataset(Dataset):
    """What torchvision's CIFAR10 does: a PIL image per sample, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def timed_steps(model, batches, steps: int, warmup: int, precision: str, sample_losses=None) -> float:
    """Images/s over ``steps`` training steps after ``warmup`` steps (``sample_losses``: as train_steps takes it)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    iterator = iter(batches)
    count = {"n": 0}

    def stop_after(n):
        def on_step(_stats) -> bool:
            count["n"] += 1
            return count["n"] >= n
        return on_step

    train_steps(model, iterator, optimizer, scheduler, device=torch.device("cpu"), precision=precision,
                on_step=stop_after(warmup), sample_losses=sample_losses)
    count["n"] = 0
    start = time.perf_counter()
    stats = train_steps(model, iterator, optimizer, scheduler, device=torch.device("cpu"), precision=precision,
                        on_step=stop_after(steps), sample_losses=sample_losses)
    return stats.samples / (time.perf_counter() - start)


def repeat(loader):
    while True:
        yield from loader


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    data = synthetic_dataset(num_samples=10_000, channels=3, size=32)  # CIFAR-shaped
    torch.manual_seed(0)
    reference_model = build_model(args.model)
    ours_model = build_model(args.model)
    ours_model.load_state_dict(reference_model.state_dict())

    images_hwc = data.images.permute(0, 2, 3, 1).contiguous().numpy()
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    reference_loader = DataLoader(PerSampleDataset(images_hwc, data.labels.numpy(), transform),
                                  batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                  drop_last=True, persistent_workers=args.workers > 0)
    reference = timed_steps(reference_model, repeat(reference_loader), args.steps, args.warmup, "fp32")

    ours_model = ours_model.to(memory_format=torch.channels_last)
    ours_loader = DeviceLoader(data, args.batch, train=True, augment="crop-flip", pad=4, channels_last=True)
    ours = timed_steps(ours_model, repeat(ours_loader), args.steps, args.warmup, "bf16")

    result = dict(model=args.model, batch=args.batch, steps=args.steps, machine=machine(),
                  reference_images_per_s=round(reference, 1), resnetlab_images_per_s=round(ours, 1),
                  ratio=round(ours / reference, 2))
    print(f"machine: {result['machine']}")
    print(f"reference (per-sample torchvision transforms, DataLoader x{args.workers}, eager fp32): "
          f"{reference:8.1f} images/s")
    print(f"resnetlab (device batches, channels_last, bf16 autocast):                   {ours:8.1f} images/s")
    print(f"ratio: {ours / reference:.2f}x")
    write_result(Path(args.out) / "train_throughput.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
