"""Per-call pooling and unfinished rows: ``pooling=`` pools one forward pass (or the windows of a long document,
or its chunks) with other strategies than the encoder's own, exactly as an encoder built with that pooling and
no normalisation does; ``finish=False`` gives the rows before truncate_dim and normalize; chunk plans and window
capacity without running the model."""

from __future__ import annotations

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.core.pooling import finish_vectors

TEXTS = [
    "The committee discussed the budget and the schedule in detail, then the remote control design.",
    "a b c",
    "Cats purr. Dogs bark at night, and the neighbours complain about the noise every single evening.",
]


@pytest.fixture(scope="module")
def own(tiny_bert_folder) -> Encoder:
    """mean pooling, normalised, cut to 16 dimensions; 14 text tokens per window."""
    return Encoder(tiny_bert_folder, pooling="mean", max_length=16, truncate_dim=16, normalize=True, device="cpu")


def _plain(folder, pooling) -> Encoder:
    return Encoder(folder, pooling=pooling, max_length=16, normalize=False, device="cpu")


@pytest.mark.parametrize("pooling", ["max", "cls", ["mean", "max"], "weightedmean"])
def test_per_call_pooling_is_an_encoder_with_that_pooling(own, tiny_bert_folder, pooling):
    plain = _plain(tiny_bert_folder, pooling)
    for mode in ("truncate", "windows"):
        got = own.encode(TEXTS, pooling=pooling, long_documents=mode, batch_size=2)
        np.testing.assert_array_equal(got, plain.encode(TEXTS, long_documents=mode, batch_size=2))
    for chunking in ("late", "naive"):
        got = own.encode_chunks(TEXTS, chunks="tokens:6:2", chunking=chunking, pooling=pooling, batch_size=2)
        want = plain.encode_chunks(TEXTS, chunks="tokens:6:2", chunking=chunking, batch_size=2)
        np.testing.assert_array_equal(got.vectors, want.vectors)
    streamed = np.zeros_like(plain.encode(TEXTS))
    for indices, rows in own.iter_vector_batches(TEXTS, pooling=pooling, long_documents="windows", batch_size=2):
        streamed[indices] = rows
    np.testing.assert_array_equal(streamed, plain.encode(TEXTS, long_documents="windows", batch_size=2))


def test_per_call_pooling_reads_the_tokens_the_model_gives(tiny_bert_folder):
    """An independent view: max over the token vectors of ``output="tokens"`` (every token, whole document
    through windows) is the windows ``pooling="max"`` vector."""
    encoder = _plain(tiny_bert_folder, "mean")
    tokens = encoder.encode(TEXTS, output="tokens", long_documents="windows")
    got = encoder.encode(TEXTS, pooling="max", long_documents="windows")
    for row, states in zip(got, tokens, strict=True):
        np.testing.assert_allclose(row, states.max(axis=0), rtol=1e-6, atol=1e-6)


def test_unfinished_rows_are_the_rows_before_truncate_dim_and_normalize(own, tiny_bert_folder):
    plain = _plain(tiny_bert_folder, "mean")
    assert own.output_width(finish=False) == 32 and own.output_width() == 16
    for mode in ("truncate", "windows"):
        raw = own.encode(TEXTS, finish=False, long_documents=mode)
        np.testing.assert_array_equal(raw, plain.encode(TEXTS, long_documents=mode))
        np.testing.assert_allclose(
            finish_vectors(raw, truncate_dim=16, normalize=True), own.encode(TEXTS, long_documents=mode), atol=1e-6
        )
    late = own.encode_chunks(TEXTS, chunks="tokens:6", finish=False)
    np.testing.assert_array_equal(late.vectors, plain.encode_chunks(TEXTS, chunks="tokens:6").vectors)


def test_documents_without_tokens_can_give_one_whole_row(own):
    texts = ["", TEXTS[1], "   "]
    with pytest.raises(ValueError, match="document 0: empty"):
        own.encode_chunks(texts, chunks="tokens:6")
    for chunking in ("late", "naive"):
        rows = own.encode_chunks(texts, chunks="tokens:6", chunking=chunking, empty_documents="whole")
        assert rows.doc.tolist() == [0, 1, 2] and rows.start.tolist() == [0, 0, 0]
        assert rows.end.tolist() == [0, 5, 3]
        whole = own.encode([texts[0], texts[2]])  # documents without tokens: as encode gives them
        np.testing.assert_allclose(rows.vectors[[0, 2]], whole, atol=1e-6)
        alone = own.encode_chunks(texts[1:2], chunks="tokens:6", chunking=chunking).vectors
        np.testing.assert_allclose(rows.vectors[1:2], alone, atol=1e-6)  # other passes: padding differs


