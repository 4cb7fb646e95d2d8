"""Class activation maps and stage feature maps (analysis/interpret.py, `resnetlab explain`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import run_cli
from resnetlab import create_model
from resnetlab.analysis.interpret import CAM_METHODS, Explainer, class_activation_maps, stage_features
from resnetlab.weights import save_weights

pytest.importorskip("pytorch_grad_cam")

SIZE, SQUARE, MEAN, STD = 32, 8, 0.5, 0.25


def blob_images(n: int, seed: int):
    """Noise images holding one 8x8 square at a random place, bright (class 0, "bright") or dark (class 1,
    "dark"), and elsewhere an 8x8 checkerboard in both classes. Only the square tells the class, so a net
    that learned it must look there, while an untrained one is drawn to the checkerboard's contrast.
    Returns images in [0, 1] (N x 1 x H x W), labels, and each square's top-left corner."""
    generator = torch.Generator().manual_seed(seed)
    images = (0.5 + 0.12 * torch.randn(n, 1, SIZE, SIZE, generator=generator)).clamp(0, 1)
    labels = torch.randint(0, 2, (n,), generator=generator)
    corners = torch.randint(0, SIZE - SQUARE + 1, (n, 2), generator=generator)
    checker = (torch.arange(SQUARE)[:, None] + torch.arange(SQUARE)[None, :]) % 2 * 0.9 + 0.05
    for i in range(n):
        y, x = corners[i].tolist()
        images[i, 0, y:y + SQUARE, x:x + SQUARE] = 0.95 if labels[i] == 0 else 0.05
        while True:  # the checkerboard apart from the square, 2 pixels between them at least
            cy, cx = torch.randint(0, SIZE - SQUARE + 1, (2,), generator=generator).tolist()
            if abs(cy - y) >= SQUARE + 2 or abs(cx - x) >= SQUARE + 2:
                break
        images[i, 0, cy:cy + SQUARE, cx:cx + SQUARE] = checker
    return images, labels, corners


