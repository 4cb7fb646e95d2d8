"""How fast can this CPU run a ResNet at all? Its multiply-accumulate peak against the inference targets.

    python benchmarks/roofline.py [--model resnet50] [--batch 8] [--size 224]

A ResNet is almost all multiply-accumulates (MACs): convolutions. No inference path can run
more MACs per second than the CPU's vector units execute, so that rate, divided by the
model's MACs per image, is a ceiling in images/s that no software passes. This script
measures, in one run on the threads torch uses:

- the units' peak (an AVX-512 kernel compiled with gcc: independent chains of FMA, bf16
  dot-product and int8 dot-product instructions; skipped without gcc or AVX-512),
- what a large square matmul reaches through torch (MKL/oneDNN),
- torchvision's eager fp32 model (the inference bench's reference), batch ``--batch``.

The peak of each precision is the higher of the first two, as resnetlab.machine.measure_peaks
measures it for `resnetlab bench` too: on CPUs with AMX, bf16 and int8 matmuls run on tile
units the AVX-512 kernel does not use, and the matmul is the peak.

For each precision it prints the ceiling as a ratio to the reference, beside the inference
issue's target ratio, and the share of the peak the target would need: above 100% the
target cannot be met on this machine. Writes benchmarks/results/roofline-<model>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

from common import benchmark_parser, write_result
from resnetlab.analysis.summary import count_macs
from resnetlab.machine import describe_machine, interleaved, measure_peaks

TARGETS = {"fp32": 2.0, "bf16": 3.5, "int8": 6.0}  # the inference issue's ratios to the reference


def gmacs(rate):
    """MACs/s as GMAC/s with one decimal (None stays None)."""
    return rate and round(rate / 1e9, 1)


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
    x = torch.randn(args.batch, 3, args.size, args.size)
    peaks_before = measure_peaks(threads, args.n, args.seconds)
    with torch.inference_mode():  # the median of 10 rounds' images/s, as the bench reports
        reference = interleaved({"torchvision": lambda: model(x)}, 10, 0.3 * args.seconds, items=args.batch,
                                warmup=3)["torchvision"].rate
    peaks_after = measure_peaks(threads, args.n, args.seconds)  # the clock may drift: the higher is the bound
    rows = []
    for name in TARGETS:
        measured = [p[name] for p in (peaks_before, peaks_after) if name in p]
        unit = max((p.units or 0.0 for p in measured), default=0.0) or None
        matmul = max((p.matmul or 0.0 for p in measured), default=0.0) or None
        best = max(measured, key=lambda p: p.macs_per_s, default=None)
        peak = best and best.macs_per_s
        ceiling = (peak or 0.0) / macs
        needed = TARGETS[name] * reference * macs
        rows.append(dict(precision=name, unit_peak_gmacs_per_s=gmacs(unit), matmul_gmacs_per_s=gmacs(matmul),
                         peak_gmacs_per_s=gmacs(peak), peak_source=best and best.source,
                         ceiling_images_per_s=round(ceiling, 1), ceiling_ratio=round(ceiling / reference, 2),
                         target_ratio=TARGETS[name], target_share_of_peak=peak and round(needed / peak, 3)))
    result = dict(model=args.model, batch=args.batch, size=args.size, macs_per_image=macs, threads=threads,
                  machine=describe_machine(), torch_version=torch.__version__,
                  reference_images_per_s=round(reference, 1),
                  reference_share_of_fp32_peak=rows[0]["peak_gmacs_per_s"] and
                  round(reference * macs / (rows[0]["peak_gmacs_per_s"] * 1e9), 3),
                  matmul_n=args.n, rows=rows)

    print(f"{args.model}: {macs / 1e9:.3f} GMACs per {args.size}x{args.size} image; {result['machine']}")
    print(f"reference (torchvision eager fp32, batch {args.batch}): {reference:.1f} images/s")
    if not any(row["unit_peak_gmacs_per_s"] for row in rows):
        print("no unit peak (needs gcc and AVX-512): the peaks below come from the matmuls")
    print(f"{'precision':<10}{'unit peak':>11}{'matmul':>9}{'ceiling':>10}{'ceiling':>9}{'target':>8}"
          f"{'target needs':>14}")
    print(f"{'':<10}{'GMAC/s':>11}{'GMAC/s':>9}{'img/s':>10}{'x ref':>9}{'x ref':>8}{'of the peak':>14}")
    for row in rows:
        share = row["target_share_of_peak"]
        print(f"{row['precision']:<10}{row['unit_peak_gmacs_per_s'] or '-':>11}{row['matmul_gmacs_per_s'] or '-':>9}"
              f"{row['ceiling_images_per_s']:>10.1f}{row['ceiling_ratio']:>9.2f}{row['target_ratio']:>8.1f}"
              f"{f'{100 * share:.0f}%' if share else '-':>14}")
    for row in rows:  # a unit peak below what a real kernel reached would not bound anything
        if row["unit_peak_gmacs_per_s"] and row["peak_source"] == "matmul":
            print(f"note: the {row['precision']} matmul beat the AVX-512 kernel (AMX units?); "
                  "its rate is the peak")
    write_result(Path(args.out) / f"roofline-{args.model}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
