"""The documentation: the generated CLI reference against the parser, the results tables against their
measurement files, the runnable code blocks, and README's length and wording."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
EXPERIMENTS = DOCS / "experiments"

# A fenced block right after this line is run by test_runnable_blocks.
RUNNABLE = re.compile(r"^<!-- runnable -->[ \t]*\n```[\w-]*\n(.*?)^```", re.M | re.S)
JSON_LINK = re.compile(r"\]\((?:\.\./)*benchmarks/results/([\w.-]+\.json)\)")


def _load_generator():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "scripts" / "docs_gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


@pytest.fixture(autouse=True, scope="module")
def zoo_counted_once():
    """`resnetlab models` and the generated zoo table both count every model's MACs (seconds of CPU each
    time); within this module each model is counted once. The answers are the same, only not recomputed."""
    import copy
    import functools

    import resnetlab.analysis

    original = resnetlab.analysis.model_info
    cached = functools.cache(original)
    resnetlab.analysis.model_info = lambda name: copy.deepcopy(cached(name))
    yield
    resnetlab.analysis.model_info = original


def user_pages() -> List[Path]:
    """The Markdown a user reads: README and the docs pages (experiment reports included)."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def expanded(page: str) -> str:
    return gen.expand((DOCS / page).read_text(), page)


# ---------------------------------------------------------------- markdown tables


def split_cells(line: str) -> List[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [cell.strip().replace("\\|", "|") for cell in cells]


def tables(markdown: str) -> Iterator[Tuple[List[str], List[Dict[str, str]], str]]:
    """(header, rows as dicts, the text right after the table) of every table in the page."""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]):
            header = split_cells(lines[i])
            rows = []
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(dict(zip(header, split_cells(lines[j]))))
                j += 1
            after = "\n".join(lines[j:j + 6])
            yield header, rows, after
            i = j
        else:
            i += 1


def source_of(row: Dict[str, str]) -> str:
    names = [name for cell in row.values() for name in JSON_LINK.findall(cell)]
    assert len(names) == 1, f"row should name one source file: {row}"
    return names[0]


def plain(cell: str) -> str:
    return cell.replace("**", "").replace("`", "").strip()


# ---------------------------------------------------------------- (a) CLI reference


def parser_commands():
    """(command path, parser) for resnetlab and every sub-command, walked independently of the generator."""
    import argparse

    from resnetlab.cli import build_parser

    out = []

    def walk(path: str, parser: argparse.ArgumentParser) -> None:
        out.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(f"{path} {name}", sub)

    walk("resnetlab", build_parser())
    return out


