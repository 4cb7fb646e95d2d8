"""The images an export or an inference path is calibrated and verified on."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..data import DATASETS, dataset_name
from ..data.inputs import input_size, load_inputs

__all__ = ["CALIBRATION_IMAGES", "calibration_images", "verification_inputs"]

CALIBRATION_IMAGES = 512


def calibration_images(calibration: Optional[str], metadata: Dict[str, Any], in_chans: int,
                       data_dir: Optional[str] = None) -> Tensor:
    """Images to calibrate int8 ranges on: ``calibration`` (a dataset's train split, a folder or a
    tensor file), else the train split of the dataset the checkpoint was trained on."""
    preprocessing = metadata.get("preprocessing") or {}
    source = calibration or (preprocessing.get("dataset") if preprocessing.get("dataset") in DATASETS else None)
    if not source:
        raise ValueError("int8 needs calibration images: pass --calibration DATA (a dataset name, an image folder, "
                         "or a .npy / .pt tensor file)")
    return load_inputs(source, preprocessing, in_chans, CALIBRATION_IMAGES, "train", data_dir).images


def verification_inputs(source: Optional[str], metadata: Dict[str, Any], in_chans: int, samples: int = 256,
                        data_dir: Optional[str] = None) -> Tuple[Tensor, str]:
    """Up to ``samples`` images to compare an exported file with its model on, and their description:
    ``source`` (a dataset's test split, a folder or a tensor file), else the test split of the
    checkpoint's dataset, else random normal images at the checkpoint's input size."""
    preprocessing = metadata.get("preprocessing") or {}
    recorded = preprocessing.get("dataset") if preprocessing else None
    source = source or (recorded if dataset_name(recorded) is not None else None)  # a name, never a folder
    if source:
        sample = load_inputs(source, preprocessing, in_chans, samples, "test", data_dir)
        return sample.images, sample.description
    height, width = input_size(preprocessing)
    images = torch.randn(samples, in_chans, height, width, generator=torch.Generator().manual_seed(0))
    return images, f"random normal images ({samples} at {height}x{width}; pass --data for real ones)"
