"""The `experiment` command: reproduce the paper's figures."""

from __future__ import annotations

import argparse

from .common import Parser


def cmd_experiment(args: argparse.Namespace) -> int:
    if args.experiment == "degradation":
        from ..experiments.degradation import run_degradation

        result = run_degradation(args.depths, data=args.data, data_dir=args.data_dir, iterations=args.iterations,
                                 budget_minutes=args.budget_minutes, seeds=args.seeds, shortcut=args.shortcut,
                                 batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                                 eval_every=args.eval_every, test_subset=args.test_subset,
                                 precision=args.precision, device=args.device,
                                 cuda_graphs=args.cuda_graphs, out=args.out, quiet=args.quiet)
        print(f"data: {result.data}, {result.iterations} iterations per run, {result.wall_s:.0f} s")
        for line in result.statements:
            print(line.replace("**", ""))
        print(f"outputs in {result.out_dir}: degradation.csv degradation.png report.md")
        return 0
    from ..experiments.gradients import run_gradients

    result = run_gradients(args.depths, norms=args.norm, steps=args.steps, data=args.data, data_dir=args.data_dir,
                           budget_minutes=args.budget_minutes, batch_size=args.batch_size, lr=args.lr,
                           precision=args.precision, response_images=args.response_images, seed=args.seed,
                           device=args.device, out=args.out, quiet=args.quiet)
    for line in result.statements:
        print(line)
    for model, step in result.diverged.items():
        print(f"{model} diverged at step {step}")
    print(f"outputs in {result.out_dir}: gradients.csv gradients.png responses.csv responses.png report.md")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `experiment` subcommand and its `degradation` and `gradients` experiments."""
    p = sub.add_parser("experiment", help="reproduce the paper: degradation, gradient flow")
    experiments = p.add_subparsers(dest="experiment", parser_class=Parser, required=True)
    e = experiments.add_parser("degradation", help="plain vs residual nets of several depths (Figure 6)")
    e.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    e.add_argument("--iterations", type=int, help="training steps per run (default 1500)")
    e.add_argument("--budget-minutes", type=float, help="instead of --iterations: fit the whole experiment in M min")
    e.add_argument("--seeds", type=int, default=1, help="runs per model, reported as mean ± std (default 1)")
    e.add_argument("--shortcut", default="A", help="residual shortcut: A identity/zero-pad, B projection")
    e.add_argument("--batch-size", type=int, default=128)
    e.add_argument("--lr", type=float, default=0.1)
    e.add_argument("--schedule", default="multistep", help="multistep (/10 at 50%% and 75%%), cosine, or constant")
    e.add_argument("--eval-every", type=int, help="iterations between evaluations (default: 20 points)")
    e.add_argument("--test-subset", type=int, default=2000, help="test images evaluated (0: all)")
    e.add_argument("--precision", default="bf16", help="fp32, bf16 or fp16 (CUDA)")
    e.add_argument("--cuda-graphs", action="store_true", help="replay each training step's forward and backward "
                   "as a CUDA graph: small nets on a GPU are bound by kernel launches")
    g = experiments.add_parser("gradients", help="gradient norm per layer and residual responses (Figure 7)")
    g.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="CIFAR depths 6n+2 (default 20 56)")
    g.add_argument("--norm", nargs="+", default=["batch", "none"], help="batch and/or none (default both)")
    g.add_argument("--steps", type=int, nargs="+", default=[0, 50], help="training steps measured at (default 0 50)")
    g.add_argument("--budget-minutes", type=float, help="train each net as many steps as fit in this many minutes "
                   "in all (the last measurement; replaces the last of --steps)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--precision", default="fp32", help="of the training steps: fp32, bf16 or fp16 (CUDA)")
    g.add_argument("--response-images", type=int, default=500, help="test images for the response stds")
    g.add_argument("--seed", type=int, default=0)
    for q in (e, g):
        q.add_argument("--data", default="auto", help="auto (CIFAR-10 if found, else fashion-mnist), a dataset name, "
                       "synthetic, or an image folder (decoded at 32x32, a stratified tenth held out)")
        q.add_argument("--data-dir")
        q.add_argument("--device", default="auto")
        q.add_argument("--out", help="output folder (default runs/<experiment>-<timestamp>)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_experiment)
