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
# layer → the tokenpool layers it may import (besides itself, `tokenpool.errors` and `tokenpool._version`)
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "io": {"core"},
    "jobs": {"core", "model", "io"},
    "evaluation": {"core", "model", "io"},
    "serve": {"core", "model", "io", "evaluation"},
    "bench": {"core"},
    "cli": set(LAYERS) - {"cli"},
    "integrations": {"core", "model", "io", "jobs"},
    "top": {"core"},  # tokenpool/__init__.py, torch.py, errors.py
}
FRAMEWORKS = ("torch", "jax", "transformers", "sentence_transformers", "tokenizers", "cupy", "dask", "tqdm")


def _layer_of(module: str) -> str:
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
