"""The package's shape, drawn again from the code on every run: layers point down, no circles, steps by name.

Every import of every module counts, the ones inside functions too (they are
still dependencies); only ``if TYPE_CHECKING:`` blocks are skipped. A module may
import its own layer or a lower one, never a higher one, and no chain of imports
may come back to where it started.
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTS = {  # installed name -> folder (pyproject's package-dir)
    "stampede": REPO / "plugins" / "stampede",
    "stampede.loadtests": REPO / "loadtests",
    "stampede.cleanup": REPO / "cleanup",
    "stampede.infra": REPO / "infra",
}
# Each package's layer: a module may import from its own layer or below, never above.
LAYERS = {
    "core": 0,
    "plan": 1, "hooks": 1, "state": 1, "infra": 1,
    "safety": 2, "load": 2, "workers": 2, "figures": 2, "cleanup": 2,
    "cost": 3, "loadtests": 3,
    "analysis": 4,
    "render": 5,
    "steps": 6,
    "surfaces": 7,
}
STEPS = ("preflight", "cost_check", "provision", "run_stages", "validate", "analyse", "cleanup", "teardown",
         "report", "notify", "verdict", "breaking_point")


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((prefix, *parts))
            if prefix == "stampede" and parts and parts[0] in ("loadtests", "cleanup", "infra"):
                continue
            found[name] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    resolved = set()
    for target in targets:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else ""
    return package, LAYERS.get(package, -1)


GRAPH = {name: _imports(path, name, set(_modules())) for name, path in _modules().items()}


def test_every_package_has_a_layer():
    packages = {m.split(".")[1] for m in GRAPH if m.count(".") >= 1}
    assert packages <= set(LAYERS), f"give these packages a layer: {sorted(packages - set(LAYERS))}"


def test_no_module_imports_upward():
    upward = []
    for module, targets in GRAPH.items():
        package, layer = _layer(module)
        if module == "stampede":
            continue
        for target in targets:
            other, other_layer = _layer(target)
            if target != "stampede" and other_layer > layer:
                upward.append(f"{module} ({package}, layer {layer}) imports {target} ({other}, layer {other_layer})")
    assert upward == []


def test_no_import_circles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []


def test_packages_never_import_each_others_circle():
    edges = defaultdict(set)
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _layer(module)[0], _layer(target)[0]
            if a and b and a != b:
                edges[a].add(b)
    both_ways = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
    assert both_ways == []


@pytest.mark.parametrize("step", STEPS)
def test_each_step_is_found_in_one_module_by_its_name(step):
    module = f"stampede.steps.{step}"
    assert module in GRAPH
    tree = ast.parse(_modules()[module].read_text())
    public = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert any(step in name or name in step for name in public), f"{module} has no function named for its step"


def test_only_steps_write_run_folders():
    """Domain code takes records and returns records: the run folder belongs to the steps."""
    writers = [m for m, targets in GRAPH.items() if "stampede.core.artifacts" in targets
               and _layer(m)[0] not in ("steps", "surfaces")]
    assert writers == []


def test_only_surfaces_call_steps():
    callers = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
               if t.startswith("stampede.steps") and _layer(m)[0] not in ("steps", "surfaces")]
    assert callers == []


def test_every_package_is_installed():
    """pyproject lists its packages; a folder it forgets would be missing from an installed wheel."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert packages == listed
