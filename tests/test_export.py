"""Export: BN folding, verified ONNX / TorchScript / safetensors files, the onnx engine in eval
and predict, the format registry, and bad input (OpenVINO: tests/test_openvino.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_same_prediction, randomize_norms, run_cli
from resnetlab import create_model, list_models
from resnetlab.export import (
    FORMAT_PRECISIONS,
    FORMATS,
    REGISTRY,
    OnnxModel,
    compare,
    default_output,
    export_checkpoint,
    export_model,
    fold_batchnorm,
    load_export,
)
from resnetlab.inference import evaluate_checkpoint
from resnetlab.models import get_spec

pytest.importorskip("onnxruntime")


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


# resnet1202 is resnet110's blocks 10 times over: its ONNX export takes a minute on one core, and what could fail
# at that depth, torch.export (which the ONNX exporter runs) and scripting, is tested in test_models.py.
@pytest.mark.parametrize("name", [name for name in list_models() if name != "resnet1202"])
def test_onnx_and_torchscript_export_with_dynamic_batch_for_every_architecture(name, tmp_path):
    spec = get_spec(name)
    size = spec.input_size[-1] if spec.input_size[-1] <= 32 else 64
    model = randomize_norms(create_model(name, num_classes=10))
    inputs = torch.randn(4, 3, size, size)
    with torch.no_grad():
        if not bool(torch.isfinite(model(inputs)).all()):  # 200 residual blocks of random weights overflow fp32
            for block in model.modules():
                if hasattr(block, "last_norm"):
                    block.last_norm().weight.mul_(0.05)
        assert bool(torch.isfinite(model(inputs)).all())  # verification refuses what it cannot compare
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
        if fmt == "openvino":  # an optional extra, with its own tests: tests/test_openvino.py
            continue
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
    import onnx

    tampered = onnx.load(str(tmp_path / "m-fp32.onnx"))
    entry = next(p for p in tampered.metadata_props if p.key == "resnetlab")
    entry.value = json.dumps(dict(metadata, class_names=list("abc")))
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    with pytest.raises(ValueError, match=r"tampered.onnx: metadata class_names has 3 names for a head of 10 classes"):
        OnnxModel(tmp_path / "tampered.onnx")
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
    assert_same_prediction(weights, onnx_file, "onnx", tmp_path)
    code, out, _ = run_cli(capsys, "eval", "--weights", onnx_file, "--engine", "onnx", "--data", "synthetic")
    assert code == 0 and "[onnx as exported]" in out


def test_export_bad_input_is_one_line_exit_2_and_writes_nothing(trained, tmp_path, capsys):
    weights, _ = trained
    np.save(tmp_path / "gray.npy", np.zeros((8, 1, 32, 32), dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((8, 32, 32), dtype=np.float32))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    run = tmp_path / "run"  # another training run's folder: its files are never an export's target
    run.mkdir()
    (run / "run.json").write_text("{}")
    cases = [
        (["--format", "safetensors", "-o", run / "best.safetensors"], f"is a file of the training run in {run}"),
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
    assert list(out.iterdir()) == [] and sorted(p.name for p in run.iterdir()) == ["run.json"]
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


def test_the_registry_names_each_format_its_suffix_precisions_and_default_output(trained, tmp_path):
    assert FORMATS == tuple(REGISTRY) and FORMAT_PRECISIONS == {f: REGISTRY[f].precisions for f in FORMATS}
    assert default_output("runs/x/best.safetensors", "onnx", "int8") == Path("runs/x/best-int8.onnx")
    assert default_output("best.safetensors", "torchscript", "bf16") == Path("best-bf16.ts")
    weights, _ = trained
    with pytest.raises(ValueError, match="would overwrite the weights; pass -o"):
        export_checkpoint(weights, "safetensors", output=weights)
    with pytest.raises(ValueError, match="--samples must be >= 1, got 0"):
        export_checkpoint(weights, "onnx", samples=0, output=tmp_path / "m.onnx")


def test_verification_refuses_nan_logits_and_nan_inputs(tmp_path):
    """A check that cannot fail on the worst input is the most dangerous kind: NaN never passes."""
    from resnetlab.export import Agreement

    model = create_model("resnet8", num_classes=3).eval()
    images = torch.randn(4, 3, 16, 16)
    broken = create_model("resnet8", num_classes=3).eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.fc.bias.fill_(float("nan"))
    agreement = compare(model, broken, images)
    assert agreement.non_finite == 4 and agreement.max_abs_diff == float("inf")
    assert not agreement.within("fp32") and not agreement.within("int8", min_agreement=0.0)
    assert "NaN or infinite logits on 4" in agreement.describe()
    both_nan = compare(broken, broken, images)  # identical NaN logits agree on nothing
    assert both_nan.top1_agreement == 0.0 and not both_nan.within("bf16", min_agreement=0.0)
    assert Agreement(0.0, 1.0, 1.0, 4).within("fp32")
    metadata = dict(arch="resnet8", options=dict(num_classes=3))
    with pytest.raises(ValueError, match=r"nothing written") as error:
        export_model(broken, tmp_path / "nan.safetensors", "safetensors", inputs=images, metadata=metadata)
    assert "NaN or infinite logits" in str(error.value) and not (tmp_path / "nan.safetensors").exists()
    nan_inputs = images.clone()
    nan_inputs[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^verification data holds NaN or infinite values"):
        export_model(model, tmp_path / "x.safetensors", "safetensors", inputs=nan_inputs, metadata=metadata)
