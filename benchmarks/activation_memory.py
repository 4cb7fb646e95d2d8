"""Peak memory and time of one training step of ResNet-1202, with and without activation checkpointing.

    python benchmarks/activation_memory.py [--model resnet1202] [--batch 128] [--steps 3]

Each setting runs in a fresh process: build the model (CIFAR, 32x32, fp32, train mode), an SGD
optimizer and a batch, take one warm-up step on 2 images (gradients and momentum now exist), then measure
``--steps`` steps (time: their median). Peak memory is what a step adds on top of that: on CUDA
``torch.cuda.max_memory_allocated`` minus the memory allocated before the step, on the CPU the
process's peak resident set (``ru_maxrss``) minus its resident set before the step. Prints both
settings and the ratios; writes benchmarks/results/activation_memory-<model>-b<batch>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import benchmark_parser, write_result
from resnetlab.machine import describe_machine
from resnetlab.models import build_model

MIB = 2**20


def resident_bytes() -> int:
    """The process's resident set now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def measure(model_name: str, batch: int, steps: int, checkpointing: bool, device: torch.device) -> dict:
    """Peak memory a training step adds, and seconds per step (this process's first and only call)."""
    torch.manual_seed(0)
    model = build_model(model_name).to(device).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step(size: int) -> None:
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as between steps of a run
        F.cross_entropy(model(x[:size]), y[:size]).backward()
        optimizer.step()

    # The warm-up step allocates gradients and momentum on 2 images only: a full batch here would leave
    # freed activations in the CPU allocator's heap, counted in the resident set before the measurement.
    step(2)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resident_bytes()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return dict(checkpointing=checkpointing, step_peak_mib=(peak - before) / MIB, before_mib=before / MIB,
                seconds_per_step=statistics.median(seconds), step_seconds=seconds)


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="resnet1202")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="measured steps after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.model, args.batch, args.steps, args.child == "checkpointed", torch.device(args.device))
        print(json.dumps(result))
        return 0

    results = {}
    for mode in ("plain", "checkpointed"):
        command = [sys.executable, __file__, "--child", mode, "--model", args.model, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--device", args.device]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:>12}: a step adds {r['step_peak_mib']:8.0f} MiB at peak "
              f"(on top of {r['before_mib']:.0f} MiB), {r['seconds_per_step']:.2f} s per step "
              f"(median of {', '.join(f'{t:.2f}' for t in r['step_seconds'])})", flush=True)
    memory_ratio = results["plain"]["step_peak_mib"] / results["checkpointed"]["step_peak_mib"]
    time_ratio = results["checkpointed"]["seconds_per_step"] / results["plain"]["seconds_per_step"]
    print(f"checkpointing: {memory_ratio:.1f}x less peak step memory, {time_ratio:.2f}x the time per step")
    record = dict(benchmark="activation_memory", model=args.model, batch=args.batch, input="3x32x32 fp32",
                  steps=args.steps, device=args.device, machine=describe_machine(torch.device(args.device)),
                  results=results, memory_ratio=memory_ratio, time_ratio=time_ratio)
    out = Path(args.out) / f"activation_memory-{args.model}-b{args.batch}.json"
    write_result(out, record)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
