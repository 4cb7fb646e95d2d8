"""OpenVINO: verified IR export (fp32, int8, bf16 where the CPU runs it) with its metadata, IR files
and the openvino engine in eval and predict, optimize_for_inference's OpenVINO candidate, refusals,
and the one-line message where openvino is not installed."""

from __future__ import annotations

import dataclasses
import html
import json
import re
import sys

import pytest
import torch

from helpers import assert_same_prediction, randomize_norms, run_cli
from resnetlab import create_model
from resnetlab.export import REGISTRY, compare, default_output, export_checkpoint, export_model, load_openvino
from resnetlab.inference import evaluate_checkpoint

pytest.importorskip("openvino")

import resnetlab.export.openvino as ov_export  # noqa: E402  (after the skip: it is only useful with openvino)

METADATA = {"arch": "resnet8", "options": {"num_classes": 10}, "class_names": list("abcdefghij")}


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_fp32_ir_is_verified_keeps_its_metadata_and_runs_in_eval_and_predict(trained, tmp_path, capsys):
    weights, _ = trained
    xml = tmp_path / "r8.xml"
    code, out, err = run_cli(capsys, "export", "--weights", weights, "--format", "openvino", "-o", xml,
                             "--data", "synthetic", "--json")
    assert code == 0, err
    result = json.loads(out)  # nothing else on stdout
    assert files(tmp_path) == ["r8.bin", "r8.xml"]
    assert result["bytes"] == xml.stat().st_size + (tmp_path / "r8.bin").stat().st_size
    agreement = result["agreement"]
    assert agreement["samples"] == 256 and agreement["top1_agreement"] == 1.0
    assert agreement["max_abs_diff"] <= 1e-4 * max(1.0, agreement["logit_scale"])

    loaded = load_openvino(xml)
    assert loaded.precision == "fp32" and loaded.metadata["arch"] == "resnet8"
    assert loaded.metadata["preprocessing"]["dataset"] == "synthetic"
    assert len(loaded.metadata["class_names"]) == loaded.num_classes == 10 and loaded.in_chans == 3
    model = create_model("resnet8", weights=weights).eval()
    for batch in (1, 3):  # the IR's batch, height and width are dynamic
        x = torch.randn(batch, 3, 32, 32)
        check = compare(model, loaded, x)
        assert check.max_abs_diff <= 1e-4 * max(1.0, check.logit_scale), batch

    reference = evaluate_checkpoint(weights, "synthetic")
    from_ir = evaluate_checkpoint(xml, "synthetic", engine="openvino")
    assert from_ir["test_top1"] == pytest.approx(reference["test_top1"], abs=1e-6)
    assert from_ir["precision"] == "as exported" and from_ir["engine"] == "openvino"
    assert_same_prediction(weights, xml, "openvino", tmp_path)
    code, out, _ = run_cli(capsys, "eval", "--weights", xml, "--engine", "openvino", "--data", "synthetic")
    assert code == 0 and "[openvino as exported]" in out
    code, _, err = run_cli(capsys, "eval", "--weights", xml, "--data", "synthetic")
    assert code == 2 and "r8.xml is an OpenVINO IR: run it with --engine openvino" in err
    code, _, err = run_cli(capsys, "eval", "--weights", xml, "--engine", "openvino", "--data", "synthetic",
                           "--report", tmp_path / "report")
    assert code == 2 and "is an OpenVINO file: pass the checkpoint it was exported from" in err


