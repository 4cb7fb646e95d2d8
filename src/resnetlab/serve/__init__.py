"""`resnetlab serve`: one checkpoint behind a web page and a JSON API, with dynamic batching (needs the
optional extra ``resnetlab[serve]``: FastAPI, uvicorn, python-multipart, grad-cam)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Union

from .app import Limits, Service, create_app
from .batching import DynamicBatcher, QueueFull

__all__ = ["DynamicBatcher", "Limits", "QueueFull", "Service", "create_app", "serve"]


def serve(weights: Union[str, Path], host: str = "127.0.0.1", port: int = 8000, precision: str = "fp32",
          max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256, limits: Limits = None,
          device: str = "cpu") -> None:
    """Serve ``weights`` on http://HOST:PORT until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise ValueError("serving needs FastAPI and uvicorn: pip install 'resnetlab[serve]'") from None
    service = Service(weights, precision, max_batch, max_wait_ms, max_queue, limits, device)
    app = create_app(service)
    shown = f"[{host}]" if ":" in host else host
    print(f"resnetlab: serving {Path(weights).name} ({precision}) at http://{shown}:{port}/ "
          f"(API docs at /docs; Ctrl-C stops)", flush=True)
    # torch, the models and the app are hundreds of thousands of long-lived objects. Frozen, Python's
    # full garbage collections stop walking them; they paused requests for up to 0.17 s (measured).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)
