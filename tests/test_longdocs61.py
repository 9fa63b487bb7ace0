"""Stop 61, long documents: what a user reads about chunks and windows, checked against what happens."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tokenpool.errors import OptionError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundled():
    from tokenpool import Encoder

    return Encoder(device="cpu")


def _boundary_examples() -> list[tuple[str, str]]:
    """Every ``boundaries:N`` spec a user is told to type: in README.md, docs/long-documents.md and the chunk-spec
    error (retrieval's ``late-boundaries-N`` mode names are not specs)."""
    from tokenpool.core.chunking import parse_chunks

    with pytest.raises(OptionError) as caught:
        parse_chunks("sentences")
    sources = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/long-documents.md")}
    sources["the chunk-spec error"] = str(caught.value)
    return [(name, spec) for name, text in sources.items() for spec in re.findall(r"(?<![-\w])boundaries:\d+", text)]


def test_the_boundary_chunk_examples_users_are_shown_run_on_the_bundled_model(bundled):
    """README and docs/long-documents.md showed ``--chunks boundaries:256``, which every 256-token model (the
    bundled one, the default) refuses: a window holds 254 text tokens."""
    pytest.importorskip("semantic_text_splitter")
    examples = _boundary_examples()
    assert {name for name, _ in examples} == {"README.md", "docs/long-documents.md", "the chunk-spec error"}
    text = "The meeting opened with the budget. " * 20
    for name, spec in examples:
        try:
            bundled.plan_chunks([text], chunks=spec)
        except OptionError as err:
            pytest.fail(f"{name} shows {spec}, refused by the bundled model: {err}")
