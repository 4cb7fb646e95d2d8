"""The `eval` and `predict` commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import printable
from .common import PROG, UsageError


def cmd_eval(args: argparse.Namespace) -> int:
    """Print the figures and write the confusion matrix (--confusion, else next to the weights).

    A default location that cannot be written is reported on stderr and the exit status stays 0;
    a --confusion path that cannot be written is an error (exit 2), after the figures.
    """
    import torch

    from ..analysis.plots import plot_confusion
    from ..errors import one_line
    from ..inference import evaluate_checkpoint, is_exported
    from ..weights import is_weights_name

    if args.confusion and Path(args.confusion).resolve() == Path(args.weights).resolve():
        raise UsageError(f"--confusion {args.confusion} would overwrite the weights")
    if args.report and is_exported(args.weights):
        kind = "an ONNX" if Path(args.weights).suffix == ".onnx" else "an OpenVINO"
        raise UsageError(f"--report runs the checkpoint in PyTorch; {args.weights} is {kind} file: pass the "
                         f"checkpoint it was exported from")
    if args.report and args.top_losses < 1:
        raise UsageError(f"--top-losses must be >= 1, got {args.top_losses}")
    if args.report and Path(args.report).exists() and not Path(args.report).is_dir():
        raise UsageError(f"--report {args.report} is a file; give a folder")
    if args.confusion and Path(args.confusion).suffix.lower() != ".png":  # never a run's checkpoint or state
        raise UsageError(f"--confusion {args.confusion} is not a .png file name")
    result = evaluate_checkpoint(args.weights, args.data, args.data_dir, args.model, args.batch_size,
                                 args.device, args.split, args.flip_tta, args.engine, args.precision,
                                 args.calibration, args.shift_tta)
    weights = Path(args.weights)
    stem = args.weights if is_weights_name(args.weights) else weights.stem  # named weights: in the current folder
    png = Path(args.confusion or weights.with_name(f"{stem}-confusion-{result['data']}-{result['split']}.png"))
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
            print(f"  {printable(name):<{width}}  {accuracy:6.2f}%")
        if not failure:
            print(f"confusion matrix written to {png}")
    if failure and args.confusion:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
        return 2
    if args.report:
        write_report(args, result)
    if failure:
        print(f"{PROG}: warning: {failure} (pass --confusion PNG to write it elsewhere)", file=sys.stderr)
    return 0


def write_report(args: argparse.Namespace, result: dict) -> None:
    """Write the error analysis of --report (see evaluation_report) and say where."""
    from ..analysis.report import evaluation_report

    report = evaluation_report(args.weights, args.data, args.report, args.split, args.data_dir, args.model,
                               args.batch_size, args.device, result["flip_tta"], result["shift_tta"],
                               args.top_losses)
    out = sys.stderr if args.json else sys.stdout
    print(f"calibration: ECE {100 * report['ece']:.2f}% (fp32)", file=out)
    for pair in report["confused_pairs"][:5]:
        print(f"  confused: {printable(pair['true'])} taken for {printable(pair['predicted'])} {pair['count']} times",
              file=out)
    print(f"report written to {args.report}/ (top-losses.png, per-class.png, reliability.png, report.json)",
          file=out)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..inference import Predictor

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    predictor = Predictor(args.weights, args.model, args.device, args.engine, args.precision, args.calibration,
                          args.flip_tta, args.shift_tta)
    failures = 0
    for prediction in predictor.predict(args.images, args.topk):
        if prediction.error:
            failures += 1
            print(f"{printable(prediction.path)}: error: {printable(prediction.error)}", file=sys.stderr)
            continue
        ranked = ", ".join(f"{c} {p:.3f}" for c, p in zip(prediction.classes, prediction.probabilities))
        print(f"{printable(prediction.path)}: {printable(ranked)}")
    return 1 if failures else 0


def add_tta_flags(parser: argparse.ArgumentParser) -> None:
    """--flip-tta and --shift-tta."""
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average the logits of each image and its mirror (default: as the checkpoint's "
                        "training did)")
    parser.add_argument("--shift-tta", action=argparse.BooleanOptionalAction, default=None,
                        help="also average in the four 1-pixel shifts of each view (default: as the "
                        "checkpoint's training did)")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """--engine, --precision and --calibration."""
    parser.add_argument("--engine", default="torch", help="torch, onnx (ONNX Runtime; weights may be an .onnx file) "
                        "or openvino (OpenVINO on the CPU; weights may be an OpenVINO .xml file)")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 (torch, openvino) or int8")
    parser.add_argument("--calibration", metavar="DATA", help="int8 calibration images: dataset name, image folder "
                        "or .npy/.pt tensor (default: the data's or the checkpoint's dataset)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval` and `predict` subcommands."""
    p = sub.add_parser("eval", help="top-1/top-5 and per-class accuracy of a checkpoint")
    p.add_argument("--weights", required=True, help="checkpoint file or weights name (see `resnetlab weights`)")
    p.add_argument("--data", required=True, help="dataset name or image folder")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["train", "test", "val"],
                   help="a dataset's split, or an image folder's train/ or val/ (else test/), a folder without "
                   "them read whole; val: the validation part training held out (--val-split), as the "
                   "checkpoint records it")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--confusion", metavar="PNG", help="where to write the confusion matrix (default: next to "
                   "the weights, <weights stem>-confusion-<data>-<split>.png)")
    p.add_argument("--report", metavar="DIR", help="also write an error analysis of the fp32 checkpoint into DIR: "
                   "the most confident mistakes with their Grad-CAM, per-class accuracy, the reliability diagram "
                   "and its expected calibration error, the most confused class pairs")
    p.add_argument("--top-losses", type=int, default=16, help="how many mistakes --report shows (default 16)")
    add_tta_flags(p)
    add_engine_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of image files or folders")
    p.add_argument("--weights", required=True, help="checkpoint file or weights name (see `resnetlab weights`)")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--device", default="auto")
    add_tta_flags(p)
    add_engine_flags(p)
    p.set_defaults(func=cmd_predict)