def test_chunk_plans_and_capacity_without_the_model(own, monkeypatch):
    want = own.encode_chunks(TEXTS, chunks="tokens:6:2", prompt="q: ")
    monkeypatch.setattr(own.runner, "forward", None)  # planning never runs the model
    plan = own.plan_chunks(TEXTS, chunks="tokens:6:2", prompt="q: ")
    for name in ("doc", "chunk", "start", "end"):
        np.testing.assert_array_equal(getattr(plan, name), getattr(want, name))
    prompt = own.tokenizer("q: ", add_special_tokens=False)["input_ids"]
    assert own.window_capacity() == 16 - 2 and own.window_capacity(prompt="q: ") == 16 - 2 - len(prompt)


def test_a_pooling_the_model_cannot_give_is_refused(own):
    with pytest.raises(ValueError, match="cannot pool hidden states with \\['splade'\\]"):
        own.encode(TEXTS, pooling="splade")
    with pytest.raises(ValueError, match="precision='int8' is for the encoder's own vectors, not pooling='max'"):
        own.encode(TEXTS, pooling="max", precision="int8")


def test_dense_modules_follow_the_pooling_of_windows_and_chunks(tmp_path):
    """A folder with a Dense module after pooling: windows and chunk vectors go through it too (they used to
    skip it and fail), checked against sentence-transformers' own Dense module on the raw pooled rows."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from tinymodels import HIDDEN, bert_weights

    folder = bert_weights(tmp_path / "dense")
    torch.manual_seed(1)
    modules = [Transformer(str(folder), max_seq_length=16), Pooling(HIDDEN, "mean"), Dense(HIDDEN, 8), Normalize()]
    reference = SentenceTransformer(modules=modules, device="cpu")
    reference.save(str(folder))
    encoder = Encoder(folder, device="cpu", window_stride=5)
    assert encoder.dimension == 8

    def dense(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = reference[2]({"sentence_embedding": torch.from_numpy(rows)})["sentence_embedding"]
        return torch.nn.functional.normalize(out, dim=-1).numpy()

    windows = encoder.encode(TEXTS, long_documents="windows")
    np.testing.assert_allclose(windows, dense(encoder.encode(TEXTS, long_documents="windows", pooling="mean")),
                               atol=1e-6)  # fmt: skip
    chunks = encoder.encode_chunks(TEXTS, chunks="tokens:6:2")
    raw = encoder.encode_chunks(TEXTS, chunks="tokens:6:2", pooling="mean").vectors
    np.testing.assert_allclose(chunks.vectors, dense(raw), atol=1e-6)
    short = ["a b c", "two words"]  # one window each: windows is truncate
    np.testing.assert_allclose(encoder.encode(short, long_documents="windows"), encoder.encode(short), atol=1e-6)


def test_public_calls_give_the_retrieval_document_modes(small):
    """What evaluation's long-document modes compute by hand (windows, late and naive chunks, per pooling label)
    is these public calls: encode(long_documents="windows", pooling=...), encode_chunks(pooling=...,
    empty_documents="whole") capped at window_capacity(), and plan_chunks + encode of the chunk texts."""
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    texts = [TEXTS[0] * 3, TEXTS[1], "   ", "", TEXTS[2]]
    call = {"batch_size": 4, "prompt": None, "prompt_name": None, "progress": False}
    spec = f"tokens:{min(128, small.window_capacity())}:0"
    plan = small.plan_chunks(texts, chunks=spec, empty_documents="whole")
    pieces = [texts[d][s:e] for d, s, e in zip(plan.doc.tolist(), plan.start.tolist(), plan.end.tolist(), strict=True)]
    for label in (None, "max"):
        windows = DOCUMENT_MODES["windows"](small, texts, [label], **call)[label]
        np.testing.assert_array_equal(
            windows.vectors, small.encode(texts, long_documents="windows", pooling=label, batch_size=4)
        )
        late = DOCUMENT_MODES["late-128"](small, texts, [label], **call)[label]
        got = small.encode_chunks(texts, chunks=spec, pooling=label, empty_documents="whole", batch_size=4)
        np.testing.assert_array_equal(late.doc_index, got.doc)
        np.testing.assert_array_equal(late.vectors, got.vectors)
        naive = DOCUMENT_MODES["naive-128"](small, texts, [label], **call)[label]
        np.testing.assert_array_equal(naive.doc_index, plan.doc)
        np.testing.assert_array_equal(naive.vectors, small.encode(pieces, pooling=label, batch_size=4))
