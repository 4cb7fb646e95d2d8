"""Generated parts of the documentation: tables from measurement files and from the code.

The documentation never carries a measured figure typed by hand. A page asks for a generated part
with a marker line, ``<!-- generated: NAME -->``, which the MkDocs hook in this file (``hooks:`` in
mkdocs.yml) replaces at build time with the part's markdown:

- measured results come from the JSON files in ``benchmarks/results/`` and from the experiments'
  CSV files and reports in ``docs/experiments/``;
- the model zoo comes from ``resnetlab.model_info``, the CLI reference from
  ``resnetlab.cli.build_parser()``, the recipes and config keys from ``resnetlab.train.config``.

README.md is not built by MkDocs, so its headline figures sit between ``<!-- generated: headline -->``
and ``<!-- end generated -->`` and are rewritten in place by

    python scripts/docs_gen.py            # (make results) refresh README's block, write build/docs/*.md
    python scripts/docs_gen.py --check    # exit 1 when README's block is out of date

``build/docs/`` receives each page with its markers expanded, to read the tables without a site.
Every row of a results table names its source file, the machine, the library versions, the date
(the JSON's own ``date`` field where it has one, else the date git first recorded the file's
content) and the command that writes the file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
EXPERIMENTS = DOCS / "experiments"
README = ROOT / "README.md"

MARKER = re.compile(r"^<!-- generated: ([\w-]+) -->[ \t]*$", re.M)
README_BLOCK = re.compile(r"(<!-- generated: headline -->\n)(.*?)(<!-- end generated -->)", re.S)

# ---------------------------------------------------------------- sources and provenance


@functools.cache
def load_json(name: str) -> Dict[str, Any]:
    """One results file, by its name in benchmarks/results/."""
    return json.loads((RESULTS / name).read_text())


@functools.cache
def git_date(path: Path) -> str:
    """The date git first recorded this file's content (it survives renames), or '' if git has none."""
    try:
        blob = subprocess.run(["git", "hash-object", str(path)], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dates = subprocess.run(["git", "log", "--format=%ad", "--date=short", f"--find-object={blob}"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return dates[-1] if dates else ""


def date_of(name: str) -> str:
    """A results file's date: its own field, else git's record, else 'not recorded'."""
    data = load_json(name)
    return str(data.get("date") or git_date(RESULTS / name) or "not recorded")


def split_machine(text: str) -> Tuple[str, str]:
    """'AMD EPYC, 2 threads, torch 2.15.0+cu132' -> ('AMD EPYC, 2 threads', 'torch 2.15.0+cu132')."""
    match = re.match(r"(.*?),? (torch \S+)(.*)$", text)
    if not match:
        return text, ""
    machine, versions, rest = match.group(1).strip(), match.group(2), match.group(3).strip()
    threads = re.match(r"with (\d+) threads,? *(.*)$", rest)  # describe_machine(): "... with N threads, OS; GPU X"
    if threads:
        return ", ".join(filter(None, [machine, f"{threads.group(1)} threads", threads.group(2)])), versions
    return machine, (versions + " " + rest).strip()


def machine_and_versions(data: Dict[str, Any]) -> Tuple[str, str]:
    """The machine and library versions a results file records (only what it has)."""
    machine, versions = split_machine(str(data.get("machine", "")))
    torch_version = data.get("torch_version") or data.get("torch")
    if torch_version and not versions:
        versions = f"torch {torch_version}"
    if data.get("gpu"):
        machine = ", ".join(filter(None, [machine, str(data["gpu"])]))
    return machine or "not recorded", versions or "not recorded"


def results_link(name: str, prefix: str = "") -> str:
    return f"[{name}]({prefix}benchmarks/results/{name})"


def code(text: str) -> str:
    """Inline code that survives inside a table cell."""
    return "`" + text.replace("|", "\\|") + "`"


def escape(text: str) -> str:
    """Plain text for a markdown table cell."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("*", "\\*"))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "", data: bool = True) -> str:
    """A markdown table; ``align`` holds 'l' or 'r' per column (default left). A ``data`` table sits in a
    ``data-table`` block, whose cells after the first do not wrap (the table scrolls instead)."""
    marks = ["---:" if (align[i:i + 1] == "r") else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    body = "\n".join(lines) + "\n"
    return f'<div class="data-table" markdown>\n\n{body}\n</div>\n' if data else body


def source_first(rows: List[List[Any]]) -> List[List[Any]]:
    """Rows built as [..., command, source] reordered to [..., source, command] (the long command last)."""
    return [[*row[:-2], row[-1], row[-2]] for row in rows]


def pct(value: float) -> str:
    return f"{value:.2f}%"


def setting(key: str, value: Any) -> str:
    """KEY=VALUE as the benchmark scripts and `resnetlab train -o` read it back (a Python literal)."""
    text = value if isinstance(value, str) else repr(value)
    return f"{key}={text}"


def script_command(script: str, data: Dict[str, Any], defaults: Dict[str, Any], extra: Sequence[str] = ()) -> str:
    """`python benchmarks/SCRIPT.py` with the flags whose recorded value differs from the script's default."""
    words = ["python", f"benchmarks/{script}.py"]
    for key, default in defaults.items():
        if key in data and data[key] != default:
            words += [f"--{key.replace('_', '-')}", str(data[key])]
    return shlex.join([*words, *extra])


# ---------------------------------------------------------------- time to accuracy

# The runs of the recipes as they are today (file, what it is).
CURRENT_TTA = [
    ("time_to_accuracy-default.json", "`default`"),
    ("time_to_accuracy-default-seed1.json", "`default`, seed 1"),
    ("time_to_accuracy-default-rerun.json", "`default`, again beside the `fast` seeds"),
    ("time_to_accuracy-fast-seed0.json", "`fast`"),
    ("time_to_accuracy-fast-seed1.json", "`fast`, seed 1"),
    ("time_to_accuracy-fast-seed2.json", "`fast`, seed 2"),
    ("time_to_accuracy-accurate-seed0.json", "`accurate`"),
    ("time_to_accuracy-accurate-seed1.json", "`accurate`, seed 1"),
    ("time_to_accuracy-accurate-seed2.json", "`accurate`, seed 2"),
    ("time_to_accuracy-accurate-unpruned-seed0.json", "`accurate` without pruning"),
]

# A few of the alternatives measured on the way to the recipes: (file, what differed). The settings are
# the JSON's own overrides, applied to the recipe as it was when the file was written.
TRIED_TTA = [
    ("time_to_accuracy-resnet14-crop-flip-7ep.json", "`default` with random crops"),
    ("time_to_accuracy-default-6ep.json", "the previous `fast`: `default` one epoch shorter"),
    ("time_to_accuracy-default-resnet14-3ep.json", "`default` in 3 epochs"),
    ("time_to_accuracy-default-prog16-4ep.json", "`default` in 4 epochs, progressive resizing from 16 pixels"),
    ("time_to_accuracy-default-wide-pool-3ep.json", "stages at half the side and twice the width, 3 epochs"),
    ("time_to_accuracy-default-wide-pool-3ep-lr02-nesterov.json", "the same at lr 0.2 with Nesterov momentum"),
    ("time_to_accuracy-default-resnet8-wide48-pool-3ep-lr02.json", "resnet8 at half the side and three times the "
     "width, lr 0.2"),
    ("time_to_accuracy-default-wide-pool-4ep-lr02.json", "stages at half the side and twice the width, 4 epochs, "
     "lr 0.2"),
    ("time_to_accuracy-accurate-wide-pool-resnet14-16ep.json", "`accurate` with that resnet14 for 16 epochs at full "
     "size, lr 0.2"),
    ("time_to_accuracy-default-resnet14-width2-crop-flip-16ep.json", "a twice-as-wide resnet14, crops, 16 epochs"),
    ("time_to_accuracy-accurate-32ep-eval4-erase025.json", "resnet20 at full size for 32 epochs (no progressive "
     "resizing)"),
    ("time_to_accuracy-accurate-32ep-erase025-ema-nesterov.json", "the same with Nesterov momentum and an EMA of "
     "the weights"),
    ("time_to_accuracy-accurate-32ep-erase025-nesterov-zeroinit.json", "the same with zero-initialised residual "
     "branches"),
    ("time_to_accuracy-accurate-44ep-prog16-shift-tta.json", "progressive resizing from 16 pixels, no pruning"),
    ("time_to_accuracy-accurate-54ep-prog12.json", "progressive resizing from 12 pixels, 54 epochs"),
    ("time_to_accuracy-accurate-44ep-prog16-shift-tta-lr02.json", "learning rate 0.2"),
    ("time_to_accuracy-accurate-44ep-prog16-shift-tta-ls02.json", "label smoothing 0.2"),
    ("time_to_accuracy-accurate-44ep-prog16-shift-tta-ls0.json", "no label smoothing"),
    ("time_to_accuracy-resnet20-6ep-intel.json", "an earlier resnet20 recipe in bf16 with channels_last"),
    ("time_to_accuracy-resnet20-6ep-fp32-intel.json", "the same in fp32 with contiguous tensors"),
]


def tta_command(name: str) -> str:
    data = load_json(name)
    words = ["python", "benchmarks/time_to_accuracy.py", "--recipe", data["recipe"]]
    for key, value in data["overrides"].items():
        words += ["--set", setting(key, value)]
    stem = Path(name).stem
    prefix = f"time_to_accuracy-{data['recipe']}-"
    if stem.startswith(prefix):
        words += ["--tag", stem[len(prefix):]]
    return shlex.join(words)


def pruned(name: str) -> bool:
    """Whether the run pruned easy samples (its rows are then passes, not epochs), by today's recipe."""
    from resnetlab.train.config import resolve_config

    data = load_json(name)
    try:
        return resolve_config(data["recipe"], overrides=data["overrides"]).prune_easy > 0
    except ValueError:
        return False


def reached(data: Dict[str, Any], target: str, unit: str) -> str:
    hit = data["reached"].get(target)
    return f"{hit['wall_s']:.0f} s ({unit} {hit['epoch']})" if hit else "not reached"


def images_per_s(data: Dict[str, Any]) -> str:
    values = [row["train_images_per_s"] for row in data["epochs"]]
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}–{high}"


def gen_tta_current(prefix: str = "", runs: Sequence[Tuple[str, str]] = CURRENT_TTA,
                    targets: Tuple[str, str] = ("93.0", "95.0"), accuracy: str = "final top-1",
                    own_command: bool = False) -> str:
    """The recipes' own runs: when each reached the two targets, with the command that repeats it (the file's own
    with ``own_command``, else one built from its recipe and overrides)."""
    rows = []
    for name, label in runs:
        data = load_json(name)
        unit = "pass" if pruned(name) else "epoch"
        machine, versions = machine_and_versions(data)
        command = data["command"] if own_command else tta_command(name)
        rows.append([label, f"**{pct(data['final_top1'])}**", *(reached(data, t, unit) for t in targets),
                     f"{data['epochs'][-1]['wall_s']:.0f} s", images_per_s(data), escape(machine), escape(versions),
                     date_of(name), results_link(name, prefix), code(command)])
    return table(["run", accuracy, *(f"{float(t):.0f}% reached" for t in targets), "wall time", "train images/s",
                  "machine", "versions", "date", "source", "command"], rows, "lrrrrr")


def gen_tta_tried(prefix: str = "") -> str:
    rows = []
    for name, label in TRIED_TTA:
        data = load_json(name)
        machine, versions = machine_and_versions(data)
        changes = ", ".join(setting(k, v) for k, v in data["overrides"].items()) or "none"
        unit = "pass" if pruned(name) else "epoch"
        rows.append([label, code(data["recipe"]), code(changes), pct(data["final_top1"]),
                     reached(data, "93.0", unit), "yes" if data["reached"].get("95.0") else "no",
                     f"{data['epochs'][-1]['wall_s']:.0f} s", escape(machine), escape(versions), date_of(name),
                     results_link(name, prefix)])
    return table(["what was tried", "recipe then", "overrides", "final top-1", "93% reached", "95% reached",
                  "wall time", "machine", "versions", "date", "source"], rows, "lllrrlr")


# The fast CIFAR-10 recipe on 2 CPU cores, scored on the 5,000 held-out training images.
CIFAR_FAST_TTA = [
    ("time_to_accuracy-cifar-fast.json", "`cifar-fast`"),
    ("time_to_accuracy-cifar-fast-wide-pool.json", "`cifar-fast` with its stages at half the side and twice the "
     "width, lr 0.2, Nesterov momentum"),
]


# ---------------------------------------------------------------- training speed

THROUGHPUT = ["train_throughput.json", "train_throughput-torch2.14.json"]
THROUGHPUT_DEFAULTS = dict(model="resnet20", batch=128, steps=40)


def gen_train_throughput(prefix: str = "") -> str:
    rows = []
    for name in THROUGHPUT:
        data = load_json(name)
        machine, versions = machine_and_versions(data)
        rows.append([data["model"], data["batch"], f"{data['reference_images_per_s']:.1f}",
                     f"{data['resnetlab_images_per_s']:.1f}", f"**{data['ratio']:.2f}x**", escape(machine),
                     escape(versions), date_of(name), results_link(name, prefix),
                     code(script_command("train_throughput", data, THROUGHPUT_DEFAULTS))])
    return table(["model", "batch", "torchvision pipeline, images/s", "resnetlab, images/s", "ratio", "machine",
                  "versions", "date", "source", "command"], rows, "lrrrr")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def gen_folder_throughput(prefix: str = "") -> str:
    name = "folder_throughput.json"
    data = load_json(name)
    machine, versions = machine_and_versions(data)
    speeds = data["images_per_s"]
    rows = [["decoded into memory and cached", f"{speeds['cached']:.1f}", f"{data['cached_vs_in_memory']:.3f}x",
             f"**{data['cached_vs_streamed']:.2f}x**"],
            ["streamed (DataLoader workers)", f"{speeds['streamed']:.1f}", "", "1.00x"],
            ["the same pixels as an in-memory dataset", f"{speeds['in memory']:.1f}", "1.000x", ""]]
    body = table(["image folder path", "training images/s", "vs in memory", "vs streamed"], rows, "lrrr")
    body += (f"\nDecoding all {data['images']:,} images into a fresh cache took {data['cold_decode_s']:.1f} s; loading "
             f"them back from the cache {data['warm_load_s']:.2f} s.\n\n")
    return body + provenance(name, f"{data['model']}, batch {data['batch']}, median of {data['rounds']} rounds",
                             machine, versions, data["command"], prefix)


def gen_training_speed(prefix: str = "") -> str:
    """The speed measurements behind the recipes: progressive resizing, pruning's step cost, the shortcut."""
    rows = []
    data = load_json("progressive_resize.json")
    machine, versions = machine_and_versions(data)
    speeds = data["images_per_s"]
    sizes = sorted(speeds, key=int)
    rows.append(["progressive resizing: images/s at the smallest and the full training size",
                 f"{speeds[sizes[0]]:.1f} at {sizes[0]} px, {speeds[sizes[-1]]:.1f} at {sizes[-1]} px; "
                 f"{len(data['schedule'])} epochs cost {data['full_size_epochs']:.2f} full-size epochs "
                 f"({data['epochs_ratio']:.2f}x)",
                 escape(machine), escape(versions), date_of("progressive_resize.json"),
                 code(script_command("progressive_resize", data, dict(model="resnet20", batch=128, steps=30)) ),
                 results_link("progressive_resize.json", prefix)])
    data = load_json("prune_easy.json")
    machine, versions = machine_and_versions(data)
    rows.append(["pruning easy samples: images/s of pruned steps against plain ones (median of "
                 f"{data['rounds']} rounds)",
                 f"{median(data['pruned_images_per_s']):.1f} against {median(data['plain_images_per_s']):.1f}, "
                 f"ratio of medians {data['ratio_of_medians']:.3f}",
                 escape(machine), escape(versions), date_of("prune_easy.json"),
                 code(script_command("prune_easy", data, dict(model="resnet20", batch=128, size=28, samples=8192,
                                                              steps=60, rounds=7))),
                 results_link("prune_easy.json", prefix)])
    data = load_json("shortcut_layout.json")
    machine, versions = machine_and_versions(data)
    rows.append(["option-A shortcut as a 1x1 average pool against a strided slice: images/s (median of "
                 f"{data['rounds']} rounds)",
                 f"{median(data['resnetlab_images_per_s']):.1f} against {median(data['reference_images_per_s']):.1f}, "
                 f"ratio of medians {data['ratio_of_medians']:.3f}",
                 escape(machine), escape(versions), date_of("shortcut_layout.json"),
                 code(script_command("shortcut_layout", data, dict(model="resnet20", batch=128, size=28, channels=1,
                                                                   steps=40, rounds=5))),
                 results_link("shortcut_layout.json", prefix)])
    return table(["measurement", "result", "machine", "versions", "date", "source", "command"], source_first(rows))


def gen_activation_memory(prefix: str = "") -> str:
    name = "activation_memory-resnet1202-b128.json"
    data = load_json(name)
    machine, versions = machine_and_versions(data)
    plain, checkpointed = data["results"]["plain"], data["results"]["checkpointed"]

    def step_time(result: Dict[str, Any]) -> str:
        return f"{result['seconds_per_step']:.1f} ({result['step_seconds'][0]:.1f})"

    body = table(["", "peak memory a step adds", "seconds per step (the last of the timed steps; the first)"], [
        ["without checkpointing", f"{plain['step_peak_mib']:,.0f} MiB", step_time(plain)],
        ["`--checkpoint-activations`", f"{checkpointed['step_peak_mib']:,.0f} MiB", step_time(checkpointed)],
        ["ratio", f"**{data['memory_ratio']:.1f}x less**", f"**{data['time_ratio']:.2f}x the time**"],
    ], "lrr")
    command = script_command("activation_memory", data, dict(model="resnet1202", batch=128, steps=3))
    return body + "\n" + provenance(name, f"{data['model']}, batch {data['batch']}, {data['input']}, "
                                    f"{data['device']}", machine, versions, command, prefix)


def gen_finetune(prefix: str = "", name: str = "finetune.json") -> str:
    """Fine-tuned against from scratch per folder size: validation accuracy (mean and range over seeds), time."""
    data = load_json(name)
    classes = data.get("classes", 10)
    machine, versions = machine_and_versions(data)

    def mean(rows: List[Dict[str, Any]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    def summary(rows: List[Dict[str, Any]]) -> str:
        values = [r["val_top1"] for r in rows]
        return pct(mean(rows, "val_top1")) + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")

    methods = ("scratch", "finetune", "finetune-all")
    out = []
    for per_class in sorted({r["per_class"] for r in data["rows"]}):
        runs = {m: [r for r in data["rows"] if r["per_class"] == per_class and r["method"] == m] for m in methods}
        scratch = mean(runs["scratch"], "val_top1")
        cells = [summary(runs["scratch"])]
        for method in methods[1:]:
            cells.append(f"{summary(runs[method])}, **{mean(runs[method], 'val_top1') - scratch:+.2f}**")
        seconds = " / ".join(f"{mean(runs[m], 'train_s'):.0f}" for m in methods)
        out.append([f"{per_class:,} ({classes * per_class:,} images)", *cells, str(runs["scratch"][0]["steps"]),
                    f"{seconds} s", str(len(runs["scratch"]))])
    body = table(["images per class", "from scratch", "recipe `finetune` (gain)", "every layer at the full lr (gain)",
                  "steps", "training time (in that order)", "seeds"], out, "lrrrrrr")
    return body + "\n" + provenance(name, f"validation accuracy on {data['val_images']:,} Fashion-MNIST test "
                                     f"images; start weights {data['start_weights']}", machine, versions,
                                     data["command"], prefix)


def provenance(name: str, what: str, machine: str, versions: str, command: str, prefix: str) -> str:
    return (f"Source: {results_link(name, prefix)} ({escape(what)}); machine: {escape(machine)}; "
            f"versions: {escape(versions)}; date: {date_of(name)}; command: {code(command)}.\n")


def gen_cuda_graphs(prefix: str = "") -> str:
    name = "cuda_graphs-h200.json"
    data = load_json(name)
    machine, versions = machine_and_versions(data)
    rows = [[row["model"], f"{row['eager_ms']:.2f}", f"{row['graphed_ms']:.2f}", f"**{row['ratio']:.2f}x**"]
            for row in data["rows"]]
    body = table(["model", "eager, ms per step", "CUDA graph, ms per step", "speed-up"], rows, "lrrr")
    command = shlex.join(["python", "benchmarks/cuda_graphs.py", "--out", f"benchmarks/results/{name}"])
    return body + "\n" + provenance(name, f"batch {data['batch']}, {data['precision']}", machine, versions, command,
                                    prefix)


# ---------------------------------------------------------------- inference

INFERENCE = ["inference-resnet18.json", "inference-resnet50.json", "inference-resnet14-fashion-mnist.json"]
BENCH_DEFAULTS = dict(latency_batch=1, seconds=10.0, rounds=10)


def bench_command(name: str) -> str:
    """The `resnetlab bench` command that wrote the results file ``name``."""
    data = load_json(name)
    weights = str(data["weights"])
    words = ["resnetlab", "bench"] + (["--model", data["model"]] if weights.startswith("random init")
                                      else ["--weights", weights])
    check = re.match(r"(\S+) test \((\d+) images\)", str(data.get("check_images", "")))
    if check:
        words += ["--data", check.group(1), "--samples", check.group(2)]
    words += ["--batch", str(data["batch"]), "--size", str(data["size"])]
    latency = [b for b in data["batches"] if b != data["batch"]]
    recorded = dict(latency_batch=latency[0] if latency else 0, seconds=data["seconds"], rounds=data["rounds"])
    for key, default in BENCH_DEFAULTS.items():
        if recorded[key] != default:
            words += [f"--{key.replace('_', '-')}", f"{recorded[key]:g}"]
    return shlex.join(words + ["--output", f"benchmarks/results/{name}"])


def speed_cells(result: Dict[str, Any], batch: int) -> List[str]:
    """images/s (p50 latency), the verdict against the reference and the share of the peak at ``batch``."""
    speed = next((s for s in result["speeds"] if s["batch"] == batch), None)
    if speed is None:
        return ["", "", ""]
    share = "" if speed["share_of_peak"] is None else f"{100 * speed['share_of_peak']:.0f}%"
    return [f"{speed['images_per_s']:.1f} ({speed['latency_ms']:.1f} ms)", escape(speed["verdict"]), share]


def gen_inference(prefix: str = "") -> str:
    parts = []
    for name in INFERENCE:
        data = load_json(name)
        machine, versions = machine_and_versions(data)
        batches = data["batches"]
        labelled = any(r.get("accuracy") is not None for r in data["results"])
        header = ["path", "precision"]
        for batch in batches:
            header += [f"batch {batch}: images/s (latency)", f"batch {batch}: against the reference",
                       f"batch {batch}: share of peak"]
        header += ["top-1 agreement"] + (["test accuracy"] if labelled else [])
        rows = []
        for result in data["results"]:
            if result.get("error"):
                rows.append([escape(result["description"]), result["precision"], "failed: " + escape(result["error"]),
                             *[""] * (len(header) - 3)])
                continue
            row = [escape(result["description"]), result["precision"]]
            for batch in batches:
                row += speed_cells(result, batch)
            row.append(f"{100 * result['top1_agreement']:.2f}%")
            if labelled:
                row.append(pct(result["accuracy"]))
            rows.append(row)
        peaks = ", ".join(f"{precision} {peak['gmacs_per_s']:.1f} GMAC/s" for precision, peak in data["peaks"].items())
        parts.append(f"**{data['model']}** at {data['in_chans']}x{data['size']}x{data['size']}, {data['threads']} "
                     f"threads, {data['rounds']} interleaved rounds; this machine's measured peaks: {peaks}; "
                     f"agreement{' and accuracy' if labelled else ''} on {escape(str(data['check_images']))}:\n\n")
        parts.append(table(header, rows, "ll" + "r" * (len(header) - 2)))
        parts.append("\n" + provenance(name, f"weights {data['weights']}", machine, versions, bench_command(name),
                                       prefix) + "\n")
        parts.append(f"The automatic choice of `optimize_for_inference` against the fastest other path of its "
                     f"precision, in the same rounds ({data['model']}):\n\n")
        parts.append(table(["precision", "batch", "automatic choice, images/s", "fastest other path, images/s",
                            "verdict"], auto_rows(data), "lrrrl"))
        parts.append(f"\nSource: {results_link(name, prefix)}.\n\n")
    return "".join(parts)


def gen_inference_busy(prefix: str = "") -> str:
    """The bench's ratios and verdicts on a quiet machine and with a contender on the other core."""
    name = "inference-resnet18-busy.json"
    data = load_json(name)
    machine, versions = machine_and_versions(data)
    rows = [[row["path"], str(row["batch"]), f"{row['quiet']['images_per_s']:.1f}",
             f"{row['quiet']['ratio']:.2f} ({escape(row['quiet']['verdict'])})", f"{row['busy']['images_per_s']:.1f}",
             f"{row['busy']['ratio']:.2f} ({escape(row['busy']['verdict'])})", "yes" if row["holds"] else "**no**",
             f"{row['quiet']['images_per_s'] / row['busy']['images_per_s']:.1f}x"]
            for row in data["rows"]]
    held = sum(row["holds"] for row in data["rows"])
    return (table(["path", "batch", "quiet: images/s", "quiet: x ref (verdict)", "busy: images/s",
                   "busy: x ref (verdict)", "busy verdict holds", "busy: slower by"], rows, "lrrrrrlr")
            + f"\n{held} of {len(data['rows'])} verdicts of the busy run hold against the quiet run. "
            + provenance(name, f"{data['model']}, batch 1 and {data['batch']}, {data['rounds']} rounds; contender: "
                               f"{data['contender']}", machine, versions, data["command"], prefix))


SERVE_LOAD = ["serve_load-resnet14-fashion-mnist-fp32.json", "serve_load-resnet50-fp32.json"]


def gen_serve_load(prefix: str = "") -> str:
    """`resnetlab serve` under load: each mode's requests/s and latencies, and the model alone at batch 1 and B."""
    rows, ratios, sources = [], [], []
    for name in SERVE_LOAD:
        data = load_json(name)
        model = f"{data['model']} ({'x'.join(map(str, data['size']))})"
        for mode, run in data["runs"].items():
            rows.append([escape(model), f"{mode} (max batch {run['max_batch']}, wait {run['max_wait_ms']:g} ms)",
                         f"{run['requests_per_s']:.1f}", f"{run['p50_ms']:.0f}", f"{run['p95_ms']:.0f}",
                         f"{run['p99_ms']:.0f}", str(run["errors"])])
        alone = data["model_alone"]
        batch = data["runs"]["dynamic batching"]["max_batch"]
        ratios.append([escape(model), f"{alone['batch_1_images_per_s']:.1f}",
                       f"{alone['max_batch_images_per_s']:.1f} (batch {batch})",
                       f"{alone['batch_ratio']:.2f}x", f"**{data['speedup']:.2f}x**"])
        machine, versions = machine_and_versions(data)
        sources.append(provenance(name, f"{data['clients']} clients, {data['seconds']:g} s each way, "
                                        f"{data['precision']}", machine, versions, data["command"], prefix))
    return (table(["model (input)", "server", "requests/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows, "llrrrrr")
            + "\n" + table(["model (input)", "model alone, batch 1: images/s",
                              "model alone, max batch: images/s", "ratio", "served: batching against one at a time"],
                             ratios, "lrrrr")
            + "\n" + "\n".join(sources))


def auto_rows(data: Dict[str, Any]) -> List[List[str]]:
    """One row per automatic path and batch: its images/s, its fastest peer's, and the verdict between them."""
    by_name = {result["name"]: result for result in data["results"] if not result.get("error")}
    rows = []
    for result in by_name.values():
        for speed in result["speeds"] if result["name"].startswith("auto-") else []:
            peer = by_name[speed["best_peer"]]
            peer_speed = next(s for s in peer["speeds"] if s["batch"] == speed["batch"])
            rows.append([result["precision"], str(speed["batch"]), f"{speed['images_per_s']:.1f}",
                         f"{peer_speed['images_per_s']:.1f} ({peer['name']})", f"**{speed['against_best_peer']}**"])
    return rows


ROOFLINE = ["roofline-resnet50.json", "roofline-resnet18.json"]


def gen_roofline(prefix: str = "") -> str:
    rows = []
    for name in ROOFLINE:
        data = load_json(name)
        machine, versions = machine_and_versions(data)
        for row in data["rows"]:
            rows.append([data["model"], row["precision"], f"{row['unit_peak_gmacs_per_s']:.1f}",
                         f"{row['matmul_gmacs_per_s']:.1f}", f"{data['reference_images_per_s']:.1f}",
                         f"{row['ceiling_images_per_s']:.1f}", f"{row['ceiling_ratio']:.2f}x",
                         f"{row['target_ratio']:.1f}x", f"**{100 * row['target_share_of_peak']:.0f}%**",
                         escape(machine), escape(versions), date_of(name),
                         code(script_command("roofline", data, dict(model="resnet50", batch=8, size=224))),
                         results_link(name, prefix)])
    return table(["model", "precision", "unit peak, GMAC/s", "2048² matmul, GMAC/s", "torchvision fp32, images/s",
                  "ceiling, images/s", "ceiling, x torchvision", "speed-up asked", "share of the peak it needs",
                  "machine", "versions", "date", "source", "command"], source_first(rows), "llrrrrrrr")


# ---------------------------------------------------------------- experiments (docs/experiments/)

# Output folder -> the command that writes it, and what it shows.
EXPERIMENT_RUNS = {
    "degradation": "resnetlab experiment degradation --out docs/experiments/degradation",
    "degradation-8k": "resnetlab experiment degradation --iterations 8000 --out docs/experiments/degradation-8k",
    "degradation-gpu-12k": "resnetlab experiment degradation --device cuda --cuda-graphs --budget-minutes 6 "
                           "--out docs/experiments/degradation-gpu-12k",
    "degradation-precision/fp32": "resnetlab experiment degradation --iterations 600 --eval-every 200 "
                                  "--schedule constant --precision fp32 "
                                  "--out docs/experiments/degradation-precision/fp32",
    "degradation-precision/bf16": "resnetlab experiment degradation --iterations 600 --eval-every 200 "
                                  "--schedule constant --precision bf16 "
                                  "--out docs/experiments/degradation-precision/bf16",
    "gradients": "resnetlab experiment gradients --out docs/experiments/gradients",
    "degradation-cifar10-gpu": "resnetlab experiment degradation --data cifar10-jpg/train --depths 20 56 "
                               "--budget-minutes 5 --cuda-graphs --out docs/experiments/degradation-cifar10-gpu",
}


def report_settings(folder: str) -> Dict[str, str]:
    """Machine, versions, wall time and date of an experiment's report.md."""
    report = EXPERIMENTS / folder / "report.md"
    text = report.read_text()
    found = re.search(r"machine: (.*?), torch (\S+)(.*)$", text, re.M)
    machine = versions = "not recorded"
    if found:
        extra = found.group(3)
        gpu = re.search(r"GPU (.*)$", extra)
        machine = found.group(1) + (f", {gpu.group(1)}" if gpu else "")
        versions = f"torch {found.group(2)}"
    wall = re.search(r"wall time: (\d+) s", text)
    return dict(machine=machine, versions=versions, wall=f"{wall.group(1)} s" if wall else "not recorded",
                date=git_date(report) or "not recorded")


def final_errors(folder: str) -> Dict[str, Tuple[float, float, int]]:
    """model -> (train error, test error, iterations) at the last evaluation, mean over seeds."""
    rows = list(csv.DictReader((EXPERIMENTS / folder / "degradation.csv").open()))
    last = max(int(row["iteration"]) for row in rows)
    out: Dict[str, List[Tuple[float, float]]] = {}
    for row in rows:
        if int(row["iteration"]) == last:
            out.setdefault(row["model"], []).append((float(row["train_error"]), float(row["test_error"])))
    return {model: (sum(v[0] for v in vals) / len(vals), sum(v[1] for v in vals) / len(vals), last)
            for model, vals in out.items()}


MODELS_ORDER = ["plain20", "plain56", "resnet20", "resnet56"]


def gen_degradation(prefix: str = "") -> str:
    rows = []
    for folder in ("degradation", "degradation-8k", "degradation-gpu-12k"):
        errors = final_errors(folder)
        info = report_settings(folder)
        iterations = next(iter(errors.values()))[2]
        cells = [f"{errors[m][0]:.2f}%" if m in errors else "" for m in MODELS_ORDER]
        rows.append([f"{iterations:,}", *cells, escape(info["machine"]), escape(info["versions"]), info["wall"],
                     info["date"], code(EXPERIMENT_RUNS[folder]),
                     f"[report]({prefix}experiments/{folder}/report.md), "
                     f"[CSV]({prefix}experiments/{folder}/degradation.csv)"])
    return table(["iterations", *[f"{m} training error" for m in MODELS_ORDER], "machine", "versions", "wall time",
                  "date", "source", "command"], source_first(rows), "rrrrr")


def gen_degradation_cifar10(prefix: str = "") -> str:
    folder = "degradation-cifar10-gpu"
    errors = final_errors(folder)
    info = report_settings(folder)
    rows = [[model, f"{errors[model][0]:.2f}%", f"{errors[model][1]:.2f}%"] for model in MODELS_ORDER]
    body = table(["model", "training error", "validation error"], rows, "lrr")
    iterations = next(iter(errors.values()))[2]
    return body + (f"\nAfter {iterations:,} iterations, one seed. Machine: {escape(info['machine'])}; "
                   f"versions: {escape(info['versions'])}; wall time {info['wall']}; date: {info['date']}; "
                   f"command: {code(EXPERIMENT_RUNS[folder])}; "
                   f"[report]({prefix}experiments/{folder}/report.md), "
                   f"[CSV]({prefix}experiments/{folder}/degradation.csv).\n")


PAPER_CIFAR = "paper_cifar-resnet20-h200.json"


def gen_paper_cifar(prefix: str = "") -> str:
    data = load_json(PAPER_CIFAR)
    rows = [[data["model"], f"{data['iterations']:,}", pct(data["final_val_error"]), pct(100 - data["best_val_top1"]),
             f"{data['best_step']:,}", pct(data["paper_test_error"]), f"{data['train_seconds']:.0f} s",
             f"{data['images_per_s']:,}"]]
    body = table(["model", "iterations", "final validation error", "best validation error", "best at step",
                  "paper's test error", "training time", "images/s"], rows, "lrrrrrrr")
    return body + "\n" + provenance(PAPER_CIFAR, data["data"], data["machine"], data["versions"], data["command"],
                                    prefix)


def gen_degradation_precision(prefix: str = "") -> str:
    rows = []
    for precision in ("fp32", "bf16"):
        folder = f"degradation-precision/{precision}"
        errors = final_errors(folder)
        info = report_settings(folder)
        rows.append([precision, *[f"{errors[m][0]:.2f}%" for m in MODELS_ORDER], escape(info["machine"]),
                     escape(info["versions"]), info["wall"], info["date"], code(EXPERIMENT_RUNS[folder]),
                     f"[report]({prefix}experiments/{folder}/report.md)"])
    return table(["precision", *[f"{m} training error" for m in MODELS_ORDER], "machine", "versions", "wall time",
                  "date", "source", "command"], source_first(rows), "lrrrr")


def gen_bf16_gradients(prefix: str = "") -> str:
    name = "bf16_gradients.json"
    data = load_json(name)
    machine, versions = machine_and_versions(data)
    rows = [[row["model"], f"{row['cosine']:.3f}", f"{row['grad_rel_error']:.3f}", f"{row['logit_rel_error']:.3f}"]
            for row in data["rows"]]
    body = table(["model", "cosine, bf16 vs fp32 gradient", "relative error of the gradient",
                  "relative error of the logits"], rows, "lrrr")
    command = shlex.join(["python", "benchmarks/bf16_gradients.py", "--out", f"benchmarks/results/{name}"])
    return body + "\n" + provenance(name, f"one batch of {data['data']} images at initialization", machine, versions,
                                    command, prefix)


def gen_gradients(prefix: str = "") -> str:
    rows = list(csv.DictReader((EXPERIMENTS / "gradients" / "gradients.csv").open()))
    groups: Dict[Tuple[str, str, int], List[Tuple[int, float]]] = {}
    for row in rows:
        groups.setdefault((row["norm"], row["model"], int(row["step"])), []).append(
            (int(row["layer_index"]), float(row["grad_norm"])))
    out = []
    for (norm, model, step), layers in groups.items():
        layers.sort()
        first, last = layers[0][1], layers[-1][1]
        out.append([norm, model, step, f"{first:.3g}", f"{last:.3g}", f"**{first / last:.3g}**"])
    info = report_settings("gradients")
    body = table(["normalization", "model", "training step", "first conv layer", "last conv layer",
                  "first / last"], out, "llrrrr")
    return body + "\n" + (f"Source: [report]({prefix}experiments/gradients/report.md), "
                          f"[gradients.csv]({prefix}experiments/gradients/gradients.csv); machine: "
                          f"{escape(info['machine'])}; versions: {escape(info['versions'])}; date: {info['date']}; "
                          f"command: {code(EXPERIMENT_RUNS['gradients'])}.\n")


def gen_responses(prefix: str = "") -> str:
    rows = list(csv.DictReader((EXPERIMENTS / "gradients" / "responses.csv").open()))
    groups: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}
    for row in rows:
        groups.setdefault((row["norm"], row["model"]), []).append((int(row["layer_index"]), float(row["response_std"])))
    out = []
    for (norm, model), blocks in groups.items():
        blocks.sort()
        stds = [value for _, value in blocks]
        out.append([norm, model, len(stds), f"{sum(stds) / len(stds):.3g}", f"{stds[0]:.3g}", f"{stds[-1]:.3g}"])
    return table(["normalization", "model", "blocks", "mean std", "first block", "last block"], out, "llrrrr") + (
        f"\nSource: [responses.csv]({prefix}experiments/gradients/responses.csv), the same run as above.\n")


# ---------------------------------------------------------------- from the code


def gen_zoo(prefix: str = "") -> str:
    from resnetlab.analysis import model_info
    from resnetlab.models import list_models

    def pair(first: Any, second: Any, unit: str = "") -> str:
        values = [f"{value}{unit}" for value in (first, second) if value is not None]
        return " / ".join(values)

    known = {"torchvision_top1_v1", "torchvision_top1_v2", "paper_gmacs_v1", "paper_cifar10_error",
             "akamaster_cifar10_error"}
    rows = []
    for name in list_models():
        info = model_info(name)
        published = dict(info.get("published") or {})
        other = "; ".join(f"{escape(key.replace('_', ' '))} {value}" for key, value in published.items()
                          if key not in known)
        size = "x".join(str(s) for s in info["input_size"][1:])
        rows.append([f"`{name}`", info["family"], info["depth"], info["block"], info["shortcut"],
                     f"{info['params']:,}", f"{info['gmacs']:.3f}", size,
                     pair(published.get("torchvision_top1_v1"), published.get("torchvision_top1_v2")),
                     pair(published.get("paper_gmacs_v1"), None),
                     pair(published.get("paper_cifar10_error"), published.get("akamaster_cifar10_error"), "%"),
                     *([other] if other else [])])
    header = ["model", "family", "depth", "block", "shortcut", "params", "GMACs", "input",
              "ImageNet top-1, torchvision V1 / V2", "GMACs, paper (v1)", "CIFAR-10 error, paper / akamaster"]
    if any(len(row) > len(header) for row in rows):
        header.append("other published figures")
        rows = [row + [""] * (len(header) - len(row)) for row in rows]
    return table(header, rows, "llrllrrlrrr")


def gen_weights(prefix: str = "") -> str:
    from resnetlab.weights import list_weights

    rows = []
    for entry in list_weights():
        if entry.source == "timm":  # listed where timm is installed; the page describes them in words
            continue
        pre, acc = entry.preprocessing, entry.accuracy
        size = pre["input_size"][0]
        resize = pre.get("resize_size") or round(size / (pre.get("crop_fraction") or 1.0))
        prepare = f"{size}" if resize == size else f"resize {resize}, crop {size}"
        mean = ", ".join(f"{v:g}" for v in pre["mean"])
        std = ", ".join(f"{v:g}" for v in pre["std"])
        digest = entry.sha256[:12] if entry.sha256 else f"{entry.hash_prefix} (prefix)"
        file_size = f"{entry.file_size_mb:.1f}" if entry.file_size_mb is not None else "-"
        rows.append([f"`{entry.name}`" + (" (default)" if entry.default else ""), entry.source,
                     f"{acc['top1']:.2f}%", escape(f"{acc['dataset']} ({acc['kind']})"), entry.num_classes,
                     prepare, pre.get("interpolation", "bilinear"), mean, std, file_size, code(digest),
                     escape(entry.license)])
    header = ["weights", "source", "top-1", "measured on", "classes", "input", "interpolation", "mean", "std",
              "MB", "sha256", "license"]
    return table(header, rows, "llrlrlllllll")


def config_comments() -> Dict[str, str]:
    """TrainConfig field -> the comment that documents it in config.py (inline, or the block above it)."""
    import inspect

    from resnetlab.train import config

    source = inspect.getsource(config.TrainConfig).splitlines()
    comments: Dict[str, str] = {}
    block: List[str] = []
    for line in source:
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"(\w+): [^=]+=.*?(?:#\s*(.*))?$", stripped)
        if match:
            parts = [" ".join(block)] if block else []
            if match.group(2):
                parts.append(match.group(2))
            if parts:
                comments[match.group(1)] = "; ".join(parts)
        block = []
    return comments


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def gen_config_keys(prefix: str = "") -> str:
    from resnetlab.train.config import FIELDS, TrainConfig

    defaults = TrainConfig()
    comments = config_comments()
    rows = []
    for name in FIELDS:
        value = getattr(defaults, name)
        flag = "`-o KEY=VALUE`" if name == "model_options" else code(flag_of(name))
        if isinstance(value, bool):
            flag = code(f"{flag_of(name)} / --no-{name.replace('_', '-')}")
        rows.append([code(name), flag, code(repr(value)), escape(comments.get(name, ""))])
    return table(["key", "flag", "default", "what it does"], rows, data=False)


def gen_recipes(prefix: str = "") -> str:
    from resnetlab.train.config import RECIPES

    rows = [[code(name), ", ".join(code(setting(k, v)) for k, v in values.items())] for name, values in RECIPES.items()]
    return table(["recipe", "what it sets (everything else is the default of the key)"], rows, data=False)


def _subparsers(parser: argparse.ArgumentParser) -> List[Tuple[str, argparse.ArgumentParser, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, sub, helps.get(name, "")))
    return found


def walk_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> List[Tuple[str, argparse.ArgumentParser, str]]:
    """(command path, parser, help) for the parser and every sub-command, depth first."""
    out = [(prefix or parser.prog, parser, parser.description or "")]
    for name, sub, text in _subparsers(parser):
        for path, child, child_help in walk_parsers(sub, f"{prefix or parser.prog} {name}"):
            out.append((path, child, child_help if child is not sub else text))
    return out


def _argument_row(parser: argparse.ArgumentParser, action: argparse.Action, config_help: Dict[str, str]) -> List[str]:
    from resnetlab.train.config import FIELDS, TrainConfig

    formatter = parser._get_formatter()
    if action.option_strings:
        names = ", ".join(code(option) for option in action.option_strings)
    else:
        names = code(action.metavar if isinstance(action.metavar, str) else action.dest)
    if action.nargs == 0:
        value = ""
    elif isinstance(action.metavar, tuple):
        value = code(" ".join(action.metavar))
    else:
        metavar = formatter._format_args(action, action.dest.upper()) if action.option_strings else ""
        value = code(metavar) if metavar else ""
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        value += (" " if value else "") + "one of " + ", ".join(code(str(c)) for c in action.choices)
    text = formatter._expand_help(action) if action.help else ""
    default = ""
    if action.dest in FIELDS and action.default is None and action.option_strings \
            and action.option_strings[0] == flag_of(action.dest):
        text = text or config_help.get(action.dest, "")
        default = f"the recipe's, else {code(repr(getattr(TrainConfig(), action.dest)))}"
    elif action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0:
        default = code(str(action.default if not isinstance(action.default, list) or action.default
                           else "none"))
    elif isinstance(action, argparse.BooleanOptionalAction) and action.default is not None:
        default = code(flag_of(action.dest) if action.default else "--no-" + action.dest.replace("_", "-"))
    return [names, value, default, escape(text)]


def gen_cli(prefix: str = "") -> str:
    import os

    from resnetlab.cli import build_parser

    config_help = config_comments()
    parts = []
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps usage to the terminal: the same page from any terminal
    try:
        commands = [(path, parser, text, parser.format_usage().strip()) for path, parser, text in
                    walk_parsers(build_parser())]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    for path, parser, text, usage in commands:
        level = "#" * min(2 + path.count(" ") - 1, 4) if " " in path else "##"
        parts.append(f"{level} {path}\n\n")
        if text:
            parts.append(escape(text[0].upper() + text[1:]).rstrip(".") + ".\n\n")
        parts.append("```text\n" + usage + "\n```\n\n")
        rows = [_argument_row(parser, action, config_help) for action in parser._actions
                if action.help != argparse.SUPPRESS and not isinstance(action, argparse._SubParsersAction)]
        subs = _subparsers(parser)
        if subs:
            parts.append("Commands: " + ", ".join(f"`{name}` ({escape(h)})" for name, _, h in subs) + ".\n\n")
        if rows:
            parts.append(table(["argument", "value", "default", "description"], rows, data=False) + "\n")
    return "".join(parts)


# ---------------------------------------------------------------- README's headline figures


def gen_headline(prefix: str = "docs/") -> str:
    default = load_json("time_to_accuracy-default.json")
    hit = default["reached"]["93.0"]
    accurate = [load_json(f"time_to_accuracy-accurate-seed{seed}.json") for seed in (0, 1, 2)]
    finals = ", ".join(pct(run["final_top1"]) for run in accurate)
    times = [run["reached"]["95.0"]["wall_s"] / 60 for run in accurate]
    throughput = load_json("train_throughput-torch2.14.json")
    bench = load_json(INFERENCE[1])
    paths = {result["name"]: result for result in bench["results"]}
    autos = {precision: paths[f"auto-{precision}"] for precision in ("fp32", "bf16", "int8")}
    chosen = "; ".join(f"{precision} at {auto['images_per_s']:.1f} images/s ({auto['speeds'][-1]['verdict']})"
                       for precision, auto in autos.items())
    fashion = {result["name"]: result for result in load_json(INFERENCE[2])["results"]}
    int8_loss = fashion["eager"]["accuracy"] - fashion["auto-int8"]["accuracy"]
    cifar = final_errors("degradation-cifar10-gpu")
    paper = load_json(PAPER_CIFAR)
    return "\n".join([
        f"- **Fashion-MNIST in minutes on a CPU ({machine_and_versions(default)[0]}):** the `default` recipe "
        f"reaches 93% after "
        f"{hit['wall_s']:.0f} s and ends at {pct(default['final_top1'])}; the `accurate` recipe reaches 95% after "
        f"{min(times):.1f}-{max(times):.1f} minutes with each of three seeds (final {finals}). "
        f"[Results]({prefix}results.md#time-to-accuracy)",
        f"- **Training input pipeline:** {throughput['ratio']:.2f}x the images/s of torchvision's per-sample "
        f"transforms on the same model ({throughput['model']}, batch {throughput['batch']}). "
        f"[Results]({prefix}results.md#training-throughput)",
        f"- **CPU inference ({bench['model']}, batch {bench['batch']}, {bench['size']}x{bench['size']}, against "
        f"torchvision's eager fp32):** `optimize_for_inference` runs {chosen}; its int8 loses "
        f"{int8_loss:.2f} points of Fashion-MNIST test accuracy. [Results]({prefix}results.md#inference)",
        f"- **The paper on CIFAR-10 (JPEG copies of the training images):** plain56 trains to "
        f"{cifar['plain56'][0]:.2f}% error against plain20's {cifar['plain20'][0]:.2f}%, while resnet56 "
        f"({cifar['resnet56'][0]:.2f}%) beats resnet20 ({cifar['resnet20'][0]:.2f}%); ResNet-20 on the paper's "
        f"64k-iteration schedule ends at {paper['final_val_error']:.2f}% validation error in "
        f"{paper['train_seconds'] / 60:.1f} minutes on one GPU (paper: {paper['paper_test_error']:.2f}% test error). "
        f"[Reproducing the paper]({prefix}reproducing.md#cifar-10)",
    ]) + "\n"


GENERATORS: Dict[str, Callable[..., str]] = {
    "headline": gen_headline,
    "tta-current": gen_tta_current,
    "tta-tried": gen_tta_tried,
    "cifar-fast": lambda prefix="": gen_tta_current(prefix, CIFAR_FAST_TTA, ("91.0", "94.0"),
                                                    "final validation top-1", own_command=True),
    "train-throughput": gen_train_throughput,
    "training-speed": gen_training_speed,
    "folder-throughput": gen_folder_throughput,
    "activation-memory": gen_activation_memory,
    "cuda-graphs": gen_cuda_graphs,
    "finetune": gen_finetune,
    "finetune-near": lambda prefix="": gen_finetune(prefix, "finetune-near.json"),
    "inference": gen_inference,
    "serve-load": gen_serve_load,
    "inference-busy": gen_inference_busy,
    "roofline": gen_roofline,
    "degradation": gen_degradation,
    "degradation-precision": gen_degradation_precision,
    "degradation-cifar10": gen_degradation_cifar10,
    "paper-cifar": gen_paper_cifar,
    "bf16-gradients": gen_bf16_gradients,
    "gradients": gen_gradients,
    "responses": gen_responses,
    "zoo": gen_zoo,
    "weights": gen_weights,
    "config-keys": gen_config_keys,
    "recipes": gen_recipes,
    "cli": gen_cli,
}


def relative_prefix(page_path: str) -> str:
    """How a page at docs/PAGE_PATH reaches the docs root: '' for docs/x.md, '../' for docs/a/x.md."""
    return "../" * page_path.replace("\\", "/").count("/")


def expand(markdown: str, page_path: str = "index.md") -> str:
    """The page with each marker line replaced by its generated markdown."""
    prefix = relative_prefix(page_path)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"{page_path}: unknown generated part {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name](prefix).rstrip("\n")

    return MARKER.sub(replace, markdown)


def readme_text() -> str:
    """README.md with its headline block regenerated."""
    text = README.read_text()
    if not README_BLOCK.search(text):
        raise ValueError("README.md has no <!-- generated: headline --> ... <!-- end generated --> block")
    return README_BLOCK.sub(lambda m: m.group(1) + gen_headline("docs/") + m.group(3), text)


# ---------------------------------------------------------------- MkDocs hook


def on_files(files: Any, config: Any) -> Any:
    """Publish the results JSON files with the site, at benchmarks/results/<name>.json."""
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.glob("*.json")):
        files.append(File.generated(config, f"benchmarks/results/{path.name}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, page.file.src_uri)


# ---------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README's block is up to date")
    parser.add_argument("--out", default=str(ROOT / "build" / "docs"), help="where expanded pages go")
    args = parser.parse_args(argv)
    fresh = readme_text()
    if args.check:
        if fresh != README.read_text():
            print("README.md's generated block is out of date: run `make results`", file=sys.stderr)
            return 1
        return 0
    if fresh != README.read_text():
        README.write_text(fresh)
        print("updated README.md")
    out = Path(args.out)
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        if not MARKER.search(text):
            continue
        rel = page.relative_to(DOCS).as_posix()
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(expand(text, rel))
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
