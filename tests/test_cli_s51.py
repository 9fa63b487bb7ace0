"""Stop 51, command-line and evaluation input: integer options read as the user wrote them, STS scores named
as written, empty option values, sparse models and ``--dim``, ``--dtype float64``. Each test failed before its
fix."""

from __future__ import annotations

import re

import pytest
from clitools import assert_one_error_line

# ------------------------------------------------------------------ integer options: ASCII digits only

# (command line before the value, the option as argparse names it); each option takes an integer
INT_OPTIONS = [
    (["embed", "in.txt", "-o", "out.npy", "--batch-size"], "--batch-size"),
    (["embed", "in.txt", "-o", "out.npy", "--max-batch-tokens"], "--max-batch-tokens"),
    (["embed", "in.txt", "-o", "out.npy", "--chunk-size"], "--chunk-size"),
    (["embed", "in.txt", "-o", "out.npy", "--dim"], "--dim"),
    (["embed", "in.txt", "-o", "out.npy", "--max-length"], "--max-length"),
    (["embed", "in.txt", "-o", "out.npy", "--top-k"], "--top-k"),
    (["embed", "in.txt", "-o", "out.npy", "--calibration-size"], "--calibration-size"),
    (["evaluate", "pairs.tsv", "--batch-size"], "--batch-size"),
    (["evaluate", "pairs.tsv", "--window-stride"], "--window-stride"),
    (["export-onnx", "--batch-size"], "--batch-size"),
    (["serve", "--port"], "--port"),
    (["serve", "--batch-size"], "--batch-size"),
    (["serve", "--max-queue"], "--max-queue"),
    (["serve", "--workers"], "--workers"),
]


@pytest.mark.parametrize("value", ["1_0", "\u0661\u0660", "\uff11\uff10", " 10", "10\n", "0x10", "1e1"])
@pytest.mark.parametrize(("argv", "flag"), INT_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_integer_options_take_ascii_digits_only(capsys, argv, flag, value):
    """``--batch-size 1_0`` was 10 and ``--batch-size ١٠`` (Arabic-Indic digits) too: Python's int() reads
    underscores, other scripts' digits and surrounding whitespace. Parsing only (no command runs)."""
    from tokenpool.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, value])
    assert_one_error_line(exit_.value.code, capsys.readouterr().err, f"argument {flag}", repr(value))


