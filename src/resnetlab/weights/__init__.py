"""Weights: checkpoint formats (formats), named weights (registry), downloads and the shipped files."""

from .download import download_file, mirrored, torch_hub_dir, weights_dir
from .formats import (
    ACCEPTED,
    LoadResult,
    all_finite,
    load_model,
    load_weights,
    normalize_keys,
    read_checkpoint,
    save_weights,
)
from .registry import WeightsEntry, get_weights, is_weights_name, list_weights, resolve_weights

__all__ = ["ACCEPTED", "LoadResult", "WeightsEntry", "all_finite", "download_file", "get_weights", "is_weights_name",
           "list_weights", "load_model", "load_weights", "mirrored", "normalize_keys", "read_checkpoint",
           "resolve_weights", "save_weights", "torch_hub_dir", "weights_dir"]
