"""The report.md of each experiment: tables and plain-language statements computed from the numbers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch

from ..fileio import atomic_write_text
from ..machine import describe_machine
from .common import mean_std

__all__ = ["final_errors", "degradation_report", "gradients_report"]

Final = Dict[str, Any]


def final_errors(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Final]:
    """Per model: kind, depth, and (mean, std) over seeds of the last evaluation's train and test error."""
    last: Dict[Tuple[str, int], Mapping[str, Any]] = {}
    for row in rows:
        key = (row["model"], row["seed"])
        if key not in last or row["iteration"] >= last[key]["iteration"]:
            last[key] = row
    finals: Dict[str, Final] = {}
    for (model, _), row in last.items():
        entry = finals.setdefault(model, dict(kind=row["kind"], depth=row["depth"], train=[], test=[]))
        entry["train"].append(row["train_error"])
        entry["test"].append(row["test_error"])
    for entry in finals.values():
        entry["seeds"] = len(entry["train"])
        entry["train"], entry["test"] = mean_std(entry["train"]), mean_std(entry["test"])
    return dict(sorted(finals.items(), key=lambda item: (item[1]["kind"], item[1]["depth"])))


def _value(pair: Tuple[float, float], seeds: int) -> str:
    return f"{pair[0]:.2f} ± {pair[1]:.2f}" if seeds > 1 else f"{pair[0]:.2f}"


def _statement(question: str, finals: Dict[str, Final], shallow: str, deep: str, want_deeper_worse: bool) -> str:
    """'question yes/no: deep x% vs shallow y% ...', with a warning when seeds disagree."""
    a, b = finals[shallow], finals[deep]
    seeds = min(a["seeds"], b["seeds"])
    diff = b["train"][0] - a["train"][0]
    answer = (diff > 0) if want_deeper_worse else (diff <= 0)
    text = (f"{question} **{'yes' if answer else 'no'}**: final training error {deep} "
            f"{_value(b['train'], seeds)}% vs {shallow} {_value(a['train'], seeds)}% "
            f"(difference {diff:+.2f} points); test error {deep} {_value(b['test'], seeds)}% vs "
            f"{shallow} {_value(a['test'], seeds)}%.")
    if seeds > 1 and abs(diff) <= math.hypot(a["train"][1], b["train"][1]):
        text += " The difference is within the spread over seeds, so it is not a clear result."
    elif seeds == 1:
        text += " (One seed: no spread to judge the difference against.)"
    return text