@pytest.mark.parametrize(("argv", "flag"), INT_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_integer_options_still_take_plain_and_signed_digits(argv, flag):
    from tokenpool.cli import build_parser

    args = build_parser().parse_args([*argv, "+0012"])
    assert getattr(args, flag[2:].replace("-", "_") if flag != "--dim" else "truncate_dim") == 12


@pytest.mark.parametrize("text", ["0", "7", "+7", "-7", "007", "9" * 5000, "1_0", "\u0661", "", "+", " 7", "7 ",
                                  "1.0", "\u00b2", "-0"])
def test_parse_int_is_an_optional_sign_and_ascii_digits(text):
    """The one reader of integers as text (was a private helper of the BEIR reader): the reference is the
    grammar itself, ``[+-]?[0-9]+``, with the value read digit by digit."""
    from tokenpool.errors import parse_int

    expected = None
    if re.fullmatch(r"[+-]?[0-9]+", text, flags=re.ASCII):
        digits = text.lstrip("+-")
        magnitude = 0
        for digit in digits:
            magnitude = magnitude * 10 + "0123456789".index(digit)
        expected = -magnitude if text.startswith("-") else magnitude
    assert parse_int(text) == expected


@pytest.mark.parametrize("depths", ["1_0", "\u0661\u0660", "40,1_00"])
def test_rescore_depths_take_ascii_digits_only(run, tmp_path, depths):
    """``evaluate FOLDER --precision int8 --rescore 1_0`` rescored the top 10; refused before the model loads."""
    for name, text in (("corpus.jsonl", '{"_id": "d1", "text": "cats"}\n{"_id": "d2", "text": "dogs"}\n'),
                       ("queries.jsonl", '{"_id": "q1", "text": "cats"}\n'), ("qrels.tsv", "q1\td1\t1\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    code, _, err = run("evaluate", tmp_path, "--model", tmp_path / "no-model", "--precision", "int8",
                       "--rescore", depths)  # fmt: skip
    assert_one_error_line(code, err, "--rescore takes comma-separated positive integers", repr(depths))


# ------------------------------------------------------------------ STS gold scores named as written


def _pairs_file(tmp_path, *scores: str):
    path = tmp_path / "pairs.csv"
    path.write_text("score,s1,s2\n" + "".join(f"{s},a{i} b,c{i} d\n" for i, s in enumerate(scores)), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("score", ["1e-400", "-1e-400", "0.1e-323", "1e-99999999999999999999"])
def test_a_gold_score_that_underflows_to_zero_is_refused_naming_it(tmp_path, score):
    """``1e-400`` read as 0.0: with one other pair scored 0 the refusal said "need at least 2 pairs with
    differing gold scores, got 2" (they differ as written), and beside a third pair it tied with 0 and the
    Spearman ranked it wrongly without a word."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    for scores in ((score, "0"), (score, "0", "2")):
        with pytest.raises(CorpusError, match=rf"line 2: score '{re.escape(score)}' .*would read as 0"):
            read_pairs(_pairs_file(tmp_path, *scores))


def test_a_gold_score_beyond_float64_is_named_too_large_not_not_a_number(tmp_path):
    """``1e400`` is a number: the refusal said "score '1e400' is not a number"."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    with pytest.raises(CorpusError, match=r"line 3: score '-1e400' is too large for a float64") as refused:
        read_pairs(_pairs_file(tmp_path, "1", "-1e400"))
    assert "not a number" not in str(refused.value)


@pytest.mark.parametrize("score", ["0", "-0.0", "0e-400", "0.000e5", "1e-320", "2.5e-308", "0e-99999999999999999999"])
def test_zero_and_subnormal_gold_scores_are_still_read(tmp_path, score):
    from tokenpool.evaluation.sts import read_pairs

    pairs = read_pairs(_pairs_file(tmp_path, score, "3"))
    assert pairs.scores[0] == float(score)  # (Python's own reading: zeros stay 0, subnormals are not 0)


@pytest.mark.parametrize(("scores", "needle"), [(("1",), "got 1 pair"), (("2", "2.0", "+2"), "all 3 pairs score 2")])
def test_too_few_distinct_gold_scores_says_what_it_found(tmp_path, scores, needle):
    """The refusal said "got 3" for three pairs of one score: a count that read as a value."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import check_scorable, read_pairs

    path = _pairs_file(tmp_path, *scores)
    with pytest.raises(CorpusError, match="need at least 2 pairs with differing gold scores") as refused:
        check_scorable(read_pairs(path), path)
    assert needle in str(refused.value)


# ------------------------------------------------------------------ --bm25 ''


def _beir_folder(folder):
    for name, text in (("corpus.jsonl", '{"_id": "d1", "text": "cats"}\n{"_id": "d2", "text": "dogs"}\n'),
                       ("queries.jsonl", '{"_id": "q1", "text": "cats"}\n'), ("qrels.tsv", "q1\td1\t1\n")):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("spec", ["", " ", ",", " , "])
def test_empty_bm25_settings_are_refused(run, tmp_path, spec):
    """``--bm25 ''`` (say ``--bm25 "$SETTINGS"`` with SETTINGS unset) ran BM25 with the defaults without a word:
    the help and docs/evaluation.md give the option as name=value pairs, and leaving it out means the defaults.
    Python's ``bm25=""`` is the same string and is refused the same way."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.lexical import BM25Settings

    code, _, err = run("evaluate", _beir_folder(tmp_path), "--modes", "bm25", "--bm25", spec)
    assert_one_error_line(code, err, "BM25 settings are name=value pairs", repr(spec))
    with pytest.raises(OptionError, match="BM25 settings are name=value pairs"):
        BM25Settings.parse(spec)


def test_bm25_settings_still_read_pairs_and_the_defaults():
    from tokenpool.evaluation.lexical import BM25Settings

    assert BM25Settings.parse(None) == BM25Settings.parse({}) == BM25Settings()
    assert BM25Settings.parse("k1=1.2,stemmer=english") == BM25Settings(k1=1.2, stemmer="english")  # (a trailing
    # comma is refused since stop 64, as "mean+" and "torch," are: tests/test_evaluation64.py)


# ------------------------------------------------------------------ --dim on a sparse (SPLADE) model


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade"), mlm=True)


def test_an_encoder_truncate_dim_on_a_sparse_model_is_refused(splade_folder):
    """``Encoder(splade, truncate_dim=8)`` kept the first 8 vocabulary ids of every row (ids 0..7: [PAD],
    [unused0], ...), a meaningless cut, where ``encode(truncate_dim=8)`` was already refused."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    with pytest.raises(OptionError, match=r"truncate_dim=8 does not apply to a sparse \(SPLADE\) model"):
        Encoder(splade_folder, device="cpu", truncate_dim=8)  # (since stop 52 at construction, not at each encode)
    whole = Encoder(splade_folder, device="cpu").encode(["cats purr"])
    assert whole.shape == (1, 30522)  # (the model's rows: vocabulary-wide)


def test_a_sparse_folders_own_truncate_dim_is_refused_naming_the_folder(tmp_path, splade_folder):
    """sentence-transformers' SparseEncoder has no truncate_dim; one written into a SPLADE folder's config cut
    every row to its first vocabulary ids. The refusal names the folder's setting, not an option never given."""
    import shutil

    from tinymodels import edit_json

    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    folder = shutil.copytree(splade_folder, tmp_path / "splade")
    edit_json(folder / "config_sentence_transformers.json", truncate_dim=16)
    with pytest.raises(OptionError, match=r"the folder's truncate_dim 16 \(config_sentence_transformers.json\)"):
        Encoder(folder, device="cpu").encode(["cats purr"])


def test_embed_dim_on_a_sparse_model_is_refused(run, tmp_path, splade_folder):
    """``embed --dim 100`` on a SPLADE folder wrote "2 sparse rows over a 100-token vocabulary"."""
    corpus = tmp_path / "in.txt"
    corpus.write_text("cats purr\ndogs bark\n", encoding="utf-8")
    for out, extra in ((tmp_path / "s.npz", []), (tmp_path / "d.npy", ["--dense"])):
        code, _, err = run("embed", corpus, "-o", out, "--model", splade_folder, "--dim", "100", *extra)
        assert_one_error_line(code, err, "--dim 100 does not apply to a sparse (SPLADE) model")
        assert not out.exists()


def test_serve_dim_on_a_sparse_model_is_refused_before_serving(run, monkeypatch, splade_folder):
    """``serve --model SPLADE --dim 100`` started serving (its /info and rows disagreeing on the width)."""
    pytest.importorskip("uvicorn")
    from tokenpool.serve import server

    served = []
    monkeypatch.setattr(server, "serve_forever", lambda *a, **k: served.append(a) or 0)
    code, _, err = run("serve", "--model", splade_folder, "--dim", "100", "--port", "0")
    assert_one_error_line(code, err, "--dim 100 does not apply to a sparse (SPLADE) model")
    assert not served
    code, _, err = run("serve", "--model", splade_folder, "--port", "0")
    assert code == 0 and len(served) == 1, err


# ------------------------------------------------------------------ number options: a plain decimal only

NUMBER_OPTIONS = [
    (["evaluate", "pairs.tsv", "--rrf-k"], "--rrf-k", "rrf_k"),
    (["evaluate", "pairs.tsv", "--hybrid-weight"], "--hybrid-weight", "hybrid_weight"),
    (["embed", "in.txt", "-o", "out.npy", "--threshold"], "--threshold", "threshold"),
    (["embed", "in.txt", "-o", "out.npy", "--checkpoint-seconds"], "--checkpoint-seconds", "checkpoint_seconds"),
    (["serve", "--max-wait-ms"], "--max-wait-ms", "max_wait_ms"),
    (["export-onnx", "--min-cosine"], "--min-cosine", "min_cosine"),
]


@pytest.mark.parametrize("value", ["0_5", "\u0660.5", "\uff10.5", " 0.5", "0.5\n", "0x1p-1"])
@pytest.mark.parametrize(("argv", "flag", "dest"), NUMBER_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_number_options_take_a_plain_decimal_only(capsys, argv, flag, dest, value):
    """``--rrf-k 6_0`` was 60.0 and ``--hybrid-weight ٠.5`` 0.5: Python's float() reads underscores, other
    scripts' digits and surrounding whitespace (the STS reader already refused them in a gold score)."""
    from tokenpool.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, value])
    assert_one_error_line(exit_.value.code, capsys.readouterr().err, f"argument {flag}", repr(value))


@pytest.mark.parametrize(("argv", "flag", "dest"), NUMBER_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
@pytest.mark.parametrize("value", ["0.5", "+.5", "5e-1", "0.50E0"])
def test_number_options_still_take_decimals(argv, flag, dest, value):
    from tokenpool.cli import build_parser

    assert getattr(build_parser().parse_args([*argv, value]), dest) == 0.5


@pytest.mark.parametrize("spec", ["k1=1_2", "b=\u0660.5", "k1=0x1"])
def test_bm25_numbers_are_plain_decimals(spec):
    """``--bm25 k1=1_2`` ran BM25 with k1 = 12."""
    from tokenpool.errors import OptionError
    from tokenpool.evaluation.lexical import BM25Settings

    name, value = spec.split("=")
    with pytest.raises(OptionError, match=f"BM25 {name} must be a number, got {value!r}"):
        BM25Settings.parse(spec)
    assert BM25Settings.parse("k1=1.25, b=.5") == BM25Settings(k1=1.25, b=0.5)


@pytest.mark.parametrize("text", ["1", "-2.5", ".5", "5.", "1e3", "+1E-3", "1e400", "1e-400", "1_0", "\u0661",
                                  " 1", "1 ", "", ".", "e3", "1e", "0x1", "inf", "-Infinity", "nan", "\u00bd"])
@pytest.mark.parametrize("special", [False, True])
def test_parse_number_is_a_plain_decimal(text, special):
    """The one reader of numbers as text (was the STS reader's private grammar): the reference is Decimal's
    reading of the same ASCII text, kept only when it has a digit and no whitespace, underscore or hex."""
    from decimal import Decimal, InvalidOperation

    from tokenpool.errors import parse_number

    expected = None
    word = text.lstrip("+-").lower() in ("inf", "infinity", "nan")
    if text.isascii() and text.strip() == text and "_" not in text and "x" not in text.lower():
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = None
        if value is not None and (not word or special):
            expected = float(value)
    got = parse_number(text, special=special)
    assert (got is None and expected is None) or (got == expected or (got != got and expected != expected))


# ------------------------------------------------------------------ --plot ''


def test_an_empty_plot_file_is_refused(run, tmp_path):
    """``evaluate --plot ''`` (say ``--plot "$CHART"`` with CHART unset) drew no chart and exited 0, as if none
    had been asked for; it is refused before the model loads (or BM25 runs), naming the option."""
    pytest.importorskip("matplotlib")
    code, _, err = run("evaluate", _pairs_file(tmp_path, "1", "3", "2"), "--model", tmp_path / "no-model", "--plot", "")
    assert_one_error_line(code, err, "--plot ''", "name an image file")
    code, _, err = run("evaluate", _beir_folder(tmp_path), "--modes", "bm25", "--plot", "")
    assert_one_error_line(code, err, "--plot ''", "name an image file")
