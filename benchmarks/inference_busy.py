"""The inference bench on a quiet machine and with another process busy: do its verdicts hold?

    python benchmarks/inference_busy.py [--model resnet18] [--batch 32] [--seconds 10] [--rounds 10]

Runs the interleaved bench (resnetlab.bench.run_bench) twice in one go on the same paths, at
batch 1 and --batch: first on a quiet machine, then with a contender running beside it (a
one-thread torch process multiplying 512 x 512 matrices without pause, so one of the cores is
busy the whole time). Prints each path's ratio to torchvision eager and its verdict in both runs.

A busy verdict holds when it claims no direction the quiet run does not: a path the quiet run
found faster (or slower) is found so again or "within noise", and a path the quiet run found
within noise is not reported faster or slower. Writes benchmarks/results/inference-<model>-busy.json.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

from common import benchmark_parser, write_result
from resnetlab import create_model
from resnetlab.bench import run_bench

PATHS = ["torchvision", "eager", "folded-cl", "compiled", "onnx-fp32", "openvino-fp32", "int8", "onnx-int8"]
CONTENDER = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nprint('busy', flush=True)\n"
             "while True:\n    a = (a @ a).clamp_(-1, 1)\n")


def direction(verdict: str) -> int:
    """+1 for "... faster", -1 for "... slower", 0 for "within noise" or "reference"."""
    return 1 if verdict.endswith("faster") else -1 if verdict.endswith("slower") else 0


def holds(quiet: str, busy: str) -> bool:
    """Whether the busy run's verdict claims nothing the quiet run contradicts (no verdict: it cannot hold)."""
    return bool(quiet and busy) and direction(busy) in (0, direction(quiet))


def verdicts(report) -> Dict[str, Dict[int, Dict[str, Any]]]:
    """path -> batch -> its ratio to the reference and its verdict."""
    return {r.name: {s.batch: dict(ratio=round(s.ratio, 3), verdict=s.verdict, images_per_s=round(s.images_per_s, 1))
                     for s in r.speeds} for r in report.results if not r.error}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    options = dict(batch=args.batch, size=args.size, seconds=args.seconds, rounds=args.rounds, paths=PATHS,
                   weights="random init (seed 0)", progress=lambda line: print(line, flush=True))
    quiet = run_bench(model, args.model, **options)
    contender = subprocess.Popen([sys.executable, "-c", CONTENDER], stdout=subprocess.PIPE, text=True)
    try:
        contender.stdout.readline()  # it has imported torch and starts multiplying
        busy = run_bench(model, args.model, **options)
    finally:
        contender.kill()
        contender.wait()
    quiet_verdicts, busy_verdicts = verdicts(quiet), verdicts(busy)
    rows: List[Dict[str, Any]] = []
    for name, batches in quiet_verdicts.items():
        for batch, q in batches.items():
            b = busy_verdicts.get(name, {}).get(batch)
            if b is None:
                continue
            rows.append(dict(path=name, batch=batch, quiet=q, busy=b, holds=holds(q["verdict"], b["verdict"])))
            print(f"{name:14s} batch {batch:3d}: quiet {q['ratio']:5.2f} ({q['verdict']}, {q['images_per_s']} img/s)"
                  f"  busy {b['ratio']:5.2f} ({b['verdict']}, {b['images_per_s']} img/s)"
                  f"  {'holds' if rows[-1]['holds'] else 'CONTRADICTS THE QUIET RUN'}")
    result = dict(model=args.model, batch=args.batch, size=args.size, rounds=args.rounds, seconds=args.seconds,
                  contender="one-thread torch process multiplying 512 x 512 matrices without pause",
                  machine=quiet.machine, torch_version=quiet.torch_version, reference=quiet.reference,
                  rows=rows, all_hold=all(row["holds"] for row in rows),
                  command=" ".join(["python", "benchmarks/inference_busy.py", *sys.argv[1:]]),
                  date=time.strftime("%Y-%m-%d"), quiet_report=quiet.to_dict(), busy_report=busy.to_dict())
    path = write_result(Path(args.out) / f"inference-{args.model}-busy.json", result)
    held = sum(row["holds"] for row in rows)
    print(f"{held} of {len(rows)} busy verdicts hold against the quiet run; written to {path}")


if __name__ == "__main__":
    main()
