"""Datasets: the catalog of small datasets, where their files are, how to download and load them,
the in-memory device loader, image folders, and what a --data value names."""

from ..errors import DownloadError
from .base import ArrayDataset
from .catalog import CLASSES, DATASETS, MEAN, STD, DatasetRecord, dataset_name
from .datasets import load_dataset
from .download import download_data
from .folders import IMAGENET_MEAN, IMAGENET_STD, ImageFolderData
from .loader import AUGMENTATIONS, DeviceLoader, augment_batch, draw_augmentation, draw_erasing, erase_batch
from .locate import (
    DatasetSource,
    FolderSource,
    Source,
    TensorSource,
    find_data,
    find_image_folder,
    resolve_source,
    search_dirs,
)
from .synthetic import synthetic_dataset

__all__ = [
    "ArrayDataset",
    "AUGMENTATIONS",
    "CLASSES",
    "DATASETS",
    "DatasetRecord",
    "DatasetSource",
    "DeviceLoader",
    "DownloadError",
    "FolderSource",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderData",
    "MEAN",
    "STD",
    "Source",
    "TensorSource",
    "augment_batch",
    "dataset_name",
    "download_data",
    "draw_augmentation",
    "draw_erasing",
    "erase_batch",
    "find_data",
    "find_image_folder",
    "load_dataset",
    "resolve_source",
    "search_dirs",
    "synthetic_dataset",
]