def degradation_report(finals: Dict[str, Final], params: Mapping[str, int], settings: Mapping[str, Any],
                       path: Path) -> Tuple[Path, List[str]]:
    """Write report.md of the degradation experiment; return its path and the two statements."""
    depths = sorted({entry["depth"] for entry in finals.values()})
    shallow, deep = depths[0], depths[-1]
    plain_q = "Is the deeper plain net worse than the shallower one on training error?"
    resid_q = "Is the deeper residual net better than or equal to the shallower one on training error?"
    plain = _statement(plain_q, finals, f"plain{shallow}", f"plain{deep}", want_deeper_worse=True)
    resid = _statement(resid_q, finals, f"resnet{shallow}", f"resnet{deep}", want_deeper_worse=False)
    plain_yes, resid_yes = "**yes**" in plain, "**yes**" in resid
    if plain_yes and resid_yes:
        verdict = "The degradation effect appears in this run: depth hurts the plain nets and not the residual ones."
    elif plain_yes:
        verdict = ("The effect appears only in part: the deeper plain net is worse, but so is the deeper "
                   "residual net.")
    elif resid_yes:
        verdict = ("The degradation effect does not appear in this run: the deeper plain net is not worse "
                   "than the shallower one.")
    else:
        verdict = ("The degradation effect does not appear in this run: the deeper plain net is not worse, "
                   "and the deeper residual net is not better.")
    seeds = settings["seeds"]
    spread = "mean ± std over seeds" if seeds > 1 else "one seed"
    lines = [
        "# Degradation: plain vs residual networks",
        "",
        f"Same recipe and the same {settings['iterations']} iterations for every net (He et al. 2015, "
        "Figure 6). Training error: mean over the last evaluation interval, on augmented batches in "
        "train mode. Test error: on the fixed test subset.",
        "",
        f"- {plain}",
        f"- {resid}",
        "",
        verdict,
        "",
        f"## Final errors (%), {spread}",
        "",
        "| model | kind | depth | params | train error | test error |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model, entry in finals.items():
        lines.append(f"| {model} | {entry['kind']} | {entry['depth']} | {params.get(model, 0):,} | "
                     f"{_value(entry['train'], entry['seeds'])} | {_value(entry['test'], entry['seeds'])} |")
    lines += [
        "",
        "## Settings",
        "",
        f"- data: {settings['data']}; {settings['train_images']} training images, "
        f"test subset of {settings['test_images']} images",
        f"- iterations: {settings['plan']}; evaluated every {settings['eval_every']} iterations",
        f"- batch {settings['batch_size']}, SGD momentum 0.9, weight decay 1e-4, lr {settings['lr']:g}, "
        f"schedule {settings['schedule']}" + (" (lr / 10 at 50% and 75% of the iterations)"
                                              if settings["schedule"] == "multistep" else ""),
        f"- augmentation: random crop with padding {settings['pad']} and horizontal flip",
        f"- residual shortcut: {settings['shortcut']} "
        f"({'zero-pad identity' if settings['shortcut'] == 'A' else 'projection where the shape changes'})",
        f"- precision: {settings['precision']}, channels_last"
        + (", training steps replayed as CUDA graphs" if settings.get("cuda_graphs") else "")
        + f"; seeds: {seeds} (0..{seeds - 1})",
        f"- device: {settings['device']}; machine: {describe_machine(torch.device(settings['device']))}",
        f"- wall time: {settings['wall_s']:.0f} s",
        "",
        "degradation.csv columns: model, kind (plain | residual), depth, seed, iteration, "
        "train_error (%), test_error (%).",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return path, [plain, resid, verdict]


def gradients_report(grads: Sequence[Mapping[str, Any]], responses: Sequence[Mapping[str, Any]],
                     diverged: Mapping[str, int], settings: Mapping[str, Any], path: Path) -> Tuple[Path, List[str]]:
    """Write report.md of the gradient-flow experiment; return its path and one line per (norm, model, step)."""
    per_model: Dict[Tuple[str, str, int], List[Mapping[str, Any]]] = {}
    for row in grads:
        per_model.setdefault((row["norm"], row["model"], row["step"]), []).append(row)
    lines = [
        "# Gradient flow and residual responses: plain vs residual networks",
        "",
        "Gradient: L2 norm of d(loss)/d(weight) of every conv layer, in forward order, on one fixed "
        f"training batch ({settings['batch_size']} images, not augmented, train-mode BN, fp32). "
        "ratio = first conv layer / last conv layer; far below 1 means the gradient vanishes towards "
        "the input, far above 1 that it explodes. A weight's gradient norm also grows with the layer's size "
        "(the first conv has far fewer weights than the last), so compare models at the same layer index too.",
        "",
        "| norm | model | step | first layer | last layer | ratio first/last | min | max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    statements: List[str] = []
    for (norm, model, step), rows in per_model.items():
        rows = sorted(rows, key=lambda r: r["layer_index"])
        values = [r["grad_norm"] for r in rows]
        first, last = values[0], values[-1]
        ratio = first / last if last > 0 else float("inf")
        lines.append(f"| {norm} | {model} | {step} | {first:.3g} | {last:.3g} | {ratio:.3g} | "
                     f"{min(values):.3g} | {max(values):.3g} |")
        statements.append(f"{model} ({'BN' if norm == 'batch' else 'no norm'}) step {step}: "
                          f"first/last gradient norm {ratio:.3g}")
    if diverged:
        lines += ["", "Diverged (the loss became NaN or infinite; no later measurement):", ""]
        lines += [f"- {key} at training step {step}" for key, step in diverged.items()]
    lines += [
        "",
        f"## Residual responses after {settings['last_step']} steps",
        "",
        "Std of the output of each block's last norm (before the addition), eval mode, on the first "
        f"{settings['response_images']} test images (He et al. 2015, Figure 7). Before measuring, BN running "
        "statistics are recomputed exactly on the first 1024 training images, since after a few steps the "
        "running averages still remember the initial network.",
        "",
        "| norm | model | blocks | mean std | first block | last block |",
        "|---|---|---:|---:|---:|---:|",
    ]
    per_block: Dict[Tuple[str, str], List[float]] = {}
    for row in responses:
        per_block.setdefault((row["norm"], row["model"]), []).append(row["response_std"])
    for (norm, model), stds in per_block.items():
        lines.append(f"| {norm} | {model} | {len(stds)} | {sum(stds) / len(stds):.3g} | {stds[0]:.3g} | "
                     f"{stds[-1]:.3g} |")
    lines += [
        "",
        "## Settings",
        "",
        f"- data: {settings['data']}; steps measured: {settings['steps']}",
        f"- training: SGD momentum 0.9, weight decay 1e-4, constant lr {settings['lr']:g}, batch "
        f"{settings['batch_size']}, crop-flip augmentation, precision {settings['precision']}, seed {settings['seed']}",
        f"- device: {settings['device']}; machine: {describe_machine(torch.device(settings['device']))}",
        f"- wall time: {settings['wall_s']:.0f} s",
        "",
        "gradients.csv columns: model, kind, depth, norm, step, layer_index, layer_name, grad_norm.  ",
        "responses.csv columns: model, kind, depth, norm, step, layer_index, layer_name, response_std.",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return path, statements
