"""The package's structure: imports point one way, no cycles, files of one concern.

The layers, lowest first (docs/architecture.md draws them). A module may import its own layer
or those below, never one above; ``models`` imports nothing else of the package but ``limits`` (the
ceilings its builder checks options against).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import resnetlab

PACKAGE = Path(resnetlab.__file__).parent
LAYERS = [
    {"errors", "device", "fileio", "limits", "machine", "options", "models"},
    {"weights", "data"},
    {"evaluation", "export", "analysis"},
    {"optimize", "bench", "inference", "train", "experiments"},
    {"serve"},
    {"cli", "__init__", "__main__"},
]
MAX_LINES = 400
LONGER_FILES: Dict[str, str] = {}  # module -> why it is one concern although longer


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Set[str]:
    """The package's modules that ``path`` imports, anywhere in it (function-local imports too)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("resnetlab"):
                    continue
                base = node.module.split(".")[1:]
            else:
                base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join(base + [alias.name])
                found.add(candidate if candidate in MODULES else ".".join(base))
        elif isinstance(node, ast.Import):
            found.update(".".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("resnetlab."))
    return {m for m in found if m and m != name}


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
MODULES["__init__"] = PACKAGE / "__init__.py"
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(index for index, names in enumerate(LAYERS) if top in names)


def test_every_module_has_a_layer():
    assert all(layer(name) >= 0 for name in GRAPH)


def test_no_upward_imports():
    upward = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() for target in targets
                    if layer(target) > layer(name) and name.split(".")[0] != target.split(".")[0])
    assert upward == []


def test_models_import_nothing_else_of_the_package_but_the_ceilings():
    outside = sorted(f"{name} -> {target}" for name, targets in GRAPH.items() if name.startswith("models")
                     for target in targets if not target.startswith(("models", "limits")))
    assert outside == []


def test_no_import_cycles():
    done: Set[str] = set()
    cycles = []

    def visit(name: str, path: list) -> None:
        if name in path:
            cycles.append(" -> ".join(path[path.index(name):] + [name]))
            return
        if name in done:
            return
        for target in sorted(GRAPH.get(name, ())):
            # A package's __init__ re-exporting its own modules is not a cycle of concepts.
            if not (name.endswith("__init__") or target == name.rsplit(".", 1)[0]):
                visit(target, path + [name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])
    assert cycles == []


def test_inference_experiments_and_bench_do_not_import_the_training_loop():
    users = [name for name in GRAPH if name.split(".")[0] in ("inference", "experiments", "bench", "optimize")]
    assert users and all("train.run" not in GRAPH[name] for name in users)


def test_files_hold_one_concern():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: lines for name, lines in long.items() if lines > MAX_LINES and name not in LONGER_FILES} == {}
