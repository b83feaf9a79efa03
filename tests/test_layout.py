"""The package's layout: dependencies point one way, no import cycle (lazy imports included),
light modules stay light, and no module grows past what a reader holds in mind."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "thermosgd"

# Lower layers never import higher ones: theory <- protocols, entropy <- results <- engines
# (isotropic, nn) <- sweeps <- analysis <- report <- reproduce <- cli. The result schema sits
# below the engines because they write it.
LAYERS = {"_version": 0, "theory": 1, "protocols": 2, "entropy": 2, "results": 3,
          "isotropic": 4, "nn": 4, "monitor": 4, "sweeps": 5, "analysis": 6, "report": 7, "reproduce": 8,
          "cli": 9, "__main__": 10, "__init__": 10}
MAX_LINES = 450


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("thermosgd",) + parts).removesuffix(".__init__")
        yield name, path


def _imports(name, path, modules):
    """thermosgd modules imported anywhere in the file (top level or inside functions).
    ``from package import submodule`` is an edge to the submodule alone."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("thermosgd")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("thermosgd"):
                subs = {f"{base}.{a.name}" for a in node.names} & set(modules)
                found |= subs if len(subs) == len(node.names) else subs | {base}
    return found


def _graph():
    modules = dict(_modules())
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(name, path, modules) if m in modules and m != name}
    return graph


def _layer(module):
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def test_dependencies_point_one_way():
    wrong = [(a, b) for a, targets in _graph().items() for b in targets
             if not (a == "thermosgd" or _layer(b) <= _layer(a))]
    assert not wrong, f"imports against the layer order: {wrong}"


def test_no_import_cycle():
    graph = _graph()
    graph.pop("thermosgd")  # the lazy top-level API names everything and is imported by none
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(nxt_ := node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[nxt_] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


def test_theory_needs_neither_torch_nor_numba():
    code = ("import sys, thermosgd.theory, thermosgd\n"
            "print(sorted(m for m in ('torch', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v))
def test_modules_stay_short(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it"
