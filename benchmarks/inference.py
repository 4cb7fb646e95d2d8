"""Inference images/s of every path against torchvision's eager fp32 model, in one run per model.

    python benchmarks/inference.py                       # resnet18 and resnet50, random weights
    python benchmarks/inference.py --weights R18.safetensors R50.safetensors --data fashion-mnist -o in_chans=3

All paths are timed together in interleaved rounds (each round runs every path in turn), at
batch 1 and at --batch. Each path's ratio to the reference with its verdict ("within noise"
where the rounds disagree by more than the ratio differs from 1), its latency, its share of
this machine's peak, and its top-1 agreement with fp32 (and accuracy, with --data) are
printed; the JSON goes to benchmarks/results/inference-<model>.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnetlab.cli import main

RESULTS = Path(__file__).parent / "results"


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--weights", nargs="+", default=[], help="one checkpoint per model, in order")
    parser.add_argument("--data", help="dataset for the agreement and accuracy checks")
    parser.add_argument("--samples", type=int, default=10000, help="check images (default: the whole test set)")
    parser.add_argument("--batch", type=int, default=8, help="the throughput batch (default 8)")
    parser.add_argument("--latency-batch", type=int, default=1, help="also timed (default 1; 0: not timed)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="per path and batch size (default 10)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("-o", "--option", action="append", default=[])
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    worst = 0
    for index, model in enumerate(args.models):
        argv = ["bench", "--model", model, "--batch", str(args.batch), "--size", str(args.size),
                "--latency-batch", str(args.latency_batch), "--seconds", str(args.seconds), "--rounds",
                str(args.rounds), "--output", str(RESULTS / f"inference-{model}.json")]
        if index < len(args.weights):
            argv += ["--weights", args.weights[index]]
        if args.data:
            argv += ["--data", args.data, "--samples", str(args.samples)]
        for option in args.option:
            argv += ["-o", option]
        code = main(argv)
        if code == 2:  # bad input: the next model would fail the same way
            raise SystemExit(code)
        worst = max(worst, code)  # 1: a path failed; its report is written, the other models still run
        print()
    raise SystemExit(worst)


if __name__ == "__main__":
    run()
