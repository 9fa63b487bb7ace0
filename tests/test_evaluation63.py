"""Stop 63's evaluation hunt: each test checks documented behaviour against a reference written here (the
documented text, a float64 loop or an independent library), not against the code under test."""

from __future__ import annotations

import re

import pytest
from clitools import tiny_beir

from tokenpool.errors import CorpusError
from tokenpool.evaluation.beir import read_beir


@pytest.mark.parametrize("name", ["corpus.jsonl", "queries.jsonl", "qrels.tsv"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_beir_file_is_named_utf16_as_the_corpus_readers_name_it(tmp_path, name, encoding):
    """A BEIR file saved as UTF-16 (PowerShell 5's `> corpus.jsonl`) was refused as "line 1: invalid UTF-8"
    with no hint, where `embed` and the STS pairs reader say it looks like UTF-16 and to save it as UTF-8
    (io/readers.decoded_lines, the one rule). A bad byte later in the file keeps the plain message."""
    folder = tiny_beir(tmp_path / "f")
    path = folder / name
    bom = b"\xff\xfe" if encoding.endswith("le") else b"\xfe\xff"
    text = path.read_text()
    path.write_bytes(bom + text.encode(encoding))
    with pytest.raises(CorpusError, match=rf"^{path}, line 1: invalid UTF-8 \(byte 0x{bom[0]:02x} at column 1\); "
                                          r"it looks like UTF-16 .*: save it as UTF-8$"):  # fmt: skip
        read_beir(folder)
    path.write_bytes(text.encode() + b"\xff\n")
    lines = text.count("\n") + 1
    with pytest.raises(CorpusError, match=rf"^{path}, line {lines}: invalid UTF-8 \(byte 0xff at column 1\)$"):
        read_beir(folder)


def test_labels_name_the_bm25_and_fusion_settings_as_given_not_rounded_to_six_digits(tmp_path, tiny):
    """A row's label said ``rrf k=1.23457e+06`` for ``--rrf-k 1234567`` and ``k1=1.23457`` for k1=1.2345678
    (``%g`` keeps 6 digits): two runs with different settings printed the same label. Each value now reads back
    as the number given (the JSON settings always did)."""
    from tokenpool import Encoder
    from tokenpool.evaluation.lexical import BM25Settings
    from tokenpool.evaluation.retrieval import evaluate_retrieval

    assert BM25Settings.parse("k1=1.2345678,b=0.7500001").label().startswith("k1=1.2345678 b=0.7500001 lucene")
    assert BM25Settings().label() == "k1=1.5 b=0.75 lucene stop=en stem=none"  # (the documented label)
    result = evaluate_retrieval(tiny_beir(tmp_path / "f"), Encoder(tiny, device="cpu"), modes="hybrid:truncate",
                                rrf_k=1234567, hybrid_weight=0.1234567)  # fmt: skip
    fused = [row.pooling for row in result.rows if row.mode == "hybrid:truncate"]
    assert fused == ["mean, rrf k=1234567", "mean, bm25 weight 0.1234567"]
    default = evaluate_retrieval(result.data, Encoder(tiny, device="cpu"), modes="hybrid:truncate")
    assert [row.pooling for row in default.rows][-2:] == ["mean, rrf k=60", "mean, bm25 weight 0.5"]


@pytest.mark.parametrize(("file", "record", "shown"), [
    ("corpus.jsonl", '{"_id": "d1", "text": null}', "'text' must be a string, got null"),
    ("corpus.jsonl", '{"_id": null, "text": "apple"}', "_id must be a string, got null"),
    ("queries.jsonl", '{"_id": "q1", "text": null}', "'text' must be a string, got null"),
    ("corpus.jsonl", '{"_id": "d1"}', "'text' must be a string, got missing"),
    ("corpus.jsonl", '{"_id": 1.5, "text": "apple"}', "_id must be a string, got 1.5 (float)"),
])  # fmt: skip
def test_a_null_beir_field_is_named_null_not_missing(tmp_path, file, record, shown):
    """``{"_id": "d1", "text": null}`` was refused as "'text' must be a string, got missing" though the line
    has the field: the user looked for a missing field. A JSON null is now named null, as `embed` names it."""
    folder = tiny_beir(tmp_path / "f")
    (folder / file).write_text(record + "\n" + (folder / file).read_text().split("\n", 1)[1])
    with pytest.raises(CorpusError, match=f"^{re.escape(str(folder / file))}, line 1: {re.escape(shown)}$"):
        read_beir(folder)


@pytest.mark.parametrize(("name", "text"), [
    ("de.csv", "satz1,satz2,ähnlichkeit\nEin Hund läuft.,Ein Hund rennt.,4.5\nEin Mann isst.,Eine Frau singt.,0.5\n"),
    ("zh.tsv", "句子1\t句子2\t相似度\n狗在跑。\t狗在奔跑。\t4.5\n男人在吃饭。\t女人在唱歌。\t0.5\n"),
    ("fr.csv", "similarité,phrase1,phrase2\n4.5,Ein Hund läuft.,Ein Hund rennt.\n0.5,Ein Mann isst.,Eine Frau singt.\n"),
    # (review: letters with combining marks, Unicode category M, were refused: Devanagari and Thai vowel signs, a
    # French header saved decomposed, NFD, as macOS may)
    ("hi.csv", "वाक्य1,वाक्य2,समानता\nएक कुत्ता दौड़ता है।,एक कुत्ता भागता है।,4.5\nएक आदमी खाता है।,एक औरत गाती है।,0.5\n"),
    ("th.tsv", "ประโยค1\tประโยค2\tความคล้ายคลึง\nสุนัขวิ่ง\tสุนัขวิ่งเร็ว\t4.5\nผู้ชายกิน\tผู้หญิงร้องเพลง\t0.5\n"),
    ("fr-nfd.csv", "similarite\u0301,phrase1,phrase2\n4.5,Un chien court.,Un chien file.\n0.5,Un homme mange.,Une femme chante.\n"),
])  # fmt: skip
def test_a_pairs_header_in_any_script_is_a_header(tmp_path, name, text):
    """cli.md: a 3-column file with a header; the score column is whichever of the first and last holds a number.
    A header named in German, Chinese or French (``ähnlichkeit``, ``相似度``, ``similarité``) was refused as "a
    pair where the header should be" (column names were ASCII only). Malformed first-line scores stay refused."""
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    pairs = read_pairs(str(path))
    sep = "\t" if name.endswith(".tsv") else ","
    rows = [line.split(sep) for line in text.splitlines()[1:]]
    score = 0 if name.startswith("fr") else 2
    s1, s2 = (1, 2) if score == 0 else (0, 1)
    assert (pairs.first, pairs.second) == ([r[s1] for r in rows], [r[s2] for r in rows])
    assert pairs.scores.tolist() == [float(r[score]) for r in rows]
    for bad in ("½", "٣", "n/a", "4_5"):  # a score where the header should be: refused, not dropped as a header
        (tmp_path / "bad.csv").write_text(f"a,b,{bad}\nc,d,2\n", encoding="utf-8")
        with pytest.raises(CorpusError, match=f"line 1: a pair \\(score '{bad}'\\) where the header should be"):
            read_pairs(str(tmp_path / "bad.csv"))
