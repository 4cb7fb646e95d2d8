"""How fast can this CPU run a ResNet at all? Measured matmul peaks against the inference targets.

    python benchmarks/roofline.py [--model resnet50] [--batch 8] [--size 224]

A ResNet's convolutions are matrix multiplications, so no inference path can beat the rate
at which this CPU multiplies large matrices in the same number format. This script measures
that rate (multiply-adds per second of a large square matmul, fp32, bf16 and int8, on the
threads torch uses), turns it into a ceiling in images/s for the model (its multiply-adds
per image from torch's flop counter), and times torchvision's eager fp32 model (the bench's
reference) in the same run. Each ceiling is printed as a ratio to that reference, beside the
inference issue's target ratio: a target above its ceiling cannot be met on this machine by
any software. Writes benchmarks/results/roofline-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torchvision

from resnetlab.analysis.summary import count_macs
from resnetlab.bench import machine_name, time_batches

TARGETS = {"fp32": 2.0, "bf16": 3.5, "int8": 6.0}  # the inference issue's ratios to the reference


def matmul_macs_per_s(dtype: torch.dtype, n: int, seconds: float) -> float:
    """Multiply-adds per second of an n x n by n x n matmul in ``dtype`` (int8: int32 results)."""
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        run = lambda: torch._int_mm(a, b)  # noqa: E731  (oneDNN's int8 GEMM: VNNI where the CPU has it)
    else:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        run = lambda: a @ b  # noqa: E731
    times = time_batches(lambda _: run(), a, seconds)
    return n**3 / min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="a torchvision ResNet (default resnet50)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=2048, help="matmul side (default 2048)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement (default 5)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval()
    macs = count_macs(model, (1, 3, args.size, args.size))
    x = torch.randn(args.batch, 3, args.size, args.size)
    times = time_batches(model, x, 3 * args.seconds)
    reference = args.batch / sorted(times)[len(times) // 2]  # median batch time, as the bench reports
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        try:
            peak = matmul_macs_per_s(dtype, args.n, args.seconds)
        except RuntimeError as error:  # e.g. no int8 GEMM on this build
            print(f"{name}: matmul not measurable here ({str(error).splitlines()[0][:120]})")
            continue
        ceiling = peak / macs
        rows.append(dict(precision=name, matmul_gmacs_per_s=round(peak / 1e9, 1),
                         ceiling_images_per_s=round(ceiling, 1), ceiling_ratio=round(ceiling / reference, 2),
                         target_ratio=TARGETS[name], attainable=ceiling / reference >= TARGETS[name]))
    result = dict(model=args.model, batch=args.batch, size=args.size, macs_per_image=macs,
                  threads=torch.get_num_threads(), machine=machine_name(), torch_version=torch.__version__,
                  reference_images_per_s=round(reference, 1), matmul_n=args.n, rows=rows)

    print(f"{args.model}: {macs / 1e9:.3f} GMACs per {args.size}x{args.size} image; machine: {result['machine']}, "
          f"{result['threads']} threads, torch {torch.__version__}")
    print(f"reference (torchvision eager fp32, batch {args.batch}): {reference:.1f} images/s")
    print(f"{'precision':<10}{'matmul GMAC/s':>15}{'ceiling img/s':>15}{'ceiling x ref':>15}{'target x ref':>14}")
    for row in rows:
        verdict = "" if row["attainable"] else "   target above the ceiling"
        print(f"{row['precision']:<10}{row['matmul_gmacs_per_s']:>15.1f}{row['ceiling_images_per_s']:>15.1f}"
              f"{row['ceiling_ratio']:>15.2f}{row['target_ratio']:>14.1f}{verdict}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"roofline-{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
