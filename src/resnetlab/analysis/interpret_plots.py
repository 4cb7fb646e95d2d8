"""Figures of what a network sees: activation-map overlays, stage feature maps, the mistakes it is most
sure of, per-class accuracy and the reliability diagram."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .plots import pyplot, save_figure

__all__ = ["plot_explanation", "plot_features", "plot_per_class", "plot_reliability", "plot_top_losses",
           "show_image"]

METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM"}


def show_image(ax, image: np.ndarray, heat: Optional[np.ndarray] = None) -> None:
    """Draw an H x W x C image in [0, 1] on ``ax`` (grayscale for one channel), with ``heat`` over it."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image[..., :3])
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_explanation(image: np.ndarray, classes: Sequence[str], probabilities: Sequence[float],
                     maps: Sequence[np.ndarray], method: str, path: Union[str, Path], title: str = "") -> Path:
    """The image, then one overlay of the activation map per class, each titled with its probability."""
    plt = pyplot()
    n = len(classes) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.5))
    show_image(axes[0], image)
    axes[0].set_title("input")
    for ax, name, p, heat in zip(axes[1:], classes, probabilities, maps):
        show_image(ax, image, heat)
        ax.set_title(f"{name}: {100 * p:.1f}%")
    fig.suptitle((title + "  " if title else "") + f"({METHOD_NAMES.get(method, method)}; red: most evidence)")
    return save_figure(fig, path)


def plot_features(features: Sequence[Tuple[str, torch.Tensor]], image: np.ndarray, path: Union[str, Path],
                  channels: int = 8, title: str = "") -> Path:
    """One row per stage (the input first): its first ``channels`` channel maps, labelled with its shape."""
    plt = pyplot()
    rows = len(features) + 1
    fig, axes = plt.subplots(rows, channels, figsize=(1.6 * channels, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    show_image(axes[0][0], image)
    axes[0][0].set_title(f"input {image.shape[0]}x{image.shape[1]}", fontsize=8, loc="left")
    for row, (name, output) in zip(axes[1:], features):
        maps = output[0].float().cpu()
        shape = "x".join(str(s) for s in maps.shape)
        for index, ax in enumerate(row[: maps.shape[0]]):
            ax.imshow(maps[index].numpy(), cmap="viridis")
            if index:
                ax.set_title(f"ch {index}", fontsize=7)
        row[0].set_title(f"{name}: {shape} (C x H x W)\nch 0", fontsize=8, loc="left")
    fig.suptitle(title or "feature maps of the stem and each stage (first channels)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_top_losses(images: Sequence[np.ndarray], true: Sequence[str], predicted: Sequence[str],
                    confidences: Sequence[float], path: Union[str, Path],
                    maps: Optional[Sequence[np.ndarray]] = None, title: str = "") -> Path:
    """A grid of mistakes: each image (with the predicted class's activation map) titled true / predicted."""
    plt = pyplot()
    n = max(1, len(images))
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for index, ax in enumerate(axes.ravel()[: len(images)]):
        show_image(ax, images[index], maps[index] if maps is not None else None)
        ax.axis("on")
        ax.set_title(f"true {true[index]}\npredicted {predicted[index]} {100 * confidences[index]:.1f}%",
                     fontsize=8)
    if not images:
        axes[0][0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title or "the most confident mistakes")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_class(classes: Sequence[str], accuracy: Sequence[float], path: Union[str, Path],
                   title: str = "") -> Path:
    """Top-1 accuracy of each class as horizontal bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(classes) + 1)))
    positions = list(range(len(classes)))
    ax.barh(positions, accuracy, color="tab:blue")
    ax.set_yticks(positions, labels=list(classes))
    ax.invert_yaxis()
    for y, value in zip(positions, accuracy):
        ax.text(min(value, 100) + 0.5, y, f"{value:.1f}%", va="center", fontsize=8)
    ax.set(xlim=(0, 110), xlabel="top-1 accuracy (%)", title=title or "accuracy per class")
    ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_reliability(bins: List[dict], ece: float, path: Union[str, Path], title: str = "") -> Path:
    """Accuracy against confidence per confidence bin, the diagonal being perfect calibration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    filled = [b for b in bins if b["count"]]
    width = 1.0 / max(1, len(bins))
    ax.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar([b["low"] for b in filled], [b["confidence"] - b["accuracy"] for b in filled], width=width,
           bottom=[b["accuracy"] for b in filled], align="edge", color="tab:red", alpha=0.3, label="gap")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy",
           title=(title + "\n" if title else "") + f"reliability (ECE {100 * ece:.2f}%)")
    ax.legend(loc="upper left")
    return save_figure(fig, path)
