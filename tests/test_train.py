"""Training: config, outputs, exact resume, crash recovery, divergence, eval and predict."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import real_fashion_mnist, tiny_config
from resnetlab.inference import Predictor
from resnetlab.train import RECIPES, Trainer, TrainingDiverged, resolve_config, resume, train
from resnetlab.train.config import load_toml, to_toml
from resnetlab.weights import load_model, read_checkpoint


def test_recipes_resolve_and_toml_round_trips(tmp_path):
    for name in RECIPES:
        config = resolve_config(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(to_toml(config))
        assert resolve_config(name, config_file=path) == config
    paper = resolve_config("paper-cifar")
    assert (paper.iterations, paper.lr, paper.weight_decay, paper.batch_size) == (64000, 0.1, 1e-4, 128)
    assert paper.schedule == "multistep" and paper.milestones == [0.5, 0.75]
    # the measured figures in README were taken as overrides of the default recipe
    measured = dict(model="resnet20", epochs=44, augment="crop-flip", erase=0.25, progressive_min_size=16,
                    shift_tta=True, prune_easy=0.5, eval_every=18)
    assert resolve_config("accurate") == resolve_config("default", overrides=measured)
    fast = dict(model_options=dict(widths=[32, 64, 128], stem_pool=True), epochs=5, lr=0.2, nesterov=True)
    assert resolve_config("fast") == resolve_config("default", overrides=fast)


def test_the_fast_recipe_trains_a_net_at_half_the_side_that_loads_back(tmp_path):
    config = resolve_config("fast", overrides=dict(data="synthetic", train_subset=64, test_subset=32, epochs=1,
                                                   batch_size=16, out=str(tmp_path / "runs"), name="fast",
                                                   quiet=True))
    result = train(config)
    model, metadata = load_model(Path(result["run_dir"]) / "last.safetensors")
    assert metadata["arch"] == "resnet14" and isinstance(model.maxpool, torch.nn.MaxPool2d)
    assert [stage[0].conv1.out_channels for stage in (model.layer1, model.layer2, model.layer3)] == [32, 64, 128]
    synthetic = torch.rand(2, 3, 32, 32)  # the synthetic dataset's images
    (features,) = model.forward_intermediates(synthetic, indices=[1], intermediates_only=True)
    assert features.shape == (2, 32, 16, 16)


def test_model_options_add_to_those_of_the_recipe_and_file(tmp_path):
    path = tmp_path / "options.toml"
    path.write_text("[model_options]\nwidths = [32, 64, 128]\n")
    config = resolve_config("imagenet", config_file=path, overrides=dict(model_options=dict(shortcut="B")))
    assert config.model_options == dict(zero_init_residual=True, widths=[32, 64, 128], shortcut="B")
    overridden = resolve_config("imagenet", overrides=dict(model_options=dict(zero_init_residual=False)))
    assert overridden.model_options == dict(zero_init_residual=False)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(recipe="nope"), "unknown recipe 'nope'"),
    (dict(overrides=dict(batch_size=0)), "batch_size must be from 1 to 65,536, got 0"),
    (dict(overrides=dict(lr=-0.1)), "lr must be a positive number"),
    (dict(overrides=dict(gamma=-1.0)), "gamma (the multistep lr factor) must be a positive number, got -1.0"),
    (dict(overrides=dict(lr="fast")), "lr must be a number"),
    (dict(overrides=dict(colour=1)), "unknown config key(s) colour"),
    (dict(overrides=dict(schedule="linear")), "unknown schedule"),
    (dict(overrides=dict(eval_every=0)), "eval_every must be >= 1"),
    (dict(overrides=dict(progressive_min_size=2)), "progressive_min_size must be 0 (off) or a side length >= 4, got 2"),
    (dict(overrides=dict(progressive_ramp=[0.8, 0.2])), "progressive_ramp must be [start, end] with 0 <= start"),
    (dict(overrides=dict(progressive_ramp=[0.5])), "progressive_ramp must be [start, end]"),
    (dict(overrides=dict(name="../../escaped")), "name must be a plain folder name (created under out), got '../../"),
    (dict(overrides=dict(name="/tmp/elsewhere")), "name must be a plain folder name"),
    (dict(overrides=dict(name="..")), "name must be a plain folder name"),
    (dict(overrides=dict(warmup_epochs=float("inf"))), "warmup_epochs must be a number >= 0, got inf"),
    (dict(overrides=dict(checkpoint_every=-1)), "checkpoint_every must be >= 0 (0: once per epoch), got -1"),
    (dict(overrides=dict(stop_after_steps=-1)), "stop_after_steps must be >= 0 (0: never), got -1"),
    (dict(overrides=dict(image_size=4)), "image_size must be 0 (automatic) or from 8 to 4,096 pixels, got 4"),
    (dict(overrides=dict(pad=100000)), "pad must be from 0 to 64 pixels, got 100000"),
    (dict(overrides=dict(model_options=dict(num_classes=0))), "num_classes and in_chans come from the data"),
])
def test_bad_config_values(kwargs, fragment):
    with pytest.raises(ValueError, match=None) as info:
        resolve_config(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_unknown_key_in_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('epochs = 3\nlearning_rate = 0.1\n')
    with pytest.raises(ValueError, match="unknown config key.*learning_rate.*bad.toml"):
        resolve_config("default", config_file=path)


def test_training_writes_every_output(tmp_path):
    config = tiny_config(tmp_path, name="run", epochs=3)
    result = train(config)
    run = Path(result["run_dir"])
    for name in ("best.safetensors", "last.safetensors", "last.state.pt", "curves.png", "confusion.png",
                 "confusion.csv", "metrics.csv", "metrics.json", "config.toml"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*tmp"))  # no temporary files left behind
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:4] == ["epoch", "step", "lr", "train_loss"] and len(lines) == 4
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert history[-1]["step"] == 3 * (512 // 32)
    assert result["test_top1"] > 30.0  # learnable data: well above the 10% of chance
    assert load_toml(run / "config.toml")["model"] == "resnet8"
    state, metadata = read_checkpoint(run / "best.safetensors")
    assert metadata["arch"] == "resnet8" and metadata["class_names"][0] == "class0"
    assert metadata["options"] == {"num_classes": 10, "in_chans": 3}
    assert metadata["preprocessing"]["input_size"] == [32, 32]


def test_training_records_its_test_views_for_eval_and_predict(tmp_path):
    result = train(tiny_config(tmp_path, name="views", epochs=1, flip_tta=True, shift_tta=True))
    weights = Path(result["run_dir"]) / "last.safetensors"
    _, metadata = read_checkpoint(weights)
    assert metadata["preprocessing"]["flip_tta"] is True and metadata["preprocessing"]["shift_tta"] is True
    assert Predictor(weights).flip_tta and Predictor(weights).shift_tta
    assert not Predictor(weights, shift_tta=False).shift_tta


def test_eval_every_skips_epochs_but_always_evaluates_the_last(tmp_path):
    result = train(tiny_config(tmp_path, name="sparse", epochs=5, eval_every=2))
    run = Path(result["run_dir"])
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history if row["test_top1"] is not None] == [2, 4, 5]
    assert history[0]["test_loss"] is None and history[0]["train_loss"] > 0
    lines = (run / "metrics.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    assert first[header.index("test_top1")] == "" and len(lines) == 6
    assert result["test_top1"] == history[-1]["test_top1"]
    assert result["best_test_top1"] == max(row["test_top1"] for row in history if row["test_top1"] is not None)
    assert (run / "curves.png").is_file() and (run / "best.safetensors").is_file()


def test_progress_bar_and_epoch_lines(tmp_path, capsys, monkeypatch):
    import re

    from tqdm import tqdm

    import resnetlab.train.run

    class EveryStep(tqdm):  # redraw on every step, so that the test does not depend on timing
        def __init__(self, *args, **kwargs):
            super().__init__(*args, mininterval=0, miniters=1, **kwargs)

    monkeypatch.setattr(resnetlab.train.run, "tqdm", EveryStep)
    train(tiny_config(tmp_path, name="loud", quiet=False))
    captured = capsys.readouterr()
    bar = r"epoch {e}/2: +\d+%\|.*\| {n}/16 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(batch/s|s/batch), "
    fields = r"loss=\d+\.\d{3}, acc=\d+\.\d, img_s=\d+\]"
    for epoch in (1, 2):  # a bar per epoch: done/total, elapsed<ETA, rate, loss, accuracy, images/s
        assert re.search(bar.format(e=epoch, n=16) + fields, captured.err), captured.err[-400:]
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2  # one summary line per epoch
    assert re.match(r"epoch +2/2 +step 32 +train loss \d\.\d{4} acc [\d.]+% +test loss \d\.\d{4} acc [\d.]+% "
                    r"top5 [\d.]+% +\d+ img/s +\d+s$", lines[1]), lines[1]
    train(tiny_config(tmp_path, name="quiet"))
    captured = capsys.readouterr()
    assert "img_s=" not in captured.err and "epoch 1/2:" not in captured.err
    assert [line.split()[1] for line in captured.out.splitlines() if line.startswith("epoch")] == ["2/2"]


def test_tensorboard_logs_every_metric_at_its_step(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny_config(tmp_path, name="tb", tensorboard=True, eval_every=2, epochs=3))
    run = Path(result["run_dir"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    history = json.loads((run / "metrics.json").read_text())["history"]
    tags = set(events.Tags()["scalars"])
    assert {"lr", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "wall_s"} <= tags
    for key in ("train_loss", "test_top1", "lr"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        expected = [(row["step"], row[key]) for row in history if row[key] is not None]
        assert [step for step, _ in logged] == [step for step, _ in expected], key
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-6), key
    assert [e.step for e in events.Scalars("test_top1")] == [32, 48]  # epochs 2 and 3: the skipped one is absent


def weights_of(run_dir: Path):
    state, _ = read_checkpoint(run_dir / "last.safetensors")
    return state


def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path):
    full = train(tiny_config(tmp_path, name="full", deterministic=True, ema_decay=0.9))
    stopped = train(tiny_config(tmp_path, name="cut", deterministic=True, ema_decay=0.9, stop_after_steps=21))
    assert stopped["steps"] == 21 and stopped["epochs"] == 1  # 21 steps: in the middle of the second epoch
    resumed = resume(stopped["run_dir"], dict(stop_after_steps=0))
    assert resumed["steps"] == full["steps"] == 32
    a, b = weights_of(Path(full["run_dir"])), weights_of(Path(resumed["run_dir"]))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["test_top1"] == full["test_top1"]


def test_progressive_size_grows_from_the_smallest_side_to_the_full_one():
    from resnetlab.train.engine import progressive_size

    ramp = [0.25, 0.75]
    assert [progressive_size(28, 16, ramp, p / 10) for p in range(11)] == \
        [16, 16, 16, 18, 20, 22, 24, 26, 28, 28, 28]  # in steps of 2 pixels
    assert {progressive_size(28, smallest, ramp, p / 10) for smallest in (0, 28, 40) for p in range(11)} == {28}
    assert [progressive_size(32, 8, [0.5, 0.5], p) for p in (0.0, 0.49, 0.5, 1.0)] == [8, 8, 32, 32]


def test_resize_batch_scales_both_sides_and_keeps_full_size_batches_as_they_are():
    from resnetlab.train.engine import resize_batch

    x = torch.rand(2, 3, 32, 48)
    assert resize_batch(x, 16).shape == (2, 3, 16, 24)
    assert resize_batch(x, 32) is x
    flat = torch.full((1, 1, 28, 28), 0.7)
    assert torch.allclose(resize_batch(flat, 16), torch.full((1, 1, 16, 16), 0.7))  # a mean, not a sample


def test_progressive_resizing_trains_small_evaluates_full_size_and_resumes_exactly(tmp_path):
    options = dict(epochs=4, deterministic=True, progressive_min_size=16, progressive_ramp=[0.25, 0.75])
    trainer = Trainer(tiny_config(tmp_path, name="full", **options))
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append((module.training, args[0].shape[-1])))
    full = trainer.run()
    train_sides = [side for training, side in seen if training]
    per_epoch = len(train_sides) // 4
    # progress at each epoch's start: 0, 0.25, 0.5, 0.75 of training
    assert train_sides == [16] * per_epoch * 2 + [24] * per_epoch + [32] * per_epoch
    assert {side for training, side in seen if not training} == {32}  # evaluation at the full size
    history = json.loads((Path(full["run_dir"]) / "metrics.json").read_text())["history"]
    assert [row["train_size"] for row in history] == [16, 16, 24, 32]
    stopped = train(tiny_config(tmp_path, name="cut", stop_after_steps=40, **options))  # in the 24-pixel epoch
    resumed = resume(stopped["run_dir"], dict(stop_after_steps=0))
    a, b = weights_of(Path(full["run_dir"])), weights_of(Path(resumed["run_dir"]))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="progressive_min_size 32 must be below the training image height 32"):
        Trainer(tiny_config(tmp_path, name="big", progressive_min_size=32))
    assert not (tmp_path / "runs" / "big").exists()


def test_pruning_easy_samples_keeps_the_step_budget_in_more_passes_and_resumes_exactly(tmp_path):
    options = dict(epochs=4, deterministic=True, prune_easy=0.5, prune_until=0.5)  # 16 steps per full epoch
    full = train(tiny_config(tmp_path, name="full", **options))
    assert full["steps"] == 64 and full["epochs"] > 4  # the same steps as 4 epochs, over more, shorter passes
    history = json.loads((Path(full["run_dir"]) / "metrics.json").read_text())["history"]
    starts = [0] + [row["step"] for row in history[:-1]]
    samples = [row["train_samples"] for row in history]
    assert samples[0] == 512  # no loss known in the first pass
    assert all(row["step"] - start == n // 32 for row, start, n in zip(history, starts, samples))
    pruned = [n < 512 for n, start in zip(samples[:-1], starts[:-1])]  # the last pass is cut by the budget
    assert pruned == [0 < start < 32 for start in starts[:-1]] and pruned.count(False) >= 2  # prune_until
    stopped = train(tiny_config(tmp_path, name="cut", stop_after_steps=20, **options))
    assert stopped["epochs"] == 1 and history[1]["step"] > 20  # in the middle of the first pruned pass
    resumed = resume(stopped["run_dir"], dict(stop_after_steps=0))
    assert resumed["steps"] == 64 and resumed["epochs"] == full["epochs"]
    a, b = weights_of(Path(full["run_dir"])), weights_of(Path(resumed["run_dir"]))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    folder = _folder(tmp_path / "images", 8)  # in memory, a folder prunes like a dataset; streamed, it cannot
    options = dict(name="folder", data=str(folder), image_size=16, prune_easy=0.5, batch_size=4, workers=0)
    assert Trainer(tiny_config(tmp_path, **options)).data.train.prune_easy == 0.0  # until its first pass is planned
    with pytest.raises(ValueError, match=f"prune_easy: only for data held in memory, and {folder}: --no-cache"):
        Trainer(tiny_config(tmp_path, cache=False, **options))


def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path):
    options = dict(epochs=1, optimizer="sgd", lr=0.05, schedule="constant", train_subset=32)  # one step
    eager = weights_of(Path(train(tiny_config(tmp_path, name="eager", **options))["run_dir"]))
    trainer = Trainer(tiny_config(tmp_path, name="compiled", compile=True, **options))
    assert type(trainer.forward_model).__name__ == "OptimizedModule"  # torch.compile's wrapper does the steps
    trainer.run()
    compiled = weights_of(trainer.run_dir)
    assert compiled.keys() == eager.keys()  # the zoo's names, not torch.compile's wrapper's
    for key in eager:  # the same step, up to the order of floating-point sums (measured: 1e-5 at most)
        assert torch.allclose(compiled[key].float(), eager[key].float(), rtol=1e-3, atol=1e-4), key


def test_resume_restores_the_torch_rng(tmp_path, monkeypatch):
    import resnetlab.train.finetune

    build_model = resnetlab.train.finetune.build_model

    def with_dropout(name, **options):  # a net that draws from torch's global RNG at every training step
        model = build_model(name, **options)
        model.register_forward_pre_hook(
            lambda module, args: (torch.nn.functional.dropout(args[0], 0.2, module.training),))
        return model

    monkeypatch.setattr(resnetlab.train.finetune, "build_model", with_dropout)
    full = train(tiny_config(tmp_path, name="full", deterministic=True))
    stopped = train(tiny_config(tmp_path, name="cut", deterministic=True, stop_after_steps=21))
    resumed = resume(stopped["run_dir"])  # the stop asked for is not asked for again
    assert resumed["steps"] == full["steps"] == 32 and resumed["finished"]
    a, b = weights_of(Path(full["run_dir"])), weights_of(Path(resumed["run_dir"]))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_cli_stop_says_how_to_resume_and_resume_keeps_its_own_config(tmp_path, capsys):
    from resnetlab.cli import main

    base = ["train", "--data", "synthetic", "--model", "resnet8", "--epochs", "2", "--batch-size", "32",
            "--train-subset", "256", "--test-subset", "64", "--precision", "fp32", "--quiet",
            "--out", str(tmp_path), "--name", "cut"]
    assert main([*base, "--stop-after-steps", "8"]) == 0  # the end of epoch 1: evaluated, but not finished
    out = capsys.readouterr().out
    assert f"resume with --resume {tmp_path / 'cut'}" in out and "outputs in" not in out
    (row,) = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert row["step"] == 8 and row["test_top1"] is not None and row["train_loss"] > 0
    assert main(["train", "--resume", str(tmp_path / "cut"), "--recipe", "fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "with its own config; drop --recipe" in err
    assert main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    assert "outputs in" in capsys.readouterr().out
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [row["step"] for row in history] == [8, 16] and all(row["train_loss"] > 0 for row in history)


def _folder(root: Path, images_per_class: int) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(images_per_class):
            Image.new("RGB", (20, 20), (40 * i % 256, 100, 200 if label == "a" else 0)).save(root / label / f"{i}.png")
    return root


def test_bad_image_folders_fail_in_one_line_and_leave_no_run_folder(tmp_path, capsys):
    from resnetlab.cli import main

    runs = tmp_path / "runs"
    small = _folder(tmp_path / "small", 3)
    argv = ["train", "--data", str(small), "--model", "resnet8", "--image-size", "16", "--epochs", "1",
            "--precision", "fp32", "--quiet", "--out", str(runs), "--name", "bad"]
    assert main([*argv, "--batch-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch_size 64 is larger than the training set" in err
    corrupt = _folder(tmp_path / "corrupt", 8)
    (corrupt / "b" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    argv[2] = str(corrupt)
    for workers in ("0", "2"):  # in the main process, and re-raised from a DataLoader worker
        assert main([*argv, "--batch-size", "4", "--val-split", "0.25", "--workers", workers]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and len(err) < 400, err
        assert err.startswith(f"resnetlab: error: cannot read image {corrupt / 'b' / '5.png'}: "), err
        assert not (runs / "bad").exists()  # failed before its first checkpoint: nothing kept
    (runs / "bad").mkdir(parents=True)
    (runs / "bad" / "config.toml").write_text("model = 'resnet8'\n")  # a run killed that early, or still running
    (corrupt / "b" / "5.png").unlink()
    assert main([*argv, "--batch-size", "4", "--val-split", "0.25", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no checkpoint to resume" in err and "--resume" not in err
    assert (runs / "bad" / "config.toml").is_file()  # never removed: it may belong to a running run


def test_resume_refuses_a_folder_that_changed_while_the_run_was_stopped(tmp_path, capsys):
    from resnetlab.cli import main

    folder, runs = _folder(tmp_path / "images", 8), tmp_path / "runs"
    kinds = {"streamed": "--no-cache", "memory": "--cache"}  # streamed, and decoded into memory
    for name, cache in kinds.items():
        argv = ["train", "--data", str(folder), "--model", "resnet8", "--image-size", "16", "--epochs", "1",
                "--batch-size", "4", "--precision", "fp32", cache, "--quiet", "--out", str(runs), "--name", name]
        assert main(argv) == 0
    capsys.readouterr()
    (folder / "a" / "3.png").unlink()
    for name in kinds:
        before = (runs / name / "last.state.pt").read_bytes()
        assert main(["train", "--resume", str(runs / name), "--epochs", "2"]) == 2
        err = capsys.readouterr().err.strip()
        counts = re.search(r"was trained on (\d+) training samples and .* now gives (\d+): the data changed since", err)
        assert len(err.splitlines()) == 1 and counts and int(counts[2]) < int(counts[1]), err
        assert (runs / name / "last.state.pt").read_bytes() == before  # nothing touched


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_vanishes_mid_run_is_one_line_and_the_checkpoint_stays(tmp_path, monkeypatch, workers):
    folder = _folder(tmp_path / "images", 8)
    trainer = Trainer(resolve_config("default", overrides=dict(
        data=str(folder), model="resnet8", image_size=16, epochs=3, batch_size=4, precision="fp32", cache=False,
        workers=workers, quiet=True, out=str(tmp_path / "runs"), name="streamed")))
    real_save, saved = trainer.save, {}

    def save_then_lose_an_image(tag, partial_seconds, state=True):
        real_save(tag, partial_seconds, state)
        if tag == "last" and not saved:  # the first epoch's checkpoint is written; then a file goes
            saved["state"] = (trainer.run_dir / "last.state.pt").read_bytes()
            (folder / "a" / "3.png").unlink()

    monkeypatch.setattr(trainer, "save", save_then_lose_an_image)
    with pytest.raises(ValueError) as error:
        trainer.run()
    message = str(error.value)
    assert "3.png" in message and "No such file" in message, message
    # what the CLI prints in one line: the message, or a DataLoader worker's last line (see cli.main)
    shown = message.strip().splitlines()[-1].split(": ", 1)[-1] if "\nOriginal Traceback" in message else message
    assert shown.startswith("cannot read image ") and "\n" not in shown
    assert (trainer.run_dir / "last.state.pt").read_bytes() == saved["state"]  # the last good checkpoint


def test_sigkill_mid_run_then_resume(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "resnetlab", "train", "--data", "synthetic", "--model", "resnet8",
               "--epochs", "200", "--batch-size", "32", "--train-subset", "256", "--test-subset", "64",
               "--precision", "fp32", "--no-channels-last", "--checkpoint-every", "3", "--quiet",
               "--out", str(out), "--name", "killed"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_file = out / "killed" / "last.state.pt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and not (state_file.exists() and state_file.stat().st_size > 0):
            time.sleep(0.2)
        time.sleep(1.0)  # let it run on, so the kill lands mid-training
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert state_file.exists()
    state = torch.load(state_file, weights_only=True)
    killed_at = state["step"]
    assert killed_at >= 3
    result = resume(out / "killed", dict(epochs=state["epoch"] + 2))  # at least one more epoch to run
    assert result["steps"] > killed_at
    assert not list((out / "killed").glob(".*tmp"))


def test_divergence_stops_with_a_clear_message(tmp_path):
    config = tiny_config(tmp_path, name="nan", optimizer="sgd", lr=1e30, momentum=0.0, weight_decay=0.0)
    with pytest.raises(TrainingDiverged, match="loss became (nan|inf).*no checkpoint had been written yet"):
        Trainer(config).run()


def test_non_finite_weights_never_overwrite_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, name="poisoned", epochs=1))
    trainer.run()
    good = weights_of(trainer.run_dir)
    with torch.no_grad():
        next(trainer.model.parameters()).view(-1)[0] = float("nan")  # a step that left NaN behind a finite loss
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite; the last good checkpoint is in"):
        trainer.save("last", 0.0)
    kept = weights_of(trainer.run_dir)
    assert all(torch.equal(good[key], kept[key]) for key in good)
    resumed = torch.load(trainer.run_dir / "last.state.pt", weights_only=True)["model"]
    assert all(bool(torch.isfinite(value.float()).all()) for value in resumed.values())


@pytest.mark.realdata
@pytest.mark.slow
def test_real_fashion_mnist_reaches_the_bound(tmp_path):
    """Trains on 20k real Fashion-MNIST images, then tests on the full 10k test set."""
    real_fashion_mnist()
    start = time.time()
    config = resolve_config("default", overrides=dict(out=str(tmp_path / "runs"), name="fm", epochs=3,
                                                      train_subset=20000, quiet=True))
    result = train(config)
    seconds = time.time() - start
    print(f"real Fashion-MNIST: {result['test_top1']:.2f}% on 10k test images in {seconds:.0f} s")  # not asserted
    # Measured 87.71% in 42 s on the 2-core AMD EPYC (torch 2.15.0, 2026-11-25); the bound leaves
    # 2.7 points for other CPUs' bf16 kernels and seeds.
    assert result["test_top1"] >= 85.0


def test_train_on_an_image_folder_then_predict(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    for label, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (folder / label).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (40 + i, 36), colour).save(folder / label / f"{i}.png")
    result = train(tiny_config(tmp_path, name="folder", data=str(folder), image_size=32, workers=0,
                               batch_size=4, epochs=2, val_split=0.25, train_subset=0, test_subset=0))
    run = Path(result["run_dir"])
    assert result["eval_split"] == "val" and (run / "confusion.png").is_file()
    _, metadata = read_checkpoint(run / "best.safetensors")
    assert metadata["class_names"] == ["blue", "red"] and metadata["preprocessing"]["input_size"] == [32, 32]
    (prediction,) = Predictor(run / "best.safetensors").predict([folder / "red" / "0.png"], topk=2)
    assert sorted(prediction.classes) == ["blue", "red"]


def test_image_folder_resume_mid_epoch_equals_uninterrupted_run(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    generator = torch.Generator().manual_seed(0)
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(14):
            pixels = torch.randint(0, 256, (20, 20, 3), generator=generator, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / label / f"{i}.png")
    # 25 training images, batch 4: 6 steps per epoch; 2 workers, so that batches come from both
    options = dict(data=str(folder), image_size=16, workers=2, batch_size=4, epochs=2, val_split=0.1,
                   train_subset=0, test_subset=0, deterministic=True)
    full = train(tiny_config(tmp_path, name="full", **options))
    stopped = train(tiny_config(tmp_path, name="cut", stop_after_steps=9, **options))  # mid second epoch
    assert stopped["steps"] == 9 and stopped["epochs"] == 1
    resumed = resume(stopped["run_dir"], dict(stop_after_steps=0))
    assert resumed["steps"] == full["steps"] == 12
    a, b = weights_of(Path(full["run_dir"])), weights_of(Path(resumed["run_dir"]))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_schedules_warmup_and_their_factors():
    from resnetlab.train.optim import lr_factor

    def factors(steps, **overrides):
        config = resolve_config("default", overrides=dict(overrides))
        factor = lr_factor(config, total_steps=100, steps_per_epoch=10)
        return [factor(step) for step in steps]

    assert factors([0, 49, 50, 74, 75, 99], schedule="multistep", milestones=[0.5, 0.75], gamma=0.1) == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    # one warmup epoch (10 steps) rising to the peak, then a cosine over the 90 steps left
    assert factors([0, 4, 9, 10, 55, 100], schedule="cosine", warmup_epochs=1) == \
        pytest.approx([0.1, 0.5, 1.0, 1.0, 0.5, 0.0], abs=1e-9)
    # one-cycle: from lr/25 up to lr at 25% of training, then a cosine down to lr/1e4
    assert factors([0, 25, 100], schedule="onecycle") == pytest.approx([1 / 25, 1.0, 1e-4])
    assert factors([0, 50, 99], schedule="constant") == [1.0, 1.0, 1.0]


def test_optimizers_and_no_decay_on_norms_and_biases():
    from resnetlab.models import build_model
    from resnetlab.train.optim import build_optimizer

    model = build_model("resnet8")
    config = resolve_config("default", overrides=dict(nesterov=True, weight_decay=5e-4))
    sgd = build_optimizer(model, config)
    decay, no_decay = sgd.param_groups
    assert sgd.defaults["nesterov"] and decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    everything = build_optimizer(model, dataclasses.replace(config, decay_norm_and_bias=True))
    assert len(everything.param_groups) == 1 and everything.param_groups[0]["weight_decay"] == 5e-4
    adamw = build_optimizer(model, dataclasses.replace(config, optimizer="adamw", momentum=0.8))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.999)


def test_label_smoothing_and_gradient_clipping_act_on_the_step():
    import copy

    import torch.nn.functional as F

    from resnetlab.models import build_model
    from resnetlab.train.engine import train_steps

    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.no_grad():
        expected_loss = F.cross_entropy(copy.deepcopy(model).train()(x), y, label_smoothing=0.2)

    def one_step(net, clip):
        before = [p.detach().clone() for p in net.parameters()]
        optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        stats = train_steps(net, [(x, y)], optimizer, scheduler, device=torch.device("cpu"),
                            label_smoothing=0.2, clip_grad_norm=clip)
        moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
        return stats, float(moved.norm())

    stats, clipped = one_step(copy.deepcopy(model), clip=1e-3)
    assert stats.loss_sum / stats.samples == pytest.approx(float(expected_loss), rel=1e-5)
    assert clipped == pytest.approx(1e-3, rel=1e-3)  # lr 1: the step is the clipped gradient itself
    _, free = one_step(copy.deepcopy(model), clip=0.0)
    assert free > 10 * clipped


def test_sample_weights_scale_each_loss_and_the_losses_are_recorded():
    import copy

    import torch.nn.functional as F

    from resnetlab.models import build_model
    from resnetlab.train.engine import train_steps

    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10, norm_layer="none")  # no batch statistics: micro-batches agree
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, label_smoothing=0.1, reduction="none")

    class Scores:
        def __init__(self, weight: float) -> None:
            self.weight, self.recorded = weight, None

        def batch_weights(self) -> torch.Tensor:
            return torch.full((8,), self.weight)

        def record_losses(self, losses: torch.Tensor) -> None:
            self.recorded = losses

    def step(lr: float, scores=None, accum_steps: int = 1):
        net = copy.deepcopy(model)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        train_steps(net, [(x, y)], optimizer, scheduler, device=torch.device("cpu"), label_smoothing=0.1,
                    sample_losses=scores, accum_steps=accum_steps)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    doubled = Scores(2.0)
    for accum_steps in (1, 2):
        # plain SGD: every loss weighing 2 is the step of twice the learning rate
        assert torch.allclose(step(0.05, doubled, accum_steps), step(0.1), atol=1e-6)
        assert torch.allclose(doubled.recorded, expected, atol=1e-6)  # the unweighted loss of each sample


def test_bf16_channels_last_training_on_the_cpu(tmp_path):
    result = train(tiny_config(tmp_path, name="bf16", precision="bf16", channels_last=True, epochs=3))
    assert result["test_top1"] > 30.0  # learnable data: well above chance
    assert 100.0 >= result["test_top5"] >= result["test_top1"]


@pytest.mark.parametrize("killed_at", ["best", "last"])
def test_a_run_killed_while_writing_a_checkpoint_keeps_the_best_weights_it_reports(tmp_path, monkeypatch, killed_at):
    full = train(tiny_config(tmp_path, name="full", deterministic=True, epochs=3))
    best_epoch = max(range(3), key=lambda i: read_history(full)[i]["test_top1"])
    real_save = Trainer.save

    def dies_on_the_last_epoch(self, tag, partial_seconds, state=True):
        if tag == killed_at and self.epoch == 3:
            raise KeyboardInterrupt  # as a kill at that instant: nothing of this write happened
        return real_save(self, tag, partial_seconds, state)

    monkeypatch.setattr(Trainer, "save", dies_on_the_last_epoch)
    if best_epoch == 2 or killed_at == "last":  # the write that dies is on the path of the last epoch
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tmp_path, name="cut", deterministic=True, epochs=3))
    else:
        train(tiny_config(tmp_path, name="cut", deterministic=True, epochs=3))
    monkeypatch.setattr(Trainer, "save", real_save)
    resumed = resume(tmp_path / "runs" / "cut")
    assert resumed["best_test_top1"] == full["best_test_top1"]
    a, _ = read_checkpoint(Path(full["run_dir"]) / "best.safetensors")
    b, _ = read_checkpoint(Path(resumed["run_dir"]) / "best.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


def read_history(result):
    return json.loads((Path(result["run_dir"]) / "metrics.json").read_text())["history"]


def test_resume_checks_the_state_belongs_to_the_run_and_respects_a_live_lock(tmp_path):
    stopped = train(tiny_config(tmp_path, name="a", stop_after_steps=3))
    run_a = Path(stopped["run_dir"])
    assert (run_a / "run.json").is_file() and not (run_a / ".lock").exists()  # released when the run stopped
    with pytest.raises(ValueError, match=r"last\.state\.pt was trained with model 'resnet8', not 'resnet14'; a "
                                         r"resumed run keeps its model \(drop --model\)$"):
        resume(run_a, dict(model="resnet14"))
    with pytest.raises(ValueError, match=r"trained with data 'synthetic', not 'mnist'"):
        resume(run_a, dict(data="mnist"))
    other = Path(train(tiny_config(tmp_path, name="b", stop_after_steps=3))["run_dir"])
    (other / "last.state.pt").write_bytes((run_a / "last.state.pt").read_bytes())
    with pytest.raises(ValueError, match=r"is the training state of another run"):
        resume(other)
    state = torch.load(run_a / "last.state.pt", weights_only=True)
    state["model"] = {key: value[:1] if value.dim() else value for key, value in state["model"].items()}
    torch.save(state, run_a / "last.state.pt")
    with pytest.raises(ValueError, match=r"last\.state\.pt: its weights do not fit this resnet8: "):
        resume(run_a)
    fresh = Path(train(tiny_config(tmp_path, name="c", stop_after_steps=3))["run_dir"])
    # a live process whose id the lock names, but which does not hold it (an id reused after a crash): stale
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (fresh / ".lock").write_text(f"{sleeper.pid}\n")
        assert resume(fresh, dict(stop_after_steps=4))["steps"] == 4 and not (fresh / ".lock").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    holding = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
               "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d\\n' % os.getpid()); print('held', flush=True); "
               "time.sleep(60)")
    sleeper = subprocess.Popen([sys.executable, "-c", holding, str(fresh / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline() == "held\n"
        writing = fresh / ".last.safetensors.abc.tmp"  # the live run's checkpoint being written
        writing.write_bytes(b"half")
        config = (fresh / "config.toml").read_bytes()
        with pytest.raises(ValueError, match=rf"run folder {fresh} is being trained by process {sleeper.pid}"):
            resume(fresh, dict(stop_after_steps=0))
        assert writing.read_bytes() == b"half" and (fresh / "config.toml").read_bytes() == config  # untouched
        writing.unlink()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert resume(fresh)["finished"] and not (fresh / ".lock").exists()  # a dead process's lock is taken over


# A child process that trains with the CLI and SIGKILLs itself at one instant of a checkpoint write:
# just before or just after the rename that makes its WRITE-th version of FILE visible. With FILE "",
# it runs to the end and records how many times each file was renamed into place.
KILLING_TRAINER = """
import json, os, signal, sys
from resnetlab.cli import main
target, moment, write, record = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real_replace, counts = os.replace, {}
def replace(source, destination):
    name = os.path.basename(destination)
    counts[name] = counts.get(name, 0) + 1
    killing = name == target and counts[name] == write
    if killing and moment == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)
    if killing and moment == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
