"""Figures of the experiments: error curves (Figure 6), gradient norms per layer, response stds (Figure 7)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..analysis.plots import plain_log_ticks, pyplot, save_figure
from .common import mean_std

__all__ = ["plot_degradation", "plot_gradients", "plot_responses"]

NORM_TITLES = {"batch": "with BatchNorm", "none": "without normalization"}
STEP_STYLES = (":", "--", "-.", "-")


def _colours(keys: Sequence[Any]) -> Dict[Any, Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return {key: cmap(i % 10) for i, key in enumerate(keys)}


def _scale_y(axes: Sequence[Any], values: Sequence[float]) -> None:
    """Log scale with plain-number ticks when the positive values span a decade or more."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if len(positive) == len([v for v in values if math.isfinite(v)]) and positive and \
            max(positive) / min(positive) >= 10:
        for ax in axes:
            ax.set_yscale("log")
            if max(positive) / min(positive) < 1e3:  # few decades: label 1-2-5 ticks as plain numbers
                plain_log_ticks(ax.yaxis)


def plot_degradation(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Figure 6 of the paper: plain (left) and residual (right), train error thin dashed, test bold."""
    plt = pyplot()
    depths = sorted({row["depth"] for row in rows})
    colours = _colours(depths)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True, layout="constrained")
    values: List[float] = []
    banded = False
    for ax, kind in zip(axes, ("plain", "residual")):
        for depth in depths:
            series: Dict[int, List[Tuple[float, float]]] = {}
            model = ""
            for row in rows:
                if row["kind"] == kind and row["depth"] == depth:
                    model = row["model"]
                    series.setdefault(row["iteration"], []).append((row["train_error"], row["test_error"]))
            if not series:
                continue
            its = sorted(series)
            for index, (label, style, width) in enumerate((("train", "--", 1.0), ("test", "-", 2.4))):
                stats = [mean_std([pair[index] for pair in series[i]]) for i in its]
                means = [m for m, _ in stats]
                values += means
                ax.plot(its, means, style, color=colours[depth], linewidth=width, label=f"{model} {label}")
                if any(s > 0 for _, s in stats):
                    banded = True
                    ax.fill_between(its, [m - s for m, s in stats], [m + s for m, s in stats],
                                    color=colours[depth], alpha=0.12, linewidth=0)
        ax.set(xlabel="iterations", title=f"{kind} networks")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    axes[0].set_ylabel("top-1 error (%)")
    _scale_y(axes, values)
    legend = "thin dashed: training error, bold: test error" + (", bands: ± std over seeds" if banded else "")
    fig.suptitle((title + "\n" if title else "") + legend, fontsize=10)
    return save_figure(fig, path)


def plot_gradients(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Gradient norm of each conv layer's weight against layer index; one panel per norm, log scale."""
    plt = pyplot()
    norms = list(dict.fromkeys(row["norm"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    steps = sorted({row["step"] for row in rows})
    colours = _colours(models)
    styles = {step: STEP_STYLES[-1] if step == steps[-1] else STEP_STYLES[i % 3] for i, step in enumerate(steps)}
    fig, axes = plt.subplots(1, len(norms), figsize=(6.5 * len(norms), 5.0), squeeze=False,
                             layout="constrained")
    values = [row["grad_norm"] for row in rows]
    for ax, norm in zip(axes[0], norms):
        for model in models:
            for step in steps:
                points = sorted((r["layer_index"], r["grad_norm"]) for r in rows
                                if r["norm"] == norm and r["model"] == model and r["step"] == step)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], styles[step], color=colours[model],
                            linewidth=1.6, marker="." if len(points) < 30 else None,
                            label=f"{model}, step {step}")
        ax.set(xlabel="conv layer index (forward order, 1 = first)", title=NORM_TITLES.get(norm, norm))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    axes[0][0].set_ylabel("gradient L2 norm of conv weight")
    _scale_y(axes[0], values)
    fig.suptitle((title + "\n" if title else "") + "dotted: at initialization, solid: after the last training step",
                 fontsize=10)
    return save_figure(fig, path)


def plot_responses(rows: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    """Figure 7 of the paper: std of each residual function's response against block index."""
    plt = pyplot()
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no responses: every net diverged before the last step", ha="center", va="center")
        return save_figure(fig, path)
    norms = list(dict.fromkeys(row["norm"] for row in rows))
    depths = sorted({row["depth"] for row in rows})
    colours = _colours(depths)
    fig, axes = plt.subplots(1, len(norms), figsize=(6.5 * len(norms), 4.8), squeeze=False,
                             layout="constrained")
    values = [row["response_std"] for row in rows]
    for ax, norm in zip(axes[0], norms):
        for depth in depths:
            for kind, style in (("plain", "--"), ("residual", "-")):
                points = sorted((r["layer_index"], r["response_std"], r["model"]) for r in rows
                                if r["norm"] == norm and r["depth"] == depth and r["kind"] == kind)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colours[depth],
                            marker="o", markersize=3, linewidth=1.6, label=points[0][2])
        ax.set(xlabel="block index (forward order, 1 = first)", title=NORM_TITLES.get(norm, norm))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    axes[0][0].set_ylabel("std of residual response (no unit)")
    _scale_y(axes[0], values)
    fig.suptitle((title + "\n" if title else "") + "response = output of the block's last norm, before the "
                 "addition; dashed: plain, solid: residual", fontsize=10)
    return save_figure(fig, path)
