"""Fine-tuning: start weights, their preprocessing, a new head, a frozen backbone, per-group learning rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import randomize_norms, run_cli, tiny_config
from resnetlab.models import build_model
from resnetlab.train import resolve_config, resume
from resnetlab.train.config import TrainConfig
from resnetlab.train.finetune import normalization_for, start_model, weights_name
from resnetlab.train.run import Trainer
from resnetlab.weights import read_checkpoint, save_weights

START_CLASSES = ["w", "x", "y", "z"]
START_MEAN, START_STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]


@pytest.fixture
def start_weights(tmp_path: Path) -> Path:
    """A resnet8 of four classes with non-trivial batch-norm statistics, saved with its preprocessing."""
    torch.manual_seed(1)
    model = randomize_norms(build_model("resnet8", num_classes=4))
    return save_weights(model, tmp_path / "start.safetensors", "resnet8", options=dict(num_classes=4),
                        class_names=START_CLASSES,
                        preprocessing=dict(mean=START_MEAN, std=START_STD, input_size=[16, 16]))


def write_folder(root: Path, classes, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", per_class // 2)):
        for label in classes:
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / label / f"{i}.png")
    return root


def finetune_config(tmp_path: Path, weights: Path, **overrides) -> TrainConfig:
    folder = write_folder(tmp_path / "images", ["cat", "dog"], 32)
    return tiny_config(tmp_path, data=str(folder), weights=str(weights), train_subset=0, test_subset=0,
                       batch_size=16, epochs=2, freeze_epochs=1, backbone_lr_mult=0.1, optimizer="sgd", lr=0.05,
                       augment="crop-flip", pad=2, workers=0, **overrides)


def test_frozen_backbone_then_all_layers(tmp_path, monkeypatch, start_weights):
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    config = finetune_config(tmp_path, start_weights, stop_after_steps=4)  # 64 images / 16: one epoch
    trainer = Trainer(config)
    assert trainer.data.input_size == (16, 16)  # image_size 0: the start weights' input size
    assert list(trainer.data.mean) == START_MEAN and list(trainer.data.std) == START_STD
    assert trainer.model.fc.out_features == 2
    head = {id(p) for p in trainer.model.fc.parameters()}
    for group in trainer.optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all backbone
        assert group["initial_lr"] == pytest.approx(config.lr * (1.0 if in_head.pop() else 0.1))

    start, _ = read_checkpoint(start_weights)
    new_head = trainer.model.fc.weight.detach().clone()
    trainer.run()  # the frozen epoch
    after = read_checkpoint(trainer.run_dir / "last.safetensors")[0]
    backbone = [k for k in start if not k.startswith("fc.")]
    assert all(torch.equal(after[k].float(), start[k].float()) for k in backbone)  # running statistics too
    assert not torch.equal(after["fc.weight"], new_head)  # the classifier alone learned

    resume(trainer.run_dir)  # the second epoch trains every layer
    final = read_checkpoint(trainer.run_dir / "last.safetensors")[0]
    assert not torch.equal(final["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])
    assert not torch.equal(final["bn1.running_mean"], start["bn1.running_mean"])
    saved = read_checkpoint(trainer.run_dir / "last.safetensors")[1]
    assert saved["preprocessing"]["mean"] == START_MEAN and saved["class_names"] == ["cat", "dog"]


def test_head_kept_only_for_the_same_classes(tmp_path, start_weights):
    config = dict(model="resnet8", weights=str(start_weights))
    start, _ = read_checkpoint(start_weights)
    same, _, note = start_model(TrainConfig(**config), START_CLASSES, 3)
    assert torch.equal(same.fc.weight, start["fc.weight"]) and "classifier kept" in note
    other, _, note = start_model(TrainConfig(**config), ["a", "b", "c", "d"], 3)  # four classes, other meanings
    assert not torch.equal(other.fc.weight, start["fc.weight"]) and "new classifier for 4 classes" in note
    assert torch.equal(other.layer1[0].conv1.weight, same.layer1[0].conv1.weight)
    fresh, options, note = start_model(TrainConfig(model="resnet8"), ["a", "b"], 1)
    assert note == "" and options == dict(num_classes=2, in_chans=1) and fresh.conv1.in_channels == 1


def test_normalization_follows_the_weights():
    rgb = dict(mean=[0.2, 0.4, 0.6], std=[0.1, 0.2, 0.3])
    assert normalization_for(rgb, 3) == ((0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    mean, std = normalization_for(rgb, 1)  # grayscale data: the summed RGB filters see one image three times
    assert mean == pytest.approx((0.4,)) and std == pytest.approx((0.2,))
    assert normalization_for(dict(mean=[0.5], std=[0.25]), 3) == ((0.5,) * 3, (0.25,) * 3)
    assert normalization_for(None, 3) is None and normalization_for(dict(input_size=[8, 8]), 3) is None


def test_finetune_recipe_starts_from_the_default_weights():
    config = resolve_config("finetune")
    assert config.weights == "default" and config.freeze_epochs >= 1 and config.backbone_lr_mult < 1
    assert weights_name(config) == "resnet20.resnetlab_cifar10"
    assert weights_name(resolve_config("finetune", overrides=dict(weights="akamaster_cifar10"))) == \
        "akamaster_cifar10"


@pytest.mark.parametrize("flags, message", [
    (["--freeze-epochs", "2"], "freeze_epochs keeps pretrained weights fixed and needs weights"),
    (["--weights", "default", "--backbone-lr-mult", "0"], "backbone_lr_mult must be a number in (0, 1000]"),
    (["--weights", "resnet20.nope"], "unknown weights 'resnet20.nope'"),
    (["--weights", "resnet50.tv_in1k"], "weights resnet50.tv_in1k are for resnet50, not resnet8"),
])
def test_bad_finetune_input_is_one_line(capsys, tmp_path, flags, message):
    code, out, err = run_cli(capsys, "train", "--data", "synthetic", "--model", "resnet8", "--epochs", "1",
                             "--train-subset", "64", "--test-subset", "64", "--quiet", "--out", tmp_path, *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not any(tmp_path.iterdir())


def test_eval_normalizes_as_the_fine_tuned_run_did(tmp_path, start_weights):
    """Fine-tuned weights record the start weights' statistics, not the dataset's; eval uses them."""
    from resnetlab.inference import evaluate_checkpoint
    from resnetlab.train import train

    config = tiny_config(tmp_path, weights=str(start_weights), epochs=1, test_subset=0, name="ft")
    result = train(config)
    weights = Path(result["run_dir"]) / "last.safetensors"
    assert read_checkpoint(weights)[1]["preprocessing"]["mean"] != []
    evaluated = evaluate_checkpoint(weights, "synthetic", device="cpu")
    assert evaluated["test_top1"] == pytest.approx(result["test_top1"], abs=1e-9)
