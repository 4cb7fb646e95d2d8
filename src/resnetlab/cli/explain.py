"""The `explain` command: class activation maps and stage feature maps of image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError


def cmd_explain(args: argparse.Namespace) -> int:
    """Write one PNG per image: its top classes with their activation maps (or, --features, its stage outputs)."""
    from ..analysis.interpret import CAM_METHODS, Explainer, find_layer
    from ..analysis.interpret_plots import plot_explanation, plot_features
    from ..data.inputs import expand_paths
    from ..errors import one_line, printable

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    if args.method not in CAM_METHODS:
        raise UsageError(f"unknown --method {args.method!r}; choose from {', '.join(CAM_METHODS)}")
    explainer = Explainer(args.weights, args.model, args.device)
    if args.target is not None:
        explainer.class_index(args.target)  # a bad class or layer is an error before any image is read
    find_layer(explainer.model, args.layer)
    out = Path(args.out)
    paths = list(expand_paths(args.images))
    if args.features and len(paths) != 1:
        raise UsageError(f"--features explains one image; got {len(paths)}")
    failures = 0
    for path in paths:
        try:
            if args.features:
                png = plot_features(explainer.features(path), explainer.image(explainer.prepare(path)),
                                    out / f"{path.stem}-features.png",
                                    title=f"{path.name}: stem and stage outputs (first channels)")
            else:
                result = explainer.explain(path, args.topk, args.method, args.target, args.layer)
                png = plot_explanation(result.image, result.classes, result.probabilities, result.maps,
                                       args.method, out / f"{path.stem}-{args.method}.png", title=path.name)
                ranked = ", ".join(f"{printable(c)} {p:.3f}" for c, p in zip(result.classes, result.probabilities))
                print(f"{printable(str(path))}: {ranked}")
        except (OSError, SyntaxError, ValueError) as error:  # PIL raises these for a bad file
            failures += 1
            print(f"{printable(str(path))}: error: cannot explain: {one_line(error)[:160]}", file=sys.stderr)
            continue
        print(f"  written to {printable(str(png))}")
    return 1 if failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `explain` subcommand."""
    p = sub.add_parser("explain", help="where a checkpoint looks: class activation maps or stage feature maps")
    p.add_argument("--weights", required=True)
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--method", default="gradcam", help="gradcam, gradcam++, scorecam or eigencam")
    p.add_argument("--target", metavar="CLASS", help="explain this class (name or number) instead of the top ones")
    p.add_argument("--layer", help="the stage (layer1..layer4) or block (layer4.1) to explain (default: the last "
                   "stage)")
    p.add_argument("--topk", type=int, default=3, help="how many of the top classes to explain")
    p.add_argument("--features", action="store_true", help="draw the stem's and each stage's output of one "
                   "image instead")
    p.add_argument("--out", default="explanations", help="folder for the PNGs (default: explanations)")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_explain)
