"""The bench's rounds, verdicts and share of peak; the one peak function bench and roofline share.

No timing is asserted: peaks are fakes, and speeds are only checked for their bookkeeping."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

import resnetlab.bench
import resnetlab.machine
from helpers import run_cli
from resnetlab import create_model
from resnetlab.bench import format_report, run_bench
from resnetlab.machine import Peak, measure_peaks

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_bench_and_roofline_take_their_peak_from_one_function(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    roofline = importlib.import_module("roofline")
    assert roofline.measure_peaks is resnetlab.machine.measure_peaks
    assert resnetlab.bench.measure_peaks is resnetlab.machine.measure_peaks


def test_the_peak_is_the_higher_of_the_units_and_the_matmul(monkeypatch):
    monkeypatch.setattr(resnetlab.machine, "unit_peaks", lambda threads: {"fp32": 100e9, "int8": 400e9})
    matmuls = {"fp32": 80e9, "bf16": 300e9, "int8": None}
    monkeypatch.setattr(resnetlab.machine, "matmul_macs_per_s", lambda precision, n, seconds: matmuls[precision])
    assert measure_peaks(2) == {"fp32": Peak(100e9, "vector units", 100e9, 80e9),
                                "bf16": Peak(300e9, "matmul", None, 300e9),  # AMX, or no bf16 kernel
                                "int8": Peak(400e9, "vector units", 400e9, None)}


def test_bench_times_each_batch_in_rounds_and_gives_the_share_of_a_fake_peak(monkeypatch):
    monkeypatch.setattr(resnetlab.bench, "measure_peaks", lambda **kwargs: {"fp32": Peak(1e12, "vector units")})
    model = create_model("resnet8", num_classes=10)
    report = run_bench(model, "resnet8", batch=3, size=32, seconds=0.04, rounds=2, paths=["eager", "folded-cl"])
    assert report.batches == [1, 3] and report.rounds == 2 and report.macs_per_image > 0
    assert report.peaks == {"fp32": {"gmacs_per_s": 1000.0, "source": "vector units"}}
    for result in report.results:
        assert not result.error and [speed.batch for speed in result.speeds] == [1, 3]
        for speed in result.speeds:
            assert speed.share_of_peak == pytest.approx(report.macs_per_image * speed.images_per_s / 1e12)
            assert speed.gflops == pytest.approx(2 * report.macs_per_image * speed.images_per_s / 1e9)
            assert speed.latency_p90_ms >= speed.latency_ms > 0 and speed.spread >= 0
        throughput = result.speeds[-1]  # the fields of earlier reports are the throughput batch's
        assert (result.images_per_s, result.latency_ms, result.ratio) == (throughput.images_per_s,
                                                                         throughput.latency_ms, throughput.ratio)
    reference, folded = report.results
    assert reference.name == "eager" and {s.verdict for s in reference.speeds} == {"reference"}
    assert all(s.verdict == "within noise" or s.verdict.endswith(("faster", "slower")) for s in folded.speeds)
    text = format_report(report)
    assert "batch 1 (latency)" in text and "batch 3 (throughput)" in text and "fp32 1000.0 (vector units)" in text


def test_a_precision_without_a_peak_has_no_share():
    model = create_model("resnet8", num_classes=10)
    report = run_bench(model, "resnet8", batch=2, size=32, seconds=0.04, rounds=2, latency_batch=None,
                       paths=["eager", "int8"], peaks={"fp32": 5e11})
    rows = {r.name: r for r in report.results}
    assert report.batches == [2] and report.peaks["fp32"]["source"] == "given"
    assert rows["eager"].speeds[0].share_of_peak is not None and rows["int8"].precision == "int8"
    assert rows["int8"].speeds[0].share_of_peak is None and rows["int8"].speeds[0].gflops > 0


def test_openvino_path_agrees_with_fp32():
    pytest.importorskip("openvino")
    model = create_model("resnet8", num_classes=10)
    report = run_bench(model, "resnet8", batch=2, size=32, seconds=0.04, rounds=2, latency_batch=None,
                       paths=["eager", "openvino-fp32"], peaks={})
    openvino = report.results[1]
    assert openvino.name == "openvino-fp32" and not openvino.error, openvino.error
    assert openvino.top1_agreement == 1.0 and openvino.max_abs_diff < 1e-3


def test_bench_cli_rounds(capsys, monkeypatch):
    monkeypatch.setattr(resnetlab.bench, "measure_peaks", lambda **kwargs: {})
    code, _, err = run_cli(capsys, "bench", "--model", "resnet8", "--rounds", 1)
    assert code == 2 and err.strip().endswith("rounds must be at least 2 (a spread needs two rounds), got 1")
    code, out, _ = run_cli(capsys, "bench", "--model", "resnet8", "--size", 32, "--batch", 2, "--seconds", 0.04,
                           "--rounds", 3, "--latency-batch", 0, "--paths", "eager", "--json")
    report = json.loads(out)
    assert code == 0 and report["rounds"] == 3 and report["batches"] == [2]
    assert [len(r["speeds"]) for r in report["results"]] == [1] and report["peaks"] == {}


def test_a_busy_verdict_holds_only_where_it_claims_nothing_the_quiet_run_contradicts(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    holds = importlib.import_module("inference_busy").holds
    assert holds("1.52x faster", "1.40x faster") and holds("1.52x faster", "within noise")
    assert holds("1.31x slower", "1.20x slower") and holds("within noise", "within noise")
    assert not holds("within noise", "1.10x faster")  # a false speed-up
    assert not holds("1.52x faster", "1.05x slower") and not holds("within noise", "1.20x slower")
    assert not holds("", "") and not holds("1.52x faster", "")  # a failed reference gives no verdicts
