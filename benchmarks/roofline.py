"""How fast can this CPU run a ResNet at all? Its multiply-accumulate peak against the inference targets.

    python benchmarks/roofline.py [--model resnet50] [--batch 8] [--size 224]

A ResNet is almost all multiply-accumulates (MACs): convolutions. No inference path can run
more MACs per second than the CPU's vector units execute, so that rate, divided by the
model's MACs per image, is a ceiling in images/s that no software passes. This script
measures, in one run on the threads torch uses:

- the units' peak (benchmarks/peak_fma.c, compiled with gcc: independent chains of AVX-512
  FMA, bf16 dot-product and int8 dot-product instructions; skipped without gcc or AVX-512),
- what a large square matmul reaches through torch (MKL/oneDNN), for comparison,
- torchvision's eager fp32 model (the inference bench's reference), batch ``--batch``.

For each precision it prints the ceiling as a ratio to the reference, beside the inference
issue's target ratio, and the share of the peak the target would need: above 100% the
target cannot be met on this machine. Writes benchmarks/results/roofline-<model>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional

import torch
import torchvision

from common import benchmark_parser, write_result
from resnetlab.analysis.summary import count_macs
from resnetlab.machine import describe_machine
from resnetlab.optimize import time_batches

TARGETS = {"fp32": 2.0, "bf16": 3.5, "int8": 6.0}  # the inference issue's ratios to the reference
PEAK_SOURCE = Path(__file__).with_name("peak_fma.c")


def cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unit_peaks(threads: int) -> Dict[str, float]:
    """MACs per second of the AVX-512 units, per precision the CPU has ({} without gcc or AVX-512)."""
    flags = cpu_flags()
    if not shutil.which("gcc") or "avx512f" not in flags:
        return {}
    options = ["-mavx512f"]
    if "avx512_bf16" in flags:
        options += ["-mavx512bf16", "-DWITH_BF16"]
    if "avx512_vnni" in flags:
        options += ["-mavx512vnni", "-mavx512bw", "-DWITH_INT8"]
    with tempfile.TemporaryDirectory() as folder:
        binary = Path(folder) / "peak_fma"
        subprocess.run(["gcc", "-O3", "-fopenmp", *options, str(PEAK_SOURCE), "-o", str(binary)], check=True)
        run = subprocess.run([str(binary)], check=True, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return json.loads(run.stdout)


def matmul_macs_per_s(dtype: torch.dtype, n: int, seconds: float) -> Optional[float]:
    """MACs per second of an n x n by n x n matmul through torch (int8: torch._int_mm), or None."""
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        multiply = torch._int_mm
    else:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        multiply = torch.mm
    try:
        times = time_batches(lambda _: multiply(a, b), a, seconds)
    except RuntimeError:  # no such kernel in this build
        return None
    return n**3 / min(times)


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet50", help="a torchvision ResNet (default resnet50)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=2048, help="matmul side (default 2048)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per measurement (default 5)")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval()
    macs = count_macs(model, (1, 3, args.size, args.size))
    peaks_before = unit_peaks(threads)
    times = time_batches(model, torch.randn(args.batch, 3, args.size, args.size), 3 * args.seconds)
    reference = args.batch / sorted(times)[len(times) // 2]  # median batch time, as the bench reports
    peaks_after = unit_peaks(threads)  # the clock may drift: the higher of the two is the bound
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("int8", torch.int8)):
        peak = max(peaks_before.get(name, 0.0), peaks_after.get(name, 0.0)) or None
        matmul = matmul_macs_per_s(dtype, args.n, args.seconds)
        ceiling = (peak or matmul or 0.0) / macs
        needed = TARGETS[name] * reference * macs
        rows.append(dict(precision=name, unit_peak_gmacs_per_s=peak and round(peak / 1e9, 1),
                         matmul_gmacs_per_s=matmul and round(matmul / 1e9, 1),
                         ceiling_images_per_s=round(ceiling, 1), ceiling_ratio=round(ceiling / reference, 2),
                         target_ratio=TARGETS[name], target_share_of_peak=peak and round(needed / peak, 3)))
    result = dict(model=args.model, batch=args.batch, size=args.size, macs_per_image=macs, threads=threads,
                  machine=describe_machine(), torch_version=torch.__version__,
                  reference_images_per_s=round(reference, 1),
                  reference_share_of_fp32_peak=rows[0]["unit_peak_gmacs_per_s"] and
                  round(reference * macs / (rows[0]["unit_peak_gmacs_per_s"] * 1e9), 3),
                  matmul_n=args.n, rows=rows)

    print(f"{args.model}: {macs / 1e9:.3f} GMACs per {args.size}x{args.size} image; {result['machine']}")
    print(f"reference (torchvision eager fp32, batch {args.batch}): {reference:.1f} images/s")
    if not peaks_before:
        print("no unit peak (needs gcc and AVX-512): the ceilings below come from the matmuls")
    print(f"{'precision':<10}{'unit peak':>11}{'matmul':>9}{'ceiling':>10}{'ceiling':>9}{'target':>8}"
          f"{'target needs':>14}")
    print(f"{'':<10}{'GMAC/s':>11}{'GMAC/s':>9}{'img/s':>10}{'x ref':>9}{'x ref':>8}{'of the peak':>14}")
    for row in rows:
        share = row["target_share_of_peak"]
        print(f"{row['precision']:<10}{row['unit_peak_gmacs_per_s'] or '-':>11}{row['matmul_gmacs_per_s'] or '-':>9}"
              f"{row['ceiling_images_per_s']:>10.1f}{row['ceiling_ratio']:>9.2f}{row['target_ratio']:>8.1f}"
              f"{f'{100 * share:.0f}%' if share else '-':>14}")
    for row in rows:  # a peak below what a real kernel reached would not bound anything
        if row["unit_peak_gmacs_per_s"] and (row["matmul_gmacs_per_s"] or 0) > row["unit_peak_gmacs_per_s"]:
            print(f"warning: {row['precision']} matmul beat the measured unit peak; the peak is not a bound here")
    write_result(Path(args.out) / f"roofline-{args.model}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
