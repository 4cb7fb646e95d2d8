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

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from common import benchmark_parser, repeat, timed_steps, write_result
from resnetlab.data import DeviceLoader, synthetic_dataset
from resnetlab.machine import describe_machine
from resnetlab.models import build_model


class PerSampleDataset(Dataset):
    """What torchvision's CIFAR10 does: a PIL image per sample, then the transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
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

    result = dict(model=args.model, batch=args.batch, steps=args.steps, machine=describe_machine(),
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
