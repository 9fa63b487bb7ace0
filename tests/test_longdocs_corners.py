"""Long documents, edge cases: each test fails on the code before its fix.

The references are independent of `tokenpool.model.windows` / `chunks`: windows are built from the tokenizer's
own ids and run one at a time through the transformers model, every token takes its state from the window
where min(tokens before, tokens after) is largest (ties: the earlier window), and vectors are pooled by a plain
float64 loop.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model import longdocs  # noqa: E402
from tokenpool.model import windows as windows_module  # noqa: E402

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "hex"]


def _text(n_words: int, seed: int = 0) -> str:
    return " ".join(np.random.default_rng(seed).choice(WORDS, size=n_words))


def _windowed_states(encoder, text: str, stride: int) -> np.ndarray:
    """float64 ([CLS] + body + [SEP], hidden): each token's state from its most central window, every window
    run alone through the transformers model (a BERT: one special token each side, no prompt)."""
    tok = encoder.tokenizer
    body = tok(text, add_special_tokens=False)["input_ids"]
    capacity = encoder.max_length - 2
    n = len(body)
    starts = [0] if n <= capacity else [*range(0, n - capacity, stride), n - capacity]
    states = []
    for s in starts:
        ids = torch.tensor([[tok.cls_token_id, *body[s : s + capacity], tok.sep_token_id]])
        with torch.no_grad():
            out = encoder.runner.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        states.append(out.last_hidden_state[0].double().numpy())

    def score(j: int, t: int) -> int:
        s, e = starts[j], min(starts[j] + capacity, n)
        return min(t - s, e - 1 - t) if s <= t < e else -1

    rows = [states[0][0]]
    for t in range(n):
        best = max(range(len(starts)), key=lambda j: (score(j, t), -j))
        rows.append(states[best][1 + t - starts[best]])
    rows.append(states[-1][-1])
    return np.stack(rows)


# ------------------------------------------------------------------------------------ bounded memory


def test_one_huge_document_is_not_built_as_one_buffer_of_window_rows(small, monkeypatch):
    """The row buffer bounds the window rows held at once even inside one document (a long document at a
    small stride has about as many windows as tokens, each a full row of ids); its vector is unchanged."""
    monkeypatch.setattr(windows_module, "ROW_BUFFER", 8)
    text = _text(120, seed=1)
    engine = longdocs.WindowEngine(small, prompt=None, stride=2)
    held = []
    flush = engine._flush

    def recording(rows, *args):
        held.append(len(rows))
        return flush(rows, *args)

    monkeypatch.setattr(engine, "_flush", recording)
    plan = engine.plan(0, longdocs.tokenize_document(small.tokenization, text), None, False)
    assert len(plan.starts) > 40
    (done,) = engine.run([plan], batch_size=4)
    assert sum(held) == len(plan.starts) and max(held) <= 8, held
    want = _windowed_states(small, text, 2).mean(0)
    np.testing.assert_allclose(engine.vectors(done)[0], want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ naive token chunks

LONG_WORDS = "unbelievably antidisestablishmentarianism electroencephalography pneumonoultramicroscopic " * 4


def _alone_counts(encoder, text: str, size: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens of text[start:end] tokenised alone) of each ``tokens:size`` chunk, from the
    tokenizer's own offsets."""
    encoded = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    out = []
    for a in range(0, len(offsets), size):
        s, e = offsets[a][0], offsets[min(a + size, len(offsets)) - 1][1]
        out.append((s, e, len(encoder.tokenizer(text[s:e], add_special_tokens=False)["input_ids"])))
    return out