status = main(sys.argv[5:])
with open(record, "w") as file:
    json.dump(counts, file)
sys.exit(status)
"""
CRASH_RUN = ["train", "--data", "synthetic", "--model", "resnet8", "--epochs", "3", "--batch-size", "32",
             "--train-subset", "256", "--test-subset", "128", "--precision", "fp32", "--no-channels-last",
             "--optimizer", "adamw", "--lr", "0.003", "--augment", "none", "--no-flip-tta", "--deterministic",
             "--threads", "1", "--quiet"]  # one thread in the child and in the resuming test process: same sums


def run_killing_trainer(out: Path, name: str, target: str = "", moment: str = "", write: int = 0):
    record = out / f"{name}.counts.json"
    command = [sys.executable, "-c", KILLING_TRAINER, target, moment, str(write), str(record), *CRASH_RUN,
               "--out", str(out), "--name", name]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return done, json.loads(record.read_text()) if record.exists() else None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash-matrix")
    done, counts = run_killing_trainer(out, "full")
    assert done.returncode == 0, done.stderr[-2000:]
    return out, json.loads((out / "full" / "metrics.json").read_text())["summary"], counts


@pytest.mark.parametrize("moment", ["before", "after"])
@pytest.mark.parametrize("target", ["best.safetensors", "last.safetensors", "last.state.pt"])
def test_a_sigkill_at_each_instant_of_the_final_checkpoint_writes_loses_nothing(uninterrupted, target, moment):
    out, full, counts = uninterrupted
    name = f"killed-{target}-{moment}"
    done, _ = run_killing_trainer(out, name, target, moment, counts[target])  # its last write: the one that matters
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    resumed = resume(out / name)
    assert resumed["finished"] and resumed["best_test_top1"] == full["best_test_top1"]
    assert resumed["test_top1"] == full["test_top1"]
    for kept in ("best.safetensors", "last.safetensors"):
        a, _ = read_checkpoint(out / "full" / kept)
        b, _ = read_checkpoint(out / name / kept)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), kept
    assert not list((out / name).glob(".*.tmp"))


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from helpers import run_cli

    real_save = torch.save
    calls = {"n": 0}

    def full_disk_on_the_second_state(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                               "data/12: file write failed")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_on_the_second_state)
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", "synthetic", "--model", "resnet8", "--epochs", "3",
                           "--train-subset", "256", "--test-subset", "64", "--batch-size", "64", "--precision", "fp32",
                           "--quiet", "--out", out, "--name", "full")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("resnetlab: error: [Errno 5] write failed (") and "last.state.pt'" in err
    assert not list((out / "full").glob(".*.tmp"))  # nothing half-written
    kept = torch.load(out / "full" / "last.state.pt", weights_only=True)
    assert kept["epoch"] == 1  # the last good checkpoint, intact
    monkeypatch.setattr(torch, "save", real_save)
    resumed = resume(out / "full")
    assert resumed["finished"] and resumed["epochs"] == 3


@pytest.fixture
def small_disk(tmp_path):
    """A 2.2 MB tmpfs: room for one epoch's checkpoints of CRASH_RUN (1.6 MB), not for a second beside them.
    Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped and the injected full disks above stand."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2200k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_real_full_disk_is_one_line_and_the_run_resumes_once_there_is_room(small_disk, capsys):
    from helpers import run_cli

    code, _, err = run_cli(capsys, *CRASH_RUN, "--out", small_disk, "--name", "full")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("resnetlab: error: [Errno 28] No space left on device: ") and "full/last" in err, err
    run = small_disk / "full"
    assert not list(run.glob(".*.tmp"))  # nothing half-written
    kept = torch.load(run / "last.state.pt", weights_only=True)
    assert kept["epoch"] == 1 and (run / "best.safetensors").is_file()  # the last good checkpoint, intact
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = resume(run)
    assert resumed["finished"] and resumed["epochs"] == 3 and (run / "best.safetensors").is_file()