def test_engine_openvino_runs_a_checkpoint_as_torch_does(trained, capsys):
    weights, _ = trained
    reference = evaluate_checkpoint(weights, "synthetic")
    fp32 = evaluate_checkpoint(weights, "synthetic", engine="openvino")
    assert fp32["test_top1"] == pytest.approx(reference["test_top1"], abs=1e-6)
    assert fp32["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-4)
    int8 = evaluate_checkpoint(weights, "synthetic", engine="openvino", precision="int8")
    assert abs(int8["test_top1"] - reference["test_top1"]) <= 2.0
    code, out, err = run_cli(capsys, "eval", "--weights", weights, "--engine", "openvino", "--data", "synthetic")
    assert code == 0, err
    assert f"[openvino fp32]: top-1 {reference['test_top1']:.2f}%" in out


def test_int8_ir_is_quantized_by_nncf_and_verified(trained, tmp_path, capsys):
    pytest.importorskip("nncf")
    weights, _ = trained
    code, out, err = run_cli(capsys, "export", "--weights", weights, "--format", "openvino", "--precision", "int8",
                             "--calibration", "synthetic", "-o", tmp_path / "q.xml", "--json")
    assert code == 0, err
    result = json.loads(out)  # NNCF's progress bars kept off stdout
    assert result["precision"] == "int8" and result["agreement"]["top1_agreement"] >= 0.95
    assert files(tmp_path) == ["q.bin", "q.xml"]
    model = create_model("resnet8", weights=weights).eval()
    export_model(model, tmp_path / "f.xml", "openvino", "fp32", inputs=torch.randn(8, 3, 32, 32))
    assert (tmp_path / "q.bin").stat().st_size < (tmp_path / "f.bin").stat().st_size / 2  # int8 weights
    loaded = load_openvino(tmp_path / "q.xml")
    assert loaded.precision == "int8" and loaded.metadata["arch"] == "resnet8"


def test_bf16_runs_where_the_cpu_does_and_is_refused_in_one_line_elsewhere(tmp_path, monkeypatch):
    model = randomize_norms(create_model("resnet8")).eval()
    inputs = torch.randn(64, 3, 32, 32)
    if ov_export.cpu_runs_bf16():
        result = export_model(model, tmp_path / "b.xml", "openvino", "bf16", inputs=inputs, metadata=METADATA)
        assert result.agreement.top1_agreement >= 0.98
        loaded = load_openvino(tmp_path / "b.xml")
        assert loaded.precision == "bf16" and loaded._config["INFERENCE_PRECISION_HINT"] == "bf16"
    monkeypatch.setattr(ov_export, "cpu_runs_bf16", lambda core=None: False)
    with pytest.raises(ValueError, match=r"^OpenVINO bf16 needs a CPU that runs bf16 .*accepted here: fp32, int8$"):
        export_model(model, tmp_path / "new" / "c.xml", "openvino", "bf16", inputs=inputs)
    assert not (tmp_path / "new").exists()


def test_a_mismatching_ir_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    model = randomize_norms(create_model("resnet8")).eval()
    inputs = torch.randn(16, 3, 32, 32)
    target = tmp_path / "new" / "folder" / "m.xml"
    with pytest.raises(ValueError, match="misses the tolerance.*nothing written"):
        # OpenVINO's convolutions sum in another order than PyTorch's
        export_model(model, target, "openvino", "fp32", inputs=inputs, max_abs_diff=1e-12)
    assert files(tmp_path) == []  # neither file, nor the folders made for them
    other = create_model("resnet8").eval()  # another model's IR written in place of this one's
    swapped = dataclasses.replace(REGISTRY["openvino"], write=lambda m, *args: ov_export.write_openvino(other, *args))
    monkeypatch.setitem(REGISTRY, "openvino", swapped)
    with pytest.raises(ValueError, match="misses the tolerance"):
        export_model(model, target, "openvino", "fp32", inputs=inputs)
    assert files(tmp_path) == []
    with pytest.raises(ValueError, match=r"openvino is written as a \.xml file and its \.bin beside it"):
        export_model(model, tmp_path / "m.onnx", "openvino", "fp32", inputs=inputs)


def test_corrupt_or_tampered_irs_are_refused_in_one_line(trained, tmp_path, capsys):
    model = randomize_norms(create_model("resnet8", num_classes=10)).eval()
    export_model(model, tmp_path / "m.xml", "openvino", "fp32", inputs=torch.randn(8, 3, 32, 32), metadata=METADATA)
    text, weights = (tmp_path / "m.xml").read_text(), (tmp_path / "m.bin").read_bytes()
    stored = re.search(r'<metadata value="([^"]*)"', text).group(1)
    assert json.loads(html.unescape(stored)) == METADATA

    def variant(name, xml=None, bin_bytes=None):
        (tmp_path / f"{name}.xml").write_text(text if xml is None else xml)
        if bin_bytes is not False:
            (tmp_path / f"{name}.bin").write_bytes(weights if bin_bytes is None else bin_bytes)
        return tmp_path / f"{name}.xml"

    def metadata(value):
        return text.replace(stored, html.escape(value, quote=True))

    cases = [
        (variant("short", bin_bytes=weights[:1000]), "is not an OpenVINO IR OpenVINO can read: Incorrect weights"),
        (variant("nobin", bin_bytes=False), "is not an OpenVINO IR OpenVINO can read"),
        (variant("garbage", xml="<net>garbage"), "is not an OpenVINO IR OpenVINO can read"),
        (variant("names", xml=metadata(json.dumps(dict(METADATA, class_names=5)))),
         "metadata class_names is 5; accepted: a list of 1 to 1,000,000 names"),
        (variant("count", xml=metadata(json.dumps(dict(METADATA, class_names=["a", "b"])))),
         "metadata class_names has 2 names for a head of 10 classes"),
        (variant("json", xml=metadata("{not json")), "has unreadable resnetlab metadata"),
        (variant("precision", xml=text.replace('<precision value="fp32"', '<precision value="fp8"')),
         "rt_info precision is 'fp8'; accepted: fp32, bf16, int8"),
    ]
    for path, fragment in cases:
        with pytest.raises(ValueError) as error:
            load_openvino(path)
        assert fragment in str(error.value) and "\n" not in str(error.value), (path.name, str(error.value))
    code, _, err = run_cli(capsys, "predict", "--weights", tmp_path / "names.xml", "--engine", "openvino",
                           tmp_path / "m.xml")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "metadata class_names is 5" in err


def test_missing_openvino_or_nncf_is_one_line_naming_the_extra(trained, tmp_path, capsys, monkeypatch):
    weights, _ = trained
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    with pytest.raises(ValueError, match=r"^OpenVINO int8 needs nncf: pip install 'resnetlab\[openvino\]'$"):
        ov_export.quantize_openvino_int8(None, torch.zeros(1, 3, 32, 32))
    monkeypatch.setitem(sys.modules, "openvino", None)
    for args in (["export", "--weights", weights, "--format", "openvino", "-o", tmp_path / "m.xml"],
                 ["eval", "--weights", weights, "--engine", "openvino", "--data", "synthetic"]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.strip() == "resnetlab: error: OpenVINO is not installed: pip install " \
                                           "'resnetlab[openvino]'", err
    assert files(tmp_path) == []


def test_default_output_and_the_weights_never_overwritten(tmp_path):
    from pathlib import Path

    assert default_output("runs/x/best.safetensors", "openvino", "int8") == Path("runs/x/best-int8.xml")
    weights = tmp_path / "m.bin"  # a .bin checkpoint, which the IR's weights file would replace
    torch.save(create_model("resnet8").state_dict(), weights)
    with pytest.raises(ValueError, match=r"output .*m\.bin would overwrite the weights; pass -o"):
        export_checkpoint(weights, "openvino", output=tmp_path / "m.xml", model_name="resnet8")


def test_optimize_for_inference_times_openvino_in_every_precision(monkeypatch):
    import resnetlab.optimize as optimize

    model = randomize_norms(create_model("resnet8")).eval()
    x, calibration = torch.randn(8, 3, 32, 32), torch.randn(64, 3, 32, 32)
    candidate = optimize._openvino_candidate(model, "fp32", x)
    assert list(candidate) == ["fp32 OpenVINO"]
    check = compare(model, candidate["fp32 OpenVINO"], x)
    assert check.max_abs_diff <= 1e-4 * max(1.0, check.logit_scale)
    int8 = optimize._openvino_candidate(model, "int8", x, calibration)["OpenVINO int8"]
    assert int8.precision == "int8" and compare(model, int8, x).top1_agreement >= 0.5
    bf16 = optimize._openvino_candidate(model, "bf16", x)
    assert list(bf16) == (["bf16 OpenVINO"] if ov_export.cpu_runs_bf16() else [])  # silently absent elsewhere
    if bf16:
        kept = optimize.optimize_for_inference(model, "bf16", example=x)
        assert "bf16 OpenVINO " in kept.choice and compare(model, kept, x).top1_agreement >= 0.75
    monkeypatch.setattr(optimize, "cpu_runs_bf16", lambda: False)
    assert optimize._openvino_candidate(model, "bf16", x) == {}
    monkeypatch.setattr(optimize.importlib.util, "find_spec", lambda name: None)
    assert optimize._openvino_candidate(model, "fp32", x) == {}  # without openvino: the other engines only


def test_bench_times_the_openvino_paths_this_machine_runs(trained, monkeypatch):
    from resnetlab.bench import default_paths, run_bench

    assert {"openvino-fp32", "openvino-int8"} <= set(default_paths())
    assert ("openvino-bf16" in default_paths()) == ov_export.cpu_runs_bf16()
    weights, _ = trained
    report = run_bench(create_model("resnet8", weights=weights), "resnet8", batch=4, size=32, seconds=0.05,
                       paths=["eager", "openvino-fp32", "openvino-int8"])
    rows = {r.name: r for r in report.results}
    assert not any(r.error for r in report.results), [r.error for r in report.results]
    assert rows["openvino-int8"].precision == "int8" and rows["openvino-fp32"].images_per_s > 0
    assert rows["openvino-fp32"].max_abs_diff < 1e-2  # BatchNorm folded: float rounding only
    import resnetlab.bench

    monkeypatch.setattr(resnetlab.bench, "cpu_runs_bf16", lambda: False)
    assert "openvino-bf16" not in resnetlab.bench.default_paths()
