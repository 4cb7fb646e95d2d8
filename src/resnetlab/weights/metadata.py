"""What a checkpoint's (or an exported file's) resnetlab metadata may hold: each entry checked against
its type and bounds before anything is built from it. A violation is one ValueError naming the file,
the entry, the value and what is accepted."""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping

from ..limits import ceiling

__all__ = ["MIN_INPUT_SIDE", "check_class_names", "check_metadata"]

MIN_INPUT_SIDE = 8


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, accepted: str) -> None:
        raise ValueError(f"{self.source}: metadata {key} is {_show(value)}; accepted: {accepted}")

    def numbers(self, key: str, value: Any, positive: bool = False) -> None:
        most = ceiling("channels")
        ok = (isinstance(value, list) and 1 <= len(value) <= most
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      and (v > 0 or not positive) for v in value))
        if not ok:
            self.fail(key, value, f"a list of 1 to {most} finite numbers" + (" above 0" if positive else ""))


def check_metadata(metadata: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """``metadata`` as it is, once its resnetlab entries (arch, options, class_names, preprocessing) are
    of the types and within the bounds resnetlab builds from; entries it does not use pass unchecked."""
    check = _Checker(source)
    if "arch" in metadata and not isinstance(metadata["arch"], str):
        check.fail("arch", metadata["arch"], "a model name")
    options = metadata.get("options")
    if options is not None and not (isinstance(options, dict) and all(isinstance(k, str) for k in options)):
        check.fail("options", options, "a table of builder options")
    names, most_classes = metadata.get("class_names"), ceiling("classes")
    if names is not None and not (isinstance(names, list) and 1 <= len(names) <= most_classes
                                  and all(isinstance(n, str) for n in names)):
        check.fail("class_names", names, f"a list of 1 to {most_classes:,} names")
    pre = metadata.get("preprocessing")
    if pre is None:
        return dict(metadata)
    if not isinstance(pre, dict):
        check.fail("preprocessing", pre, "a table (mean, std, input_size, ...)")
    for key in ("mean", "std"):
        if key in pre:
            check.numbers(f"preprocessing.{key}", pre[key], positive=key == "std")
    if "mean" in pre and "std" in pre and len(pre["mean"]) != len(pre["std"]):
        check.fail("preprocessing.std", pre["std"], f"{len(pre['mean'])} values, one per mean")
    size, largest = pre.get("input_size"), ceiling("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and MIN_INPUT_SIDE <= v <= largest for v in size)):
        check.fail("preprocessing.input_size", size, f"[height, width], each {MIN_INPUT_SIDE} to {largest}")
    if "dataset" in pre and not isinstance(pre["dataset"], str):
        check.fail("preprocessing.dataset", pre["dataset"], "a dataset name or folder")
    crop = pre.get("crop_fraction")
    if crop is not None and not (isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0.1 <= crop <= 1):
        check.fail("preprocessing.crop_fraction", crop, "a number from 0.1 to 1")
    for key in ("flip_tta", "shift_tta"):
        if key in pre and not isinstance(pre[key], bool):
            check.fail(f"preprocessing.{key}", pre[key], "true or false")
    split = pre.get("val_split")
    if split is not None and not (isinstance(split, (int, float)) and not isinstance(split, bool)
                                  and math.isfinite(split) and split >= 0):
        check.fail("preprocessing.val_split", split, "0, a fraction or a count")
    seed = pre.get("split_seed")
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool)):
        check.fail("preprocessing.split_seed", seed, "a whole number")
    return dict(metadata)


def check_class_names(metadata: Mapping[str, Any], num_classes: int, source: str) -> None:
    """One line unless the metadata's class names (when it has them) name each of the head's classes."""
    names = metadata.get("class_names")
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{source}: metadata class_names has {len(names)} names for a head of {num_classes} "
                         "classes; accepted: one name per class")
