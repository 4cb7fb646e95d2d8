"""Inference paths and export: BN folding, optimize_for_inference, verified ONNX / TorchScript /
safetensors files, the onnx engine in eval and predict, the bench, and bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from resnetlab import create_model, list_models
from resnetlab.bench import run_bench
from resnetlab.cli import main
from resnetlab.export import (
    FORMAT_PRECISIONS,
    FORMATS,
    OnnxModel,
    compare,
    export_model,
    fold_batchnorm,
    load_export,
    optimize_for_inference,
)
from resnetlab.inference import Predictor, evaluate_checkpoint
from resnetlab.models import get_spec
from resnetlab.train import resolve_config, train

pytest.importorskip("onnxruntime")


def randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) * 0.2 - 0.1)
    return model.eval()


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A resnet8 trained briefly on the synthetic dataset: (weights path, its fp32 test accuracy)."""
    out = tmp_path_factory.mktemp("runs")
    config = resolve_config("default", overrides=dict(
        model="resnet8", data="synthetic", batch_size=64, epochs=3, precision="fp32", channels_last=False,
        optimizer="adamw", lr=0.003, schedule="cosine", augment="none", flip_tta=False, quiet=True, out=str(out),
        name="r8"))
    result = train(config)
    return Path(result["run_dir"]) / "best.safetensors", result["test_top1"]


@pytest.mark.parametrize("name,options", [("resnet20", {}), ("resnet50", {}), ("resnet18", {"stem": "deep"}),
                                          ("resnet20", {"shortcut": "B"}), ("resnext50_32x4d", {})])
