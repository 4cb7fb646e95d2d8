"""The `export` and `bench` commands."""

from __future__ import annotations

import argparse
import json
import sys

from .common import PROG, parse_options


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_checkpoint

    result = export_checkpoint(args.weights, args.format, args.precision, args.output, model_name=args.model,
                               data=args.data, calibration=args.calibration, data_dir=args.data_dir,
                               samples=args.samples, dynamic_batch=args.dynamic_batch,
                               min_agreement=args.min_agreement, max_abs_diff=args.max_abs_diff)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"verified on {result.inputs}: {result.agreement.describe()}")
    print(f"wrote {result.path} ({result.bytes / 1e6:.2f} MB, {result.format} {result.precision})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench import bench_checkpoint, format_report

    options = parse_options(args.option)
    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(line: str) -> None:
        if not args.json:
            print(f"  {line}", file=sys.stderr, flush=True)

    report = bench_checkpoint(args.model, args.weights, options, batch=args.batch, size=args.size,
                              seconds=args.seconds, data=args.data, data_dir=args.data_dir, samples=args.samples,
                              calibration=args.calibration, paths=args.paths, rounds=args.rounds,
                              latency_batch=args.latency_batch or None, progress=progress)
    if args.output:
        from ..fileio import atomic_write_text

        atomic_write_text(args.output, json.dumps(report.to_dict(), indent=2) + "\n")
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    failed = [result.name for result in report.results if result.error]
    if failed:  # the report is complete, but a script must see that a path did not run
        print(f"{PROG}: error: {len(failed)} of {len(report.results)} paths failed: {', '.join(failed)} "
              "(the report names why)", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `export` and `bench` subcommands."""
    p = sub.add_parser("export", help="write ONNX, TorchScript, safetensors or OpenVINO IR, verified against "
                       "PyTorch")
    p.add_argument("--weights", required=True, help="checkpoint file or weights name (see `resnetlab weights`)")
    p.add_argument("--format", required=True, help="onnx, torchscript, safetensors or openvino (a .xml file and "
                   "its .bin)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 (torchscript, safetensors, openvino) or int8 "
                   "(onnx, torchscript, openvino)")
    p.add_argument("-o", "--output", help="file to write (default: next to the weights, e.g. best-fp32.onnx or "
                   "best-fp32.xml)")
    p.add_argument("--model", help="architecture, for checkpoints that do not name it")
    p.add_argument("--calibration", metavar="DATA", help="int8 calibration images: dataset name (train split), "
                   "image folder, or .npy/.pt float N x C x H x W tensor")
    p.add_argument("--data", metavar="DATA", help="verification images (test split of a dataset, a folder or a "
                   "tensor file; default: --calibration, else the checkpoint's dataset, else random)")
    p.add_argument("--data-dir")
    p.add_argument("--samples", type=int, default=256, help="verification images (default 256)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="ONNX and OpenVINO batch dimension left dynamic (default) or fixed at 1")
    p.add_argument("--min-agreement", type=float, help="bf16/int8: least top-1 agreement kept (default 0.98/0.95)")
    p.add_argument("--max-abs-diff", type=float, help="fp32: largest logit difference kept, times max(1, "
                   "largest |logit|) (default 1e-4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="inference images/s and latency of every path, against torchvision")
    p.add_argument("--model", help="zoo name (default: the one the weights name)")
    p.add_argument("--weights", help="checkpoint file or weights name (default: random weights, seed 0)")
    p.add_argument("--batch", type=int, default=8, help="the throughput batch (default 8)")
    p.add_argument("--latency-batch", type=int, default=1, help="the latency batch, also timed (default 1; 0: "
                   "not timed)")
    p.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    p.add_argument("--data", help="check each path's top-1 agreement (and accuracy) on this dataset's test split")
    p.add_argument("--data-dir")
    p.add_argument("--samples", type=int, default=1000, help="check images (default 1000)")
    p.add_argument("--calibration", metavar="DATA", help="int8 calibration images (default: --data's train split, "
                   "else the check images)")
    p.add_argument("--seconds", type=float, default=10.0, help="timing per path and batch size, all rounds "
                   "together (default 10)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds: each runs every path in turn "
                   "(default 10, at least 2)")
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    p.add_argument("--paths", nargs="+", help="a subset of: torchvision eager folded-cl compiled compiled-max-autotune "
                   "onednn-graph bf16 onnx-fp32 openvino-fp32 openvino-bf16 int8 onnx-int8 openvino-int8 auto-fp32 "
                   "auto-bf16 auto-int8 (the auto paths: optimize_for_inference's choice; default: every one this "
                   "machine runs)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. -o in_chans=3 (weights are adapted)")
    p.add_argument("--output", metavar="JSON", help="also write the report here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)
