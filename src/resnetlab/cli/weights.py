"""The `weights` command: the named weights, their sources, accuracy and preprocessing."""

from __future__ import annotations

import argparse
import json

from .common import UsageError


def accuracy_text(accuracy: dict) -> str:
    """'80.86% ImageNet-1K validation (published)': the top-1, where and how it was obtained."""
    if "top1" not in accuracy:
        return "-"
    dataset = accuracy.get("dataset", "").split(":")[0]
    return f"{accuracy['top1']:.2f}% {dataset} ({accuracy.get('kind', 'published')})"


def input_text(preprocessing: dict) -> str:
    """'224 from 232 bilinear': the crop, the resize it is taken from and the interpolation."""
    size = (preprocessing.get("input_size") or [224])[0]
    resize = preprocessing.get("resize_size") or round(size / (preprocessing.get("crop_fraction") or 1.0))
    return f"{size} from {resize} {preprocessing.get('interpolation', 'bilinear')}" if resize != size else str(size)


def cmd_weights(args: argparse.Namespace) -> int:
    from ..weights import list_weights

    entries = list_weights(args.pattern)
    if not entries:
        raise UsageError(f"no weights match {args.pattern!r}; try an architecture (resnet50) or a pattern "
                         "such as 'resnet5*' (all: `resnetlab weights`)")
    if args.json:
        print(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return 0
    width = max([34] + [len(e.name) + 2 for e in entries])  # timm's longest: 39 characters
    print(f"{'weights':<{width}} {'source':<11} {'classes':>7} {'input':<22} {'MB':>7} {'sha256':<10} top-1")
    for e in entries:
        size = f"{e.file_size_mb:.1f}" if e.file_size_mb is not None else "-"
        digest = (e.sha256 or e.hash_prefix or "-")[:8]
        mark = "*" if e.default else " "
        print(f"{e.name + mark:<{width}} {e.source:<11} {e.num_classes:>7} {input_text(e.preprocessing):<22} {size:>7} "
              f"{digest:<10} {accuracy_text(e.accuracy)}")
    print("* the architecture's default (create_model(arch, pretrained=True))")
    if not any(e.source == "timm" for e in list_weights()):
        print("timm's weights (resnet50.a1_in1k, ...) are listed when timm is installed: pip install timm")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `weights` subcommand."""
    p = sub.add_parser("weights", help="list the named pretrained weights",
                       description="List the named pretrained weights: torchvision's, resnetlab's, akamaster's, "
                                   "and timm's when timm is installed.")
    p.add_argument("pattern", nargs="?", default=None, help="architecture or shell-style filter, e.g. 'resnet5*'")
    p.add_argument("--json", action="store_true", help="print JSON: every field, categories included")
    p.set_defaults(func=cmd_weights)
