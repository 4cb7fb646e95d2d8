"""The `serve` command: a checkpoint behind a web page and a JSON API."""

from __future__ import annotations

import argparse

from .common import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    from ..serve import Limits, serve

    for flag, value, low in (("--port", args.port, 0), ("--max-batch", args.max_batch, 1),
                             ("--max-queue", args.max_queue, 1), ("--max-mb", args.max_mb, 1)):
        if value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535:
        raise UsageError(f"--port must be <= 65535, got {args.port}")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    limits = Limits(max_bytes=args.max_mb * 1024 * 1024, timeout_s=args.timeout)
    serve(args.weights, args.host, args.port, args.precision, args.max_batch, args.max_wait_ms, args.max_queue,
          limits, args.device)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = sub.add_parser("serve", help="a web page and a JSON API classifying and explaining images")
    p.add_argument("--weights", required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="the precision of /predict's model (int8 calibrates on the checkpoint's dataset)")
    p.add_argument("--max-batch", type=int, default=32, help="most images run in one batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more images")
    p.add_argument("--max-queue", type=int, default=256, help="most images waiting; more are answered 503")
    p.add_argument("--max-mb", type=int, default=10, help="largest request body in MiB")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request waits for the model")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_serve)
