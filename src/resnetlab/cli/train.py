"""The `train` command: one flag per config field."""

from __future__ import annotations

import argparse
from typing import Any, Dict

from .common import UsageError, parse_options


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size, --no-channels-last, ...), default: unset."""
    from ..train.config import FIELDS, TrainConfig

    defaults = TrainConfig()
    group = parser.add_argument_group("config (each overrides the recipe and --config)")
    for name in FIELDS:
        if name in ("model_options", "data"):
            continue
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        if isinstance(default, bool):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(default, list):
            group.add_argument(flag, dest=name, type=float, nargs="+", default=None)
        else:
            kind = type(default) if default is not None else str
            group.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper())


def config_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The config fields given on the command line."""
    from ..train.config import FIELDS

    overrides = {name: getattr(args, name) for name in FIELDS
                 if getattr(args, name, None) is not None and name != "model_options"}
    if args.option:
        overrides["model_options"] = parse_options(args.option)
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from ..train import resolve_config, resume, train
    from ..train.distributed import ranks_from_environment

    overrides = config_overrides(args)
    if args.resume:
        if args.recipe or args.config:  # the run goes on with its own config.toml (flags still override it)
            raise UsageError(f"--resume continues {args.resume} with its own config; drop "
                             f"{'--recipe' if args.recipe else '--config'} (single keys can still be overridden)")
        result = resume(args.resume, overrides)
    else:
        result = train(resolve_config(args.recipe or "default", args.config, overrides))
    if not result["finished"] or result["test_top1"] is None or not ranks_from_environment().main:
        return 0  # a run stopped as asked has said how to resume it
    run_dir = result["run_dir"]
    print(f"{result['eval_split']} accuracy {result['test_top1']:.2f}% (top-5 {result['test_top5']:.2f}%) "
          f"after {result['epochs']} epochs ({result['steps']} steps), {result['elapsed_s']:.0f} s")
    print(f"outputs in {run_dir}: best.safetensors last.safetensors curves.png confusion.png "
          "metrics.csv metrics.json config.toml")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    import json

    from ..fileio import atomic_write_text
    from ..train import resolve_config
    from ..train.lr_find import lr_find, plot_lr_find

    config = resolve_config(args.recipe or "default", args.config, config_overrides(args))
    result = lr_find(config, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    plot_lr_find(result, args.plot, title=f"{config.model} on {config.data}: learning-rate range test")
    if args.json:
        atomic_write_text(args.json, json.dumps(dict(result.to_dict(), config=config.to_dict()), indent=1))
    ended = "the loss diverged" if result.stopped == "diverged" else f"{len(result.lrs)} steps"
    print(f"lr from {result.lrs[0]:.3g} to {result.lrs[-1]:.3g} over {len(result.lrs)} steps ({ended})")
    if result.suggestion is None:
        print("no suggestion: the loss did not fall; try a lower --start-lr or more --steps")
    else:
        lowest = f"; the loss was lowest at lr {result.minimum:.3g}" if result.minimum else ""
        print(f"suggested lr {result.suggestion:.3g} (where the loss fell fastest){lowest}")
    print(f"plot: {args.plot}")
    return 0


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.config import RECIPES

    p.add_argument("--recipe", help="preset (default: default): " + ", ".join(RECIPES))
    p.add_argument("--config", help="TOML file of config keys (see runs/*/config.toml)")
    p.add_argument("--data", dest="data", default=None,
                   help="fashion-mnist, mnist, cifar10, cifar100, synthetic, or an image folder")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model builder option, e.g. -o shortcut=B")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` and `lr-find` subcommands."""
    p = sub.add_parser("train", help="train a model (default: the Fashion-MNIST recipe)")
    _add_run_arguments(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> where it stopped")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("lr-find", help="learning-rate range test: loss against a growing lr, a PNG and a suggestion")
    _add_run_arguments(p)
    p.add_argument("--start-lr", type=float, default=1e-5, help="first lr (default 1e-5)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last lr (default 10)")
    p.add_argument("--steps", type=int, default=100, help="training steps of the test (default 100)")
    p.add_argument("--plot", default="lr_find.png", help="PNG to write (default lr_find.png)")
    p.add_argument("--json", help="also write the lrs, losses and suggestion here")
    add_config_flags(p)
    p.set_defaults(func=cmd_lr_find)
