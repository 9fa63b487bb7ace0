"""The docs pages' own claims, checked: their ```python blocks run as written (tests/test_readme.py does this for
README.md only), and docs/architecture.md's layer diagram allows what tests/test_architecture.py allows."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from test_architecture import ALLOWED

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("architecture", "cli", "configs", "encoder", "evaluation", "integrations", "long-documents", "performance",
         "precision", "security", "serve")
# a block that needs what a test run has not: a server on a fixed port, a Ray cluster, a folder named by a
# placeholder, the shared evaluation sets
NEEDS = ("127.0.0.1:8080", "ray.init", "s3://", "path/to/", "../shared/data")
BLOCKS = [(page, index, block) for page in PAGES
          for index, block in enumerate(re.findall(r"```python\n(.*?)```",
                                                   (ROOT / "docs" / f"{page}.md").read_text(encoding="utf-8"), re.S))]


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_docs_example_runs(page, index, block, tmp_path, monkeypatch):
    needs = [need for need in NEEDS if need in block]
    if needs:
        pytest.skip(f"docs/{page}.md block {index} needs {needs}")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # the pages name examples/ from the repository root
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"docs/{page}.md block {index}", "exec"), {"__name__": "docs_example"})


def test_the_layer_diagram_allows_what_the_import_check_allows():
    """docs/architecture.md's mermaid arrows (and what they reach) are each layer's ALLOWED set: the diagram
    left out serve → evaluation (serve/tei.py imports evaluation.sts)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    edges: dict[str, set[str]] = {}
    for source, targets in re.findall(r"^\s+(\w+) --> (.+)$", text, re.M):
        edges.setdefault(source, set()).update(t.strip() for t in targets.split("&"))

    def reach(layer: str) -> set[str]:
        found = set(edges.get(layer, ()))
        for target in list(found):
            found |= reach(target)
        return found

    assert {layer: reach(layer) for layer in ALLOWED if layer != "top"} == {
        layer: allowed for layer, allowed in ALLOWED.items() if layer != "top"
    }
