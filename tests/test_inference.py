"""Inference: evaluate_checkpoint, Predictor, and the eval and predict commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_cli, tiny_config
from resnetlab.data.inputs import ImagePreprocess, to_8bit
from resnetlab.inference import Predictor, evaluate_checkpoint
from resnetlab.models import build_model
from resnetlab.train import resolve_config, train
from resnetlab.weights import save_weights

# ---------------------------------------------------------------- a trained checkpoint


def test_eval_and_predict_a_trained_checkpoint(tmp_path):
    result = train(tiny_config(tmp_path, name="ev", epochs=2))
    weights = Path(result["run_dir"]) / "best.safetensors"
    metrics = evaluate_checkpoint(weights, "synthetic")
    assert metrics["samples"] == 1024 and len(metrics["per_class_top1"]) == 10
    assert metrics["test_top1"] > 50.0
    assert sum(map(sum, metrics["confusion"])) == 1024

    Image.new("RGB", (57, 31), (200, 10, 10)).save(tmp_path / "red.png")
    Image.new("L", (20, 20), 128).save(tmp_path / "gray.jpg")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    predictions = list(Predictor(weights).predict([tmp_path / "red.png", tmp_path / "gray.jpg",
                                                   tmp_path / "broken.png"], topk=3))
    assert [bool(p.error) for p in predictions] == [False, False, True]
    assert len(predictions[0].classes) == 3 and predictions[0].classes[0].startswith("class")
    assert all(0.0 <= p <= 1.0 for p in predictions[0].probabilities)
    assert predictions[0].probabilities == sorted(predictions[0].probabilities, reverse=True)


def test_eval_and_predict_refuse_weights_of_another_architecture(tmp_path, capsys):
    weights = save_weights(build_model("resnet8"), tmp_path / "r8.safetensors", "resnet8",
                           options={"num_classes": 10, "in_chans": 3})
    for argv in (["eval", "--weights", str(weights), "--data", "synthetic", "--model", "resnet20"],
                 ["predict", "--weights", str(weights), "--model", "resnet20", str(weights)]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and "resnet8, not a resnet20" in err and len(err.strip().splitlines()) == 1
    torchvision_like = tmp_path / "r18.pth"
    torch.save(build_model("resnet18").state_dict(), torchvision_like)
    code, _, err = run_cli(capsys, "eval", "--weights", str(torchvision_like), "--data", "synthetic",
                           "--model", "resnet20")
    assert code == 2 and "does not fit" in err and len(err.strip().splitlines()) == 1


def test_eval_and_predict_commands_on_a_trained_checkpoint(tmp_path, capsys):
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
    rng = np.random.default_rng(seed)
    for name, level, other in (("dark", 40, 210), ("light", 210, 40)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            noise = rng.integers(-30, 30, (32, 32, 3))
            pixels = np.clip((other if i < 3 else level) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_16bit_images_are_scaled_to_8bit_not_clipped(tmp_path, capsys):
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
    state = weights.with_name("last.state.pt")
    state.write_bytes(b"a run's training state")
    code, _, err = run_cli(capsys, "eval", "--weights", str(weights), "--data", str(folder), "--confusion", str(state))
    assert code == 2 and "is not a .png file name" in err and state.read_bytes() == b"a run's training state"


def test_eval_per_class_accuracy_matches_the_confusion_matrix_and_the_labels(tmp_path, capsys):
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


def test_predict_escapes_control_characters_in_file_names(tmp_path, capsys):
    weights = tiny_checkpoint(tmp_path / "w.safetensors")
    hostile = tmp_path / "a\x1b[31mred\nname.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(hostile)
    (tmp_path / "bad\x07.png").write_bytes(b"not an image")
    code, out, err = run_cli(capsys, "predict", "--weights", str(weights), str(hostile), str(tmp_path / "bad\x07.png"))
    assert code == 1 and "\x1b" not in out + err and "\x07" not in out + err
    assert out.count("\n") == 1 and "a\\x1b[31mred\\x0aname.png: " in out
    assert err.count("\n") == 1 and "bad\\x07.png: error: cannot read image" in err


def test_confusion_csv_quotes_class_names(tmp_path):
    import csv

    from resnetlab.train.outputs import write_final_outputs

    classes = ['a, "quoted" one', "line\nbreak", "plain"]
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [1, 0, 5]])
    history = [dict(epoch=1, train_loss=1.0, train_top1=50.0, test_loss=1.0, test_top1=50.0)]
    write_final_outputs(tmp_path, history, "t", confusion, classes, "test")
    rows = list(csv.reader((tmp_path / "confusion.csv").open(newline="")))
    assert rows[0] == ["true\\predicted", *classes]
    assert [row[0] for row in rows[1:]] == classes and [list(map(int, row[1:])) for row in rows[1:]] == \
        confusion.tolist()


def test_images_are_resized_with_the_weights_interpolation(tmp_path):
    """timm's weights say bicubic; predict and eval resize with what the weights' preprocessing names."""
    from torchvision.transforms import functional as TF

    path = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(path)
    pre = dict(input_size=[32, 32], crop_fraction=1.0, mean=[0.0] * 3, std=[1.0] * 3)
    bicubic = ImagePreprocess(dict(pre, interpolation="bicubic"), 3)(path)
    with Image.open(path) as image:
        expected = TF.center_crop(TF.resize(image, 32, interpolation=TF.InterpolationMode.BICUBIC), [32, 32])
    assert torch.equal(bicubic, TF.pil_to_tensor(expected).float() / 255)
    assert not torch.equal(bicubic, ImagePreprocess(pre, 3)(path))  # bilinear when the weights do not say
    with pytest.raises(ValueError, match="unknown interpolation 'lanczos'"):
        ImagePreprocess(dict(pre, interpolation="lanczos"), 3)
