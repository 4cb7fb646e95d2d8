"""Image folders (--data PATH): torchvision's ImageFolder and transforms behind DataLoader workers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2
from tqdm import tqdm

from ..errors import one_line
from .loader import epoch_generator

__all__ = ["ImageFolderData", "ResumableSampler", "IMAGENET_MEAN", "IMAGENET_STD", "first_unreadable",
           "image_folder"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # resize to image_size / 0.875 (256 for 224), then center-crop
# PIL's modes for 16-bit grey ("I" is 32-bit integer; PIL reads 16-bit PGM, and older PIL 16-bit PNG, as "I").
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def to_8bit(image: Any) -> Any:
    """A 16-bit grey PIL image scaled to 8-bit "L" (value * 255 / 65535, rounded); others unchanged.

    ``convert("L")`` would clip those at 255 instead, which turns mid-grey white. "I" images
    are taken to hold 16-bit values: below 0 reads as 0, above 65535 as 65535.
    """
    from PIL import Image

    if image.mode not in SIXTEEN_BIT_MODES:
        return image
    values = np.asarray(image).clip(0, 65535).astype(np.uint32)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8))


def read_rgb(path: str) -> Any:
    """An image file as an RGB PIL image (16-bit grey scaled, not clipped): ImageFolder's reader."""
    from PIL import Image

    try:
        with open(path, "rb") as file:
            return to_8bit(Image.open(file)).convert("RGB")
    except Exception as error:  # PIL raises many types; which file it was is what the user needs
        raise unreadable_image(path, error) from None


def unreadable_image(path: Any, error: BaseException) -> ValueError:
    """The one-line error for an image file that cannot be read."""
    return ValueError(f"cannot read image {path}: {one_line(error)}")


def header_error(path: str) -> str:
    """The one-line error for the image file at ``path`` when PIL cannot read its header, else ''."""
    from PIL import Image

    try:
        with open(path, "rb") as file, Image.open(file):  # reads the header only, decodes nothing
            return ""
    except Exception as error:  # PIL raises many types; which file it was is what the user needs
        return str(unreadable_image(path, error))


