"""The web service: a page and a JSON API (predict, explain, model, health) for one checkpoint, on FastAPI."""


import asyncio
import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..analysis.interpret import CAM_METHODS, Explainer, class_activation_maps, stage_features
from ..errors import one_line
from ..evaluation import predict_logits
from ..inference import Predictor
from ..optimize import optimize_for_inference
from ..weights import all_finite
from .batching import DynamicBatcher, QueueFull
from .page import PAGE

__all__ = ["Limits", "create_app"]

IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass
class Limits:
    """What one request may send and how long it may wait."""

    max_bytes: int = 10 * 1024 * 1024  # the whole body
    max_pixels: int = 40_000_000  # width x height of each image, read from its header before decoding
    max_images: int = 32  # per request
    timeout_s: float = 30.0  # waiting for the model
    max_explaining: int = 4  # /explain requests under way (one runs at a time, the others wait)


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _png_data_url(rgb: np.ndarray) -> str:
    """An H x W x 3 float image in [0, 1] as a data: URL of a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((rgb.clip(0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _colour(values: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps[cmap](values)[..., :3]


def _upscaled(image: np.ndarray, size: int = 224) -> np.ndarray:
    """An H x W x C image scaled by a whole factor so its longer side is about ``size`` (pixels stay sharp)."""
    factor = max(1, size // max(image.shape[:2]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    rgb = image.repeat(3, axis=2) if image.shape[2] == 1 else image[..., :3]
    return _upscaled(0.55 * rgb + 0.45 * _colour(heat, "jet"))


def _feature_grid(output: torch.Tensor, channels: int = 8) -> np.ndarray:
    """The first ``channels`` maps of a 1 x C x h x w output side by side, each scaled to [0, 1]."""
    maps = output[0, :channels].float().cpu()
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = (maps - low) / (maps.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-6)
    tiles = [_upscaled(_colour(m.numpy(), "viridis"), 96) for m in maps]
    gap = np.ones((tiles[0].shape[0], 4, 3))
    return np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)


def _refuse_non_finite(probs: torch.Tensor) -> None:
    """A 500 JSON error, not a result, when the model's scores are NaN or infinite (a fault of the model)."""
    if not bool(torch.isfinite(probs).all()):
        raise RequestError(500, "the model's scores for this image are NaN or infinite; no prediction")


class Service:
    """The models behind the API: the fast one (batched) for /predict, the fp32 one for /explain."""

    def __init__(self, weights: Union[str, Path], precision: str = "fp32", max_batch: int = 32,
                 max_wait_ms: float = 5.0, max_queue: int = 256, limits: Optional[Limits] = None,
                 device: str = "cpu") -> None:
        self.predictor = Predictor(weights, precision=precision, device=device)
        if precision == "fp32":  # bf16 and int8 models come from optimize_for_inference already
            self.predictor.model = optimize_for_inference(self.predictor.model, "fp32", compile=False)
        self.explainer = Explainer(weights, device=device)
        if not all_finite(self.explainer.model):
            raise ValueError(f"weights {weights} hold NaN or infinite values: nothing to serve")
        self.limits = limits or Limits()
        self.batcher = DynamicBatcher(self.run_batch, max_batch, max_wait_ms, max_queue)
        self.explain_lock = threading.Lock()
        self.explaining = 0  # /explain requests under way
        metadata = self.explainer.metadata
        self.model_info: Dict[str, Any] = dict(
            weights=Path(weights).name, arch=metadata.get("arch"), precision=precision,
            classes=self.predictor.class_names, preprocessing=metadata.get("preprocessing") or {},
            accuracy=metadata.get("test_top1") or metadata.get("accuracy"), max_batch=max_batch,
            max_wait_ms=max_wait_ms, max_bytes=self.limits.max_bytes, max_pixels=self.limits.max_pixels)

    @torch.no_grad()
    def run_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a batch of prepared images (what /predict runs)."""
        p = self.predictor
        return torch.softmax(predict_logits(p.model, batch.to(p.device), p.flip_tta, p.shift_tta), dim=1).cpu()

    def decode(self, data: bytes, name: str) -> torch.Tensor:
        """One uploaded image as the model's input; a 4xx RequestError when it is not a usable image."""
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise RequestError(400, f"{name}: empty upload; send an image file (PNG, JPEG, ...)")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size  # from the header: nothing is decoded yet
        except Image.DecompressionBombError:  # PIL's own bound, far above ours
            raise RequestError(413, f"{name}: more pixels than the {self.limits.max_pixels} accepted") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise RequestError(415, f"{name}: not an image PIL can read; send a PNG, JPEG, BMP, GIF, WebP or TIFF"
                               ) from None
        if width * height > self.limits.max_pixels:
            raise RequestError(413, f"{name}: {width}x{height}: more pixels than the {self.limits.max_pixels} "
                               f"accepted")
        try:
            return self.predictor.preprocess(io.BytesIO(data))
        except Exception as error:  # PIL raises many kinds for a damaged file
            raise RequestError(400, f"{name}: cannot decode the image: {one_line(error)[:120]}") from None

    async def predict(self, images: List[torch.Tensor], topk: int = 5) -> List[Dict[str, Any]]:
        """Top-``topk`` classes of each image, through the dynamic batcher."""
        try:
            probs = await asyncio.wait_for(asyncio.gather(*(self.batcher.submit(x) for x in images)),
                                           self.limits.timeout_s)
        except QueueFull as error:
            raise RequestError(503, f"busy: {error}; retry later") from None
        except asyncio.TimeoutError:
            raise RequestError(503, f"busy: no answer within {self.limits.timeout_s:g} s; retry later") from None
        k = max(1, min(topk, len(self.predictor.class_names)))
        out = []
        for p in probs:
            _refuse_non_finite(p)
            top = p.topk(k)
            out.append(dict(predictions=[dict(label=self.predictor.class_names[i], probability=round(float(v), 6))
                                         for v, i in zip(top.values.tolist(), top.indices.tolist())]))
        return out

    def explain(self, data: bytes, method: str = "gradcam") -> Dict[str, Any]:
        """Top-5 with probabilities, the activation map of the top class over the image, and the stage outputs."""
        explainer = self.explainer
        with self.explain_lock:  # gradients and hooks: one explanation at a time
            x = explainer.prepare(io.BytesIO(data))
            with torch.no_grad():
                probs = torch.softmax(explainer.model(x).float(), dim=1)[0]
            _refuse_non_finite(probs)
            top = probs.topk(min(5, probs.numel()))
            cam = class_activation_maps(explainer.model, x, top.indices[:1].tolist(), method)[0]
            features = stage_features(explainer.model, x)
        image = explainer.image(x)
        return dict(predictions=[dict(label=explainer.class_names[i], probability=round(float(v), 6))
                                 for v, i in zip(top.values.tolist(), top.indices.tolist())],
                    method=method, image=_png_data_url(_upscaled(image.repeat(3, axis=2) if image.shape[2] == 1
                                                                 else image)),
                    cam=_png_data_url(_overlay(image, cam)),
                    features=[dict(name=name, shape=list(output.shape[1:]), image=_png_data_url(_feature_grid(output)))
                              for name, output in features])


