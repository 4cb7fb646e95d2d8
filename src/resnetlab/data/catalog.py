"""The small datasets: one record of facts per dataset, and the lookup tables derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torchvision.datasets import CIFAR10, CIFAR100, MNIST, FashionMNIST

__all__ = ["DatasetRecord", "CATALOG", "DATASETS", "SYNTHETIC", "CLASSES", "MEAN", "STD", "TORCHVISION_LAYOUT",
           "SYSTEM_DIRS", "HOW_TO_GET", "CIFAR_FILES", "KNOWN_IDX", "canonical_name", "dataset_name", "record"]

SYNTHETIC = "synthetic"  # generated in memory (see synthetic.py): a dataset name without files
FORMATS = ("idx", "cifar")


@dataclass(frozen=True)
class DatasetRecord:
    """Everything known about one small dataset: its names, files, classes, statistics and sources."""

    name: str  # canonical name, as given to load_dataset and stored in checkpoints
    aliases: tuple[str, ...]  # other accepted spellings (compared lower-case, "_" read as "-")
    file_format: str  # "idx" (MNIST's) or "cifar" (CIFAR's python pickles)
    files: dict[str, tuple[str, ...]]  # split -> files: idx stems (images, labels) or CIFAR batch names
    checksums: dict[str, tuple[int, str, str]]  # idx stem -> (size, algorithm, digest) of the decompressed file
    classes: tuple[str, ...]  # class names; empty when they come from the files' meta (see meta_file)
    meta_file: Optional[str]  # CIFAR: the pickle with the class names
    meta_key: Optional[str]  # CIFAR: the class names' key in meta_file
    label_key: Optional[str]  # CIFAR: the labels' key in a batch
    mean: tuple[float, ...]  # per-channel mean of the train split, in [0, 1] units
    std: tuple[float, ...]  # per-channel std of the train split, in [0, 1] units
    image_shape: tuple[int, int, int]  # C, H, W
    torchvision_folder: str  # the sub-folder torchvision keeps the files in, inside a root
    upstream: type  # torchvision's dataset class: its urls and md5s are what download_data fetches
    system_dirs: tuple[Path, ...] = field(default=())  # folders system packages install the files into
    how_to_get: str = ""  # advice for when the files are missing

    def __post_init__(self) -> None:
        if self.file_format not in FORMATS:
            raise ValueError(f"{self.name}: file_format must be one of {', '.join(FORMATS)}, got {self.file_format}")

    @property
    def all_files(self) -> tuple[str, ...]:
        """Every file the loader reads, both splits (and the meta file)."""
        return self.split_files()

    def split_files(self, split: Optional[str] = None) -> tuple[str, ...]:
        """The files the loader reads for ``split`` ('train' or 'test'; None: both), and the meta file."""
        if split is not None and split not in self.files:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(self.files)}")
        meta = (self.meta_file,) if self.meta_file else ()
        splits = ("train", "test") if split is None else (split,)
        return (*meta, *(name for part in splits for name in self.files[part]))


def _idx_files(prefix: str) -> tuple[str, str]:
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


IDX_FILES = {"train": _idx_files("train"), "test": _idx_files("t10k")}
IDX_ADVICE = "pass --download, or point --data-dir at a folder with the idx files"

# Size and digest of the DECOMPRESSED upstream idx files. The .gz files differ between mirrors
# (Debian's gzip headers carry another mtime, so the md5 of the .gz that torchvision lists does
# not match Debian's), the decompressed bytes do not.
# Fashion-MNIST: sha256 computed here from Debian's dataset-fashion-mnist
# (0.0~git20200523.55506a9-1); their md5s (f4a8712d..., 9018921c..., 8181f547..., 15d48437...)
# equal the decompressed md5s published upstream and in many public scripts.
# MNIST: no copy was available here, so these are the decompressed md5s published in many
# public scripts, not recomputed.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": (
        47040016, "sha256", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte": (
        60008, "sha256", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte": (
        7840016, "sha256", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte": (
        10008, "sha256", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}
MNIST_MD5 = {
    "train-images-idx3-ubyte": (47040016, "md5", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": (60008, "md5", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": (7840016, "md5", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": (10008, "md5", "27ae3e4e09519cfbb04c329615203637"),
}

# Means and stds: Fashion-MNIST's were computed here from the real files (0.28604, 0.35302); the
# others are the usual published values. CIFAR's std is the pixel std (0.247, ...), not the often
# copied mean of per-image stds (0.2023, ...).
RECORDS = (
    DatasetRecord(
        name="fashion-mnist", aliases=("fashionmnist",), file_format="idx", files=IDX_FILES,
        checksums=FASHION_MNIST_SHA256,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        meta_file=None, meta_key=None, label_key=None, mean=(0.2860,), std=(0.3530,), image_shape=(1, 28, 28),
        torchvision_folder="FashionMNIST/raw", upstream=FashionMNIST,
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),  # Debian's dataset-fashion-mnist
        how_to_get="install it with `apt-get install dataset-fashion-mnist`, pass --download, "
                   "or point --data-dir at a folder with the idx files",
    ),
    DatasetRecord(
        name="mnist", aliases=(), file_format="idx", files=IDX_FILES, checksums=MNIST_MD5,
        classes=tuple(str(i) for i in range(10)),
        meta_file=None, meta_key=None, label_key=None, mean=(0.1307,), std=(0.3081,), image_shape=(1, 28, 28),
        torchvision_folder="MNIST/raw", upstream=MNIST, how_to_get=IDX_ADVICE,
    ),
    DatasetRecord(
        name="cifar10", aliases=("cifar-10",), file_format="cifar",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}, checksums={},
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        meta_file="batches.meta", meta_key="label_names", label_key="labels",
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), image_shape=(3, 32, 32),
        torchvision_folder=CIFAR10.base_folder, upstream=CIFAR10,
        how_to_get=f"pass --download, or point --data-dir at a folder holding {CIFAR10.base_folder} "
                   f"(from {CIFAR10.url})",
    ),
    DatasetRecord(
        name="cifar100", aliases=("cifar-100",), file_format="cifar",
        files={"train": ("train",), "test": ("test",)}, checksums={},
        classes=(),  # the 100 fine names come from the files' own meta
        meta_file="meta", meta_key="fine_label_names", label_key="fine_labels",
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), image_shape=(3, 32, 32),
        torchvision_folder=CIFAR100.base_folder, upstream=CIFAR100,
        how_to_get=f"pass --download, or point --data-dir at a folder holding {CIFAR100.base_folder} "
                   f"(from {CIFAR100.url})",
    ),
)
CATALOG: dict[str, DatasetRecord] = {r.name: r for r in RECORDS}

# The old lookup tables, derived from the records.
DATASETS = (*CATALOG, SYNTHETIC)
CLASSES: dict[str, list[str]] = {r.name: list(r.classes) for r in RECORDS if r.classes}
MEAN: dict[str, tuple[float, ...]] = {r.name: r.mean for r in RECORDS}
STD: dict[str, tuple[float, ...]] = {r.name: r.std for r in RECORDS}
TORCHVISION_LAYOUT = {r.name: (r.torchvision_folder, r.upstream) for r in RECORDS}
SYSTEM_DIRS: dict[str, list[Path]] = {r.name: list(r.system_dirs) for r in RECORDS if r.system_dirs}
HOW_TO_GET = {r.name: r.how_to_get for r in RECORDS}
# CIFAR: (train files, test files, meta file, meta key, label key).
CIFAR_FILES = {r.name: (list(r.files["train"]), list(r.files["test"]), r.meta_file, r.meta_key, r.label_key)
               for r in RECORDS if r.file_format == "cifar"}
KNOWN_IDX: dict[str, dict[str, tuple[int, str, str]]] = {r.name: dict(r.checksums) for r in RECORDS
                                                         if r.file_format == "idx"}
_NAMES = {spelling: r.name for r in RECORDS for spelling in (r.name, *r.aliases)} | {SYNTHETIC: SYNTHETIC}


def dataset_name(spec: Optional[str]) -> Optional[str]:
    """The canonical name of dataset `spec` (any alias, any case), or None when it names none."""
    if not isinstance(spec, str):
        return None
    return _NAMES.get(spec.strip().lower().replace("_", "-"))


def canonical_name(name: str) -> str:
    """The canonical name of dataset `name`; ValueError lists the names when it names none."""
    key = dataset_name(name)
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return key


def record(name: str) -> DatasetRecord:
    """The record of dataset `name` (any alias); ValueError for synthetic, which has no files."""
    key = canonical_name(name)
    if key == SYNTHETIC:
        raise ValueError("the synthetic dataset is generated, it has no files")
    return CATALOG[key]
