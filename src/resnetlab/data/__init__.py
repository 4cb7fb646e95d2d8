"""Datasets: readers and locations of the small datasets, the in-memory device loader, image folders."""

from .base import CLASSES, MEAN, STD, ArrayDataset
from .folders import IMAGENET_MEAN, IMAGENET_STD, ImageFolderData
from .loader import AUGMENTATIONS, DeviceLoader, augment_batch, draw_augmentation, draw_erasing, erase_batch
from .sources import DATASETS, DownloadError, download_data, find_data, find_image_folder, load_dataset, search_dirs
from .synthetic import synthetic_dataset

__all__ = [
    "ArrayDataset",
    "AUGMENTATIONS",
    "CLASSES",
    "DATASETS",
    "DeviceLoader",
    "DownloadError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageFolderData",
    "MEAN",
    "STD",
    "augment_batch",
    "download_data",
    "draw_augmentation",
    "draw_erasing",
    "erase_batch",
    "find_data",
    "find_image_folder",
    "load_dataset",
    "search_dirs",
    "synthetic_dataset",
]
