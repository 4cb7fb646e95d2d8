"""Dynamic batching: concurrent requests gathered into one model call, up to a batch size or a wait."""

from __future__ import annotations

import asyncio
from typing import Callable, List, Optional, Tuple

import torch

__all__ = ["DynamicBatcher", "QueueFull"]


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


class DynamicBatcher:
    """Runs ``run(batch) -> outputs`` on batches of the inputs submitted while it waits.

    A batch leaves when ``max_batch`` inputs are waiting or ``max_wait_ms`` after its first one; the
    model runs in a worker thread so the server keeps accepting requests. At most ``max_queue``
    inputs wait: beyond that ``submit`` raises QueueFull at once.
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256) -> None:
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait_ms >= 0; got {max_batch}, "
                             f"{max_queue} and {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.queue: Optional[asyncio.Queue] = None
        self.worker: Optional[asyncio.Task] = None
        self.batches = 0  # batches run, for the statistics of /health
        self.samples = 0

    def start(self) -> None:
        """Start gathering (inside the server's event loop; one loop at a time)."""
        if self.worker is not None and not self.worker.done():
            raise RuntimeError("the batcher already runs in an event loop; give each app its own Service")
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop gathering; waiting requests are cancelled."""
        if self.worker is not None:
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
            self.worker = None

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for one input ``x`` (C x H x W), computed in a batch with its neighbours."""
        if self.queue is None:
            raise RuntimeError("the batcher is not started")
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((x, future))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.max_queue} images are already waiting") from None
        return await future

    async def _gather(self) -> List[Tuple[torch.Tensor, asyncio.Future]]:
        assert self.queue is not None
        items = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(items) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(x, future) for x, future in items if not future.done()]  # a timed-out client is gone

    async def _loop(self) -> None:
        while True:
            items = await self._gather()
            if not items:
                continue
            batch = torch.stack([x for x, _ in items])
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(None, self.run, batch)
            except Exception as error:  # the model failed: every waiting request is told
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batches += 1
            self.samples += len(items)
            for (_, future), output in zip(items, outputs):
                if not future.done():
                    future.set_result(output)
