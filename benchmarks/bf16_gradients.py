"""How far bf16 autocast moves the gradient of plain and residual nets, against fp32, in one run.

    python benchmarks/bf16_gradients.py                  # plain20/56, resnet20/56 at initialization
    python benchmarks/bf16_gradients.py --models plain110 resnet110 --out results.json

The degradation experiment trains in bf16 by default. A deep plain net is very sensitive
to small changes of its weights (its gradient at the input layers is hundreds of times
that at the output, see `resnetlab experiment gradients`), so bf16's rounding could change
its gradient enough to make the experiment measure bf16 rather than depth. For each model,
on one fixed batch of 128 real Fashion-MNIST training images (synthetic if none is found),
in train mode, channels_last as in training: the gradient of all weights in fp32 (the
reference) and under bf16 autocast, with their cosine similarity and the relative error
|g_bf16 - g_fp32| / |g_fp32|, and the same relative error for the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common import benchmark_parser, write_result
from resnetlab.data import load_dataset, synthetic_dataset
from resnetlab.experiments.common import fixed_batch
from resnetlab.machine import describe_machine
from resnetlab.models import build_model


def gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All weight gradients, flattened, and the logits, for one batch."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return grads, logits.detach().float()


def compare(name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    """fp32 against bf16 autocast for one freshly initialized model (seed 0)."""
    torch.manual_seed(0)
    model = build_model(name, in_chans=x.shape[1], num_classes=num_classes).to(memory_format=torch.channels_last)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g32, logits32 = gradient(model, x, y, bf16=False)
    model.load_state_dict(state)  # the fp32 pass moved the BN running statistics
    g16, logits16 = gradient(model, x, y, bf16=True)
    return dict(model=name,
                cosine=float(F.cosine_similarity(g16, g32, dim=0)),
                grad_rel_error=float((g16 - g32).norm() / g32.norm()),
                logit_rel_error=float((logits16 - logits32).norm() / logits32.norm()))


def main() -> int:
    parser = benchmark_parser(__doc__, out=False)
    parser.add_argument("--models", nargs="+", default=["plain20", "plain56", "resnet20", "resnet56"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    try:
        dataset, source = load_dataset("fashion-mnist", "train"), "Fashion-MNIST train"
    except (FileNotFoundError, ValueError):
        dataset, source = synthetic_dataset(num_samples=args.batch, channels=1, size=28), "synthetic"
    x, y = fixed_batch(dataset, args.batch, torch.device("cpu"), channels_last=True)
    machine = describe_machine(torch.device("cpu"))
    print(f"{machine}; {len(y)} {source} images, train mode, reference fp32")
    print(f"{'model':<10} {'cosine':>8} {'grad rel err':>13} {'logit rel err':>14}")
    rows = []
    for name in args.models:
        row = compare(name, x, y, dataset.num_classes)
        rows.append(row)
        print(f"{name:<10} {row['cosine']:>8.4f} {row['grad_rel_error']:>13.3f} {row['logit_rel_error']:>14.4f}")
    if args.out:
        write_result(args.out, dict(data=source, machine=machine, rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
