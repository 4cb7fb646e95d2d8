"""`resnetlab serve` under load: dynamic batching against one request at a time, in the same run.

    python benchmarks/serve_load.py [--model resnet18] [--size 224] [--clients 32] [--seconds 20]
                                    [--max-batch 32] [--max-wait-ms 5] [--precision fp32] [--weights W]

Starts `resnetlab serve` twice on 127.0.0.1 (a free port each, one after the other): with
--max-batch and --max-wait-ms, then with --max-batch 1 --max-wait-ms 0. Against each, --clients
concurrent clients post one PNG each to /predict, again and again, for --seconds, then stop.
Reports requests/s, p50/p95/p99 latency and the error count of each. Without --weights the model
is --model with random weights (the speed does not depend on them). Writes
benchmarks/results/serve_load-<model>-<precision>.json.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import benchmark_parser, write_result
from resnetlab import create_model
from resnetlab.machine import describe_machine
from resnetlab.weights import save_weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: Path, precision: str, max_batch: int, max_wait_ms: float, port: int) -> subprocess.Popen:
    """`resnetlab serve` in a child process, once it answers /health."""
    command = [sys.executable, "-m", "resnetlab", "serve", "--weights", str(weights), "--port", str(port),
               "--precision", precision, "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
               "--max-queue", "4096"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the server exited with status {process.returncode}") from None
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not answer within 120 s")


async def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` loops posting ``body`` until ``seconds`` have passed: latencies and errors."""
    import httpx

    latencies, errors = [], 0
    stop = time.monotonic() + seconds

    async def client(session) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                reply = await session.post(f"http://127.0.0.1:{port}/predict", content=body,
                                           headers={"content-type": "image/png"})
                ok = reply.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return dict(requests=len(latencies), errors=errors, seconds=round(elapsed, 2),
                requests_per_s=round(len(latencies) / elapsed, 1), p50_ms=round(float(np.percentile(ms, 50)), 1),
                p95_ms=round(float(np.percentile(ms, 95)), 1), p99_ms=round(float(np.percentile(ms, 99)), 1))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--weights")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 120:
        raise SystemExit(f"--clients must be 1..256 and --seconds 0..120; got {args.clients} and {args.seconds}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else Path(tmp) / f"{args.model}.safetensors"
        if not args.weights:
            model = create_model(args.model, num_classes=args.classes)
            save_weights(model, weights, args.model, options=dict(num_classes=args.classes),
                         class_names=[f"class{i}" for i in range(args.classes)],
                         preprocessing=dict(input_size=[args.size, args.size]))
        pixels = torch.randint(0, 256, (args.size, args.size, 3), generator=torch.Generator().manual_seed(0),
                               dtype=torch.uint8).numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        runs = {}
        for name, max_batch, max_wait in (("dynamic batching", args.max_batch, args.max_wait_ms),
                                          ("one at a time", 1, 0.0)):
            port = free_port()
            server = start_server(weights, args.precision, max_batch, max_wait, port)
            try:
                runs[name] = dict(max_batch=max_batch, max_wait_ms=max_wait,
                                  **asyncio.run(load(port, buffer.getvalue(), args.clients, args.seconds)))
            finally:
                server.terminate()
                server.wait(30)
            print(f"{name}: {runs[name]}")
    batched, single = runs["dynamic batching"]["requests_per_s"], runs["one at a time"]["requests_per_s"]
    result = dict(model=args.weights or args.model, size=args.size, precision=args.precision, clients=args.clients,
                  seconds=args.seconds, runs=runs, speedup=round(batched / single, 2) if single else None,
                  machine=describe_machine(torch.device("cpu")),
                  command=" ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
                  date=time.strftime("%Y-%m-%d"))
    stem = Path(args.weights).stem if args.weights else args.model
    path = write_result(Path(args.out) / f"serve_load-{stem}-{args.precision}.json", result)
    print(f"dynamic batching {batched} requests/s against {single} one at a time; written to {path}")


if __name__ == "__main__":
    main()
