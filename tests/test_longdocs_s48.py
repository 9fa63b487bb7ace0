"""Windows with a prompt, on a left-padded decoder, against an independent reference.

The reference builds every window itself: ``prompt + text`` tokenised whole, as truncate mode and
sentence-transformers read it (the prompt's tokens are the leading ones that end within it, the rest the body);
windows ``prompt + body[s:e] + EOS`` where the model appends one, at the documented starts ``0, S, 2S, …`` and a
last one ending at the document's end. It runs each window alone through transformers, gives each body token the
state of its most central window (brute force: the window maximising ``min(tokens before, tokens after)``, ties
to the earlier one), and pools in float64 with a plain loop: the prompt read from the first window and, where the
folder says ``include_prompt: false``, as many leading tokens left out as the prompt has tokenised alone
(sentence-transformers' count; weighted-mean ranks still count them, as sentence-transformers' do)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_encoder import EOS, _qwen2_weights, _save_sentence_transformer  # noqa: E402

from tokenpool import Encoder  # noqa: E402

MAX_LENGTH = 12
PROMPT = "Query: "
TEXTS = [
    "the quick brown fox jumps over the lazy dog " * 3,
    "hello world",
    "x",
    "",
    "the cat sat on the mat and it was happy",
]


@pytest.fixture(scope="module")
def qwen_left(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen-left-prompt")
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, "mean")
    return folder


@functools.cache
def _loaded(folder):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def _reference(folder, text: str, strategy: str, include_prompt: bool, stride: int | None) -> np.ndarray:
    tokenizer, model = _loaded(folder)
    joint = tokenizer(PROMPT + text, add_special_tokens=False, return_offsets_mapping=True)
    inside = [end <= len(PROMPT) for _, end in joint["offset_mapping"]]
    split = inside.index(False) if False in inside else len(inside)
    prompt, body = joint["input_ids"][:split], joint["input_ids"][split:]
    skip = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    eos = (
        [tokenizer.convert_tokens_to_ids(EOS)] if strategy == "lasttoken" else []
    )  # add_eos: last-token models
    capacity, n, head = MAX_LENGTH - len(eos) - len(prompt), len(body), len(prompt)
    stride = stride or capacity // 2
    starts = [0] if n <= capacity else [*range(0, n - capacity, stride), n - capacity]
    states, best = [None] * (head + n + len(eos)), [-1] * n
    for j, s in enumerate(starts):
        e = min(s + capacity, n)
        with torch.no_grad():
            hidden = model(torch.tensor([prompt + body[s:e] + eos])).last_hidden_state[0].double().numpy()
        if j == 0:
            states[:head] = list(hidden[:head])
        if j == len(starts) - 1 and eos:
            states[-1] = hidden[-1]
        for t in range(s, e):
            if min(t - s, e - 1 - t) > best[t]:
                best[t], states[head + t] = min(t - s, e - 1 - t), hidden[head + t - s]
    rows, ranks = np.array(states), np.arange(1.0, len(states) + 1)
    if not include_prompt:
        rows, ranks = rows[skip:], ranks[skip:]
    if not len(rows):  # nothing pooled (an empty text whose prompt is left out): zeros, as `pool` gives
        return np.zeros(model.config.hidden_size)
    return {"mean": rows.mean(0), "max": rows.max(0), "cls": rows[0], "lasttoken": rows[-1],
            "weightedmean": (rows * ranks[:, None]).sum(0) / ranks.sum()}[strategy]  # fmt: skip


@pytest.mark.parametrize("strategy", ["mean", "max", "cls", "lasttoken", "weightedmean"])
@pytest.mark.parametrize("include_prompt", [True, False])
def test_windows_with_a_prompt_on_a_left_padded_decoder_equal_a_plain_loop(
    qwen_left, strategy, include_prompt
):
    config = qwen_left / "1_Pooling" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "include_prompt": include_prompt}))
    for stride in (None, 1):
        encoder = Encoder(qwen_left, pooling=strategy, max_length=MAX_LENGTH, long_documents="windows",
                          window_stride=stride, normalize=False, device="cpu")  # fmt: skip
        got = encoder.encode(TEXTS, prompt=PROMPT, batch_size=3)
        want = np.array([_reference(qwen_left, text, strategy, include_prompt, stride) for text in TEXTS])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pre_tokenizer", ["byte-level", "metaspace"])
def test_sliced_tokenisation_of_indented_code_equals_whole(monkeypatch, pre_tokenizer):
    """Texts over `SLICE_CHARS` were cut before the last whitespace *character* of the slice's second half, which
    can sit inside a run of spaces (indented code) or be a newline: a byte-level BPE reads a run but its last space
    as one piece, and a SentencePiece metaspace marks the next slice's start unless it starts with a space, so
    the boundary tokenised differently (25 and 20 of these 30 slice sizes). Cuts now fall before a run's last
    whitespace, a space where there is one."""
    import threading
    import types

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tokenpool.model import document_tokens

    corpus = ["def f(x):\n        return x\n    if a:\n            b = 1\n"] * 50
    bpe = Tokenizer(models.BPE())
    if pre_tokenizer == "byte-level":
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(vocab_size=200)
    bpe.train_from_iterator(corpus, trainer)
    tokenization = types.SimpleNamespace(
        tokenizer=PreTrainedTokenizerFast(tokenizer_object=bpe), lowercase=False, lock=threading.Lock()
    )
    text = "".join(corpus) * 4
    whole = document_tokens.tokenize_document(tokenization, text)
    for size in range(30, 60):
        monkeypatch.setattr(document_tokens, "SLICE_CHARS", size)
        sliced = document_tokens.tokenize_document(tokenization, text)
        assert sliced.ids.tolist() == whole.ids.tolist(), size
        assert sliced.starts.tolist() == whole.starts.tolist() and sliced.ends.tolist() == whole.ends.tolist()
