"""Where data lives: the search roots, the folders holding a dataset's files, image folders, and
what a --data value names (a dataset, a folder or a tensor file)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence, Union

from .catalog import DATASETS, HOW_TO_GET, SYNTHETIC, SYSTEM_DIRS, TORCHVISION_LAYOUT, dataset_name, record

__all__ = ["DatasetSource", "FolderSource", "TensorSource", "Source", "SOURCE_KINDS", "TENSOR_SUFFIXES",
           "data_roots", "find_data", "find_idx", "find_image_folder", "resolve_source", "search_dirs"]

ENV_VAR = "RESNETLAB_DATA"
TENSOR_SUFFIXES = (".npy", ".pt")
SOURCE_KINDS = ("dataset", "folder", "tensor")
FOLDER_ADVICE = "pass --data PATH to a folder of images with one subfolder per class (or train/ and val/)"


@dataclass(frozen=True)
class DatasetSource:
    """A small dataset, by its canonical name."""

    name: str
    kind: ClassVar[str] = "dataset"


@dataclass(frozen=True)
class FolderSource:
    """A folder of images, one subfolder per class (or train/, val/, test/ holding those)."""

    path: Path
    kind: ClassVar[str] = "folder"


@dataclass(frozen=True)
class TensorSource:
    """A .npy or .pt file holding a tensor of images."""

    path: Path
    kind: ClassVar[str] = "tensor"


Source = Union[DatasetSource, FolderSource, TensorSource]


def data_roots(data_dir: Optional[str | Path] = None) -> list[Path]:
    """The user-level roots in search order: data_dir, $RESNETLAB_DATA, ~/.cache/resnetlab."""
    roots = []
    if data_dir:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(Path.home() / ".cache" / "resnetlab")
    return roots


def resolve_source(spec: str | Path, data_dir: Optional[str | Path] = None,
                   kinds: Sequence[str] = SOURCE_KINDS) -> Source:
    """What `spec` names, tried in this order among `kinds`: a dataset (any alias or case), an
    existing .npy / .pt file, a folder path, or a folder of that name under the data roots.

    ValueError, in one line, names `spec` and what it is not.
    """
    spec = str(spec)
    unknown = set(kinds) - set(SOURCE_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(SOURCE_KINDS)}, got {', '.join(kinds) or 'none'}")
    name = dataset_name(spec) if "dataset" in kinds else None
    if name is not None:
        return DatasetSource(name)
    path = Path(spec).expanduser()
    if "tensor" in kinds and path.suffix in TENSOR_SUFFIXES and path.is_file():
        return TensorSource(path)
    candidates = []
    if "folder" in kinds:
        if path.is_dir():
            return FolderSource(path)
        candidates = [root / spec for root in data_roots(data_dir)] if len(path.parts) == 1 else []
        for folder in candidates:
            if folder.is_dir():
                return FolderSource(folder)
    raise ValueError(_not_a_source(spec, kinds, candidates))


def _not_a_source(spec: str, kinds: Sequence[str], candidates: list[Path]) -> str:
    """The one-line error for a `spec` that names none of `kinds`."""
    parts = []
    if "dataset" in kinds:
        parts.append(f"not a dataset name ({', '.join(DATASETS)})")
    if "tensor" in kinds:
        parts.append(f"not a {' / '.join(TENSOR_SUFFIXES)} tensor file")
    if "folder" in kinds:
        parts.append("not a folder")
    said = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    looked = f"; no folder {spec} in {', '.join(str(c.parent) for c in candidates)}" if candidates else ""
    advice = f"; {FOLDER_ADVICE}" if "folder" in kinds and "tensor" not in kinds else ""
    return f"unknown dataset {spec!r}: it is {said}{looked}{advice}"


def find_image_folder(data: str, data_dir: Optional[str | Path] = None) -> Path:
    """The image folder ``data`` names: a path, or a folder of that name under the data roots
    (``--data-dir``, ``$RESNETLAB_DATA``, ``~/.cache/resnetlab``), e.g. ``imagenet``."""
    return resolve_source(data, data_dir, kinds=("folder",)).path


def search_dirs(name: str, data_dir: Optional[str | Path] = None) -> list[Path]:
    """Every folder searched for `name`, in order."""
    if dataset_name(name) == SYNTHETIC:
        return []
    key = record(name).name
    dirs: list[Path] = []
    for root in data_roots(data_dir):
        dirs += [root, root / key, root / TORCHVISION_LAYOUT[key][0]]
    dirs += SYSTEM_DIRS.get(key, [])
    return list(dict.fromkeys(dirs))


def find_idx(folder: Path, stem: str) -> Optional[Path]:
    """The idx file for `stem` in folder, under the upstream name or MNIST's dotted one, .gz or not."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _holds(key: str, folder: Path, split: Optional[str] = None) -> bool:
    """Whether folder holds every file the loader of `key` reads for `split` (None: both splits)."""
    entry = record(key)
    if entry.file_format == "cifar":
        return all((folder / name).is_file() for name in entry.split_files(split))
    return all(find_idx(folder, stem) is not None for stem in entry.split_files(split))


def find_data(name: str, data_dir: Optional[str | Path] = None, split: Optional[str] = None) -> Path:
    """The folder holding the files of dataset `name` for `split` ('train' or 'test'; None: both):
    the test split needs only its own files. FileNotFoundError says where it looked and for what."""
    key = record(name).name
    dirs = search_dirs(key, data_dir)
    for folder in dirs:
        if _holds(key, folder, split):
            return folder
    needed = ", ".join(record(key).split_files(split))
    raise FileNotFoundError(
        f"{key} not found; looked in {', '.join(str(d) for d in dirs)} for {needed}; {HOW_TO_GET[key]}"
    )