def test_a_full_disk_while_writing_weights_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    """safetensors reports ENOSPC as its own SafetensorError: the same one line as torch.save's, and a resume."""
    from safetensors import SafetensorError

    import resnetlab.weights.formats
    from helpers import run_cli

    real_save_file = resnetlab.weights.formats.save_file
    calls = {"n": 0}

    def full_disk_on_the_third_weights(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's best.safetensors (epoch 1 wrote best, then last)
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                  'message: "No space left on device" })')
        return real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(resnetlab.weights.formats, "save_file", full_disk_on_the_third_weights)
    out = tmp_path / "runs"
    code, _, err = run_cli(capsys, "train", "--data", "synthetic", "--model", "resnet8", "--epochs", "3",
                           "--train-subset", "256", "--test-subset", "64", "--batch-size", "64", "--precision", "fp32",
                           "--quiet", "--out", out, "--name", "full")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("resnetlab: error: [Errno 5] write failed (Error while serializing")
    assert ".safetensors'" in err
    assert not list((out / "full").glob(".*.tmp"))
    monkeypatch.setattr(resnetlab.weights.formats, "save_file", real_save_file)
    resumed = resume(out / "full")
    assert resumed["finished"] and resumed["epochs"] == 3
    assert (out / "full" / "best.safetensors").is_file() and (out / "full" / "last.safetensors").is_file()