def test_a_naive_token_chunk_that_would_be_truncated_is_an_error(small):
    """A chunk of 14 tokens cut inside words can be 15 tokens tokenised alone: naive chunking must not
    truncate it silently (a chunk fits one window by the documented rule), but name it."""
    capacity = small.window_capacity()
    counts = _alone_counts(small, LONG_WORDS, capacity)
    k = next(i for i, (_, _, n) in enumerate(counts) if n > capacity)
    s, e, n = counts[k]
    message = rf"document 1, chunk {k}: its text \[{s}, {e}\] .* is {n + 2} tokens"
    with pytest.raises(OptionError, match=message):
        small.encode_chunks(["a b", LONG_WORDS], chunks=f"tokens:{capacity}", chunking="naive")
    # late chunks of the same plan pool the document's own tokens: nothing to truncate
    late = small.encode_chunks(LONG_WORDS, chunks=f"tokens:{capacity}", chunking="late")
    assert [(int(a), int(b)) for a, b in zip(late.start, late.end, strict=True)] == [(s, e) for s, e, _ in counts]
    # a size that leaves room: every chunk text fits alone, and the vectors are encode's of the chunk texts
    size = capacity - 4
    assert all(n <= capacity for _, _, n in _alone_counts(small, LONG_WORDS, size))
    naive = small.encode_chunks(LONG_WORDS, chunks=f"tokens:{size}", chunking="naive")
    pieces = [LONG_WORDS[a:b] for a, b in zip(naive.start, naive.end, strict=True)]
    assert np.array_equal(naive.vectors, small.encode(pieces))
    assert small.encode_chunks([], chunks=f"tokens:{size}", chunking="naive").vectors.shape == (0, 32)


# ------------------------------------------------------------------------------------ truncate-mode tokens


def test_truncate_mode_tokens_are_the_tokens_a_left_truncating_tokenizer_keeps(tiny_bert_folder, tmp_path):
    """output="tokens" (and token_spans) in truncate mode give the tokens the pooling reads: for a tokenizer
    that truncates on the left, the text's last tokens — as the transformers tokenizer itself cuts them."""
    import json
    import shutil

    from tokenpool import Encoder

    folder = shutil.copytree(tiny_bert_folder, tmp_path / "left")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "truncation_side": "left"}))
    encoder = Encoder(folder, pooling="mean", max_length=16, normalize=False, device="cpu")
    text = " ".join(f"w{i}" for i in range(30))
    encoded = encoder.tokenizer(text, truncation=True, max_length=16, return_offsets_mapping=True)
    ids = torch.tensor([encoded["input_ids"]])
    with torch.no_grad():
        want = encoder.runner.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0].numpy()
    np.testing.assert_allclose(encoder.encode(text, output="tokens"), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(text), want.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    got_ids, spans = encoder.token_spans(text)
    assert got_ids.tolist() == encoded["input_ids"]
    assert spans[1:-1].tolist() == [list(pair) for pair in encoded["offset_mapping"][1:-1]]


# ------------------------------------------------------------------------------------ spans


def test_a_documents_spans_may_be_any_iterable_of_pairs(full):
    """Spans are read once: a generator of pairs (which `check_spans` accepts) gives the chunks of the list."""
    text = "Cats purr. Dogs bark loudly at night! Birds sing."
    pairs = [(11, 37), (0, 10)]
    listed = full.encode_chunks([text], chunks="spans", spans=[pairs])
    lazy = full.encode_chunks([text], chunks="spans", spans=[(pair for pair in pairs)])
    assert lazy.start.tolist() == [11, 0] and lazy.end.tolist() == [37, 10]
    np.testing.assert_array_equal(lazy.vectors, listed.vectors)
    planned = full.plan_chunks([text], chunks="spans", spans=[iter(pairs)])
    assert planned.start.tolist() == [11, 0] and planned.end.tolist() == [37, 10]


def test_encode_chunks_with_its_defaults_runs_on_the_bundled_model():
    """The default chunk spec was tokens:256:32, more than the 254 text tokens the bundled model's window holds,
    so `Encoder().encode_chunks(text)` (and the README's --chunks example) raised with every default."""
    from tokenpool import Encoder

    encoder = Encoder()
    text = " ".join(f"word{i}" for i in range(400))
    chunks = encoder.encode_chunks([text])
    explicit = encoder.encode_chunks([text], chunks="tokens:128:16")
    assert len(chunks.vectors) > 1 and np.array_equal(chunks.vectors, explicit.vectors)
    assert encoder.plan_chunks([text]).start.tolist() == explicit.start.tolist()
