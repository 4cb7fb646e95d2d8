"""Checkpoint metadata is checked before anything is built from it; broken weights give no numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from resnetlab.inference import Predictor, evaluate_checkpoint
from resnetlab.models import build_model
from resnetlab.weights import load_model, save_weights


def checkpoint(tmp_path: Path, **preprocessing) -> Path:
    model = build_model("resnet8", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, "resnet8", options=dict(num_classes=3), class_names=["a", "b", "c"],
                 preprocessing=dict(dict(mean=[0.5] * 3, std=[0.25] * 3, input_size=[16, 16]), **preprocessing))
    return path


def rewrite(path: Path, **entries) -> Path:
    """The checkpoint with some of its metadata entries replaced by raw strings."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = dict(file.metadata())
    metadata.update(entries)
    save_file(load_file(str(path)), str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("entries,fragment", [
    (dict(options="[1, 2]"), "metadata options is [1, 2]; accepted: a table of builder options"),
    (dict(options='{"num_classes": 1000000000}'), "num_classes must be a whole number from 0 to 1,000,000"),
    (dict(class_names='{"a": 1}'), "metadata class_names is {'a': 1}; accepted: a list of 1 to 1,000,000 names"),
    (dict(class_names='["a", "b"]'), "metadata class_names has 2 names for a head of 3 classes"),
    (dict(preprocessing='["mean"]'), "metadata preprocessing is ['mean']; accepted: a table"),
    (dict(preprocessing='{"mean": "0.5", "std": [1, 1, 1]}'), "metadata preprocessing.mean is '0.5'"),
    (dict(preprocessing='{"mean": [0, 0, 0], "std": [0, 1, 1]}'), "preprocessing.std is [0, 1, 1]; accepted: a "
                                                                    "list of 1 to 1024 finite numbers above 0"),
    (dict(preprocessing='{"input_size": [6000, 6000]}'), "preprocessing.input_size is [6000, 6000]; accepted: "
                                                         "[height, width], each 8 to 4096"),
    (dict(preprocessing='{"mean": [NaN, 0, 0], "std": [1, 1, 1]}'), "preprocessing.mean is [nan, 0, 0]"),
])
def test_bad_metadata_is_one_line_naming_the_file_and_entry(tmp_path, entries, fragment):
    path = rewrite(checkpoint(tmp_path), **entries)
    with pytest.raises(ValueError) as error:
        load_model(path)
    message = str(error.value)
    assert fragment in message and "\n" not in message
    assert str(path) in message or "num_classes" in message


def test_broken_weights_give_an_error_not_nan_probabilities(tmp_path):
    path = checkpoint(tmp_path)
    state = load_file(str(path))
    state["fc.bias"] = torch.full_like(state["fc.bias"], float("nan"))
    rewrite_state = tmp_path / "nan.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        save_file(state, str(rewrite_state), metadata=dict(file.metadata()))
    image = tmp_path / "x.png"
    Image.new("RGB", (16, 16), (10, 200, 30)).save(image)
    (prediction,) = Predictor(rewrite_state, device="cpu").predict([image])
    assert prediction.error.startswith("the model's scores are NaN or infinite") and not prediction.probabilities
    folder = tmp_path / "images"
    for name in ("a", "b", "c"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), (10, 200, 30)).save(folder / name / "0.png")
    with pytest.raises(ValueError, match="give NaN or infinite scores on"):
        evaluate_checkpoint(rewrite_state, str(folder), device="cpu")


def test_export_never_reads_a_folder_named_in_the_metadata(tmp_path):
    from resnetlab.export import verification_inputs

    secret = tmp_path / "secret"
    (secret / "x").mkdir(parents=True)
    Image.new("RGB", (16, 16)).save(secret / "x" / "0.png")
    metadata = dict(preprocessing=dict(dataset=str(secret), input_size=[16, 16]))
    images, described = verification_inputs(None, metadata, 3, 4)
    assert "random" in described and str(secret) not in described and images.shape == (4, 3, 16, 16)
    assert json.dumps(metadata)  # unchanged
