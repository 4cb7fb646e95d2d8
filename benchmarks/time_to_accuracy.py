"""Wall time for a recipe to reach target accuracies: 93% and 95% test accuracy on the real Fashion-MNIST
by default, or others on another dataset or image folder (evaluated on the split the recipe names).

    python benchmarks/time_to_accuracy.py                      # the default recipe
    python benchmarks/time_to_accuracy.py --recipe fast
    python benchmarks/time_to_accuracy.py --set epochs=20 --set model=resnet32 --tag resnet32-20ep
    python benchmarks/time_to_accuracy.py --recipe cifar-fast --data cifar10-jpg/train --targets 91 94

Evaluates on the full 10k test set after every epoch (every N-th with --set eval_every=N,
and after the last); "wall" counts training and evaluation. Writes
benchmarks/results/time_to_accuracy-<recipe>[-<tag>].json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import benchmark_parser, write_result
from resnetlab.machine import describe_machine
from resnetlab.options import parse_options
from resnetlab.train import resolve_config, train

TARGETS = (93.0, 95.0)


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--tag", default="", help="added to the JSON file's name (runs with --set)")
    parser.add_argument("--keep", metavar="RUN_DIR", help="keep the run folder (weights, curves) here")
    parser.add_argument("--data", default="fashion-mnist", help="dataset name or image folder (default fashion-mnist)")
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                        help="accuracies, %% (default 93 95)")
    args = parser.parse_args()
    try:
        overrides = parse_options(args.set)
    except ValueError as error:
        parser.error(str(error))
    with tempfile.TemporaryDirectory() as runs:
        run_dir = Path(args.keep) if args.keep else Path(runs) / "tta"
        config = resolve_config(args.recipe, overrides=dict(overrides, data=args.data, out=str(run_dir.parent),
                                                            name=run_dir.name, quiet=True))
        train(config)
        history = json.loads((run_dir / "metrics.json").read_text())["history"]
    history = [row for row in history if row["test_top1"] is not None]  # the evaluated epochs
    reached = {}
    for target in args.targets:
        row = next((r for r in history if r["test_top1"] >= target), None)
        reached[str(target)] = None if row is None else dict(epoch=row["epoch"], wall_s=round(row["wall_s"], 1))
    result = dict(recipe=args.recipe, overrides=overrides, machine=describe_machine(), reached=reached,
                  data=args.data, date=time.strftime("%Y-%m-%d"),
                  command=" ".join(["python", "benchmarks/time_to_accuracy.py", *sys.argv[1:]]),
                  final_top1=history[-1]["test_top1"], best_top1=max(r["test_top1"] for r in history),
                  epochs=[dict(epoch=r["epoch"], test_top1=round(r["test_top1"], 2), wall_s=round(r["wall_s"], 1),
                               train_images_per_s=round(r["train_images_per_s"])) for r in history])
    print(f"machine: {result['machine']}")
    for target in args.targets:
        hit = reached[str(target)]
        print(f"{target:.0f}%: " + (f"epoch {hit['epoch']}, {hit['wall_s']:.0f} s wall" if hit else "not reached"))
    print(f"final {result['final_top1']:.2f}%, best {result['best_top1']:.2f}%")
    name = f"time_to_accuracy-{args.recipe}" + (f"-{args.tag}" if args.tag else "")
    write_result(Path(args.out) / f"{name}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
