"""Model inputs outside training: image files prepared as a checkpoint expects, labelled image
folders to evaluate on, and batches of sample images (for calibration and verification) from a
dataset, a folder or a tensor file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import load_failure
from .catalog import dataset_name
from .datasets import load_dataset
from .folders import image_folder, to_8bit, unreadable_image
from .loader import DeviceLoader
from .locate import DatasetSource, TensorSource, resolve_source

__all__ = ["ImagePreprocess", "LabelledFolder", "SampleImages", "expand_paths", "input_size", "load_inputs",
           "to_8bit"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def expand_paths(paths: Sequence[Union[str, Path]]) -> Iterator[Path]:
    """Files as given, and the image files inside given folders (sorted, recursive)."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def input_size(preprocessing: Dict[str, Any]) -> Tuple[int, int]:
    """The H, W a checkpoint was trained at (224 x 224 when it does not say)."""
    size = preprocessing.get("input_size") or [224, 224]
    return int(size[0]), int(size[1])


class ImagePreprocess:
    """Reads image files as a checkpoint's training prepared them (its ``preprocessing`` metadata)."""

    def __init__(self, preprocessing: Optional[Dict[str, Any]], in_chans: int) -> None:
        pre = preprocessing or {}
        self.in_chans = in_chans
        self.size = input_size(pre)
        self.mean = torch.tensor(pre.get("mean") or [0.485, 0.456, 0.406][:in_chans]).view(-1, 1, 1)
        self.std = torch.tensor(pre.get("std") or [0.229, 0.224, 0.225][:in_chans]).view(-1, 1, 1)
        # Small datasets were trained at their native size: the whole image is resized to it. Image
        # folders were resized by the shorter side to size / crop_fraction, then center-cropped.
        self.crop_fraction: Optional[float] = pre.get("crop_fraction", 0.875)
        if pre and "crop_fraction" not in pre and dataset_name(pre.get("dataset")) is not None:
            self.crop_fraction = None
        self.interpolation = str(pre.get("interpolation") or "bilinear")  # bicubic for many of timm's weights
        if self.interpolation not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"unknown interpolation {self.interpolation!r} in the weights' preprocessing; "
                             "accepted: nearest, bilinear, bicubic")

    @property
    def center_crop(self) -> bool:
        """Whether images are center-cropped (image folders) rather than resized whole (small datasets)."""
        return self.crop_fraction is not None

    def __call__(self, path: Union[str, Path]) -> torch.Tensor:
        """Any image file as a normalized C x H x W tensor (grayscale or RGB as the model needs)."""
        from PIL import Image
        from torchvision.transforms import functional as TF

        mode = TF.InterpolationMode(self.interpolation)
        with Image.open(path) as image:
            image = to_8bit(image).convert("L" if self.in_chans == 1 else "RGB")
            if self.crop_fraction is not None:
                image = TF.resize(image, int(round(self.size[0] / self.crop_fraction)), interpolation=mode)
                image = TF.center_crop(image, list(self.size))
            else:
                image = TF.resize(image, list(self.size), interpolation=mode)
            x = TF.pil_to_tensor(image).float().div_(255.0)
        if x.shape[0] != self.in_chans:  # a model with in_chans not 1 or 3: tile the channels
            x = x.repeat(self.in_chans // x.shape[0] + 1, 1, 1)[: self.in_chans]
        return (x - self.mean) / self.std


def _folder_split(path: Path, split: str) -> Tuple[Path, str]:
    """The folder to evaluate ``split`` on and the name of what it holds (see LabelledFolder)."""
    present = [name for name in ("train", "val", "test") if (path / name).is_dir()]
    if not present:
        return path, "all"
    wanted = ["train"] if split == "train" else ["val", "test"]
    for name in wanted:
        if name in present:
            return path / name, name
    raise ValueError(f"{path} has {' and '.join(n + '/' for n in present)} but no "
                     f"{' or '.join(n + '/' for n in wanted)} for the {split} split")


class LabelledFolder(Dataset):
    """The images of an image folder with their class indices, each read as ``predict`` reads it.

    A folder holding train/, val/ or test/ is evaluated on train/ for ``split`` "train" and on
    val/ (else test/) otherwise; any other folder of class folders on every image in it.
    ``split`` ("train", "val", "test" or "all") and ``description`` say which.
    """

    def __init__(self, path: Union[str, Path], split: str, preprocessing: Optional[Dict[str, Any]],
                 in_chans: int) -> None:
        self.path = Path(path).expanduser()
        root, self.split = _folder_split(self.path, split)
        folder = image_folder(root)
        self.classes = folder.classes
        self.samples = folder.samples
        self.prepare = ImagePreprocess(preprocessing, in_chans)
        which = f"all {len(self)} images" if self.split == "all" else f"{self.split}/, {len(self)} images"
        self.description = f"{self.path} (folder: {which})"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            return self.prepare(path), label
        except Exception as error:  # PIL raises many kinds; which file it was is what the user needs
            raise unreadable_image(path, error) from None


def _spread(total: int, count: int) -> list[int]:
    """count indices spread evenly over range(total) (all of them when count >= total)."""
    if count >= total:
        return list(range(total))
    return [int(i * total / count) for i in range(count)]


def _tensor_file(path: Path) -> torch.Tensor:
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # numpy and torch raise many kinds for a bad file
        raise ValueError(f"cannot read {path} as a tensor: {load_failure(error)}") from None
    if not isinstance(loaded, torch.Tensor):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a tensor of images")
    return loaded


@dataclass
class SampleImages:
    """Normalized float N x C x H x W images, their labels when known, and where they came from."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]
    description: str


def _tile_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Grayscale images repeated to in_chans channels (as predict converts them), else unchanged."""
    if images.dim() == 4 and images.shape[1] == 1 and in_chans > 1:
        return images.repeat(1, in_chans, 1, 1)
    return images


def load_inputs(source: str, preprocessing: Optional[Dict[str, Any]], in_chans: int, count: int = 256,
                split: str = "test", data_dir: Optional[str] = None) -> SampleImages:
    """Up to ``count`` images a model with ``in_chans`` channels can take, for calibration and checks.

    ``source`` is a dataset name (its ``split``, normalized as in training), an image folder
    (read like ``predict`` does, evenly spread over the sorted files), or a .npy / .pt file
    holding an already normalized float N x C x H x W tensor (used whole).
    """
    found = resolve_source(source, data_dir)
    if isinstance(found, DatasetSource):
        dataset = load_dataset(found.name, split, data_dir)
        dataset = dataset.subset(_spread(len(dataset), count))
        batches = list(DeviceLoader(dataset, 256, train=False, device=torch.device("cpu")))
        images = _tile_channels(torch.cat([x for x, _ in batches]), in_chans)
        labels = torch.cat([y for _, y in batches])
        return SampleImages(images, labels, f"{source} {split} ({len(images)} images)")
    if isinstance(found, TensorSource):
        images = _tensor_file(found.path)
        return SampleImages(images, None, f"{found.path} ({len(images)} images)")
    files = list(expand_paths([found.path]))
    if not files:
        raise ValueError(f"no images in {found.path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    prepare = ImagePreprocess(preprocessing, in_chans)
    images = torch.stack([prepare(files[i]) for i in _spread(len(files), count)])
    return SampleImages(images, None, f"{found.path} ({len(images)} images)")
