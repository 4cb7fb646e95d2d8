"""`resnetlab serve`: the JSON API, its limits on bad requests, dynamic batching and the web page."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import io
import os
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("pytorch_grad_cam")

from fastapi.testclient import TestClient  # noqa: E402

from helpers import require_real_data
from resnetlab import create_model  # noqa: E402
from resnetlab.inference import Predictor  # noqa: E402
from resnetlab.serve import Limits, Service, create_app  # noqa: E402
from resnetlab.weights import save_weights  # noqa: E402

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=len(CLASSES), in_chans=3).eval()
    path = tmp_path_factory.mktemp("serve") / "r8.safetensors"
    save_weights(model, path, "resnet8", options=dict(num_classes=len(CLASSES), in_chans=3), class_names=CLASSES,
                 preprocessing=dict(mean=[0.5] * 3, std=[0.25] * 3, input_size=[32, 32], crop_fraction=None))
    return path


def png_bytes(seed: int = 0, size: int = 40) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A small PNG file whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def service(weights):
    return Service(weights, max_batch=8, max_wait_ms=20, limits=Limits(max_bytes=200_000, max_pixels=4_000_000))


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as client:
        yield client


def test_model_health_and_schema(client):
    assert client.get("/health").json()["status"] == "ok"
    model = client.get("/model").json()
    assert model["arch"] == "resnet8" and model["classes"] == CLASSES
    assert model["preprocessing"]["input_size"] == [32, 32]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/explain", "/model", "/health"} <= set(paths)
    assert "<input type=\"file\"" in client.get("/").text


def test_predict_matches_the_predictor_on_several_images(client, weights, tmp_path):
    files = [("files", (f"img{i}.png", png_bytes(i), "image/png")) for i in range(3)]
    results = client.post("/predict", files=files).json()["results"]
    assert [r["name"] for r in results] == ["img0.png", "img1.png", "img2.png"]
    predictor = Predictor(weights, device="cpu")
    for i, result in enumerate(results):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
        expected = next(predictor.predict([tmp_path / f"{i}.png"], topk=5))
        assert [p["label"] for p in result["predictions"]] == expected.classes
        assert [p["probability"] for p in result["predictions"]] == pytest.approx(expected.probabilities, abs=1e-5)
    raw = client.post("/predict?topk=2", content=png_bytes(1), headers={"content-type": "image/png"}).json()
    assert raw["results"][0]["predictions"] == results[1]["predictions"][:2]


def test_concurrent_requests_share_batches(client, service):
    before = service.batcher.batches
    replies = []

    def ask(i):
        replies.append(client.post("/predict", content=png_bytes(i), headers={"content-type": "image/png"}))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [r.status_code for r in replies] == [200] * 8
    assert service.batcher.batches - before < 8  # at least two requests went through one model call


def test_explain_returns_cam_and_stage_maps(client):
    data = client.post("/explain", files={"file": ("a.png", png_bytes(3), "image/png")}).json()
    assert len(data["predictions"]) == 5 and data["method"] == "gradcam"
    assert data["cam"].startswith("data:image/png;base64,")
    assert [(f["name"], f["shape"]) for f in data["features"]] == [
        ("stem", [16, 32, 32]), ("layer1", [16, 32, 32]), ("layer2", [32, 16, 16]), ("layer3", [64, 8, 8])]


BAD_REQUESTS = {
    "not an image": (dict(content=b"hello, world", headers={"content-type": "image/png"}), 415, "not an image"),
    "truncated PNG": (dict(content=png_bytes(0)[:200], headers={"content-type": "image/png"}), 400,
                      "cannot decode"),
    "20000x20000 PNG": (dict(content=huge_png_header(), headers={"content-type": "image/png"}), 413,
                        "more pixels than the 4000000 accepted"),
    "3000x3000 PNG": (dict(content=huge_png_header(3000, 3000), headers={"content-type": "image/png"}), 413,
                      "3000x3000: more pixels than the 4000000 accepted"),
    "oversized body": (dict(content=b"\0" * 300_000, headers={"content-type": "image/png"}), 413,
                       "more than the 200000"),
    "wrong content type": (dict(content=png_bytes(0), headers={"content-type": "text/plain"}), 415,
                           "content type 'text/plain'"),
    "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 400, "empty upload"),
    "form without a file": (dict(data={"note": "x"}, files={"other": ("", b"", "text/plain")}), 400,
                            "the form holds no file"),
    "empty file in a form": (dict(files={"file": ("a.png", b"", "image/png")}), 400, "a.png: empty upload"),
    "multipart without a boundary": (dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
                                     400, "Missing boundary"),
    "too many files": (dict(files=[("f", (f"{i}.png", b"x", "image/png")) for i in range(40)]), 400,
                       "Maximum number of files is 32"),
    "several images to explain": (dict(url="/explain", files=[("f", ("a.png", b"x", "image/png"))] * 2), 400,
                                  "/explain takes one image; got 2"),
    "truncated PNG to explain": (dict(url="/explain", content=png_bytes(0)[:200],
                                      headers={"content-type": "image/png"}), 400, "cannot decode"),
    "bad topk": (dict(url="/predict?topk=many", content=png_bytes(0), headers={"content-type": "image/png"}),
                 422, "topk"),
    "unknown CAM method": (dict(url="/explain?method=lime", content=png_bytes(0),
                                headers={"content-type": "image/png"}), 422, "unknown method 'lime'"),
}


def test_unknown_paths_and_methods_are_json_errors(client):
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/predict").status_code == 405 and "error" in client.get("/predict").json()


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_4xx_json_and_the_server_goes_on(client, case):
    request, status, message = BAD_REQUESTS[case]
    request = dict(request)
    response = client.post(request.pop("url", "/predict"), **request)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.post("/predict", content=png_bytes(0), headers={"content-type": "image/png"}).status_code == 200


def test_a_full_queue_answers_503(weights):
    service = Service(weights, max_batch=1, max_wait_ms=0, max_queue=1)
    release, running = threading.Event(), threading.Event()
    real = service.batcher.run

    def blocked(batch):
        running.set()
        release.wait(30)
        return real(batch)

    service.batcher.run = blocked
    body = dict(content=png_bytes(0), headers={"content-type": "image/png"})
    with TestClient(create_app(service)) as client:
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(client.post("/predict", **body))) for _ in range(2)]
        threads[0].start()
        assert running.wait(30)  # the first is in the model
        threads[1].start()
        deadline = time.monotonic() + 30
        while service.batcher.queue.qsize() < 1 and time.monotonic() < deadline:  # the second waits
            time.sleep(0.01)
        full = client.post("/predict", **body)
        assert full.status_code == 503 and "already waiting" in full.json()["error"]
        release.set()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in replies] == [200, 200]
        assert client.post("/predict", **body).status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1 in a thread: yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def chromium() -> tuple:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return browser, driver


def test_the_page_in_a_real_browser(weights, tmp_path):
    browser, driver = chromium()
    require_real_data(bool(browser and driver),
                      "needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,1400"):
        options.add_argument(flag)
    # Its own service: a batcher runs in one event loop.
    with running_server(create_app(Service(weights))) as port:
        session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
        try:
            session.set_page_load_timeout(30)
            session.get(f"http://127.0.0.1:{port}/")
            image = tmp_path / "upload.png"
            image.write_bytes(png_bytes(5, size=64))
            session.find_element(By.ID, "file").send_keys(str(image))
            wait = WebDriverWait(session, 60)
            wait.until(lambda s: len(s.find_elements(By.CSS_SELECTOR, "#top5 li")) == 5)
            wait.until(lambda s: s.execute_script("const i = document.getElementById('cam'); "
                                                  "return !i.hidden && i.complete && i.naturalWidth > 0"))
            assert "resnet8" in session.find_element(By.ID, "model").text
            labels = [li.text for li in session.find_elements(By.CSS_SELECTOR, "#top5 li")]
            assert all(any(name in text for name in CLASSES) and text.endswith("%") for text in labels)
            assert len(session.find_elements(By.CSS_SELECTOR, "#features .stage img")) == 4
            shot = tmp_path / "serve-page.png"
            session.save_screenshot(str(shot))
            if os.environ.get("RESNETLAB_SCREENSHOT"):
                shutil.copy(shot, os.environ["RESNETLAB_SCREENSHOT"])
            with Image.open(shot) as picture:
                assert picture.width >= 800
        finally:
            session.quit()


def test_the_served_model_is_optimized_and_the_loaded_objects_are_frozen(weights, monkeypatch):
    import uvicorn

    from resnetlab.serve import serve

    seen = {}

    def run(app, **options):  # instead of serving: what the server would start with
        model = app.state.service.predictor.model
        seen.update(options, model=model, tracked=any(o is model for o in gc.get_objects()))

    monkeypatch.setattr(uvicorn, "run", run)
    try:
        serve(weights, port=8123)
    finally:
        gc.unfreeze()
    model = seen["model"]
    assert model.choice == "fp32 eager (not compiled)"  # the folded channels-last model of optimize_for_inference
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert seen["port"] == 8123 and not seen["tracked"]  # frozen: full collections no longer walk it


def test_the_load_benchmark_counts_answers_and_errors(weights, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    serve_load = importlib.import_module("serve_load")
    service = Service(weights, max_batch=4, max_wait_ms=2)
    with running_server(create_app(service)) as port:
        good = asyncio.run(serve_load.load(port, serve_load.png_of(service), clients=3, seconds=1.0))
        bad = asyncio.run(serve_load.load(port, b"not an image", clients=2, seconds=0.3))
    assert good["errors"] == 0 and good["requests"] == service.batcher.samples > 0
    assert bad["requests"] == 0 and bad["errors"] > 0  # answered 415, counted as errors
    speeds = serve_load.model_alone(service, serve_load.png_of(service), max_batch=4, seconds=0.2)
    assert set(speeds) == {"batch_1_images_per_s", "max_batch_images_per_s", "batch_ratio"}
    assert speeds["batch_1_images_per_s"] > 0 and speeds["max_batch_images_per_s"] > 0


def test_cli_serve_prints_its_url_and_answers(weights, capsys):
    import subprocess
    import sys
    import urllib.request

    from helpers import run_cli

    code, _, err = run_cli(capsys, "serve", "--weights", weights, "--max-batch", "0")
    assert code == 2 and "--max-batch must be >= 1, got 0" in err
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "resnetlab", "serve", "--weights", str(weights), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"resnetlab: serving r8.safetensors (fp32) at http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                    assert reply.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(30)


def test_bf16_model_serves_what_fp32_serves(weights, client):
    body = dict(content=png_bytes(2), headers={"content-type": "image/png"})
    reply = client.post("/predict", **body)
    assert reply.status_code == 200, reply.text
    fp32 = reply.json()["results"][0]["predictions"]
    with TestClient(create_app(Service(weights, precision="bf16"))) as bf16_client:
        assert bf16_client.get("/model").json()["precision"] == "bf16"
        bf16 = bf16_client.post("/predict", **body).json()["results"][0]["predictions"]
    expected = {p["label"]: p["probability"] for p in fp32}
    assert {p["label"] for p in bf16} == set(expected)
    assert all(abs(p["probability"] - expected[p["label"]]) < 0.03 for p in bf16)


def test_explanations_beyond_the_limit_answer_503(weights):
    service = Service(weights, limits=Limits(max_explaining=1))
    release, running = threading.Event(), threading.Event()
    real = service.explain

    def blocked(data, method):
        running.set()
        release.wait(30)
        return real(data, method)

    service.explain = blocked
    body = dict(content=png_bytes(0), headers={"content-type": "image/png"})
    with TestClient(create_app(service)) as client:
        replies = []
        thread = threading.Thread(target=lambda: replies.append(client.post("/explain", **body)))
        thread.start()
        assert running.wait(30)
        busy = client.post("/explain", **body)
        assert busy.status_code == 503 and "1 explanations are under way" in busy.json()["error"]
        release.set()
        thread.join(30)
        assert replies[0].status_code == 200
        assert client.post("/explain", **body).status_code == 200


def test_nan_weights_are_refused_at_start_and_nan_scores_are_a_json_error(weights, tmp_path):
    broken = create_model("resnet8", num_classes=len(CLASSES), in_chans=3)
    with torch.no_grad():
        broken.layer1[0].bn1.running_var[0] = float("nan")  # finite parameters, NaN statistics
    path = tmp_path / "nan.safetensors"
    save_weights(broken, path, "resnet8", options=dict(num_classes=len(CLASSES), in_chans=3), class_names=CLASSES)
    with pytest.raises(ValueError, match=r"^weights .*nan\.safetensors hold NaN or infinite values: nothing to serve$"):
        Service(path)
    service = Service(weights, max_wait_ms=0)
    service.batcher.run = lambda batch: torch.full((len(batch), len(CLASSES)), float("nan"))  # a fault mid-serving
    with torch.no_grad():
        service.explainer.model.fc.bias.fill_(float("inf"))
    body = dict(content=png_bytes(0), headers={"content-type": "image/png"})
    with TestClient(create_app(service)) as client:
        for route in ("/predict", "/explain"):
            reply = client.post(route, **body)
            assert reply.status_code == 500 and "NaN or infinite; no prediction" in reply.json()["error"], route
        assert client.get("/health").status_code == 200