def create_app(service: Service):
    """The FastAPI application serving ``service`` (one application at a time per service)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException

    @asynccontextmanager
    async def lifespan(_app):
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(title="resnetlab", version="1", lifespan=lifespan,
                  description=f"Classify images with {service.model_info['weights']}")
    app.state.service = service  # the model, batcher and limits behind the app

    @app.exception_handler(RequestError)
    async def request_error(_request, error: RequestError):
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        return JSONResponse({"error": one_line(str(error))[:200]}, status_code=422)

    async def uploads(request: Request) -> List[tuple]:
        """The (name, bytes) of each image in the body: multipart files, or the raw body."""
        limits = service.limits
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_bytes:
            raise RequestError(413, f"body of {length} bytes is more than the {limits.max_bytes} accepted")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_bytes:
                raise RequestError(413, f"body is more than the {limits.max_bytes} bytes accepted")
        request._body = body  # the form parser below reads the body kept here
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            form = await request.form(max_files=limits.max_images, max_fields=limits.max_images)
            files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
                     if hasattr(value, "read")]
            if not files:
                raise RequestError(400, "the form holds no file; send the image as a file field")
            return files
        if not kind.startswith(IMAGE_TYPES):
            raise RequestError(415, f"content type {kind or 'none'!r} is not accepted; send multipart/form-data "
                               f"or an image/* body")
        return [("body", body)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        """Whether the server answers, and how many batches and images it has run."""
        return dict(status="ok", batches=service.batcher.batches, images=service.batcher.samples)

    @app.get("/model")
    async def model() -> Dict[str, Any]:
        """The checkpoint served: architecture, classes, preprocessing, precision and limits."""
        return service.model_info

    @app.post("/predict")
    async def predict(request: Request, topk: int = 5) -> Dict[str, Any]:
        """Top-k classes of each image sent (multipart files, or one image as the raw body)."""
        files = await uploads(request)
        if len(files) > service.limits.max_images:
            raise RequestError(413, f"{len(files)} images; at most {service.limits.max_images} per request")
        images = [service.decode(data, name) for name, data in files]
        results = await service.predict(images, topk)
        return dict(results=[dict(name=name, **result) for (name, _), result in zip(files, results)])

    @app.post("/explain")
    async def explain(request: Request, method: str = "gradcam") -> Dict[str, Any]:
        """Top-5, the class activation map of the top class over the image, and the stage feature maps."""
        files = await uploads(request)
        if len(files) != 1:
            raise RequestError(400, f"/explain takes one image; got {len(files)}")
        name, data = files[0]
        service.decode(data, name)
        if method not in CAM_METHODS:
            raise RequestError(422, f"unknown method {method!r}; choose from {', '.join(CAM_METHODS)}")
        if service.explaining >= service.limits.max_explaining:
            raise RequestError(503, f"busy: {service.explaining} explanations are under way; retry later")
        service.explaining += 1
        try:
            work = asyncio.get_running_loop().run_in_executor(None, service.explain, data, method)
            return dict(name=name, **await asyncio.wait_for(work, service.limits.timeout_s))
        except asyncio.TimeoutError:
            raise RequestError(503, f"busy: no explanation within {service.limits.timeout_s:g} s; retry later"
                               ) from None
        finally:
            service.explaining -= 1

    return app