def test_fold_batchnorm_is_exact_and_leaves_no_conv_bn_pair(name, options):
    model = randomize_norms(create_model(name, **options))
    folded = fold_batchnorm(model)
    x = torch.randn(4, 3, 64, 64)
    agreement = compare(model, folded, x)
    assert agreement.max_abs_diff <= 1e-5 * max(1.0, agreement.logit_scale)
    remaining = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # Only the deep stem's bn1 follows a Sequential rather than a conv; everything else is folded.
    assert len(remaining) == (1 if options.get("stem") == "deep" else 0)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_optimize_for_inference_paths(trained):
    weights, _ = trained
    model = create_model("resnet8", weights=weights).eval()
    x = torch.randn(32, 3, 32, 32)
    fp32 = optimize_for_inference(model, "fp32", compile=False)
    agreement = compare(model, fp32, x)
    assert agreement.max_abs_diff <= 1e-4 and agreement.top1_agreement == 1.0
    assert fp32(x).dtype == torch.float32 and not fp32(x).requires_grad
    bf16 = optimize_for_inference(model, "bf16", compile=False)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert compare(model, bf16, x).top1_agreement >= 0.9
    with pytest.raises(ValueError, match="int8 needs calibration"):
        optimize_for_inference(model, "int8")
    with pytest.raises(ValueError, match=r"shape \[8, 1, 32, 32\]; the model takes N x 3 x H x W"):
        optimize_for_inference(model, "int8", calibration=torch.randn(8, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown precision 'fp8'; accepted: fp32, bf16, int8"):
        optimize_for_inference(model, "fp8")
    int8 = optimize_for_inference(model, "int8", calibration=torch.randn(64, 3, 32, 32), int8_engine="torch")
    quantized = [m for m in int8.model.modules() if "quantized" in type(m).__module__]
    assert quantized, "int8 holds quantized modules"
    assert compare(model, int8, x).max_abs_diff < 0.25 * compare(model, int8, x).logit_scale


def test_auto_keeps_the_int8_engine_and_the_compilation_that_measure_faster(trained):
    import re

    weights, _ = trained
    model = create_model("resnet8", weights=weights).eval()
    x, calibration = torch.randn(8, 3, 32, 32), torch.randn(64, 3, 32, 32)

    def kept_the_faster(choice: str, pattern: str) -> str:
        match = re.fullmatch(pattern, choice)
        assert match, choice
        times = {name: float(ms) for name, ms in re.findall(r"(\w[\w ]*?) ([\d.]+) ms", choice.split(": ", 1)[1])}
        assert times[match.group(1)] == min(times.values()), choice  # (as printed: ties can happen)
        return match.group(1)

    auto = optimize_for_inference(model, "int8", calibration=calibration, example=x)
    kept = kept_the_faster(auto.choice, r"(torch FX int8|ONNX Runtime int8) \(measured per batch of 8: "
                                        r"torch FX int8 [\d.]+ ms, ONNX Runtime int8 [\d.]+ ms\)")
    assert isinstance(auto.model, OnnxModel) == (kept == "ONNX Runtime int8")
    assert compare(model, auto, x).max_abs_diff < 0.25 * compare(model, auto, x).logit_scale
    import resnetlab.export

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnxscript'")

    with pytest.MonkeyPatch.context() as patch:  # auto falls back to torch FX when ONNX cannot be built
        patch.setattr(resnetlab.export, "onnx_runtime_model", broken)
        with pytest.warns(UserWarning, match="ONNX Runtime int8 could not be built .*onnxscript.*keeping torch FX"):
            fallback = optimize_for_inference(model, "int8", calibration=calibration, example=x)
        assert fallback.choice == "torch FX int8"
    onnx = optimize_for_inference(model, "int8", calibration=calibration, int8_engine="onnx")
    assert isinstance(onnx.model, OnnxModel) and onnx.choice == "ONNX Runtime int8"
    fp32 = optimize_for_inference(model, "fp32", example=x)  # compile="auto"
    kept = kept_the_faster(fp32.choice, r"(fp32 compiled|fp32 eager) \(measured per batch of 8: "
                                        r"fp32 compiled [\d.]+ ms, fp32 eager [\d.]+ ms\)")
    assert fp32.compiled == (kept == "fp32 compiled")
    assert compare(model, fp32, x).max_abs_diff <= 1e-4 * max(1.0, compare(model, fp32, x).logit_scale)
    with pytest.raises(ValueError, match="compile must be True, False or 'auto', got 'yes'"):
        optimize_for_inference(model, "fp32", compile="yes")
    with pytest.raises(ValueError, match="unknown int8 engine 'tvm'"):
        optimize_for_inference(model, "int8", calibration=calibration, int8_engine="tvm")


def test_compiled_path_matches_eager():
    model = randomize_norms(create_model("resnet20"))
    x = torch.randn(4, 3, 32, 32)
    # A model of the same class compiled before at another batch size kept the next from freezing.
    optimize_for_inference(create_model("resnet8").eval(), "fp32", compile=True, example=torch.randn(8, 3, 32, 32))
    compiled = optimize_for_inference(model, "fp32", compile=True, example=x)
    agreement = compare(model, compiled, x)
    assert agreement.max_abs_diff <= 1e-4 * max(1.0, agreement.logit_scale)
    # frozen: the compiled graph holds its own (prepacked) conv weights, not the module's, at every batch size
    other = torch.randn(16, 3, 32, 32)
    before, before_other = compiled(x), compiled(other)
    with torch.no_grad():
        for conv in [m for m in compiled.model.modules() if isinstance(m, torch.nn.Conv2d)]:
            conv.weight.zero_()
    assert torch.equal(compiled(x), before) and torch.equal(compiled(other), before_other)


@pytest.mark.parametrize("name", list_models())
def test_onnx_and_torchscript_export_with_dynamic_batch_for_every_architecture(name, tmp_path):
    spec = get_spec(name)
    size = spec.input_size[-1] if spec.input_size[-1] <= 32 else 64
    model = randomize_norms(create_model(name, num_classes=10))
    inputs = torch.randn(4, 3, size, size)
    for fmt in ("onnx", "torchscript"):
        result = export_model(model, tmp_path / f"{name}.{fmt}", fmt, "fp32", inputs=inputs,
                              metadata={"arch": name})
        assert result.agreement.top1_agreement == 1.0
        loaded = load_export(Path(result.path), fmt)
        for batch in (1, 3):  # neither is the batch of 2 the file was exported with
            x = torch.randn(batch, 3, size, size)
            agreement = compare(model, loaded, x)
            assert agreement.max_abs_diff <= 1e-4 * max(1.0, agreement.logit_scale), (fmt, batch)


def test_every_format_and_precision_writes_a_verified_file_with_metadata(trained, tmp_path):
    weights, _ = trained
    model = create_model("resnet8", weights=weights).eval()
    inputs, calibration = torch.randn(64, 3, 32, 32), torch.randn(128, 3, 32, 32)
    metadata = {"arch": "resnet8", "options": {"num_classes": 10}, "class_names": list("abcdefghij")}
    for fmt in FORMATS:
        for precision in FORMAT_PRECISIONS[fmt]:
            path = tmp_path / f"m-{precision}.{fmt}"
            result = export_model(model, path, fmt, precision, inputs=inputs, calibration=calibration,
                                  metadata=metadata)
            assert path.is_file() and result.bytes == path.stat().st_size
            assert result.agreement.samples == 64
    fp32_size = (tmp_path / "m-fp32.onnx").stat().st_size
    assert (tmp_path / "m-int8.onnx").stat().st_size < fp32_size / 2
    assert (tmp_path / "m-bf16.safetensors").stat().st_size < (tmp_path / "m-fp32.safetensors").stat().st_size / 1.8
    assert OnnxModel(tmp_path / "m-fp32.onnx").metadata["class_names"] == list("abcdefghij")
    extra = {"resnetlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(tmp_path / "m-fp32.torchscript"), _extra_files=extra)
    assert json.loads(extra["resnetlab.json"])["arch"] == "resnet8"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_static_batch_onnx_runs_any_batch_in_chunks(tmp_path):
    model = randomize_norms(create_model("resnet8"))
    export_model(model, tmp_path / "static.onnx", "onnx", "fp32", inputs=torch.randn(8, 3, 32, 32),
                 dynamic_batch=False)
    loaded = OnnxModel(tmp_path / "static.onnx")
    assert loaded.fixed_batch == 1
    x = torch.randn(5, 3, 32, 32)
    assert torch.allclose(loaded(x), model(x), atol=1e-4)


@pytest.mark.parametrize("fmt,precision,tolerance", [
    ("torchscript", "bf16", dict(min_agreement=1.01)),
    ("onnx", "fp32", dict(max_abs_diff=1e-12)),  # ONNX Runtime's convolutions sum in another order
    # int8 calibrated on images 10^4 times too bright: real activations round to zero, far below 95% agreement
    ("onnx", "int8", dict(calibration=1e4 * torch.randn(8, 3, 32, 32))),
    ("torchscript", "int8", dict(calibration=1e4 * torch.randn(8, 3, 32, 32))),
])
def test_a_file_missing_the_tolerance_is_refused_and_nothing_is_written(tmp_path, fmt, precision, tolerance):
    model = randomize_norms(create_model("resnet8"))
    target = tmp_path / "new" / "folder" / f"m.{fmt}"
    with pytest.raises(ValueError, match="misses the tolerance.*nothing written"):
        export_model(model, target, fmt, precision, inputs=torch.randn(16, 3, 32, 32), **tolerance)
    assert list(tmp_path.iterdir()) == []  # not even the folders made for it


def test_eval_and_predict_on_onnx_runtime_and_int8(trained, tmp_path, capsys):
    weights, top1 = trained
    reference = evaluate_checkpoint(weights, "synthetic")
    assert reference["test_top1"] == pytest.approx(top1)
    for engine, precision in (("onnx", "fp32"), ("torch", "int8"), ("onnx", "int8"), ("torch", "bf16")):
        result = evaluate_checkpoint(weights, "synthetic", engine=engine, precision=precision)
        tolerance = 1e-6 if precision == "fp32" else 2.0
        assert abs(result["test_top1"] - reference["test_top1"]) <= tolerance, (engine, precision)
    onnx_file = tmp_path / "r8.onnx"
    code, out, _ = run_cli(capsys, "export", "--weights", weights, "--format", "onnx", "-o", onnx_file,
                           "--data", "synthetic")
    assert code == 0 and "verified on synthetic test (256 images)" in out and onnx_file.is_file()
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    torch_top = next(Predictor(weights).predict([image]))
    onnx_top = next(Predictor(onnx_file, engine="onnx").predict([image]))
    assert onnx_top.classes == torch_top.classes
    assert onnx_top.probabilities == pytest.approx(torch_top.probabilities, abs=1e-4)
    code, out, _ = run_cli(capsys, "eval", "--weights", onnx_file, "--engine", "onnx", "--data", "synthetic")
    assert code == 0 and "[onnx as exported]" in out


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


def test_export_bad_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, capsys):
    weights, _ = trained
    np.save(tmp_path / "gray.npy", np.zeros((8, 1, 32, 32), dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((8, 32, 32), dtype=np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["--format", "tflite"], "unknown format 'tflite'; accepted: onnx, torchscript, safetensors"),
        (["--format", "onnx", "--precision", "fp8"], "unknown precision 'fp8'"),
        (["--format", "onnx", "--precision", "bf16"], "bf16 cannot be exported as onnx"),
        (["--format", "onnx", "--precision", "int8", "--calibration", tmp_path / "gray.npy"],
         "shape [8, 1, 32, 32]; the model takes N x 3 x H x W"),
        (["--format", "onnx", "--precision", "int8", "--calibration", tmp_path / "flat.npy"],
         "shape [8, 32, 32]"),
        (["--format", "onnx", "--precision", "int8", "--calibration", "nowhere"], "is not a dataset name"),
        (["--format", "onnx", "--model", "resnet20"], "holds a resnet8, not a resnet20"),
        (["--format", "onnx", "-o", blocker / "m.onnx"], "cannot write"),
    ]
    for extra, fragment in cases:
        args = ["export", "--weights", weights, *extra]
        if "-o" not in extra:
            args += ["-o", out / "m.onnx"]
        code, _, err = run_cli(capsys, *args)
        assert code == 2, (extra, err)
        assert fragment in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert list(out.iterdir()) == []
    mismatched = tmp_path / "r20.pth"
    torch.save(create_model("resnet20").state_dict(), mismatched)
    code, _, err = run_cli(capsys, "export", "--weights", mismatched, "--model", "resnet8", "--format", "onnx",
                           "-o", out / "m.onnx")
    assert code == 2 and "does not fit" in err and list(out.iterdir()) == []
    code, _, err = run_cli(capsys, "eval", "--weights", weights, "--data", "synthetic", "--engine", "tensorrt")
    assert code == 2 and "unknown engine 'tensorrt'; accepted: torch, onnx" in err


def test_torchscript_export_survives_the_stale_operator_ids_torch_library_leaves(tmp_path):
    import torch.ao.quantization.fx.convert  # noqa: F401  redefines quantized_decomposed ops, freeing the old ones

    model = create_model("resnet8", num_classes=10).eval()
    table = torch.jit._builtins._get_builtin_table()
    key = id(model.conv1._reversed_padding_repeated_twice)  # shared by the copies export makes
    assert key not in table
    # What the table holds once a freed operator's address is reused by this tuple.
    table[key] = "quantized_decomposed::quantize_per_tensor"
    try:
        with warnings.catch_warnings(), pytest.raises(RuntimeError, match="builtin cannot be used as a value"):
            warnings.simplefilter("ignore")
            torch.jit.script(model)
        x = torch.randn(4, 3, 32, 32)
        result = export_model(model, tmp_path / "m.torchscript", "torchscript", "fp32", inputs=x)
        assert result.agreement.top1_agreement == 1.0
        assert key not in table
    finally:
        table.pop(key, None)
