"""Figures a person would rather look at than read: training curves, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch

from ..fileio import atomic_write


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Union[str, Path]) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    plt = pyplot()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plain_log_ticks(axis) -> None:
    """Label a log axis with plain numbers (5, 10, 20) rather than powers (2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def plot_curves(history: List[Dict[str, float]], path: Union[str, Path], title: str = "") -> Path:
    """Loss and top-1 error per epoch, train and test, in two panels."""
    plt = pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    errors: List[float] = []
    for split, style in (("train", "--"), ("test", "-")):
        rows = [row for row in history if row.get(f"{split}_loss") is not None]  # test: evaluated epochs only
        if rows:
            epochs = [row["epoch"] for row in rows]
            error = [100.0 - row[f"{split}_top1"] for row in rows]
            ax_loss.plot(epochs, [row[f"{split}_loss"] for row in rows], style, marker="o", label=split)
            ax_err.plot(epochs, error, style, marker="o", label=split)
            errors += error
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_err.set(xlabel="epoch", ylabel="top-1 error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.grid(True, alpha=0.3)
        ax.legend()
    if errors and max(errors) > 0:
        ax_err.set_yscale("log")
        plain_log_ticks(ax_err.yaxis)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], path: Union[str, Path],
                   title: str = "") -> Path:
    """Confusion matrix with counts; rows are true classes, columns predictions."""
    plt = pyplot()
    counts = matrix.cpu().numpy()
    n = len(classes)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if n <= 30:
        ax.set_xticks(range(n), labels=classes, rotation=45, ha="right")
        ax.set_yticks(range(n), labels=classes)
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > threshold else "black")
    accuracy = 100.0 * counts.trace() / max(1, counts.sum())
    ax.set(xlabel="predicted class", ylabel="true class",
           title=(title + " " if title else "") + f"(top-1 {accuracy:.2f}%)")
    return save_figure(fig, path)