def test_cli_reference_lists_every_command_and_flag():
    import argparse

    page = expanded("cli.md")
    sections = dict(re.findall(r"^#{2,4} (resnetlab(?: [\w-]+)*)\n(.*?)(?=^#{2,4} resnetlab|\Z)", page, re.M | re.S))
    commands = parser_commands()
    assert sorted(sections) == sorted(path for path, _ in commands)
    for path, parser in commands:
        text = sections[path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name in action.choices:
                    assert f"`{name}`" in text, f"{path}: sub-command {name} missing"
            elif action.option_strings:
                for option in action.option_strings:
                    assert f"`{option}`" in text, f"{path}: {option} missing from the CLI reference"
            else:
                assert f"`{action.metavar or action.dest}`" in text, f"{path}: argument {action.dest} missing"
        usage = " ".join(parser.format_usage().split())
        shown = " ".join(re.search(r"```text\n(.*?)```", text, re.S).group(1).split())
        assert shown == usage, f"{path}: usage differs from the parser's"


# ---------------------------------------------------------------- (b) results against their files


def test_every_generated_part_renders_and_names_existing_files():
    for page in sorted(DOCS.rglob("*.md")):
        rel = page.relative_to(DOCS).as_posix()
        text = gen.expand(page.read_text(), rel)
        assert not gen.MARKER.search(text), f"{rel}: a marker was left unexpanded"
        for name in JSON_LINK.findall(text):
            assert (RESULTS / name).is_file(), f"{rel} links to benchmarks/results/{name}, which does not exist"


def test_time_to_accuracy_tables_equal_their_json():
    checked = 0
    for header, rows, _ in tables(expanded("results.md")):
        if "final top-1" not in header:
            continue
        for row in rows:
            data = json.loads((RESULTS / source_of(row)).read_text())
            assert plain(row["final top-1"]) == f"{data['final_top1']:.2f}%"
            assert plain(row["wall time"]) == f"{data['epochs'][-1]['wall_s']:.0f} s"
            current = "command" in row  # the recipes' own runs; the runs tried on the way have no command
            for target, column in (("93.0", "93% reached"), ("95.0", "95% reached")):
                hit = data["reached"][target]
                if column == "95% reached" and not current:
                    assert plain(row[column]) == ("yes" if hit else "no")
                    continue
                expected = "not reached" if hit is None else f"{hit['wall_s']:.0f} s"
                assert plain(row[column]).startswith(expected), (row, target)
                if hit:
                    assert plain(row[column]).endswith(f" {hit['epoch']})")
            machine, _, versions = data["machine"].partition(", torch ")
            assert row["machine"].startswith(machine) and row["versions"] == "torch " + versions.split(" ")[0]
            if current:
                assert data["recipe"] in row["command"]
                for key in data["overrides"]:
                    assert f"{key}=" in row["command"], (key, row["command"])
            checked += 1
    assert checked >= 10


def test_throughput_roofline_and_inference_tables_equal_their_json():
    page = expanded("results.md")
    seen = set()
    for header, rows, after in tables(page):
        if "resnetlab, images/s" in header:
            for row in rows:
                data = json.loads((RESULTS / source_of(row)).read_text())
                assert row["torchvision pipeline, images/s"] == f"{data['reference_images_per_s']:.1f}"
                assert row["resnetlab, images/s"] == f"{data['resnetlab_images_per_s']:.1f}"
                assert plain(row["ratio"]) == f"{data['ratio']:.2f}x"
                seen.add("throughput")
        elif "share of the peak it needs" in header:
            for row in rows:
                data = json.loads((RESULTS / source_of(row)).read_text())
                measured = next(r for r in data["rows"] if r["precision"] == row["precision"])
                assert row["unit peak, GMAC/s"] == f"{measured['unit_peak_gmacs_per_s']:.1f}"
                assert row["ceiling, x torchvision"] == f"{measured['ceiling_ratio']:.2f}x"
                assert plain(row["share of the peak it needs"]) == f"{100 * measured['target_share_of_peak']:.0f}%"
                seen.add("roofline")
        elif "top-1 agreement" in header and "precision" in header:
            name = JSON_LINK.findall(after)[0]
            data = json.loads((RESULTS / name).read_text())
            by_description = {result["description"]: result for result in data["results"]}
            assert len(rows) == len(by_description)
            for row in rows:
                result = by_description[row["path"]]
                assert row["precision"] == result["precision"] and len(result["speeds"]) == len(data["batches"])
                for speed in result["speeds"]:
                    batch = speed["batch"]
                    assert row[f"batch {batch}: images/s (latency)"] == (f"{speed['images_per_s']:.1f} "
                                                                        f"({speed['latency_ms']:.1f} ms)")
                    assert row[f"batch {batch}: against the reference"] == speed["verdict"]
                assert row["top-1 agreement"] == f"{100 * result['top1_agreement']:.2f}%"
                if result["accuracy"] is not None:
                    assert row["test accuracy"] == f"{result['accuracy']:.2f}%"
            seen.add(name)
        elif "automatic choice, images/s" in header:
            data = json.loads((RESULTS / JSON_LINK.findall(after)[0]).read_text())
            expected = []
            for result in data["results"]:
                for speed in result["speeds"] if result["name"].startswith("auto-") else []:
                    expected.append((result["precision"], str(speed["batch"]), f"{speed['images_per_s']:.1f}",
                                     speed["best_peer"], speed["against_best_peer"]))
            assert [(row["precision"], row["batch"], row["automatic choice, images/s"],
                     row["fastest other path, images/s"].split("(")[-1].rstrip(")"), plain(row["verdict"]))
                    for row in rows] == expected
            seen.add("auto")
        elif "CUDA graph, ms per step" in header:
            data = json.loads((RESULTS / JSON_LINK.findall(after)[0]).read_text())
            assert [(r["model"], r["eager_ms"], r["graphed_ms"]) for r in data["rows"]] == [
                (row["model"], float(row["eager, ms per step"]), float(row["CUDA graph, ms per step"])) for row in rows]
            seen.add("cuda")
    assert {"throughput", "roofline", "cuda", "auto"} <= seen
    assert sum(name.startswith("inference-") for name in seen) == 3


def test_memory_and_gradient_tables_equal_their_json():
    memory = json.loads((RESULTS / "activation_memory-resnet1202-b128.json").read_text())
    rows = next(rows for header, rows, _ in tables(expanded("results.md")) if "peak memory a step adds" in header)
    assert [row["peak memory a step adds"] for row in rows[:2]] == [
        f"{memory['results'][mode]['step_peak_mib']:,.0f} MiB" for mode in ("plain", "checkpointed")]
    assert plain(rows[2]["peak memory a step adds"]) == f"{memory['memory_ratio']:.1f}x less"
    gradients = json.loads((RESULTS / "bf16_gradients.json").read_text())
    rows = next(rows for header, rows, _ in tables(expanded("reproducing.md")) if "model" in header
                and "cosine, bf16 vs fp32 gradient" in header)
    assert [(row["model"], row["cosine, bf16 vs fp32 gradient"]) for row in rows] == [
        (record["model"], f"{record['cosine']:.3f}") for record in gradients["rows"]]


def test_experiment_tables_equal_their_csv():
    page = expanded("reproducing.md")
    checked = 0
    for header, rows, _ in tables(page):
        if "plain56 training error" not in header:
            continue
        for row in rows:
            folder = re.search(r"\]\(experiments/([\w/-]+)/report\.md\)", row["source"]).group(1)
            records = list(csv.DictReader((EXPERIMENTS / folder / "degradation.csv").open()))
            last = max(int(r["iteration"]) for r in records)
            for model in ("plain20", "plain56", "resnet20", "resnet56"):
                errors = [float(r["train_error"]) for r in records
                          if r["model"] == model and int(r["iteration"]) == last]
                assert row[f"{model} training error"] == f"{sum(errors) / len(errors):.2f}%", (folder, model)
            checked += 1
    assert checked == 5


def test_readme_headline_block_is_generated_from_the_files():
    assert gen.readme_text() == README.read_text(), "README's generated block is stale: run `make results`"
    block = README.read_text().split("<!-- generated: headline -->")[1].split("<!-- end generated -->")[0]
    default = json.loads((RESULTS / "time_to_accuracy-default.json").read_text())
    assert f"{default['final_top1']:.2f}%" in block
    for seed in (0, 1, 2):
        run = json.loads((RESULTS / f"time_to_accuracy-accurate-seed{seed}.json").read_text())
        assert f"{run['final_top1']:.2f}%" in block


# ---------------------------------------------------------------- (c) runnable blocks


def runnable_blocks(page: Path) -> List[str]:
    return [match.group(1) for match in RUNNABLE.finditer(page.read_text())]


def command_lines(block: str) -> List[str]:
    """The block's commands, continuation lines joined, comment lines dropped."""
    lines, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            lines.append(line)
    return lines


def run_blocks(pages: List[Path], workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> int:
    """Run every runnable block of the pages in order in workdir, where docs/ is the repository's."""
    from resnetlab.cli import main

    (workdir / "docs").symlink_to(DOCS, target_is_directory=True)
    monkeypatch.chdir(workdir)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    count = 0
    for page in pages:
        for block in runnable_blocks(page):
            for line in command_lines(block):
                words = shlex.split(line, comments=True)
                if words[0] == "resnetlab":  # in this process: the `resnetlab` script is resnetlab.cli:main
                    status = main(words[1:])
                    out = capsys.readouterr()
                    output = out.out + out.err
                else:
                    done = subprocess.run(line, shell=True, cwd=workdir, env=env, capture_output=True, text=True)
                    status, output = done.returncode, done.stdout + done.stderr
                assert status == 0, f"{page.relative_to(ROOT)}: `{line}` exited with {status}:\n{output[-2000:]}"
                count += 1
    return count


def test_runnable_blocks_of_the_readme(tmp_path, monkeypatch, capsys):
    assert run_blocks([README], tmp_path, monkeypatch, capsys) >= 4


def test_runnable_blocks_of_the_docs(tmp_path, monkeypatch, capsys):
    # Getting started first: later pages use the model it trains, as a reader following the docs would.
    pages = sorted(DOCS.glob("*.md"), key=lambda page: (page.name != "getting-started.md", page.name))
    assert run_blocks(pages, tmp_path, monkeypatch, capsys) >= 4


def test_runnable_marker_is_always_followed_by_a_code_block():
    for page in user_pages():
        text = page.read_text()
        markers = re.findall(r"^<!-- runnable -->", text, re.M)
        assert len(markers) == len(runnable_blocks(page)), page


# ---------------------------------------------------------------- (d) README and wording


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 150


def test_user_pages_speak_to_users():
    for page in [*user_pages(), ROOT / "mkdocs.yml"]:
        text = page.read_text()
        name = page.relative_to(ROOT)
        assert not re.search(r"\bsessions?\b", text, re.I), f"{name} mentions a session"
        assert "../shared" not in text and "/shared/" not in text, f"{name} points outside the repository"
        assert "/work/" not in text and "/tmp/" not in text, f"{name} names a path outside the repository"


def test_results_file_names_say_what_was_run():
    for path in RESULTS.glob("*.json"):
        assert "session" not in path.name.lower(), path.name


def test_cifar10_and_folder_tables_equal_their_json_and_csv():
    paper = json.loads((RESULTS / "paper_cifar-resnet20-h200.json").read_text())
    (row,) = next(rows for header, rows, _ in tables(expanded("reproducing.md")) if "paper's test error" in header)
    assert row["final validation error"] == f"{100 - paper['history'][-1]['val_top1']:.2f}%"
    assert row["best validation error"] == f"{100 - max(r['val_top1'] for r in paper['history']):.2f}%"
    assert row["iterations"] == f"{paper['history'][-1]['step']:,}" and row["paper's test error"] == "8.75%"
    records = list(csv.DictReader((EXPERIMENTS / "degradation-cifar10-gpu" / "degradation.csv").open()))
    last = max(int(r["iteration"]) for r in records)
    rows = next(rows for header, rows, _ in tables(expanded("reproducing.md")) if "validation error" in header
                and "model" in header and "training error" in header)
    for row in rows:
        (record,) = [r for r in records if r["model"] == row["model"] and int(r["iteration"]) == last]
        assert row["training error"] == f"{float(record['train_error']):.2f}%"
        assert row["validation error"] == f"{float(record['test_error']):.2f}%"
    folder = json.loads((RESULTS / "folder_throughput.json").read_text())
    rows = next(rows for header, rows, _ in tables(expanded("results.md")) if "training images/s" in header)
    assert [row["training images/s"] for row in rows] == [
        f"{folder['images_per_s'][name]:.1f}" for name in ("cached", "streamed", "in memory")]
    assert plain(rows[0]["vs streamed"]) == f"{folder['cached_vs_streamed']:.2f}x"
