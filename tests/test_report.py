"""The error analysis of `resnetlab eval --report` (analysis/report.py)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from helpers import run_cli
from resnetlab.analysis.report import calibration_bins, collect_outputs, confused_pairs, evaluation_report
from resnetlab.data import DeviceLoader, load_dataset
from resnetlab.weights import load_model


def test_ece_of_a_worked_example():
    confidences = torch.tensor([0.85, 0.85, 0.55, 0.25])
    correct = torch.tensor([True, False, True, False])
    ece, bins = calibration_bins(confidences, correct, bins=10)
    # bins (0.8, 0.9]: accuracy 0.5 at 0.85; (0.5, 0.6]: 1 at 0.55; (0.2, 0.3]: 0 at 0.25
    assert ece == pytest.approx(0.5 * 0.35 + 0.25 * 0.45 + 0.25 * 0.25)
    assert [b["count"] for b in bins] == [0, 0, 1, 0, 0, 1, 0, 0, 2, 0]


def test_ece_equals_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    confidences = torch.rand(1000, generator=generator) * 0.9 + 0.1
    correct = torch.rand(1000, generator=generator) < confidences ** 2
    ece, _ = calibration_bins(confidences, correct, bins=15)
    direct = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        members = [i for i in range(1000) if low < float(confidences[i]) <= high]
        if members:
            accuracy = sum(bool(correct[i]) for i in members) / len(members)
            confidence = sum(float(confidences[i]) for i in members) / len(members)
            direct += len(members) / 1000 * abs(accuracy - confidence)
    assert ece == pytest.approx(direct, abs=1e-5)
    assert ece > 0.05  # the made-up model is overconfident


def test_confused_pairs_count_off_diagonal_cells():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    predictions = torch.tensor([1, 1, 0, 0, 1, 1, 0, 2])
    pairs = confused_pairs(labels, predictions, ["a", "b", "c"])
    assert pairs[0] == dict(true="a", predicted="b", count=2)
    assert sorted((p["true"], p["predicted"], p["count"]) for p in pairs[1:]) == [
        ("b", "a", 1), ("c", "a", 1), ("c", "b", 1)]


def _direct_top_losses(weights, k):
    """The k wrong test predictions made with the highest probability, computed in one pass."""
    model, _ = load_model(weights)
    dataset = load_dataset("synthetic", "test")
    x = torch.cat([x for x, _ in DeviceLoader(dataset, 1000, train=False)])
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x), dim=1)
    confidence, predicted = probs.max(1)
    wrong = (predicted != dataset.labels).nonzero().flatten()
    order = sorted(wrong.tolist(), key=lambda i: -float(confidence[i]))
    return order[:k], int(wrong.numel())


def test_top_losses_are_the_most_confident_mistakes(trained):
    weights, _ = trained
    model, _ = load_model(weights)
    dataset = load_dataset("synthetic", "test")
    outputs = collect_outputs(model, DeviceLoader(dataset, 37, train=False), torch.device("cpu"), keep=12)
    expected, wrong = _direct_top_losses(weights, 12)
    assert wrong >= 12  # the net makes enough mistakes for the test to choose among them
    assert outputs.mistakes.tolist() == expected
    assert outputs.mistake_inputs.shape == (12, *dataset.images.shape[1:])
    assert (outputs.predictions != outputs.labels).sum() == wrong


def test_report_files(trained, tmp_path):
    weights, top1 = trained
    report = evaluation_report(weights, "synthetic", tmp_path / "report", batch_size=100, top_losses=8)
    expected, _ = _direct_top_losses(weights, 8)
    assert [row["index"] for row in report["top_losses"]] == expected
    assert all(row["true"] != row["predicted"] for row in report["top_losses"])
    assert report["top1"] == pytest.approx(top1, abs=0.01)
    assert report["cam"] == "gradcam"
    assert report["samples"] == sum(b["count"] for b in report["calibration_bins"])
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == report
    for name in ("top-losses.png", "per-class.png", "reliability.png"):
        with Image.open(tmp_path / "report" / name) as image:
            assert image.width > 300 and image.height > 200


def test_eval_report_cli(trained, tmp_path, capsys):
    weights, _ = trained
    code, out, _ = run_cli(capsys, "eval", "--weights", weights, "--data", "synthetic", "--report", tmp_path / "r",
                           "--top-losses", "4", "--confusion", tmp_path / "confusion.png")
    assert code == 0
    assert "calibration: ECE" in out and f"report written to {tmp_path / 'r'}/" in out
    assert len(json.loads((tmp_path / "r" / "report.json").read_text())["top_losses"]) == 4
    code, _, err = run_cli(capsys, "eval", "--weights", weights, "--data", "synthetic", "--report", tmp_path / "x",
                           "--top-losses", "0")
    assert code == 2 and "--top-losses must be >= 1, got 0" in err
    code, _, err = run_cli(capsys, "eval", "--weights", weights, "--data", "synthetic", "--report",
                           tmp_path / "confusion.png")
    assert code == 2 and "is a file; give a folder" in err
    code, _, err = run_cli(capsys, "eval", "--weights", tmp_path / "model.onnx", "--data", "synthetic", "--engine",
                           "onnx", "--report", tmp_path / "x")
    assert code == 2 and "model.onnx is an ONNX file: pass the checkpoint it was exported from" in err
