"""The command line: listing, summary, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------- train, eval, predict: bad input


def write_idx(path, magic, dims, payload):
    import gzip
    import struct

    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload)


def bad_inputs(tmp_path):
    """(argv, fragment) pairs for inputs that must be refused in one line with status 2."""
    import pickle

    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    write_idx(corrupt / "train-images-idx3-ubyte.gz", 0x0801, [2, 28, 28], bytes(2 * 28 * 28))  # wrong magic
    write_idx(corrupt / "train-labels-idx1-ubyte.gz", 0x0801, [2], bytes(2))
    write_idx(corrupt / "t10k-images-idx3-ubyte.gz", 0x0803, [2, 28, 28], bytes(100))  # truncated
    write_idx(corrupt / "t10k-labels-idx1-ubyte.gz", 0x0801, [2], bytes(2))
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(Exploit()))
    no_images = tmp_path / "no_images"
    for cls in ("cat", "dog"):
        (no_images / cls).mkdir(parents=True)
        (no_images / cls / "notes.txt").write_text("no image here")
    one_class = tmp_path / "one_class" / "cat"
    one_class.mkdir(parents=True)
    from PIL import Image

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
        (["train", "--batch-size", "0", "--data", "synthetic"], "batch_size must be >= 1"),
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


def test_eval_and_predict_refuse_weights_of_another_architecture(tmp_path, capsys):
    from resnetlab.models import build_model
    from resnetlab.weights import save_weights

    weights = save_weights(build_model("resnet8"), tmp_path / "r8.safetensors", "resnet8",
                           options={"num_classes": 10, "in_chans": 3})
    for argv in (["eval", "--weights", str(weights), "--data", "synthetic", "--model", "resnet20"],
                 ["predict", "--weights", str(weights), "--model", "resnet20", str(weights)]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "resnet8, not a resnet20" in err and len(err.strip().splitlines()) == 1
    torchvision_like = tmp_path / "r18.pth"
    import torch

    torch.save(build_model("resnet18").state_dict(), torchvision_like)
    code, _, err = run_cli(capsys, "eval", "--weights", str(torchvision_like), "--data", "synthetic",
                           "--model", "resnet20")
    assert code == 2 and "does not fit" in err and len(err.strip().splitlines()) == 1


def test_eval_and_predict_commands_on_a_trained_checkpoint(tmp_path, capsys):
    from PIL import Image

    from resnetlab.train import resolve_config, train

    config = resolve_config("default", overrides=dict(
        model="resnet8", data="synthetic", batch_size=32, epochs=1, precision="fp32", channels_last=False,
        augment="none", flip_tta=False, quiet=True, train_subset=256, test_subset=128,
        out=str(tmp_path / "runs"), name="cli"))
    weights = tmp_path / "runs" / "cli" / "best.safetensors"
    train(config)
    capsys.readouterr()  # the training's own lines

    png = tmp_path / "confusion.png"
    code, out, _ = run_cli(capsys, "eval", "--weights", str(weights), "--data", "synthetic", "--confusion", str(png))
    assert code == 0 and out.startswith("synthetic test: top-1 ")
    assert sum(line.startswith("  class") for line in out.splitlines()) == 10  # per-class accuracy
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    photos = tmp_path / "photos"
    (photos / "nested").mkdir(parents=True)
    Image.new("RGB", (50, 40), (10, 200, 10)).save(photos / "green.png")
    Image.new("L", (17, 17), 90).save(photos / "nested" / "grey.jpg")
    (photos / "notes.png").write_text("not an image")
    for precision in ("fp32", "bf16", "int8"):
        code, out, err = run_cli(capsys, "predict", "--weights", str(weights), str(photos), "--topk", "2",
                                 "--precision", precision)
        lines = out.strip().splitlines()
        assert code == 1, (precision, err)  # one file was unreadable
        assert len(lines) == 2 and all(line.count("class") == 2 for line in lines), (precision, out)
        assert err.count("notes.png: error:") == 1 and len(err.strip().splitlines()) == 1, (precision, err)
