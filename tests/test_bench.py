"""The bench: every inference path's speed against torchvision and its agreement with fp32."""

from __future__ import annotations

import json
import re

import pytest
import torch

from helpers import run_cli
from resnetlab import create_model
from resnetlab.bench import bench_checkpoint, format_report, run_bench

pytest.importorskip("onnxruntime")


def test_bench_measures_every_path_against_torchvision(trained):
    model = create_model("resnet18", num_classes=10)
    report = run_bench(model, "resnet18", batch=2, size=32, seconds=0.05,
                       paths=["torchvision", "eager", "folded-cl", "onednn-graph", "onnx-fp32", "int8", "onnx-int8"])
    rows = {r.name: r for r in report.results}
    assert list(rows) == ["torchvision", "eager", "folded-cl", "onednn-graph", "onnx-fp32", "int8", "onnx-int8"]
    assert not any(r.error for r in report.results), [r.error for r in report.results]
    assert rows["torchvision"].ratio == 1.0 and rows["eager"].max_abs_diff == 0.0
    assert all(r.images_per_s > 0 and r.latency_ms > 0 for r in report.results)
    with torch.no_grad():
        logit_scale = float(model(torch.randn(2, 3, 32, 32)).abs().max())
    assert rows["folded-cl"].max_abs_diff <= 1e-4 * max(1.0, logit_scale)
    weights, _ = trained  # a CIFAR net has no torchvision twin: resnetlab eager is the reference
    report = run_bench(create_model("resnet8", weights=weights), "resnet8", batch=4, size=32, seconds=0.05,
                       paths=["eager", "int8"])
    assert report.reference.startswith("resnetlab eager") and report.results[0].name == "eager"


def test_bench_times_the_automatic_choice_beside_its_peers(trained):
    weights, _ = trained
    report = run_bench(create_model("resnet8", weights=weights), "resnet8", batch=4, size=32, seconds=0.05,
                       paths=["eager", "int8", "onnx-int8", "auto-int8"])
    auto = report.results[-1]
    assert auto.name == "auto-int8" and not auto.error and auto.precision == "int8"
    assert re.match(r"optimize_for_inference int8, automatic choice: (torch FX|ONNX Runtime|OpenVINO) int8 "
                    r"\(measured per batch of 4: ", auto.description), auto.description  # what it measured and kept
    assert [speed.batch for speed in auto.speeds] == [1, 4] and auto.top1_agreement > 0.9
    for speed in auto.speeds:  # judged against the fastest of the paths it chose from, in the same rounds
        fastest = max((r for r in report.results if r.name in ("int8", "onnx-int8")),
                      key=lambda r: next(s.images_per_s for s in r.speeds if s.batch == speed.batch))
        assert speed.best_peer == fastest.name and speed.against_best_peer
    assert "against " in format_report(report)


def test_bench_cli_json_with_real_labels(trained, capsys, tmp_path):
    weights, _ = trained
    code, out, _ = run_cli(capsys, "bench", "--weights", weights, "--batch", 4, "--size", 32, "--seconds", 0.05,
                           "--data", "synthetic", "--samples", 128, "--paths", "eager", "int8", "--json",
                           "--output", tmp_path / "bench.json")
    assert code == 0
    report = json.loads(out)
    assert report == json.loads((tmp_path / "bench.json").read_text())
    assert report["check_images"] == "synthetic test (128 images)"
    assert [r["name"] for r in report["results"]] == ["eager", "int8"]
    assert all(r["accuracy"] is not None for r in report["results"])


def test_bench_cli_exits_1_when_a_path_fails_and_still_reports(trained, capsys, tmp_path, monkeypatch):
    import resnetlab.bench

    def no_runtime(path):
        raise RuntimeError("no ONNX Runtime on this machine")

    monkeypatch.setattr(resnetlab.bench, "OnnxModel", no_runtime)
    weights, _ = trained
    code, out, err = run_cli(capsys, "bench", "--weights", weights, "--batch", 2, "--size", 32, "--seconds", 0.05,
                             "--paths", "eager", "onnx-fp32", "--output", tmp_path / "bench.json")
    assert code == 1
    assert err.strip().splitlines()[-1] == "resnetlab: error: 1 of 2 paths failed: onnx-fp32 (the report names why)"
    assert "failed" in out and "no ONNX Runtime on this machine" in out
    rows = {r["name"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert rows["eager"]["images_per_s"] > 0 and "no ONNX Runtime" in rows["onnx-fp32"]["error"]


def test_bench_checkpoint_needs_a_model_or_weights():
    with pytest.raises(ValueError, match="pass --model NAME or --weights FILE"):
        bench_checkpoint()


def test_the_paths_help_names_every_path(capsys):
    from resnetlab.bench import PATHS
    from resnetlab.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(re.sub(r"-\s+", "-", capsys.readouterr().out).split())  # joined where help wraps at a hyphen
    listed = text.split("a subset of: ")[1].split(" (")[0].split()
    assert listed == list(PATHS)
