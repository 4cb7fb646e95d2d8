"""Command line: parse, call the library, print. Bad input exits with status 2 and one line."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

PROG = "resnetlab"


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


def parse_options(pairs: Sequence[str]) -> Dict[str, Any]:
    """Turn ['key=value', ...] into a dict; values are Python literals where they parse as one."""
    options: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"option {pair!r} is not KEY=VALUE")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    return options


# ---------------------------------------------------------------- models / summary


def cmd_models(args: argparse.Namespace) -> int:
    from .analysis import model_info
    from .models import list_models

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

    from .analysis import format_summary, summarize
    from .models import build_model, get_spec

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


# ---------------------------------------------------------------- train


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size, --no-channels-last, ...), default: unset."""
    from .train.config import FIELDS, TrainConfig

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
    from .train.config import FIELDS

    overrides = {name: getattr(args, name) for name in FIELDS
                 if getattr(args, name, None) is not None and name != "model_options"}
    if args.option:
        overrides["model_options"] = parse_options(args.option)
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from .train import resolve_config, resume, train
    from .train.distributed import ranks_from_environment

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


def cmd_eval(args: argparse.Namespace) -> int:
    """Print the figures and write the confusion matrix (--confusion, else next to the weights).

    A default location that cannot be written is reported on stderr and the exit status stays 0;
    a --confusion path that cannot be written is an error (exit 2), after the figures.
    """
    import torch

    from .analysis.plots import plot_confusion
    from .data.readers import one_line
    from .inference import evaluate_checkpoint

    if args.confusion and Path(args.confusion).resolve() == Path(args.weights).resolve():
        raise UsageError(f"--confusion {args.confusion} would overwrite the weights")
    result = evaluate_checkpoint(args.weights, args.data, args.data_dir, args.model, args.batch_size,
                                 args.device, args.split, args.flip_tta, args.engine, args.precision,
                                 args.calibration, args.shift_tta)
    weights = Path(args.weights)
    png = Path(args.confusion or weights.with_name(f"{weights.stem}-confusion-{result['data']}-{result['split']}.png"))
    failure = ""
    try:
        plot_confusion(torch.tensor(result["confusion"]), result["classes"], png,
                       title=f"{weights.name} on {result['description']}")
    except OSError as error:
        failure = f"cannot write the confusion matrix to {png}: {one_line(error)}"
    if args.json:
        print(json.dumps(dict(result, confusion_png=None if failure else str(png)), indent=2))
    else:
        tags = [result["engine"], result["precision"]]
        if tags == ["torch", "fp32"]:
            tags = []
        tags += [name for name in ("flip-tta", "shift-tta") if result[name.replace("-", "_")]]
        tag = f" [{' '.join(tags)}]" if tags else ""
        print(f"{result['description']}{tag}: top-1 {result['test_top1']:.2f}%  top-5 {result['test_top5']:.2f}%  "
              f"loss {result['test_loss']:.4f}  ({result['samples']} images)")
        width = max(len(c) for c in result["classes"])
        for name, accuracy in zip(result["classes"], result["per_class_top1"]):
            print(f"  {name:<{width}}  {accuracy:6.2f}%")
        if not failure:
            print(f"confusion matrix written to {png}")
    if failure and args.confusion:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
        return 2
    if failure:
        print(f"{PROG}: warning: {failure} (pass --confusion PNG to write it elsewhere)", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import Predictor

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    predictor = Predictor(args.weights, args.model, args.device, args.engine, args.precision, args.calibration,
                          args.flip_tta, args.shift_tta)
    failures = 0
    for prediction in predictor.predict(args.images, args.topk):
        if prediction.error:
            failures += 1
            print(f"{prediction.path}: error: {prediction.error}", file=sys.stderr)
            continue
        ranked = ", ".join(f"{c} {p:.3f}" for c, p in zip(prediction.classes, prediction.probabilities))
        print(f"{prediction.path}: {ranked}")
    return 1 if failures else 0


# ---------------------------------------------------------------- export / bench


def _metadata_for_export(metadata: Dict[str, Any], arch: Optional[str]) -> Dict[str, Any]:
    keys = ("arch", "options", "class_names", "preprocessing")
    stored = {key: metadata[key] for key in keys if metadata.get(key) is not None}
    if arch:
        stored["arch"] = arch
    return stored


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .data.inputs import input_size, load_inputs
    from .export import FORMATS, PRECISIONS, check_choice, export_model
    from .inference import calibration_images
    from .weights import load_model

    fmt = check_choice(args.format, FORMATS, "format")
    precision = check_choice(args.precision, PRECISIONS, "precision")
    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    model, metadata = load_model(args.weights, args.model)
    preprocessing = metadata.get("preprocessing") or {}
    calibration = (calibration_images(args.calibration, metadata, model.in_chans, args.data_dir)
                   if precision == "int8" else None)
    source = args.data or args.calibration or (preprocessing.get("dataset") if preprocessing else None)
    if source:
        sample = load_inputs(source, preprocessing, model.in_chans, args.samples, "test", args.data_dir)
        inputs, described = sample.images, sample.description
    else:
        height, width = input_size(preprocessing)
        inputs = torch.randn(args.samples, model.in_chans, height, width, generator=torch.Generator().manual_seed(0))
        described = f"random normal images ({args.samples} at {height}x{width}; pass --data for real ones)"
    suffix = {"onnx": ".onnx", "torchscript": ".ts", "safetensors": ".safetensors"}[fmt]
    output = Path(args.output or Path(args.weights).with_name(f"{Path(args.weights).stem}-{precision}{suffix}"))
    if output.resolve() == Path(args.weights).resolve():
        raise UsageError(f"output {output} would overwrite the weights; pass -o")
    result = export_model(model, output, fmt, precision, inputs=inputs, calibration=calibration,
                          dynamic_batch=args.dynamic_batch, metadata=_metadata_for_export(metadata, args.model),
                          min_agreement=args.min_agreement, max_abs_diff=args.max_abs_diff, inputs_name=described)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"verified on {described}: {result.agreement.describe()}")
    print(f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, {fmt} {precision})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import PATHS, format_report, run_bench
    from .data.inputs import load_inputs
    from .inference import calibration_images
    from .models import build_model
    from .weights import load_model

    options = parse_options(args.option)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        # Options that change the stem or head (e.g. in_chans=3 for 1-channel weights) adapt them.
        model, metadata = load_model(args.weights, args.model, strict=not options, **options)
        arch = args.model or metadata["arch"]
    else:
        if not args.model:
            raise UsageError("pass --model NAME or --weights FILE")
        torch.manual_seed(0)
        model, metadata, arch = build_model(args.model, **options).eval(), {}, args.model
    check = calibration = None
    if args.data:
        sample = load_inputs(args.data, metadata.get("preprocessing"), model.in_chans, args.samples, "test",
                             args.data_dir)
        check = (sample.images, sample.labels, sample.description)
    if args.calibration or args.data:  # int8 ranges come from the train split, never from the checked images
        calibration = calibration_images(args.calibration or args.data, metadata, model.in_chans, args.data_dir)
    paths = args.paths or list(PATHS)

    def progress(result: Any) -> None:
        if not args.json:
            state = result.error or f"{result.images_per_s:.1f} img/s"
            print(f"  {result.name}: {state}", file=sys.stderr, flush=True)

    report = run_bench(model, arch, batch=args.batch, size=args.size, seconds=args.seconds, check=check,
                       calibration=calibration, paths=paths, weights=args.weights or "random init (seed 0)",
                       progress=progress)
    if args.output:
        from .fileio import atomic_write_text

        atomic_write_text(args.output, json.dumps(report.to_dict(), indent=2) + "\n")
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    failed = [result.name for result in report.results if result.error]
    if failed:  # the report is complete, but a script must see that a path did not run
        print(f"{PROG}: error: {len(failed)} of {len(report.results)} paths failed: {', '.join(failed)} "
              "(the report names why)", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- experiment


def cmd_experiment(args: argparse.Namespace) -> int:
    if args.experiment == "degradation":
        from .experiments.degradation import run_degradation

        result = run_degradation(args.depths, data=args.data, data_dir=args.data_dir, iterations=args.iterations,
                                 budget_minutes=args.budget_minutes, seeds=args.seeds, shortcut=args.shortcut,
                                 batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                                 eval_every=args.eval_every, test_subset=args.test_subset,
                                 precision=args.precision, device=args.device,
                                 cuda_graphs=args.cuda_graphs, out=args.out, quiet=args.quiet)
        print(f"data: {result.data}, {result.iterations} iterations per run, {result.wall_s:.0f} s")
        for line in result.statements:
            print(line.replace("**", ""))
        print(f"outputs in {result.out_dir}: degradation.csv degradation.png report.md")
        return 0
    from .experiments.gradients import run_gradients

    result = run_gradients(args.depths, norms=args.norm, steps=args.steps, data=args.data, data_dir=args.data_dir,
                           budget_minutes=args.budget_minutes, batch_size=args.batch_size, lr=args.lr,
                           precision=args.precision, response_images=args.response_images, seed=args.seed,
                           device=args.device, out=args.out, quiet=args.quiet)
    for line in result.statements:
        print(line)
    for model, step in result.diverged.items():
        print(f"{model} diverged at step {step}")
    print(f"outputs in {result.out_dir}: gradients.csv gradients.png responses.csv responses.png report.md")
    return 0


# ---------------------------------------------------------------- parser and entry point


def add_tta_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the logits of each image and its mirror (default: as the checkpoint's "
                        "training did)")
    parser.add_argument("--shift-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="also average in the four 1-pixel shifts of each view (default: as the "
                        "checkpoint's training did)")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="torch", help="torch or onnx (ONNX Runtime; weights may be an .onnx file)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 (torch) or int8")
    parser.add_argument("--calibration", metavar="DATA", help="int8 calibration images: dataset name, image folder "
                        "or .npy/.pt tensor (default: the data's or the checkpoint's dataset)")


def build_parser() -> Parser:
    """The argument parser with every subcommand."""
    from .train.config import RECIPES

    parser = Parser(prog=PROG, description="The ResNet family: models, training, analysis, export.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=Parser, required=True)

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

    p = sub.add_parser("train", help="train a model (default: the Fashion-MNIST recipe)")
    p.add_argument("--recipe", help="preset (default: default): " + ", ".join(RECIPES))
    p.add_argument("--config", help="TOML file of config keys (see runs/*/config.toml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue runs/<name> where it stopped")
    p.add_argument("--data", dest="data", default=None,
                   help="fashion-mnist, mnist, cifar10, cifar100, synthetic, or an image folder")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model builder option, e.g. -o shortcut=B")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a checkpoint")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True, help="dataset name or image folder")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["train", "test"],
                   help="an image folder's train/ or val/ (else test/); a folder without them is read whole")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--confusion", metavar="PNG", help="where to write the confusion matrix (default: next to "
                   "the weights, <weights stem>-confusion-<data>-<split>.png)")
    add_tta_flags(p)
    add_engine_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of image files or folders")
    p.add_argument("--weights", required=True)
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    add_tta_flags(p)
    add_engine_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write ONNX, TorchScript or safetensors, verified against PyTorch")
    p.add_argument("--weights", required=True)
    p.add_argument("--format", required=True, help="onnx, torchscript or safetensors")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 (torchscript, safetensors) or int8 "
                   "(onnx, torchscript)")
    p.add_argument("-o", "--output", help="file to write (default: next to the weights, e.g. best-fp32.onnx)")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--calibration", metavar="DATA", help="int8 calibration images: dataset name (train split), "
                   "image folder, or .npy/.pt float N x C x H x W tensor")
    p.add_argument("--data", metavar="DATA", help="verification images (test split of a dataset, a folder or a "
                   "tensor file; default: --calibration, else the checkpoint's dataset, else random)")
    p.add_argument("--data-dir")
    p.add_argument("--samples", type=int, default=256, help="verification images (default 256)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX batch dimension left dynamic (default) or fixed at 1")
    p.add_argument("--min-agreement", type=float, help="bf16/int8: least top-1 agreement kept (default 0.98/0.95)")
    p.add_argument("--max-abs-diff", type=float, help="fp32: largest logit difference kept, times max(1, "
                   "largest |logit|) (default 1e-4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="inference images/s and latency of every path, against torchvision")
    p.add_argument("--model", help="zoo name (default: the one the weights name)")
    p.add_argument("--weights", help="checkpoint (default: random weights, seed 0)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--data", help="check each path's top-1 agreement (and accuracy) on this dataset's test split")
    p.add_argument("--data-dir")
    p.add_argument("--samples", type=int, default=1000, help="check images (default 1000)")
    p.add_argument("--calibration", metavar="DATA", help="int8 calibration images (default: --data's train split, "
                   "else the check images)")
    p.add_argument("--seconds", type=float, default=10.0, help="timing per path (default 10)")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--paths", nargs="+", help="a subset of: torchvision eager folded-cl compiled onednn-graph bf16 "
                   "onnx-fp32 int8 onnx-int8")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. -o in_chans=3 (weights are adapted)")
    p.add_argument("--output", metavar="JSON", help="also write the report here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("experiment", help="reproduce the paper: degradation, gradient flow")
    experiments = p.add_subparsers(dest="experiment", parser_class=Parser, required=True)
    e = experiments.add_parser("degradation", help="plain vs residual nets of several depths (Figure 6)")
    e.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    e.add_argument("--iterations", type=int, help="training steps per run (default 1500)")
    e.add_argument("--budget-minutes", type=float, help="instead of --iterations: fit the whole experiment in M min")
    e.add_argument("--seeds", type=int, default=1, help="runs per model, reported as mean ± std (default 1)")
    e.add_argument("--shortcut", default="A", help="residual shortcut: A identity/zero-pad, B projection")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--lr", type=float, default=0.1)
    e.add_argument("--schedule", default="multistep", help="multistep (/10 at 50%% and 75%%), cosine, or constant")
    e.add_argument("--eval-every", type=int, help="iterations between evaluations (default: 20 points)")
    e.add_argument("--test-subset", type=int, default=2000, help="test images evaluated (0: all)")
    e.add_argument("--precision", default="bf16", help="fp32, bf16 or fp16 (CUDA)")
    e.add_argument("--cuda-graphs", action="store_true", help="replay each training step's forward and backward "
                   "as a CUDA graph: small nets on a GPU are bound by kernel launches")
    g = experiments.add_parser("gradients", help="gradient norm per layer and residual responses (Figure 7)")
    g.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    g.add_argument("--norm", nargs="+", default=["batch", "none"], help="batch and/or none (default both)")
    g.add_argument("--steps", type=int, nargs="+", default=[0, 50], help="training steps measured at (default 0 50)")
    g.add_argument("--budget-minutes", type=float, help="train each net as many steps as fit in this many minutes "
                   "in all (the last measurement; replaces the last of --steps)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--precision", default="fp32", help="of the training steps: fp32, bf16 or fp16 (CUDA)")
    g.add_argument("--response-images", type=int, default=500, help="test images for the response stds")
    g.add_argument("--seed", type=int, default=0)
    for q in (e, g):
        q.add_argument("--data", default="auto", help="auto (CIFAR-10 if found, else fashion-mnist), a dataset name "
                       "or synthetic")
        q.add_argument("--data-dir")
        q.add_argument("--device", default="auto")
        q.add_argument("--out", help="output folder (default runs/<experiment>-<timestamp>)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)
    return parser


def _version() -> str:
    from . import __version__

    return f"{PROG} {__version__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``resnetlab`` command."""
    from .data import DownloadError
    from .train import TrainingDiverged
    from .train.distributed import RankLost

    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (TrainingDiverged, RankLost) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except UsageError as error:
        message = str(error)
        print(message if message.startswith(PROG) else f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, OSError, DownloadError) as error:
        text = str(error)
        if "\nOriginal Traceback" in text:  # re-raised from a DataLoader worker: the last line is the error
            text = text.strip().splitlines()[-1].split(": ", 1)[-1]
        message = " ".join(text.split()) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
