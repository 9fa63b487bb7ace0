"""Stop 61's hunt in `tokenpool serve`: what docs/serve.md says a forward pass of mixed lengths takes. Servers
bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serve_fakes import FakeRunner, post

from tokenpool.serve.server import start_server
from tokenpool.serve.settings import ServeSettings

SERVE_DOCS = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


class UnpaddedRunner(FakeRunner):
    """A runner whose passes compute real tokens only, as `EncoderRunner` over a BERT model on torch."""

    unpadded = True


def _passes(runner: FakeRunner, texts: list[str]) -> list[int]:
    """The sizes of the forward passes one request of ``texts`` takes."""
    with start_server(runner, ServeSettings(max_wait_ms=0)) as server:
        answer = post(server, "/embed", {"inputs": texts})
    assert answer.status_code == 200, answer.text
    return [len(texts) for texts in runner.passes]


def test_the_docs_say_which_models_cut_a_pass_at_a_shorter_input():
    """docs/serve.md said that every pass is the group of near-equal lengths holding the anchor's first input,
    ending before an input shorter than 80% of its longest once it holds 8; a runner whose passes compute real
    tokens only (`EncoderRunner.unpadded`: a BERT model on torch, the bundled model included) takes the longest
    inputs offered instead, whatever their lengths. The docs now say which models group by length."""
    pytest.importorskip("uvicorn")
    texts = ["w " * 12] + ["w"] * 9  # 14 tokens, then 3 each: under 80% of 14
    assert _passes(FakeRunner(max_length=32), texts) == [8, 2]
    assert _passes(UnpaddedRunner(max_length=32), texts) == [10]
    docs = " ".join(SERVE_DOCS.read_text(encoding="utf-8").split())
    sentence = re.search(r"The anchor's inputs, longest first.*?padded tokens \(default 16384\)", docs)
    assert sentence and re.search(r"real tokens only|unpadded", sentence[0]), sentence and sentence[0]
