"""The learning-rate range test: the lr ramp, the suggestion, divergence, the plot and the command."""

from __future__ import annotations

import json
import math

import pytest

from helpers import run_cli, tiny_config
from resnetlab.train.lr_find import lr_find, plot_lr_find, suggest_lr


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = [10 ** (-5 + i * 0.25) for i in range(25)]
    # flat, a fall that is steepest between lrs[11] and lrs[13], a minimum at lrs[18], then a rise
    smoothed = [2.0] * 10 + [1.9, 1.7, 1.2, 1.0, 0.9, 0.85, 0.82, 0.81, 0.8, 0.9, 1.5, 3.0, 6.0, 9.0, 20.0]
    steepest, minimum = suggest_lr(lrs, smoothed)
    assert steepest == lrs[12] and minimum == lrs[18]
    assert suggest_lr(lrs[:6], smoothed[:6]) == (None, None)  # too short to say
    assert suggest_lr(lrs, [1.0] * 5 + [0.5] + [2.0] * 19) == (None, lrs[5])  # the minimum comes first


def test_ramp_records_every_step_and_plots(tmp_path):
    result = lr_find(tiny_config(tmp_path), start_lr=1e-4, end_lr=1e-1, steps=12)
    assert result.stopped == "steps" and len(result.lrs) == len(result.losses) == len(result.smoothed) == 12
    assert result.lrs[0] == pytest.approx(1e-4) and result.lrs[-1] == pytest.approx(1e-1)
    ratios = {round(b / a, 9) for a, b in zip(result.lrs, result.lrs[1:])}
    assert len(ratios) == 1  # a geometric ramp
    assert all(math.isfinite(v) for v in result.losses)
    assert plot_lr_find(result, tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "runs").exists()  # nothing of the test is kept


def test_stops_when_the_loss_diverges(tmp_path):
    config = tiny_config(tmp_path, optimizer="sgd", lr=0.1)
    result = lr_find(config, start_lr=1e-2, end_lr=1e8, steps=40)
    assert result.stopped == "diverged" and len(result.losses) < 40


def test_command_writes_plot_and_json(capsys, tmp_path):
    code, out, err = run_cli(capsys, "lr-find", "--data", "synthetic", "--model", "resnet8", "--train-subset", "256",
                             "--batch-size", "32", "--precision", "fp32", "--no-channels-last", "--quiet",
                             "--steps", "12", "--end-lr", "1", "--plot", tmp_path / "lr.png",
                             "--json", tmp_path / "lr.json")
    assert code == 0, err
    assert "lr from 1e-05 to 1 over 12 steps" in out and (tmp_path / "lr.png").exists()
    record = json.loads((tmp_path / "lr.json").read_text())
    assert len(record["lrs"]) == 12 and record["config"]["model"] == "resnet8"


@pytest.mark.parametrize("flags, message", [
    (["--steps", "5"], "lr-find needs at least 10 steps, got 5"),
    (["--start-lr", "1", "--end-lr", "0.1"], "lr-find needs 0 < start_lr < end_lr, got 1 and 0.1"),
])
def test_bad_ranges_are_one_line(capsys, tmp_path, flags, message):
    code, out, err = run_cli(capsys, "lr-find", "--data", "synthetic", "--model", "resnet8", "--quiet",
                             "--plot", tmp_path / "lr.png", *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lr.png").exists()
