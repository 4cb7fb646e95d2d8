"""`resnetlab serve` under load: dynamic batching against one request at a time, in the same run.

    python benchmarks/serve_load.py [--model resnet18] [--size 224] [--clients 32] [--seconds 20]
                                    [--max-batch 32] [--max-wait-ms 5] [--precision fp32] [--weights W]

Starts `resnetlab serve` twice on 127.0.0.1 (a free port each, one after the other): with
--max-batch and --max-wait-ms, then with --max-batch 1 --max-wait-ms 0. Against each, --clients
concurrent clients post one PNG each to /predict, again and again, for --seconds, then stop.
Reports requests/s, p50/p95/p99 latency and the error count of each. The PNG is random pixels at
the model's input size and channels. Without --weights the model is --model with random weights
(the speed does not depend on them), at --size.

Before the servers, the model alone (the server's own prediction, no HTTP) is timed at batch 1
and at --max-batch in this process: the ratio of their images per second is what batching gains
in the model's arithmetic. Served, batching also shares the fixed cost of each model call (the
hand-off to the worker thread, stacking, the call itself) and overlaps decoding with the model,
so the served gain can pass that ratio; a ratio near 1 still says that batching has little to
win on this machine. Writes benchmarks/results/serve_load-<model or weights>-<precision>.json.
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
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image

from common import benchmark_parser, write_result
from resnetlab import create_model
from resnetlab.machine import describe_machine
from resnetlab.optimize import time_batches
from resnetlab.serve import Service
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


def model_alone(service: Service, body: bytes, max_batch: int, seconds: float = 5.0) -> dict:
    """Images per second of the server's prediction of ``body`` at batch 1 and at ``max_batch``, without HTTP."""
    one = service.decode(body, "probe")
    speeds = {}
    for batch in (1, max_batch):
        times = time_batches(service.run_batch, one.expand(batch, *one.shape).contiguous(), seconds)
        speeds[batch] = batch / float(np.median(times))
    return dict(batch_1_images_per_s=round(speeds[1], 1), max_batch_images_per_s=round(speeds[max_batch], 1),
                batch_ratio=round(speeds[max_batch] / speeds[1], 2))


def png_of(service: Service) -> bytes:
    """A PNG of random pixels at the input size and channels of ``service``'s model."""
    height, width = service.predictor.preprocess.size
    shape = (height, width) if service.predictor.in_chans == 1 else (height, width, 3)
    pixels = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def post(port: int, request: bytes, connection: Optional[tuple]) -> Tuple[int, bytes, Optional[tuple]]:
    """Send ``request`` on a kept-alive connection to 127.0.0.1 (opened when None): the reply's status
    and body, and the connection to use next (None where the server closed it). A reply this client
    cannot read (no status, no content-length) raises ValueError; on any error the connection is closed."""
    reader, writer = connection or await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(status_line.partition(" ")[2][:3])
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        if "content-length" not in headers:
            raise ValueError(f"a reply without content-length: {status_line}")
        body = await reader.readexactly(int(headers["content-length"]))
    except BaseException:
        writer.close()
        raise
    if headers.get("connection", "").lower() == "close":
        writer.close()
        return status, body, None
    return status, body, (reader, writer)


async def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` loops posting ``body`` to /predict until ``seconds`` have passed: latencies and errors.

    Each client keeps one HTTP/1.1 connection alive and speaks just enough HTTP to post and read
    the reply: a load generator that costs little of the cores it shares with the server.
    """
    request = (f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: image/png\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    latencies, errors = [], 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal errors
        connection = None
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                status, reply, connection = await asyncio.wait_for(post(port, request, connection), 60)
                ok = status == 200 and b'"predictions"' in reply
            except (OSError, EOFError, ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError):
                ok, connection = False, None  # post closed it
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1
        if connection is not None:
            connection[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
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
        service = Service(weights, args.precision, args.max_batch)
        body = png_of(service)
        size = list(service.predictor.preprocess.size)
        alone = model_alone(service, body, args.max_batch)
        print(f"the model alone: {alone}")
        del service
        runs = {}
        for name, max_batch, max_wait in (("dynamic batching", args.max_batch, args.max_wait_ms),
                                          ("one at a time", 1, 0.0)):
            port = free_port()
            server = start_server(weights, args.precision, max_batch, max_wait, port)
            try:
                runs[name] = dict(max_batch=max_batch, max_wait_ms=max_wait,
                                  **asyncio.run(load(port, body, args.clients, args.seconds)))
            finally:
                server.terminate()
                server.wait(30)
            print(f"{name}: {runs[name]}")
    batched, single = runs["dynamic batching"]["requests_per_s"], runs["one at a time"]["requests_per_s"]
    result = dict(model=args.weights or args.model, size=size, precision=args.precision, clients=args.clients,
                  seconds=args.seconds, runs=runs, speedup=round(batched / single, 2) if single else None,
                  model_alone=alone,
                  machine=describe_machine(torch.device("cpu")),
                  command=" ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
                  date=time.strftime("%Y-%m-%d"))
    if not args.weights:
        stem = args.model
    elif Path(args.weights).is_file():
        stem = Path(args.weights).stem
    else:  # a weights name: resnet14.fashion_mnist -> resnet14-fashion-mnist
        stem = args.weights.replace(".", "-").replace("_", "-")
    path = write_result(Path(args.out) / f"serve_load-{stem}-{args.precision}.json", result)
    print(f"dynamic batching {batched} requests/s against {single} one at a time; written to {path}")


if __name__ == "__main__":
    main()
