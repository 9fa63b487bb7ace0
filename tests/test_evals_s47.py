"""Stop 47 hunt in the evaluation area (`tokenpool evaluate`, `tokenpool.evaluation`): each test failed before
its fix."""

from __future__ import annotations

import numpy as np
import pytest
from clitools import assert_one_error_line

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import read_beir
from tokenpool.evaluation.precision import evaluate_precisions
from tokenpool.evaluation.sts import Pairs, evaluate_pairs, read_pairs


@pytest.fixture(scope="module")
def tiny(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(tiny_bert_folder, pooling="mean", max_length=32, device="cpu")


PAIRS = Pairs(
    ["a cat sits", "dogs run fast", "the sky is blue", "I like tea", "rain falls", "cars are loud"],
    ["a cat sat", "a dog runs", "the sea is green", "tea is nice", "snow falls", "bikes are quiet"],
    np.array([4.5, 3.0, 1.0, 2.5, 2.0, 0.5]),
)


def test_precisions_of_the_encoders_own_pooling_calibrate_it(tiny):
    """``labels=[None]`` (the encoder's own pooling, as `evaluate_pairs` takes it) with int8 raised
    AttributeError: 'NoneType' object has no attribute 'split' while naming the calibration's pooling."""
    floats, table, calibrations = evaluate_precisions(tiny, PAIRS, [None], ["int8", "binary"])
    assert floats[None] == pytest.approx(evaluate_pairs(tiny, PAIRS, [None])[None])
    assert [row.precision for row in table[None]] == ["float32", "int8", "binary"]
    assert calibrations[None].pooling == tuple(tiny.strategies)
    assert calibrations[None].normalize == bool(tiny.normalize)


@pytest.mark.parametrize(
    "file, line, field",
    [
        ("corpus.jsonl", '{"_id": "d1", "text": "cats purr", "text": "dogs bark"}', "text"),
        ("corpus.jsonl", '{"_id": "d1", "title": "Cats", "text": "purr", "title": "Dogs"}', "title"),
        ("corpus.jsonl", '{"_id": "d9", "text": "cats purr", "_id": "d1"}', "_id"),
        ("queries.jsonl", '{"_id": "q1", "text": "cats", "text": "dogs"}', "text"),
    ],
)
def test_a_field_given_twice_in_a_beir_record_is_refused(tmp_path, file, line, field):
    """JSON keeps the last of two equal keys: a corpus line naming ``text`` (or ``_id``, ``title``) twice was read
    as its last value without a word, where `tokenpool embed`'s reader refuses it (which value is meant?)."""
    records = {"corpus.jsonl": '{"_id": "d1", "text": "cats purr"}\n{"_id": "d2", "text": "dogs bark"}\n',
               "queries.jsonl": '{"_id": "q1", "text": "cats"}\n'}  # fmt: skip
    records[file] = records[file].replace(records[file].split("\n")[0], line, 1)
    for name, text in records.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"{file}, line 1: field '{field}' is given 2 times"):
        read_beir(tmp_path)


@pytest.mark.parametrize("depths", ["", " , ", ","])
def test_an_empty_rescore_list_is_refused(run, tmp_path, tiny_bert_folder, depths):
    """``--rescore ''`` (say an unset shell variable) printed the table without a rescoring row, exit 0, as if
    no rescoring had been asked for; it is refused like ``--rescore 0``, before the model loads."""
    for name, text in (("corpus.jsonl", '{"_id": "d1", "text": "cats"}\n{"_id": "d2", "text": "dogs"}\n'),
                       ("queries.jsonl", '{"_id": "q1", "text": "cats"}\n'), ("qrels.tsv", "q1\td1\t1\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, _, err = run("evaluate", tmp_path, "--model", tiny_bert_folder, "--precision", "int8", "--rescore", depths)
    assert_one_error_line(code, err, "--rescore takes positive integers", repr(depths))


@pytest.mark.parametrize("score", [True, False])
def test_a_header_that_puts_no_score_in_the_stsb_score_column_is_refused(tmp_path, score):
    """GLUE's STS-B files (index, genre, filename, year, old_index, source1, source2, sentence1, sentence2,
    score; the test split without score) have 7+ tab-separated fields and a header: read as the STS-B layout,
    the scores were the ``old_index`` ids and both sentences the ``source`` columns ('none'), so the run ended
    in "every pair the same similarity", or scored the wrong columns without a word."""
    names = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    rows = [["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A man plays.", "A man is playing.",
             "4.2"], ["1", "main-news", "headlines", "2013", "0007", "none", "none", "Stocks fell.", "It rained.", "0.4"]]
    lines = [names + (["score"] if score else []), *(row if score else row[:-1] for row in rows)]
    path = tmp_path / "train.tsv"
    path.write_text("".join("\t".join(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(CorpusError, match="line 1: .*column 5 'old_index'"):
        read_pairs(str(path))


def test_sts_table_of_the_encoders_own_pooling(tiny):
    """`evaluate_pairs(encoder, pairs)` names the encoder's own pooling None; `format_table` of that raised
    TypeError (len(None)); the row now reads "(its own)" with its score."""
    from tokenpool.evaluation.sts import format_table

    scores = evaluate_pairs(tiny, PAIRS, [None, "max"])
    lines = [line.split() for line in format_table(scores, tiny.strategies).splitlines()]
    assert ["(its", "own)", "*", f"{scores[None]:.2f}"] in lines and ["max", f"{scores['max']:.2f}"] in lines
    assert lines[-1] == ["*", "the", "model's", "configured", "pooling"]


def test_bm25_settings_without_a_lexical_mode_are_refused(tmp_path):
    """`evaluate_retrieval(..., bm25="k1=0.9")` with only dense modes ignored the settings without a word (the CLI
    refuses --bm25 there); refused before any model runs, naming the modes."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    for name, rows in {"corpus": ['{"_id": "d1", "text": "cats purr"}'], "queries": ['{"_id": "q1", "text": "cats"}']}.items():
        (tmp_path / f"{name}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(OptionError, match=r"bm25='k1=0.9'.*\['truncate'\] run neither"):
        evaluate_retrieval(tmp_path, None, modes=["truncate"], bm25="k1=0.9")
    result = evaluate_retrieval(tmp_path, None, modes=["bm25"], bm25="k1=0.9")  # read where a mode reads it
    assert result.rows[0].settings["k1"] == 0.9


@pytest.mark.parametrize("file", ["corpus.jsonl", "queries.jsonl"])
def test_a_lone_surrogate_in_a_beir_file_names_its_line(tmp_path, file):
    """A JSON \\ud800 escape in corpus.jsonl / queries.jsonl was read (bm25 ran on it; a model failed after
    loading, naming texts[N]); refused while reading, naming the file, line and field, as embed's readers do."""
    rows = {"corpus.jsonl": ['{"_id": "d1", "text": "cats purr"}', '{"_id": "d2", "text": "dogs bark"}'],
            "queries.jsonl": ['{"_id": "q1", "text": "cats"}', '{"_id": "q2", "text": "dogs"}']}  # fmt: skip
    rows[file][1] = rows[file][1].replace('bark"' if file == "corpus.jsonl" else 'dogs"', 'x\\ud800y"')
    for name, lines in rows.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"{file}, line 2: field 'text' holds a lone surrogate \(U\+D800"):
        read_beir(tmp_path)
