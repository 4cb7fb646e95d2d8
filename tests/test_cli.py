"""The command line: listing, summary, and one-line errors with exit status 2."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys

import pytest
from PIL import Image

from helpers import Exploit, run_cli


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


# ---------------------------------------------------------------- train: bad input


def write_raw_idx(path, magic, dims, payload):
    """A gzipped idx file whose header claims ``dims``, then ``payload`` as it is (it may not fit them)."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload)


def bad_inputs(tmp_path):
    """(argv, fragment) pairs for inputs that must be refused in one line with status 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    write_raw_idx(corrupt / "train-images-idx3-ubyte.gz", 0x0801, [2, 28, 28], bytes(2 * 28 * 28))  # wrong magic
    write_raw_idx(corrupt / "train-labels-idx1-ubyte.gz", 0x0801, [2], bytes(2))
    write_raw_idx(corrupt / "t10k-images-idx3-ubyte.gz", 0x0803, [2, 28, 28], bytes(100))  # truncated
    write_raw_idx(corrupt / "t10k-labels-idx1-ubyte.gz", 0x0801, [2], bytes(2))
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(Exploit(f"touch {tmp_path / 'pwned'}")))
    no_images = tmp_path / "no_images"
    for cls in ("cat", "dog"):
        (no_images / cls).mkdir(parents=True)
        (no_images / cls / "notes.txt").write_text("no image here")
    one_class = tmp_path / "one_class" / "cat"
    one_class.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(one_class / f"{i}.png")
    toml = tmp_path / "bad.toml"
    toml.write_text("epochs = 1\nlearning_rate = 0.1\n")
    return [
        (["train", "--data", "cifar10", "--data-dir", str(empty)], "cifar10 not found; looked in"),
        (["train", "--data", "fashion-mnist", "--data-dir", str(corrupt)], "magic"),
        (["train", "--data", "cifar10", "--data-dir", str(tmp_path / "cifar")], "refused"),
        (["train", "--data", str(no_images)], "no valid file"),
        (["train", "--data", str(tmp_path / "one_class")], "only one class folder (cat)"),
        (["train", "--recipe", "imagenet"], "no folder imagenet in"),
        (["train", "--recipe", "slow"], "unknown recipe 'slow'"),
        (["train", "--config", str(toml), "--data", "synthetic"], "learning_rate"),
        (["train", "--batch-size", "0", "--data", "synthetic"], "batch_size must be from 1 to 65,536, got 0"),
        (["train", "--lr", "-0.1", "--data", "synthetic"], "lr must be a positive number"),
        (["train", "--erase", "1.5", "--data", "synthetic"], "erase (a probability) must be in"),
        (["train", "--data", "nosuchdataset"], "unknown dataset 'nosuchdataset'"),
        (["train", "--resume", str(empty)], "no checkpoint to resume"),
    ]


def test_train_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    runs = tmp_path / "runs"
    for argv, fragment in bad_inputs(tmp_path):
        if "--resume" not in argv:
            argv = [*argv, "--out", str(runs), "--quiet"]
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert fragment in err, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "pwned").exists()  # the CIFAR pickle was never executed
    assert not runs.exists() or not any(runs.iterdir())  # nothing half-written
