"""The layers import in one direction only (docs/architecture.md): checked statically on every module's
imports (also those inside functions) and dynamically by importing each layer in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tokenpool"
LAYERS = ("core", "model", "io", "jobs", "evaluation", "serve", "bench", "cli", "integrations")
# layer → the tokenpool layers it may import (besides itself and the top-level modules: `tokenpool.errors`, `.devices`, `._version`)
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "io": {"core"},
    "jobs": {"core", "model", "io"},  # the corpus-job skeleton; only cli/ and integrations/ use it
    "evaluation": {"core", "model", "io"},
    "serve": {"core", "model", "io", "evaluation"},
    "bench": {"core"},
    "cli": set(LAYERS) - {"cli"},
    "integrations": {"core", "model", "io", "jobs"},
    "top": {"core"},  # tokenpool/__init__.py, torch.py, errors.py
}
FRAMEWORKS = (
    "torch", "jax", "transformers", "sentence_transformers", "tokenizers", "cupy", "dask", "tqdm", "numba",
)


def _layer_of(module: str) -> str:
    if module == "tokenpool.__main__":  # `python -m tokenpool`: the command line's entry point
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(path: Path) -> set[str]:
    """Absolute names of the tokenpool modules ``path`` imports, at top level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t == "tokenpool" or t.startswith("tokenpool.")}


def _layer_imports() -> list[tuple[str, str, str]]:
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _module_name(path)
        for target in _imported(path):
            if target.split(".")[1:2] and target.split(".")[1] in LAYERS:
                rows.append((source, _layer_of(source), target))
    return rows


def test_layers_import_only_downwards():
    wrong = [
        f"{source} ({layer}) imports {target}"
        for source, layer, target in _layer_imports()
        if _layer_of(target) not in ALLOWED[layer] | {layer}
    ]
    assert wrong == []


def test_the_static_check_sees_imports_inside_functions():
    """A lazy import deep in a function counts: the rule is about what a layer may reach, not when."""
    probe = PACKAGE / "core" / "pooling.py"
    assert any(t.startswith("tokenpool.core") for t in _imported(probe))
    assert "tokenpool.core.pooling" in _imported(PACKAGE / "core" / "strategies.py")  # imported in a method


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(eval(out))  # a printed list of names


@pytest.mark.parametrize(
    "code",
    [
        "import tokenpool",
        "import tokenpool; tokenpool.pool; tokenpool.pool_packed; tokenpool.Pooling",
        "import tokenpool.core.pooling, tokenpool.core.packed, tokenpool.core.fast, tokenpool.core.masks",
    ],
)
def test_the_core_loads_no_framework_and_no_upper_layer(code):
    loaded = _modules_after(code)
    assert [m for m in FRAMEWORKS if m in loaded] == []
    upper = sorted(m for m in loaded if m.startswith("tokenpool.") and _layer_of(m) not in ("core", "top"))
    assert upper == []


def test_the_command_line_help_loads_no_array_library():
    loaded = _modules_after("import tokenpool.cli")
    assert [m for m in (*FRAMEWORKS, "numpy") if m in loaded] == []


def _private_imports(path: Path, source: str | None = None) -> list[str]:
    """``module.name`` for every underscored name ``path`` (or ``source`` as if it were there) takes from a
    tokenpool module (``from x import _y``, or ``x._y`` on a module it imported)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    found, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not (target == "tokenpool" or target.startswith("tokenpool.")):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target != name:
                    found.append(f"{target}.{alias.name}")
                modules[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tokenpool"):
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names():
    """Underscored names are a module's own: what another module needs is public (issue 18)."""
    wrong = [
        f"{_module_name(path)} uses {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for target in _private_imports(path)
        if target.rsplit(".", 1)[0] != _module_name(path)
    ]
    assert wrong == []


def test_the_private_name_check_sees_both_spellings():
    source = "from .encoder import _x\nfrom . import batching\nimport numpy as np\nbatching._trim\nnp._y\n"
    found = _private_imports(PACKAGE / "model" / "probe.py", source)
    assert sorted(found) == ["tokenpool.model.batching._trim", "tokenpool.model.encoder._x"]


def test_only_the_front_ends_use_the_jobs_layer():
    users = {layer for source, layer, target in _layer_imports() if _layer_of(target) == "jobs" and layer != "jobs"}
    assert users <= {"cli", "integrations"}


def _module_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in _imported(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]  # `from .x import name` names the module x
            if target and target != name and not (path.name == "__init__.py" and target.startswith(name + ".")):
                targets.add(target)
        graph[name] = targets
    return graph


def test_import_circles_are_only_the_deliberate_one():
    """Module-level circles (lazy imports count): the only one is closed by core.strategies' lazy import of
    core.pooling (``Pooling.MEAN(array)`` calls `pool`); without that one edge the graph has no circle."""
    graph = _module_graph()
    assert "tokenpool.core.pooling" in graph["tokenpool.core.strategies"]  # the check sees that edge at all
    graph["tokenpool.core.strategies"] = graph["tokenpool.core.strategies"] - {"tokenpool.core.pooling"}
    assert _circles(graph) == []
    graph["tokenpool.model.texts"] = graph["tokenpool.model.texts"] | {"tokenpool.model.encoder"}
    assert _circles(graph)  # and it would see another one


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles
