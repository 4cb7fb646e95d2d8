"""Fine-tuning against training from scratch on a small folder of images, at the same number of steps.

The folder: N images per class of the real Fashion-MNIST training set written as PNG files (train/),
and 200 per class of its test set (val/), a dataset the start weights never saw. Fine-tuning starts
from resnetlab's CIFAR-10 ResNet-20 (resnet20.resnetlab_cifar10), in two ways: 'finetune', the finetune
recipe (the classifier alone for one epoch, then the backbone at a tenth of the lr), and 'finetune-all',
the same start with every layer trained at the full lr from the first step. 'scratch' is the same recipe
without weights (no frozen epoch, one lr for every layer), so it gets at least the fine-tuned runs' time.
All train at 32 pixels for the same steps.

    python benchmarks/finetune.py                          # 20, 100 and 500 images per class, seed 0
    python benchmarks/finetune.py --per-class 100 --seeds 0 1 2

Writes benchmarks/results/finetune.json. With --near, the data is near the start weights' own: the
start weights are a ResNet-20 trained here (the default recipe at 32 pixels, --start-epochs) on all
the training images of Fashion-MNIST's first five classes (T-shirt/top to Coat), and the folder
holds the other five (Sandal to Ankle boot), the same kind of images with classes the start weights
never saw; it writes benchmarks/results/finetune-near.json.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

from common import benchmark_parser, write_result
from resnetlab.data import load_dataset
from resnetlab.machine import describe_machine
from resnetlab.train import resolve_config, train

VAL_PER_CLASS = 200
METHODS = ("finetune", "finetune-all", "scratch")
START_CLASSES, NEAR_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)  # Fashion-MNIST's class indices


def write_folder(root: Path, per_class: int, seed: int, classes: Sequence[int] = range(10)) -> Path:
    """train/ with ``per_class`` Fashion-MNIST training images of each of ``classes`` (drawn with ``seed``),
    val/ from the test set; PNG files in class folders."""
    import torch

    for folder_name, split, count in (("train", "train", per_class), ("val", "test", VAL_PER_CLASS)):
        data = load_dataset("fashion-mnist", split)
        generator = torch.Generator().manual_seed(seed)
        for label in classes:
            folder = root / folder_name / data.classes[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            members = (data.labels == label).nonzero().flatten()
            chosen = members[torch.randperm(len(members), generator=generator)[:count]]
            for index in chosen.tolist():
                Image.fromarray(data.images[index, 0].numpy(), "L").save(folder / f"{index}.png")
    return root


def train_start_weights(root: Path, epochs: int) -> dict:
    """A ResNet-20 trained at 32 pixels on every training image of START_CLASSES: its file and figures."""
    folder = write_folder(root / "start", 6000, 0, START_CLASSES)
    config = resolve_config("default", overrides=dict(data=str(folder / ""), model="resnet20", image_size=32,
                                                      epochs=epochs, seed=0, quiet=True, out=str(root / "runs"),
                                                      name="start"))
    result = train(config)
    return dict(path=str(Path(result["run_dir"]) / "best.safetensors"), val_top1=round(result["test_top1"], 2),
                epochs=epochs, train_s=round(result["elapsed_s"], 1))


def run(folder: Path, method: str, steps: int, seed: int, out: Path, weights: str = "default") -> dict:
    """One training run on ``folder`` (its own run folder under ``out``) from ``weights``; its accuracy, steps
    and times."""
    overrides = dict(data=str(folder / ""), model="resnet20", iterations=steps, image_size=32, seed=seed,
                     quiet=True, out=str(out), name=f"{folder.name}-{method}", eval_every=1000, weights=weights)
    if method == "scratch":
        overrides.update(weights="", freeze_epochs=0, backbone_lr_mult=1.0)
    elif method == "finetune-all":
        overrides.update(freeze_epochs=0, backbone_lr_mult=1.0)
    config = resolve_config("finetune", overrides=overrides)
    started = time.perf_counter()
    result = train(config)
    return dict(method=method, seed=seed, val_top1=round(result["test_top1"], 2), steps=result["steps"],
                epochs=result["epochs"], train_s=round(result["elapsed_s"], 1),
                wall_s=round(time.perf_counter() - started, 1),
                config=dict(lr=config.lr, batch_size=config.batch_size, freeze_epochs=config.freeze_epochs,
                            backbone_lr_mult=config.backbone_lr_mult, weights=config.weights))


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--per-class", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps of each run (batch 64)")
    parser.add_argument("--near", action="store_true", help="start weights trained on the other five classes")
    parser.add_argument("--start-epochs", type=int, default=4, help="with --near: epochs of the start weights")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["RESNETLAB_CACHE"] = str(Path(scratch) / "cache")  # the decoded folders go with the rest
        start = train_start_weights(Path(scratch), args.start_epochs) if args.near else None
        weights, classes = (start["path"], NEAR_CLASSES) if start else ("default", range(10))
        if start:
            print(f"start weights: {start['val_top1']:.2f}% on their five classes after {start['train_s']:.0f} s")
        for per_class in args.per_class:
            for seed in args.seeds:
                folder = write_folder(Path(scratch) / f"fmnist-{per_class}-{seed}", per_class, seed, classes)
                for method in METHODS:
                    row = dict(per_class=per_class,
                               **run(folder, method, args.steps, seed, Path(scratch) / "runs", weights))
                    rows.append(row)
                    print(f"{per_class:>4} per class, seed {seed}, {method:>12}: {row['val_top1']:.2f}% "
                          f"after {row['steps']} steps, {row['train_s']:.0f} s training", flush=True)
    if start:
        names = load_dataset("fashion-mnist", "test").classes
        start_weights = (f"resnet20 trained on Fashion-MNIST's {', '.join(names[i] for i in START_CLASSES)} "
                         f"({args.start_epochs} epochs of the default recipe at 32 pixels: {start['val_top1']:.2f}% "
                         f"on their test images, {start['train_s']:.0f} s)")
    else:
        start_weights = "resnet20.resnetlab_cifar10"
    result = dict(machine=describe_machine(), date=time.strftime("%Y-%m-%d"),
                  command=" ".join(["python", "benchmarks/finetune.py", *sys.argv[1:]]),
                  start_weights=start_weights, classes=len(classes), val_images=len(classes) * VAL_PER_CLASS,
                  rows=rows)
    write_result(Path(args.out) / ("finetune-near.json" if start else "finetune.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
