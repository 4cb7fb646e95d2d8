"""optimize_for_inference: fp32, bf16 and int8 (torch FX, ONNX Runtime), compiled or eager,
keeping what measures faster."""

from __future__ import annotations

import pytest
import torch

from helpers import randomize_norms
from resnetlab import create_model
from resnetlab.export import OnnxModel, compare
from resnetlab.optimize import optimize_for_inference

pytest.importorskip("onnxruntime")


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
    kept = kept_the_faster(auto.choice, r"(torch FX int8|ONNX Runtime int8|OpenVINO int8) \(measured per batch "
                                        r"of 8: torch FX int8 [\d.]+ ms, ONNX Runtime int8 [\d.]+ ms"
                                        r"(, OpenVINO int8 [\d.]+ ms)?\)")
    assert isinstance(auto.model, OnnxModel) == (kept == "ONNX Runtime int8")
    assert compare(model, auto, x).max_abs_diff < 0.25 * compare(model, auto, x).logit_scale
    import resnetlab.optimize

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'onnxscript'")

    with pytest.MonkeyPatch.context() as patch:  # auto falls back to torch FX when ONNX cannot be built
        patch.setattr(resnetlab.optimize, "onnx_runtime_model", broken)
        with pytest.warns(UserWarning, match="ONNX Runtime int8 could not be built .*onnxscript.*keeping the other"):
            fallback = optimize_for_inference(model, "int8", calibration=calibration, example=x)
        assert re.fullmatch(r"torch FX int8|\w.* \(measured per batch of 8: torch FX int8 [\d.]+ ms, OpenVINO int8 "
                            r"[\d.]+ ms\)", fallback.choice), fallback.choice
    onnx = optimize_for_inference(model, "int8", calibration=calibration, int8_engine="onnx")
    assert isinstance(onnx.model, OnnxModel) and onnx.choice == "ONNX Runtime int8"
    fp32 = optimize_for_inference(model, "fp32", example=x)  # compile="auto"
    kept = kept_the_faster(fp32.choice, r"(fp32 compiled|fp32 eager|fp32 OpenVINO) \(measured per batch of 8: "
                                        r"fp32 compiled [\d.]+ ms, fp32 eager [\d.]+ ms(, fp32 OpenVINO [\d.]+ ms)?\)")
    assert fp32.compiled == (kept == "fp32 compiled")
    assert compare(model, fp32, x).max_abs_diff <= 1e-4 * max(1.0, compare(model, fp32, x).logit_scale)
    with pytest.raises(ValueError, match="compile must be True, False, 'auto' or 'max-autotune', got 'yes'"):
        optimize_for_inference(model, "fp32", compile="yes")
    with pytest.raises(ValueError, match="unknown int8 engine 'tvm'"):
        optimize_for_inference(model, "int8", calibration=calibration, int8_engine="tvm")


def test_max_autotune_compiles_in_that_mode_and_matches_eager(monkeypatch):
    model = randomize_norms(create_model("resnet8"))
    x = torch.randn(4, 3, 32, 32)
    modes, compile_model = [], torch.compile

    def spy(module, **options):
        modes.append(options.get("mode"))
        return compile_model(module, **options)

    monkeypatch.setattr(torch, "compile", spy)
    tuned = optimize_for_inference(model, "fp32", compile="max-autotune", example=x)
    assert modes == ["max-autotune-no-cudagraphs"]
    assert tuned.compiled and tuned.choice == "fp32 compiled (max-autotune)"
    agreement = compare(model, tuned, x)
    assert agreement.max_abs_diff <= 1e-4 * max(1.0, agreement.logit_scale)


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
