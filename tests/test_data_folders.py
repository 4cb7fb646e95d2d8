"""Tests for image folders (resnetlab.data.folders) and model inputs (resnetlab.data.inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import one_line
from resnetlab.data import ImageFolderData

pytestmark = pytest.mark.usefixtures("isolated")


def write_pngs(folder: Path, classes: list[str], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = "L" if i == 0 else "RGB"  # a grayscale file must come out RGB
            shape = (20, 24) if mode == "L" else (20, 24, 3)
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}.png")


def test_image_folder_train_val_layout(tmp_path):
    write_pngs(tmp_path / "images" / "train", ["cat", "dog"], 3)
    write_pngs(tmp_path / "images" / "val", ["cat", "dog"], 2)
    data = ImageFolderData(tmp_path / "images", image_size=16)
    assert data.classes == ["cat", "dog"] and data.layout == "train/val"
    assert len(data.train_dataset) == 6 and len(data.val_dataset) == 4
    x, y = next(iter(data.train_loader(4, workers=0)))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    x, y = next(iter(data.val_loader(4, workers=0)))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 1, 1]


def test_image_folder_erasing_in_training_only(tmp_path):
    write_pngs(tmp_path / "images" / "train", ["cat", "dog"], 3)
    write_pngs(tmp_path / "images" / "val", ["cat", "dog"], 2)
    data = ImageFolderData(tmp_path / "images", image_size=16, erase=1.0)
    x, _ = next(iter(data.train_loader(6, workers=0)))
    zeros = (x == 0).all(dim=1).flatten(1).sum(1)  # pixels set to the mean in every channel
    assert (zeros >= 0.02 * 16 * 16 - 1).all()
    x, _ = next(iter(data.val_loader(4, workers=0)))
    assert (x == 0).all(dim=1).sum() == 0


def test_image_folder_single_folder_split(tmp_path):
    write_pngs(tmp_path / "images", ["a", "b"], 5)
    data = ImageFolderData(tmp_path / "images", image_size=8, val_fraction=0.2, seed=1)
    assert data.layout == "split" and len(data.train_dataset) == 8 and len(data.val_dataset) == 2
    again = ImageFolderData(tmp_path / "images", image_size=8, val_fraction=0.2, seed=1)
    assert again.val_dataset.indices == data.val_dataset.indices
    assert set(data.val_dataset.indices).isdisjoint(data.train_dataset.indices)
    x, _ = next(iter(data.val_loader(2, workers=0)))
    assert x.shape == (2, 3, 8, 8)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "empty")
    assert "no class folders" in one_line(err)
    write_pngs(tmp_path / "one", ["only"], 2)
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "one")
    assert "one class" in one_line(err)
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "b").mkdir(parents=True)
    (tmp_path / "noimages" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError) as err:
        ImageFolderData(tmp_path / "noimages")
    one_line(err)
    with pytest.raises(FileNotFoundError):
        ImageFolderData(tmp_path / "missing")


def test_image_folders_read_16bit_images_scaled_as_predict_does(tmp_path):
    from PIL import Image

    from resnetlab.data.folders import image_folder

    for label, image in (("eight", Image.new("L", (8, 8), 128)),
                         ("sixteen", Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)))):
        (tmp_path / "images" / label).mkdir(parents=True)
        image.save(tmp_path / "images" / label / "grey.png")
    folder = image_folder(tmp_path / "images")
    eight, sixteen = (np.asarray(folder[i][0]) for i in range(2))
    assert folder.classes == ["eight", "sixteen"] and sixteen.shape == (8, 8, 3)
    assert np.array_equal(eight, sixteen)  # mid-grey both, where PIL's convert would make the 16-bit one white


def test_an_unreadable_image_is_named_in_every_folder_layout(tmp_path):
    from PIL import Image

    from resnetlab.data.folders import image_folder

    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / label / "0.png")
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    folder = image_folder(tmp_path / "train")
    with pytest.raises(ValueError, match=f"^cannot read image {bad}: "):
        folder[2]


# ---------------------------------------------------------------- model inputs

def test_load_inputs_reads_a_dataset_a_tensor_file_and_a_folder(tmp_path):
    from resnetlab.data.inputs import load_inputs

    sample = load_inputs("Synthetic", None, 3, count=8, split="test")
    assert sample.images.shape == (8, 3, 32, 32) and sample.labels.shape == (8,)
    assert sample.description == "Synthetic test (8 images)"
    np.save(tmp_path / "images.npy", np.zeros((3, 1, 8, 8), dtype=np.float32))
    sample = load_inputs(str(tmp_path / "images.npy"), None, 1)
    assert sample.images.shape == (3, 1, 8, 8) and sample.labels is None
    write_pngs(tmp_path / "images", ["cat", "dog"], 2)
    sample = load_inputs(str(tmp_path / "images"), {"input_size": [16, 16]}, 3, count=3)
    assert sample.images.shape == (3, 3, 16, 16) and sample.description == f"{tmp_path / 'images'} (3 images)"
    with pytest.raises(ValueError) as err:
        load_inputs(str(tmp_path / "nowhere"), None, 3)
    assert "is not a dataset name" in one_line(err)


def test_preprocessing_of_a_dataset_checkpoint_resizes_without_cropping():
    from resnetlab.data.inputs import ImagePreprocess

    for name in ("cifar10", "CIFAR10", "FashionMNIST"):
        assert not ImagePreprocess({"dataset": name, "input_size": [32, 32]}, 3).center_crop
    assert ImagePreprocess({"dataset": "imagenet", "input_size": [224, 224]}, 3).center_crop
    assert ImagePreprocess(None, 3).center_crop


def test_links_in_an_image_folder_neither_loop_nor_relabel(tmp_path):
    from resnetlab.data.folders import image_folder

    root = tmp_path / "images"
    write_pngs(root, ["cat", "dog"], 2)
    outside = tmp_path / "elsewhere"
    write_pngs(outside, ["x"], 1)
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # a folder link back up the tree
    (root / "dog" / "alias.png").symlink_to(root / "cat" / "0.png")  # a cat image under dog
    (root / "cat" / "far.png").symlink_to(outside / "x" / "0.png")  # an image kept outside the tree
    dataset = image_folder(root)
    found = sorted((Path(p).relative_to(root).as_posix(), label) for p, label in dataset.samples)
    assert found == [("cat/0.png", 0), ("cat/1.png", 0), ("cat/far.png", 0), ("dog/0.png", 1), ("dog/1.png", 1)]
    linked = tmp_path / "linked"  # class folders may themselves be links
    linked.mkdir()
    (linked / "a").symlink_to(root / "cat", target_is_directory=True)
    (linked / "b").symlink_to(root / "dog", target_is_directory=True)
    assert len(image_folder(linked).samples) == 5


# ---------------------------------------------------------------- streamed folders: every header read first

def test_the_header_check_names_the_first_unreadable_image_on_workers_too(tmp_path, monkeypatch):
    from resnetlab.data import folders

    write_pngs(tmp_path / "images", ["cat", "dog"], 3)
    data = ImageFolderData(tmp_path / "images", image_size=8, val_fraction=0.5)
    assert data.first_unreadable(workers=0, quiet=True) is None
    bad = tmp_path / "images" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    monkeypatch.setattr(folders, "PARALLEL_HEADERS", 2)  # few enough for worker processes
    for workers in (0, 2):
        problem = data.first_unreadable(workers=workers, quiet=True)
        assert problem.startswith(f"cannot read image {bad}: ") and "\n" not in problem, problem


@pytest.mark.parametrize("streamed", [["--no-cache"], ["--cache-budget-gb", "1e-9"]])
def test_a_streamed_folder_with_a_garbage_image_fails_before_the_first_step(tmp_path, capsys, monkeypatch, streamed):
    from helpers import run_cli
    from resnetlab.data import folders

    decoded = []
    read_rgb = folders.read_rgb
    monkeypatch.setattr(folders, "read_rgb", lambda path: decoded.append(path) or read_rgb(path))
    root = tmp_path / "images"
    write_pngs(root, ["cat", "dog"], 4)
    bad = root / "dog" / "2.png"
    bad.write_bytes(b"GIF89a garbage")
    runs = tmp_path / "runs"
    argv = ["train", "--data", root, "--model", "resnet8", "--image-size", "8", "--epochs", "1", "--batch-size", "2",
            "--val-split", "0.25", "--workers", "0", "--augment", "crop-flip", "--pad", "4", "--precision", "fp32",
            "--no-channels-last", "--quiet", "--out", runs, "--name", "run", *streamed]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"resnetlab: error: cannot read image {bad}: "), err
    assert decoded == [] and not (runs / "run").exists()  # no image decoded: no step taken
    bad.unlink()
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and len(decoded) > 0, err


def test_streamed_training_transform_follows_augment():
    from torchvision.transforms import v2

    from resnetlab.data.folders import train_transform

    def kinds(augment):
        return [type(step).__name__ for step in train_transform(8, augment=augment).transforms]

    assert kinds("crop-flip")[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    assert kinds("flip")[:3] == ["Resize", "CenterCrop", "RandomHorizontalFlip"]
    assert "RandomHorizontalFlip" not in kinds("none") and "RandomResizedCrop" not in kinds("none")
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    assert torch.equal(train_transform(8, augment="none")(v2.functional.to_image(image)),
                       train_transform(8, augment="none")(v2.functional.to_image(image)))  # nothing random
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; choose from crop-flip, flip, none"):
        train_transform(8, augment="mixup")
