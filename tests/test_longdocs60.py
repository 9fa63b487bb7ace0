"""Long documents, stop 60 hunt: windows, chunks, spans and their documented promises."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokenpool.model import document_tokens  # noqa: E402

# texts without a whitespace character for pages: a one-line JSON dump, a URL list, Japanese prose
NO_WHITESPACE = {
    "json": '{"name":"value","count":12345,"items":["alpha","beta","gamma"],"note":"state-of-the-art"},' * 40,
    "urls": "https://example.com/some/long/path?query=parameter&other=thing#fragment;" * 40,
    "japanese": "東京都は日本の首都であり、世界最大級の都市圏を形成している。" * 60,
}


@pytest.mark.parametrize("kind", sorted(NO_WHITESPACE))
def test_sliced_tokenisation_of_text_without_whitespace_equals_one_call(full, monkeypatch, kind):
    """docs/long-documents.md: a text over `SLICE_CHARS` is tokenised slice by slice, and for WordPiece this
    "gives exactly the tokens of one call". A slice with no whitespace in its second half (a one-line JSON
    dump, Japanese prose) was cut at its very last character, inside a word, which then tokenised as two
    (json: 19 of these 20 slice sizes gave other tokens, urls 19, japanese 15). Such a slice is now cut
    before a punctuation character that ends a word, where WordPiece and byte-level BPE split anyway."""
    assert_sliced_equals_one_call(full, monkeypatch, NO_WHITESPACE[kind], range(60, 80))


def test_sliced_byte_level_tokenisation_of_text_without_whitespace_equals_one_call(monkeypatch):
    """The same for a byte-level BPE with GPT-2's pre-tokenizer: the cut before a punctuation character that
    follows a letter or digit is a pre-token boundary, so the slices' tokens are those of one call."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [NO_WHITESPACE["json"], NO_WHITESPACE["urls"]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenization = types.SimpleNamespace(
        tokenizer=PreTrainedTokenizerFast(tokenizer_object=bpe), lowercase=False, lock=threading.Lock()
    )
    for text in corpus:
        whole = tokenization.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for size in range(60, 80):
            monkeypatch.setattr(document_tokens, "SLICE_CHARS", size)
            sliced = document_tokens.tokenize_document(tokenization, text)
            assert sliced.ids.tolist() == whole["input_ids"], size
            assert list(zip(sliced.starts.tolist(), sliced.ends.tolist(), strict=True)) == whole["offset_mapping"], size


@pytest.mark.parametrize("mode", ["windows", "late-128"])
def test_window_modes_show_the_progress_bar_they_are_asked_for(small, capsys, mode):
    """`evaluate_retrieval(progress=True)` (and `tokenpool evaluate` on a terminal) passes ``progress`` to every
    document mode; ``truncate`` and ``naive-N`` drew a bar over the documents, but ``windows`` and ``late-N`` —
    the slowest, hours on a CPU for long corpora — ignored it and showed nothing. They now show one per
    pooling pass, over the documents, as ``truncate`` does."""
    from tokenpool.evaluation.modes import DOCUMENT_MODES

    texts = ["the cat sat on the mat " * 8, "dogs bark", "a bird sings in the tree " * 5]
    options = {"batch_size": 2, "prompt": None, "prompt_name": None}
    DOCUMENT_MODES["truncate"](small, texts, [None], progress=True, **options)
    reference = capsys.readouterr().err
    assert "3/3" in reference  # (tqdm's count of the documents)
    DOCUMENT_MODES[mode](small, texts, [None], progress=True, **options)
    assert "3/3" in capsys.readouterr().err
    DOCUMENT_MODES[mode](small, texts, [None], progress=False, **options)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("control", ["\x0b", "\x0c", "\x1c", "\x85"])
def test_slice_ending_before_a_dropped_control_character_is_cut_at_punctuation(full, monkeypatch, control):
    """docs/long-documents.md: a control character such as ``\\x0b`` or ``\\x85`` is whitespace to Python but not
    a word separator (tokenizers drop it, joining the word around it). A slice of a text without separating
    whitespace whose end fell just before one kept that end, inside a word ("va|\\x0blue": two words where one
    call reads "value"); it is now cut before the punctuation, as any other slice without whitespace."""
    text = ('{"name":"va' + control + 'lue","count":12345,"items":["alpha","beta"]},') * 40
    assert_sliced_equals_one_call(full, monkeypatch, text, range(60, 100))


def assert_sliced_equals_one_call(full, monkeypatch, text, sizes):
    """For each slice size, `tokenize_document`'s ids and offsets equal one tokenizer call's on ``text``."""
    one = full.tokenization.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for size in sizes:
        monkeypatch.setattr(document_tokens, "SLICE_CHARS", size)
        sliced = document_tokens.tokenize_document(full.tokenization, text)
        assert sliced.ids.tolist() == one["input_ids"], size
        assert np.array_equal(np.stack([sliced.starts, sliced.ends], axis=1), np.array(one["offset_mapping"])), size