@pytest.fixture(scope="module")
def blob_net(tmp_path_factory):
    """A resnet8 trained to tell bright from dark squares, saved with its preprocessing: (path, model)."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=2, in_chans=1)
    images, labels, _ = blob_images(1024, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for start in range(0, len(images), 64):
            x = (images[start:start + 64] - MEAN) / STD
            loss = F.cross_entropy(model(x), labels[start:start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("blob") / "blob.safetensors"
    save_weights(model, path, "resnet8", options=dict(num_classes=2, in_chans=1), class_names=["bright", "dark"],
                 preprocessing=dict(mean=[MEAN], std=[STD], input_size=[SIZE, SIZE], crop_fraction=None))
    return path, model


def test_gradcam_points_at_the_square_that_decides_the_class(blob_net):
    _, model = blob_net
    images, labels, corners = blob_images(40, seed=2)
    x = (images - MEAN) / STD
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert (predicted == labels).float().mean() >= 0.95  # the net learned the task
    maps = class_activation_maps(model, x, predicted.tolist(), "gradcam")
    assert maps.shape == (40, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    hits, inside_means, outside_means = 0, [], []
    for heat, (y, x0) in zip(maps, corners.tolist()):
        peak_y, peak_x = np.unravel_index(heat.argmax(), heat.shape)
        hits += (y - 2 <= peak_y < y + SQUARE + 2) and (x0 - 2 <= peak_x < x0 + SQUARE + 2)
        mask = np.zeros_like(heat, dtype=bool)
        mask[y:y + SQUARE, x0:x0 + SQUARE] = True
        inside_means.append(heat[mask].mean())
        outside_means.append(heat[~mask].mean())
    # The square with a 2-pixel margin is 12% of the image; untrained nets hit it 6 to 14 times in 40.
    assert hits >= 36
    assert np.mean(inside_means) > 4 * np.mean(outside_means)  # an untrained net: 0.7 to 2.1 times


@pytest.mark.parametrize("method", CAM_METHODS)
def test_every_method_gives_maps_in_range(blob_net, method):
    _, model = blob_net
    images, _, _ = blob_images(2, seed=3)
    maps = class_activation_maps(model, (images - MEAN) / STD, [0, 1], method)
    assert maps.shape == (2, SIZE, SIZE)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0


def test_stage_features_follow_feature_info(blob_net):
    _, model = blob_net
    features = stage_features(model, torch.zeros(1, 1, SIZE, SIZE))
    assert [name for name, _ in features] == ["stem"] + model.stage_names
    for (_, output), info in zip(features[1:], model.feature_info):
        assert output.shape == (1, info["num_chs"], SIZE // info["reduction"], SIZE // info["reduction"])


def test_explainer_reads_files_as_training_prepared_them(blob_net, tmp_path):
    path, _ = blob_net
    images, labels, _ = blob_images(1, seed=4)
    png = tmp_path / "one.png"
    Image.fromarray((images[0, 0] * 255).round().byte().numpy()).save(png)
    result = Explainer(path).explain(png, topk=2)
    assert result.classes[0] == ["bright", "dark"][int(labels[0])]
    assert sorted(result.classes) == ["bright", "dark"] and len(result.maps) == 2
    assert result.image.shape == (SIZE, SIZE, 1)
    assert np.abs(result.image[..., 0] - images[0, 0].numpy()).max() < 1 / 255 + 1e-6
    only = Explainer(path).explain(png, target="dark")
    assert only.classes == ["dark"] and len(only.maps) == 1


def _write_pngs(folder, n):
    images, labels, _ = blob_images(n, seed=5)
    folder.mkdir()
    for i in range(n):
        Image.fromarray((images[i, 0] * 255).round().byte().numpy()).save(folder / f"img{i}.png")
    return labels


def test_cli_writes_one_labelled_png_per_image(blob_net, tmp_path, capsys):
    path, _ = blob_net
    _write_pngs(tmp_path / "images", 3)
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = run_cli(capsys, "explain", "--weights", path, tmp_path / "images", "--topk", "2",
                             "--out", tmp_path / "out")
    assert code == 1  # the broken file; the others are still explained
    assert "broken.png: error: cannot explain" in err and len(err.strip().splitlines()) == 1
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["img0-gradcam.png", "img1-gradcam.png", "img2-gradcam.png"]
    with Image.open(tmp_path / "out" / "img0-gradcam.png") as image:
        assert image.width > 400 and image.height > 200  # input and two overlays side by side
    assert out.count(": bright ") + out.count(": dark ") == 3
    (tmp_path / "images" / "broken.png").unlink()
    (tmp_path / "images" / "img0.png").rename(tmp_path / "images" / "a\x1b[31mred.png")
    code, out, _ = run_cli(capsys, "explain", "--weights", path, tmp_path / "images", "--out", tmp_path / "out")
    assert code == 0 and "\x1b" not in out and "a\\x1b[31mred.png: " in out  # a file name cannot drive the terminal


def test_cli_features_of_one_image(blob_net, tmp_path, capsys):
    path, _ = blob_net
    _write_pngs(tmp_path / "images", 1)
    code, out, _ = run_cli(capsys, "explain", "--weights", path, tmp_path / "images" / "img0.png", "--features",
                           "--out", tmp_path / "out")
    assert code == 0 and "img0-features.png" in out
    with Image.open(tmp_path / "out" / "img0-features.png") as image:
        assert image.height > image.width / 4  # one row per stage
    code, _, err = run_cli(capsys, "explain", "--weights", path, tmp_path / "images", tmp_path / "images",
                           "--features")
    assert code == 2 and "--features explains one image; got 2" in err


@pytest.mark.parametrize("flags, message", [
    (["--method", "lime"], "unknown --method 'lime'; choose from gradcam, gradcam++, scorecam, eigencam"),
    (["--target", "cat"], "unknown class 'cat'; choose a name (bright, dark) or a number below 2"),
    (["--layer", "layer4"], "unknown layer 'layer4'; choose a stage (layer1, layer2, layer3)"),
    (["--layer", "fc"], "unknown layer 'fc'; choose a stage (layer1, layer2, layer3)"),
    (["--layer", "layer2.7"], "unknown layer 'layer2.7'"),
    (["--topk", "0"], "--topk must be >= 1, got 0"),
])
def test_cli_bad_flags_are_one_line_errors(blob_net, tmp_path, capsys, flags, message):
    path, _ = blob_net
    _write_pngs(tmp_path / "images", 1)
    code, _, err = run_cli(capsys, "explain", "--weights", path, tmp_path / "images", "--out", tmp_path / "out",
                           *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
