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


# ---------------------------------------------------------------- eval and predict: folders, 16-bit, flip, confusion


def tiny_checkpoint(path, flip_tta=None, in_chans=3, shift_tta=None):
    """An untrained resnet8 for 2 classes (dark, light) at 32 x 32; its predictions follow brightness."""
    import torch

    from resnetlab.models import build_model
    from resnetlab.weights import save_weights

    torch.manual_seed(0)
    preprocessing = dict(mean=[0.5] * in_chans, std=[0.25] * in_chans, input_size=[32, 32], dataset="cifar10")
    for view, recorded in (("flip_tta", flip_tta), ("shift_tta", shift_tta)):
        if recorded is not None:
            preprocessing[view] = recorded
    options = {"num_classes": 2, "in_chans": in_chans}
    return save_weights(build_model("resnet8", **options), path, "resnet8", options=options,
                        class_names=["dark", "light"], preprocessing=preprocessing)


def write_class_folder(root, count=10, seed=0):
    """root/dark and root/light with `count` noisy 32 x 32 images each, 3 of each class at the other's level."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, level, other in (("dark", 40, 210), ("light", 210, 40)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            noise = rng.integers(-30, 30, (32, 32, 3))
            pixels = np.clip((other if i < 3 else level) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_16bit_images_are_scaled_to_8bit_not_clipped(tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image

    from resnetlab.data.inputs import ImagePreprocess, to_8bit
    from resnetlab.inference import Predictor

    grey8, grey16 = tmp_path / "grey8.png", tmp_path / "grey16.png"
    Image.new("L", (40, 40), 128).save(grey8)
    Image.fromarray(np.full((40, 40), 32768, dtype=np.uint16)).save(grey16)
    ramp8 = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (64, 1))  # 64 x 64, 0 .. 252
    ramp16 = ramp8 * 257 + np.random.default_rng(0).integers(0, 128, ramp8.shape, dtype=np.uint16)
    Image.fromarray(ramp8.astype(np.uint8)).save(tmp_path / "ramp8.png")
    Image.fromarray(ramp16).save(tmp_path / "ramp16.png")
    assert Image.open(grey16).mode == "I;16"

    for mode in ("I;16B", "I;16L"):  # the other 16-bit layouts, and "I" (16-bit PGM)
        image = Image.frombytes(mode, (64, 64), ramp16.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
        assert np.array_equal(np.asarray(to_8bit(image)), ramp8), mode
    assert np.array_equal(np.asarray(to_8bit(Image.fromarray(ramp16.astype(np.int32)))), ramp8)
    Image.fromarray(ramp16).save(tmp_path / "ramp16.pgm")
    assert Image.open(tmp_path / "ramp16.pgm").mode == "I"

    weights = tiny_checkpoint(tmp_path / "w.safetensors")
    predictor = Predictor(weights)
    for in_chans in (1, 3):  # read as grey ("L") and as RGB
        prepare = ImagePreprocess({"mean": [0.5] * in_chans, "std": [0.25] * in_chans, "input_size": [32, 32],
                                   "dataset": "cifar10"}, in_chans)
        for a, b in (("grey8.png", "grey16.png"), ("ramp8.png", "ramp16.png"), ("ramp8.png", "ramp16.pgm")):
            x8, x16 = prepare(tmp_path / a), prepare(tmp_path / b)
            assert torch.allclose(x8 * 0.25 + 0.5, x16 * 0.25 + 0.5, atol=1 / 255 + 1e-6), (in_chans, b)
    assert float(prepare(grey16).mean()) == pytest.approx((128 / 255 - 0.5) / 0.25, abs=1e-5)  # mid-grey, not white
    for a, b in (("grey8.png", "grey16.png"), ("ramp8.png", "ramp16.png")):
        p8, p16 = predictor.predict([tmp_path / a, tmp_path / b])
        assert p8.classes == p16.classes and p8.probabilities == pytest.approx(p16.probabilities, abs=1e-3)
    code, out, _ = run_cli(capsys, "predict", "--weights", str(weights), str(grey8), str(grey16))
    lines = out.splitlines()
    assert code == 0 and lines[0].split(": ")[1] == lines[1].split(": ")[1]


def test_eval_on_a_folder_reads_all_its_images_or_its_split(tmp_path, capsys):
    weights = tiny_checkpoint(tmp_path / "w.safetensors")
    flat = write_class_folder(tmp_path / "shapes")
    code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(flat))
    assert code == 0, err
    assert out.startswith(f"{flat} (folder: all 20 images): top-1 ") and "(20 images)" in out
    assert (tmp_path / "w-confusion-shapes-all.png").is_file()

    split = tmp_path / "split"
    write_class_folder(split / "train", count=6)
    write_class_folder(split / "val", count=4, seed=1)
    for argv, samples, which in ((), 8, "val"), (("--split", "train"), 12, "train"):
        code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(split), "--json", *argv)
        result = json.loads(out)
        assert code == 0 and result["samples"] == samples and result["split"] == which, err
        assert result["description"] == f"{split} (folder: {which}/, {samples} images)"
        assert sum(map(sum, result["confusion"])) == samples
        assert result["confusion_png"] == str(tmp_path / f"w-confusion-split-{which}.png")
    (split / "val").rename(split / "test")
    code, out, _ = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(split), "--json")
    assert code == 0 and json.loads(out)["split"] == "test" and json.loads(out)["samples"] == 8
    (split / "test").rename(split / "later")
    code, _, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(split))
    assert code == 2 and "has train/ but no val/ or test/ for the test split" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(tmp_path / "nosuch"))
    assert code == 2 and "is not a dataset name" in err and len(err.strip().splitlines()) == 1
    (flat / "dark" / "broken.png").write_text("not an image")
    code, _, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(flat))
    assert code == 2 and f"cannot read image {flat / 'dark' / 'broken.png'}" in err
    assert len(err.strip().splitlines()) == 1


def test_eval_writes_the_confusion_matrix_by_default(tmp_path, capsys):
    weights = tiny_checkpoint(tmp_path / "w.safetensors")
    folder = write_class_folder(tmp_path / "shapes")
    default = tmp_path / "w-confusion-shapes-all.png"
    code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder))
    assert code == 0 and err == ""
    assert out.splitlines()[-1] == f"confusion matrix written to {default}"
    assert default.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = tmp_path / "plots" / "cm.png"
    code, out, _ = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder), "--confusion", str(chosen))
    assert code == 0 and chosen.is_file() and out.splitlines()[-1] == f"confusion matrix written to {chosen}"

    default.unlink()
    default.mkdir()  # the default location cannot be written: a warning, the figures, exit 0
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder))
    assert code == 0 and "top-1" in out and "written" not in out
    assert err.startswith(f"resnetlab: warning: cannot write the confusion matrix to {default}")
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder), "--json")
    assert code == 0 and json.loads(out)["confusion_png"] is None and "warning" in err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder),
                             "--confusion", str(blocked / "cm.png"))  # given, and cannot be written: an error
    assert code == 2 and "top-1" in out and len(err.strip().splitlines()) == 1
    assert err.startswith(f"resnetlab: error: cannot write the confusion matrix to {blocked / 'cm.png'}")
    assert sorted(tmp_path.rglob("*")) == sorted([*before, blocked])  # nothing half-written
    code, _, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder),
                           "--confusion", str(weights))
    assert code == 2 and "would overwrite the weights" in err


def test_eval_per_class_accuracy_matches_the_confusion_matrix_and_the_labels(tmp_path, capsys):
    from resnetlab.inference import Predictor

    weights = tiny_checkpoint(tmp_path / "w.safetensors")
    folder = write_class_folder(tmp_path / "shapes")
    code, out, _ = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder), "--json")
    result = json.loads(out)
    confusion = result["confusion"]
    assert code == 0 and result["classes"] == ["dark", "light"] and [sum(row) for row in confusion] == [10, 10]
    from_matrix = [100.0 * row[i] / sum(row) for i, row in enumerate(confusion)]
    assert result["per_class_top1"] == pytest.approx(from_matrix)
    # Independently: each file's own prediction against the class folder it is in.
    correct = {"dark": 0, "light": 0}
    for prediction in Predictor(weights).predict([folder]):
        correct[prediction.path.split("/")[-2]] += prediction.classes[0] == prediction.path.split("/")[-2]
    from_labels = [100.0 * correct[name] / 10 for name in result["classes"]]
    assert result["per_class_top1"] == pytest.approx(from_labels)
    assert any(0 < value < 100 for value in from_labels)  # the check is not trivially 0 / 100
    assert result["test_top1"] == pytest.approx(sum(correct.values()) / 20 * 100)
    code, out, _ = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder))
    printed = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  ")}
    assert printed == {name: f"{value:.2f}%" for name, value in zip(result["classes"], from_labels)}


def test_eval_averages_the_mirror_and_shifts_in_when_the_checkpoint_says_so(tmp_path, capsys):
    from resnetlab.inference import Predictor, evaluate_checkpoint

    folder = write_class_folder(tmp_path / "shapes")
    flipped = tiny_checkpoint(tmp_path / "flip.safetensors", flip_tta=True)
    shifted = tiny_checkpoint(tmp_path / "shift.safetensors", shift_tta=True)
    plain = tiny_checkpoint(tmp_path / "plain.safetensors")  # no flip_tta or shift_tta key: off, as before
    with_mirror = evaluate_checkpoint(flipped, str(folder), flip_tta=True)
    without = evaluate_checkpoint(flipped, str(folder), flip_tta=False)
    with_shifts = evaluate_checkpoint(plain, str(folder), shift_tta=True)
    assert with_mirror["test_loss"] != pytest.approx(without["test_loss"], abs=1e-6)
    assert with_shifts["test_loss"] != pytest.approx(without["test_loss"], abs=1e-6)

    def cli_eval(weights, *flags):
        code, out, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder), "--json", *flags)
        assert code == 0, err
        return json.loads(out)

    for weights, flags, expected in ((flipped, (), with_mirror), (flipped, ("--no-flip-tta",), without),
                                     (plain, (), without), (plain, ("--flip-tta",), with_mirror),
                                     (shifted, (), with_shifts), (shifted, ("--no-shift-tta",), without),
                                     (plain, ("--shift-tta",), with_shifts)):
        result = cli_eval(weights, *flags)
        assert (result["flip_tta"], result["shift_tta"]) == (expected["flip_tta"], expected["shift_tta"]), flags
        assert result["test_loss"] == pytest.approx(expected["test_loss"], abs=1e-6), (weights, flags)
        assert result["confusion"] == expected["confusion"], (weights, flags)
    code, out, _ = run_cli(capsys, "eval", "--weights", str(flipped), "--data", str(folder))
    assert code == 0 and out.startswith(f"{folder} (folder: all 20 images) [flip-tta]: top-1 ")
    assert Predictor(flipped).flip_tta and not Predictor(flipped, flip_tta=False).flip_tta
    assert not Predictor(plain).flip_tta
    code, out, _ = run_cli(capsys, "eval", "--weights", str(shifted), "--data", str(folder), "--flip-tta")
    assert code == 0 and out.startswith(f"{folder} (folder: all 20 images) [flip-tta shift-tta]: top-1 ")
    assert Predictor(shifted).shift_tta and not Predictor(shifted, shift_tta=False).shift_tta
    assert not Predictor(plain).shift_tta