class _Headers(Dataset):
    """The header errors ('' when readable) of the image files at ``paths``, one per item."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        return header_error(self.paths[index])


# Fewer files are checked in this process: a header takes about 20 us, starting the workers 30-40 ms.
PARALLEL_HEADERS = 5000


def first_unreadable(paths: list[str], workers: int = 2, quiet: bool = False,
                     description: str = "checking images") -> Optional[str]:
    """The one-line error for the first of ``paths`` whose header PIL cannot read, or None when all can.

    Only headers are read (nothing is decoded), on ``workers`` processes from PARALLEL_HEADERS
    files on, with a progress bar unless ``quiet`` (shown once the check has taken a second).
    """
    workers = workers if len(paths) >= PARALLEL_HEADERS else 0
    # Its own generator: a run's weights must not depend on whether its images were checked.
    loader = DataLoader(_Headers(paths), batch_size=256, num_workers=workers, collate_fn=list,
                        generator=torch.Generator())
    with tqdm(total=len(paths), desc=description, unit="img", disable=quiet, leave=False, delay=1,
              dynamic_ncols=True) as bar:
        for errors in loader:
            problem = next((error for error in errors if error), None)
            if problem:
                return problem
            bar.update(len(errors))
    return None


class _Transformed(Dataset):
    """The samples of `base` at `indices`, passed through `transform`."""

    def __init__(self, base: ImageFolder, indices: list[int], transform: Callable) -> None:
        self.base = base
        self.indices = indices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image, label = self.base[self.indices[i]]
        return self.transform(image), label


class _SeededSamples(Dataset):
    """``dataset``, indexed by (index, seed) pairs: each sample's random transforms run under its seed.

    The augmentation of an image then depends on (run seed, epoch, index) only, not on which
    worker loads it or what came before, so a run resumed mid-epoch sees the same images.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> tuple[Any, int]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):  # torchvision's transforms draw from torch's global RNG
            torch.manual_seed(seed)
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """This rank's shuffled share of each epoch as (index, seed) pairs, able to start mid-epoch.

    ``skip(n)`` leaves out the first n samples of the next pass (a resumed epoch's done part).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def skip(self, samples: int) -> None:
        self.start = samples

    def __len__(self) -> int:
        return self.num_samples - self.start

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        self.start = 0  # the pass after this one is whole
        # One draw per epoch gives every image of the dataset its seed (the same on every rank).
        generator = epoch_generator(self.seed, self.epoch)
        seeds = torch.randint(0, 2**31, (len(self.dataset),), generator=generator).tolist()
        return iter([(index, seeds[index]) for index in indices])


def _class_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in path.iterdir() if e.is_dir() and not e.name.startswith("."))


class _LinkSafeImageFolder(ImageFolder):
    """ImageFolder whose walk does not follow links into folders (a link back up the tree would repeat it,
    under other classes), and skips linked files that point inside the tree (another image's alias).
    Class folders may themselves be links; links to files outside the tree are read once."""

    def make_dataset(self, directory: Any, class_to_idx: dict[str, int], extensions: Any = None,
                     is_valid_file: Any = None, allow_empty: bool = False) -> list[tuple[str, int]]:
        root = os.path.realpath(directory)
        samples, seen = [], set()
        for name in sorted(class_to_idx):
            for folder, folders, files in os.walk(os.path.join(directory, name), followlinks=False):
                folders.sort()
                for file in sorted(files):
                    path = os.path.join(folder, file)
                    real = os.path.realpath(path)
                    inside = os.path.commonpath([root, real]) == root
                    if (not has_file_allowed_extension(file, IMG_EXTENSIONS) or real in seen
                            or (os.path.islink(path) and inside) or not os.path.isfile(real)):
                        continue
                    seen.add(real)
                    samples.append((path, class_to_idx[name]))
        present = {label for _, label in samples}
        empty = sorted(name for name, index in class_to_idx.items() if index not in present)
        if empty and not allow_empty:
            raise FileNotFoundError(f"found no valid file for the classes {', '.join(empty)}; supported extensions "
                                    f"are {', '.join(IMG_EXTENSIONS)}")
        return samples


def image_folder(path: Path, transform: Optional[Callable] = None) -> ImageFolder:
    """ImageFolder of `path` with at least two classes; one-line ValueError otherwise."""
    classes = _class_dirs(path)
    if not classes:
        raise ValueError(f"{path}: no class folders; expected {path}/CLASS/IMAGE files, "
                         f"or {path}/train and {path}/val holding class folders")
    if len(classes) < 2:
        raise ValueError(f"{path}: only one class folder ({classes[0]}); need at least 2 classes")
    try:
        return _LinkSafeImageFolder(str(path), transform=transform, loader=read_rgb)
    except FileNotFoundError as err:  # a class folder without images
        raise ValueError(f"{path}: {one_line(err)}") from None


def train_transform(image_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD, erase: float = 0.0,
                    augment: str = "crop-flip") -> v2.Compose:
    """The training transform of a streamed folder, by ``augment``: 'crop-flip' is RandomResizedCrop and a
    horizontal flip, as in the paper's ImageNet recipe; 'flip' and 'none' resize and center-crop as for
    evaluation, then flip or not. ``erase`` > 0 appends random erasing with that probability, filling with
    the mean (0)."""
    if augment == "crop-flip":
        steps: list = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    elif augment in ("flip", "none"):
        steps = [v2.Resize(round(image_size / CROP_FRACTION), antialias=True), v2.CenterCrop(image_size)]
        steps += [v2.RandomHorizontalFlip()] if augment == "flip" else []
    else:
        raise ValueError(f"unknown augmentation {augment!r}; choose from crop-flip, flip, none")
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    if erase > 0:
        steps.append(v2.RandomErasing(p=erase, value=0))
    return v2.Compose(steps)


def eval_transform(image_size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                   std: tuple[float, ...] = IMAGENET_STD) -> v2.Compose:
    """Resize + center crop + normalize."""
    return v2.Compose([
        v2.Resize(round(image_size / CROP_FRACTION), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


class ImageFolderData:
    """A folder of images by class: PATH/train + PATH/val, or PATH/CLASS split by `val_fraction`."""

    def __init__(self, path: str | Path, image_size: int = 224, val_fraction: float = 0.1,
                 seed: int = 0, erase: float = 0.0, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, augment: str = "crop-flip") -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise FileNotFoundError(f"image folder {self.path} does not exist or is not a folder")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        train_tf = train_transform(image_size, self.mean, self.std, erase=erase, augment=augment)
        val_tf = eval_transform(image_size, self.mean, self.std)
        if (self.path / "train").is_dir() and (self.path / "val").is_dir():
            self.layout = "train/val"
            self.train_dataset: Dataset = image_folder(self.path / "train", train_tf)
            self.val_dataset: Dataset = image_folder(self.path / "val", val_tf)
            self.classes: list[str] = self.train_dataset.classes
            if self.val_dataset.classes != self.classes:
                raise ValueError(
                    f"{self.path}: train and val class folders differ "
                    f"({len(self.classes)} vs {len(self.val_dataset.classes)} classes)"
                )
        else:
            self.layout = "split"
            base = image_folder(self.path)
            n = len(base)
            n_val = round(n * val_fraction)
            if not 0 < n_val < n:
                raise ValueError(
                    f"{self.path}: {n} images with val_fraction {val_fraction} leave an empty split"
                )
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            self.train_dataset = _Transformed(base, sorted(order[n_val:]), train_tf)
            self.val_dataset = _Transformed(base, sorted(order[:n_val]), val_tf)
            self.classes = base.classes

    def first_unreadable(self, workers: int = 2, quiet: bool = False) -> Optional[str]:
        """The one-line error for the first image file of the folder whose header cannot be read, or None."""
        folders = [self.train_dataset, self.val_dataset] if self.layout == "train/val" else [self.train_dataset.base]
        paths = [path for folder in folders for path, _ in folder.samples]
        return first_unreadable(paths, workers, quiet, description=f"checking {self.path.name or 'images'}")

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"ImageFolderData({str(self.path)!r}, layout={self.layout}, classes={self.num_classes}, "
                f"train={len(self.train_dataset)}, val={len(self.val_dataset)})")

    def train_loader(self, batch_size: int, workers: int = 4, *, seed: int = 0, rank: int = 0,
                     world_size: int = 1, pin_memory: bool = False, drop_last: bool = True) -> DataLoader:
        """Shuffled, augmented batches; call loader.sampler.set_epoch(epoch) each epoch and
        loader.sampler.skip(n) to resume after this rank's first n samples of an epoch."""
        sampler = ResumableSampler(self.train_dataset, num_replicas=world_size, rank=rank, seed=seed,
                                   drop_last=drop_last)
        return DataLoader(_SeededSamples(self.train_dataset), batch_size=batch_size, sampler=sampler,
                          num_workers=workers, pin_memory=pin_memory, drop_last=drop_last,
                          persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))

    def val_loader(self, batch_size: int, workers: int = 4, *, rank: int = 0, world_size: int = 1,
                   pin_memory: bool = False) -> DataLoader:
        """Batches in folder order; with world_size > 1, every world_size-th image from rank's (each image once)."""
        dataset = self.val_dataset
        if world_size > 1:  # not DistributedSampler: it pads the last shard with repeated images
            dataset = Subset(dataset, range(rank, len(dataset), world_size))
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                          pin_memory=pin_memory, persistent_workers=workers > 0)
