"""Training steps of small CIFAR-style nets on a GPU: eager against CUDA graphs, in one run.

    python benchmarks/cuda_graphs.py                 # resnet20 and resnet56, batch 128, 1x28x28, bf16
    python benchmarks/cuda_graphs.py --models resnet110 --precision fp32

Each step is what the degradation experiment takes (`--cuda-graphs`): SGD with momentum
and weight decay, cross-entropy, the loss read back once. Prints ms per step and the
ratio eager / graphed. Needs a CUDA GPU.
"""

from __future__ import annotations

import sys
import time

import torch

from common import benchmark_parser, write_result
from resnetlab.machine import describe_machine
from resnetlab.models import build_model
from resnetlab.train.engine import cuda_graphed, train_steps


def step_ms(name: str, graphs: bool, batch: int, precision: str, steps: int) -> float:
    """Mean ms per training step over ``steps`` steps, after 20 warm-up steps."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(name, in_chans=1, num_classes=10).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    if graphs:
        model = cuda_graphed(model, x, precision)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def run(n: int) -> None:
        train_steps(model, ((x, y) for _ in range(n)), optimizer, scheduler, device=device, precision=precision)

    run(20)
    torch.cuda.synchronize()
    start = time.perf_counter()
    run(steps)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> int:
    parser = benchmark_parser(__doc__, out=False)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda_graphs.py needs a CUDA GPU; none is visible", file=sys.stderr)
        return 2
    rows = []
    machine = describe_machine(torch.device("cuda"))
    print(f"{machine}; batch {args.batch}, {args.precision}")
    for name in args.models:
        eager = step_ms(name, False, args.batch, args.precision, args.steps)
        graphed = step_ms(name, True, args.batch, args.precision, args.steps)
        rows.append(dict(model=name, eager_ms=round(eager, 2), graphed_ms=round(graphed, 2),
                         ratio=round(eager / graphed, 2)))
        print(f"{name:>10}: eager {eager:.2f} ms/step, CUDA graphs {graphed:.2f} ms/step, {eager / graphed:.2f}x")
    if args.out:
        write_result(args.out, dict(machine=machine, batch=args.batch, precision=args.precision, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
