"""Image folders decoded into memory: the cache and when it is rebuilt, corrupt files, the budget,
stratified validation splits, and training on a folder exactly as on a built-in dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data import ArrayDataset, folder_cache
from resnetlab.data.folder_cache import decode_image_file, load_folder_in_memory
from resnetlab.train import resolve_config, resume, train
from resnetlab.weights import read_checkpoint

CLASSES = ("dark", "light", "mid")


def write_folder(root: Path, per_class: int = 12, size: int = 12, seed: int = 0) -> Path:
    """root/CLASS/i.png (and one .jpg per class): noisy images at a grey level per class."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            level = 40 + 85 * index
            pixels = np.clip(level + rng.integers(-20, 20, (size, size + 4, 3)), 0, 255).astype(np.uint8)
            suffix = "jpg" if i == 0 else "png"
            Image.fromarray(pixels).save(root / name / f"{i}.{suffix}")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder, and a count of the folders decoded."""
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    decoded = []
    real = folder_cache.decode_files

    def counting(paths, *args, **kwargs):
        decoded.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(folder_cache, "decode_files", counting)
    return decoded


def load(root: Path, **options) -> ArrayDataset:
    dataset, _ = load_folder_in_memory(root, 8, workers=0, quiet=True, **options)
    return dataset


def test_decoding_resizes_the_shorter_side_and_crops_the_center(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 10:30] = 200  # the center 20 x 20 is bright, the sides dark
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = decode_image_file(str(tmp_path / "wide.png"), 10)
    assert image.shape == (3, 10, 10) and image.dtype == torch.uint8
    assert image.float().mean() > 190  # only the bright center is kept
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "grey.png")
    assert decode_image_file(str(tmp_path / "grey.png"), 10).shape == (3, 10, 10)  # grey comes out RGB


def test_folder_is_decoded_once_and_read_from_the_cache(tmp_path, cache):
    root = write_folder(tmp_path / "images")
    first, note = load_folder_in_memory(root, 8, workers=0, quiet=True)
    assert "decoded into memory, cached in" in note and cache == [36]
    again, note = load_folder_in_memory(root, 8, workers=0, quiet=True)
    assert "read from the decoded cache" in note and cache == [36]
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert first.classes == list(CLASSES) and first.image_shape == (3, 8, 8)
    assert first.labels.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    mean = first.images.double().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(first.mean, dtype=torch.float64), mean, atol=1e-4)


@pytest.mark.parametrize("change", ["modify", "add", "remove", "rename"])
def test_cache_is_rebuilt_when_a_file_changes(tmp_path, cache, change):
    root = write_folder(tmp_path / "images")
    before = load(root)
    target = root / "light" / "3.png"
    if change == "modify":
        Image.fromarray(np.full((12, 16, 3), 255, dtype=np.uint8)).save(target)
        os.utime(target, ns=(1, 1))  # even with an older modification time: the size differs
    elif change == "add":
        Image.fromarray(np.full((12, 16, 3), 255, dtype=np.uint8)).save(root / "light" / "new.png")
    elif change == "remove":
        target.unlink()
    else:
        target.rename(root / "dark" / "moved.png")
    after = load(root)
    assert cache == [36, {"modify": 36, "add": 37, "remove": 35, "rename": 36}[change]]
    if change == "modify":
        assert not torch.equal(before.images, after.images)
    if change == "rename":
        assert after.labels.bincount().tolist() == [13, 11, 12]


def test_cache_depends_on_the_image_size_and_survives_a_corrupt_cache_file(tmp_path, cache):
    root = write_folder(tmp_path / "images")
    load(root)
    assert load_folder_in_memory(root, 6, workers=0, quiet=True)[0].image_shape == (3, 6, 6)
    assert cache == [36, 36]
    (cached,) = [p for p in (tmp_path / "cache").iterdir() if "-" in p.name and p.stat().st_size > 36 * 3 * 64]
    cached.write_bytes(cached.read_bytes()[:100])  # truncated: decoded again, not an error
    assert len(load(root)) == 36 and cache == [36, 36, 36]
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_corrupt_image_is_named_in_one_line(tmp_path, cache):
    root = write_folder(tmp_path / "images", per_class=3)
    bad = root / "mid" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError) as error:
        load(root)
    message = str(error.value)
    assert str(bad) in message and "\n" not in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_folder_over_the_budget_is_not_decoded(tmp_path, cache):
    root = write_folder(tmp_path / "images", per_class=3)
    dataset, note = load_folder_in_memory(root, 8, budget=9 * 3 * 8 * 8 - 1, workers=0, quiet=True)
    assert dataset is None and cache == []
    assert "over the in-memory budget" in note and "streaming from disk" in note
    dataset, _ = load_folder_in_memory(root, 8, budget=9 * 3 * 8 * 8, workers=0, quiet=True)
    assert len(dataset) == 9


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)
    images = torch.arange(1000).remainder(256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    dataset = ArrayDataset(images, labels, ["a", "b", "c"], (0.5,), (0.5,), "counts")
    dataset.images[:, 0, 0, 0] = torch.arange(1000) % 256  # not unique; the second pixel makes them so
    dataset.images[:, 0, 0, 1] = torch.arange(1000) // 256
    train_set, val = dataset.split(100, seed=1)
    assert len(val) == 100 and len(train_set) == 900
    assert val.labels.bincount().tolist() == [50, 30, 20]  # each class its share
    assert dataset.split(0.1, seed=1)[1].labels.bincount().tolist() == [50, 30, 20]

    def ids(part):
        return set((part.images[:, 0, 0, 0].long() + 256 * part.images[:, 0, 0, 1].long()).tolist())

    assert ids(val).isdisjoint(ids(train_set)) and len(ids(val) | ids(train_set)) == 1000
    assert ids(dataset.split(100, seed=1)[1]) == ids(val)  # seeded
    assert ids(dataset.split(100, seed=2)[1]) != ids(val)
    odd = dataset.split(7, seed=0)[1].labels.bincount(minlength=3).tolist()
    assert sum(odd) == 7 and odd[0] >= odd[1] >= odd[2]  # 3.5, 2.1, 1.4: remainders to the largest
    for bad in (0.0, 1.5, 1000, -3):
        with pytest.raises(ValueError, match="validation"):
            dataset.split(bad)


def folder_config(tmp_path: Path, root: Path, **overrides):
    options = dict(data=str(root), image_size=8, model="resnet8", epochs=3, batch_size=8, lr=0.05,
                   precision="fp32", channels_last=False, val_split=6, workers=0, flip_tta=False,
                   augment="crop-flip", pad=1, quiet=True, out=str(tmp_path / "runs"))
    return resolve_config("default", overrides=dict(options, **overrides))


def test_training_on_a_cached_folder_resumes_mid_epoch_exactly(tmp_path, cache):
    root = write_folder(tmp_path / "images")
    full = train(folder_config(tmp_path, root, name="full", deterministic=True))
    stopped = train(folder_config(tmp_path, root, name="cut", deterministic=True, stop_after_steps=5))
    assert stopped["steps"] == 5 and stopped["epochs"] == 1  # 30 training images: 3 steps an epoch
    resumed = resume(stopped["run_dir"], dict(stop_after_steps=0))
    assert resumed["steps"] == full["steps"] == 9 and resumed["eval_split"] == "val"
    a, _ = read_checkpoint(Path(full["run_dir"]) / "last.safetensors")
    b, metadata = read_checkpoint(Path(resumed["run_dir"]) / "last.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    preprocessing = metadata["preprocessing"]
    assert preprocessing["crop_fraction"] == 1.0 and preprocessing["input_size"] == [8, 8]
    assert preprocessing["val_split"] == 6 and preprocessing["split_seed"] == 0
    assert cache == [36]  # decoded by the first run only


def test_folder_options_apply_in_memory_and_are_refused_when_streamed(tmp_path, cache):
    root = write_folder(tmp_path / "images")
    small = train(folder_config(tmp_path, root, name="subset", train_subset=16, epochs=1, progressive_min_size=4))
    assert small["steps"] == 2  # 16 of the 30 training images
    with pytest.raises(ValueError, match=r"^train_subset: only for data held in memory, and .*over the "
                       r"in-memory budget.*raise --cache-budget-gb"):
        train(folder_config(tmp_path, root, name="streamed", train_subset=16, pad=4, cache_budget_gb=1e-6))
    with pytest.raises(ValueError, match="needs the folder held in memory"):
        train(folder_config(tmp_path, root, name="streamed", cache=False, pad=4))
    streamed = train(folder_config(tmp_path, root, name="streamed", cache=False, val_split=0.2, pad=4, epochs=1))
    assert streamed["finished"] and streamed["steps"] == 3
    # The default recipe's flips (and its pad, which flips alone do not use) stream as they train in memory.
    flipped = train(folder_config(tmp_path, root, name="flipped", cache=False, val_split=0.2, augment="flip",
                                  pad=2, epochs=1))
    assert flipped["finished"]


def test_eval_on_the_validation_split_reproduces_what_training_held_out(tmp_path, cache):
    from resnetlab.inference import evaluate_checkpoint

    root = write_folder(tmp_path / "images")
    result = train(folder_config(tmp_path, root, name="run", epochs=2))
    weights = Path(result["run_dir"]) / "last.safetensors"
    val = evaluate_checkpoint(weights, str(root), split="val", device="cpu")
    assert val["samples"] == 6 and val["split"] == "val"
    assert val["test_top1"] == pytest.approx(result["test_top1"])  # the images training evaluated on
    synthetic = train(resolve_config("default", overrides=dict(
        data="synthetic", model="resnet8", epochs=1, batch_size=32, precision="fp32", channels_last=False,
        val_split=100, quiet=True, out=str(tmp_path / "runs"), name="synthetic", flip_tta=False)))
    held = evaluate_checkpoint(Path(synthetic["run_dir"]) / "last.safetensors", "synthetic", split="val",
                               device="cpu")
    assert held["samples"] == 100 and held["test_top1"] == pytest.approx(synthetic["test_top1"])
    with pytest.raises(ValueError, match="trained without --val-split"):
        plain = train(resolve_config("default", overrides=dict(
            data="synthetic", model="resnet8", epochs=1, batch_size=32, precision="fp32", quiet=True,
            train_subset=64, test_subset=32, out=str(tmp_path / "runs"), name="plain")))
        evaluate_checkpoint(Path(plain["run_dir"]) / "last.safetensors", "synthetic", split="val", device="cpu")
