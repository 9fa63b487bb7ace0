"""Long documents batched like texts: windows grouped by the token budget (``max_batch_tokens``) and split in
halves on out-of-memory errors, through the same `tokenpool.model.batching` rules as `Encoder.encode`.

The references are the same encoders without a budget (and without failures): the budget and the splits may
change which windows share a forward pass, never a vector."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_batching import OomAbove  # noqa: E402  (the runner that fails above a size, as a GPU would)
from test_encoder import _qwen2_weights, _save_sentence_transformer  # noqa: E402

from tokenpool import Encoder  # noqa: E402
from tokenpool.model import longdocs  # noqa: E402
from tokenpool.model import windows as windows_module  # noqa: E402
from tokenpool.model.batching import budget_groups, longest_first_batches  # noqa: E402

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "one", "jovial", "bank", "clerk"]


def _text(n_words: int, seed: int) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, size=n_words))


# documents of one to several windows, and short ones, so that window rows differ in length
TEXTS = [_text(n, seed=n) for n in (70, 3, 35, 1, 52, 9, 24)]


@pytest.fixture(scope="module")
def windows(tiny_bert_folder):
    """max_length 16 (14 text tokens per window), stride 5: a 70-word document is a dozen windows."""
    return Encoder(
        tiny_bert_folder, pooling="mean", max_length=16, normalize=False, long_documents="windows", window_stride=5,
        device="cpu",
    )


@pytest.fixture
def recorder(windows, monkeypatch):
    """The encoder's runner wrapped to record every forward pass's shape (and never fail)."""
    wrapped = OomAbove(windows.runner, limit=10**9)
    monkeypatch.setattr(windows, "runner", wrapped)
    return wrapped


def _window_rows(encoder: Encoder, texts: list[str]) -> int:
    """How many window rows the documents make (each text its own document)."""
    engine = longdocs.WindowEngine(encoder, prompt=None, stride=encoder.window_stride)
    capacity = engine.layout.capacity
    return sum(
        len(longdocs.window_starts(len(longdocs.tokenize_document(encoder.tokenization, t)), capacity, engine.stride))
        for t in texts
    )


def _assert_within(shapes, batch_size: int, budget: int) -> None:
    assert shapes
    for rows, width in shapes:
        assert rows <= batch_size
        assert rows * width <= budget or rows == 1  # a single over-long window still runs, alone


# ------------------------------------------------------------------------------------ the budget


def test_the_budget_bounds_every_window_batch_and_keeps_windows_mean(windows, recorder):
    reference = windows.encode(TEXTS, batch_size=8)
    unbudgeted = list(recorder.shapes)
    recorder.shapes.clear()
    budgeted = windows.encode(TEXTS, batch_size=8, max_batch_tokens=40)
    np.testing.assert_allclose(budgeted, reference, rtol=0, atol=1e-6)
    _assert_within(recorder.shapes, 8, 40)
    rows = _window_rows(windows, TEXTS)
    assert sum(r for r, _ in recorder.shapes) == sum(r for r, _ in unbudgeted) == rows
    assert max(r for r, _ in unbudgeted) == 8
    assert max(r for r, w in recorder.shapes if w == 16) == 2  # 40 // 16 full windows
    assert len(recorder.shapes) > len(unbudgeted)


def test_the_budget_keeps_late_chunks(windows, recorder):
    reference = windows.encode_chunks(TEXTS, chunks="tokens:6:2", batch_size=8)
    recorder.shapes.clear()
    budgeted = windows.encode_chunks(TEXTS, chunks="tokens:6:2", batch_size=8, max_batch_tokens=50)
    _assert_within(recorder.shapes, 8, 50)
    assert sum(r for r, _ in recorder.shapes) == _window_rows(windows, TEXTS)
    for name in ("doc", "chunk", "start", "end"):
        np.testing.assert_array_equal(getattr(budgeted, name), getattr(reference, name))
    np.testing.assert_allclose(budgeted.vectors, reference.vectors, rtol=0, atol=1e-6)


def test_the_budget_keeps_naive_chunks(windows, recorder):
    reference = windows.encode_chunks(TEXTS, chunks="tokens:6:2", chunking="naive", batch_size=8)
    recorder.shapes.clear()
    budgeted = windows.encode_chunks(TEXTS, chunks="tokens:6:2", chunking="naive", batch_size=8, max_batch_tokens=24)
    _assert_within(recorder.shapes, 8, 24)
    np.testing.assert_allclose(budgeted.vectors, reference.vectors, rtol=0, atol=1e-6)


def test_the_budget_keeps_token_output(windows, recorder):
    reference = windows.encode(TEXTS, output="tokens", special_tokens=False, batch_size=8)
    recorder.shapes.clear()
    budgeted = windows.encode(TEXTS, output="tokens", special_tokens=False, batch_size=8, max_batch_tokens=33)
    _assert_within(recorder.shapes, 8, 33)
    assert len(budgeted) == len(reference)
    for got, want in zip(budgeted, reference, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_bad_budget_is_refused(windows):
    for bad in (0, -3, 2.5, True, "64"):
        with pytest.raises(ValueError, match=f"max_batch_tokens must be a positive int or None, got {bad!r}"):
            windows.encode_chunks(TEXTS, chunks="tokens:6", max_batch_tokens=bad)
        with pytest.raises(ValueError, match="max_batch_tokens must be a positive int or None"):
            windows.encode(TEXTS, max_batch_tokens=bad)


# ------------------------------------------------------------------------------------ out of memory


def test_windows_that_run_out_of_memory_are_split_and_give_the_same_vectors(windows, monkeypatch):
    reference = windows.encode(TEXTS, batch_size=16)
    chunks = windows.encode_chunks(TEXTS, chunks="tokens:6:2", batch_size=16)
    tokens = windows.encode(TEXTS, output="tokens", batch_size=16)
    flaky = OomAbove(windows.runner, limit=3 * 16)  # more than three full windows: out of memory
    monkeypatch.setattr(windows, "runner", flaky)
    np.testing.assert_allclose(windows.encode(TEXTS, batch_size=16), reference, rtol=0, atol=1e-6)
    assert flaky.failures > 0
    assert all(rows * width <= 48 for rows, width in flaky.shapes)
    assert sum(r for r, _ in flaky.shapes) == _window_rows(windows, TEXTS)  # every window ran exactly once
    failures = flaky.failures
    np.testing.assert_allclose(
        windows.encode_chunks(TEXTS, chunks="tokens:6:2", batch_size=16).vectors, chunks.vectors, rtol=0, atol=1e-6
    )
    for got, want in zip(windows.encode(TEXTS, output="tokens", batch_size=16), tokens, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert flaky.failures > failures


def test_a_single_window_that_does_not_fit_reraises(windows, monkeypatch):
    monkeypatch.setattr(windows, "runner", OomAbove(windows.runner, limit=8))
    with pytest.raises(RuntimeError, match="out of memory"):
        windows.encode(TEXTS[:1])


def test_left_padded_windows_split_on_out_of_memory(tmp_path, monkeypatch):
    """A left-padded model: the halves of a split batch are trimmed on the left, and every window's tokens are
    still read from the right columns (last-token pooling reads the very last one)."""
    _qwen2_weights(tmp_path, padding_side="left")
    _save_sentence_transformer(tmp_path, "lasttoken")
    encoder = Encoder(tmp_path, max_length=16, long_documents="windows", device="cpu")
    texts = ["x", *TEXTS[:3], "a lazy dog sleeps"]
    reference = encoder.encode(texts, batch_size=8)
    tokens = encoder.encode(texts, output="tokens", batch_size=8)
    flaky = OomAbove(encoder.runner, limit=40)
    monkeypatch.setattr(encoder, "runner", flaky)
    np.testing.assert_allclose(encoder.encode(texts, batch_size=8, max_batch_tokens=64), reference, rtol=0, atol=1e-6)
    for got, want in zip(encoder.encode(texts, output="tokens", batch_size=8), tokens, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert flaky.failures > 0 and any(width < 16 for _, width in flaky.shapes)


# ------------------------------------------------------------------------------------ bounded memory


def test_windows_are_still_pooled_as_they_are_produced(windows, monkeypatch):
    """With a budget, documents are still read lazily and finished batch by batch: the first document comes out
    long before the last one is read (memory is bounded by the row buffer, not by the corpus)."""
    monkeypatch.setattr(windows_module, "ROW_BUFFER", 6)
    engine = longdocs.WindowEngine(windows, prompt=None, stride=5)
    pulled = []

    def plans():
        for i in range(40):
            pulled.append(i)
            yield engine.plan(i, longdocs.tokenize_document(windows.tokenization, TEXTS[i % 3]), None, False)

    finished = engine.run(plans(), batch_size=4, max_batch_tokens=32)
    first = next(finished)
    assert len(pulled) < 10, len(pulled)
    rest = list(finished)
    assert sorted([first.index, *(d.index for d in rest)]) == list(range(40))
    want = windows.encode(TEXTS[:3])
    for doc in [first, *rest]:
        np.testing.assert_allclose(engine.vectors(doc)[0], want[doc.index % 3], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------ the shared rule


@settings(max_examples=60)
@given(
    lengths=st.lists(st.integers(0, 40), max_size=60),
    batch_size=st.integers(1, 9),
    budget=st.one_of(st.none(), st.integers(1, 200)),
)
def test_longest_first_batches_are_budget_groups_of_the_stable_longest_first_order(lengths, batch_size, budget):
    """Texts and windows share this rule: every row once, longest first (ties in input order), grouped by
    `budget_groups` — checked against a plain sort and the groups it gives."""
    lengths = np.asarray(lengths, dtype=np.int64)
    batches = list(longest_first_batches(lengths, batch_size, budget))
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    assert [int(i) for b in batches for i in b] == order
    groups = list(budget_groups(np.asarray(sorted(lengths.tolist(), reverse=True), dtype=np.int64), batch_size, budget))
    assert [len(b) for b in batches] == [g.stop - g.start for g in groups]
