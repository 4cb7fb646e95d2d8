"""The command line: listing, summary, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from resnetlab.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_the_zoo_with_figures(capsys):
    code, out, _ = run_cli(capsys, "models", "resnet*0")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"resnet50", "resnet20", "resnet110"}
    assert "25,557,032" in lines["resnet50"] and "4.089" in lines["resnet50"]
    assert "269,722" in lines["resnet20"]


def test_models_json(capsys):
    code, out, _ = run_cli(capsys, "models", "resnet56", "--json")
    assert code == 0
    assert json.loads(out)[0]["params"] == 853_018


def test_summary_table_and_json(capsys):
    code, out, _ = run_cli(capsys, "summary", "resnet18", "--input-size", "1", "1", "224", "224",
                           "--num-classes", "10")
    assert code == 0
    assert "layer4" in out and "[1, 512, 7, 7]" in out and "MACs:" in out
    code, out, _ = run_cli(capsys, "summary", "resnet20", "--depth", "3", "--json",
                           "-o", "shortcut='B'")
    data = json.loads(out)
    assert data["total_params"] == 269_722 + 2_752
    assert data["output_shape"] == [1, 10]
    assert any(row["name"] == "layer2.0.downsample" for row in data["rows"])


@pytest.mark.parametrize("argv,fragment", [
    (["summary", "resnet5"], "unknown model 'resnet5'"),
    (["summary", "resnet21"], "6n+2"),
    (["summary", "resnet18", "-o", "groups=32"], "groups=1"),
    (["summary", "resnet50", "--input-size", "1", "3", "2", "2"], "too small"),
    (["summary", "resnet50", "--input-size", "1", "3", "x", "2"], "invalid int value"),
    (["summary", "resnet50", "-o", "noequals"], "not KEY=VALUE"),
    (["summary", "resnet50", "-o", "colour=1"], "unknown option(s) colour"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "resnetlab", "summary", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("resnetlab: error: unknown model 'nope'")
