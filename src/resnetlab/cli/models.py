"""The `models` and `summary` commands."""

from __future__ import annotations

import argparse
import json
from typing import List

from .common import parse_options


def cmd_models(args: argparse.Namespace) -> int:
    from ..analysis import model_info
    from ..models import list_models

    names = list_models(args.pattern)
    infos = [model_info(name) for name in names]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    print(f"{'model':<18} {'family':<9} {'depth':>5} {'params':>13} {'GMACs':>8}  input")
    for info in infos:
        size = "x".join(str(s) for s in info["input_size"][1:])
        print(f"{info['name']:<18} {info['family']:<9} {info['depth']:>5} {info['params']:>13,} "
              f"{info['gmacs']:>8.3f}  {size}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import format_summary, summarize
    from ..models import build_model, get_spec

    options = parse_options(args.option)
    spec = get_spec(args.model)
    input_size: List[int] = args.input_size or [1, *spec.input_size]
    options.setdefault("in_chans", input_size[1])
    if args.num_classes is not None:
        options["num_classes"] = args.num_classes
    with torch.device("meta"):
        model = build_model(args.model, **options)
        summary = summarize(model, input_size, depth=args.depth)
    if args.json:
        print(json.dumps(dict(model=args.model, options=options, **summary.to_dict()), indent=2))
    else:
        print(f"{args.model} {options}" if options else args.model)
        print(format_summary(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` and `summary` subcommands."""
    p = sub.add_parser("models", help="list the model zoo with params and GMACs")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style filter, e.g. 'resnext*'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer table: output shape, params, MACs")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, nargs=4, metavar=("N", "C", "H", "W"),
                   help="input shape (default: the model's, batch 1); C sets in_chans")
    p.add_argument("--depth", type=int, default=1, help="module nesting shown (default 1)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="builder option, e.g. -o shortcut=B -o stride_in_1x1=True")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_summary)
