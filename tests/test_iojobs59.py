"""Stop 59, corpus jobs, readers/writers and evaluation: a SPLADE model's precision rows give the bytes its
sparse rows are stored in, ..."""

from __future__ import annotations

import numpy as np
import pytest

# ------------------------------------------------------------------------------ sparse models' bytes per vector


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory):
    """A tiny SparseEncoder folder that keeps 6 non-zeros per row (its saved max_active_dims)."""
    pytest.importorskip("sentence_transformers")
    from tinymodels import bert_folder, edit_json

    folder = bert_folder(tmp_path_factory.mktemp("splade59") / "splade", mlm=True)
    edit_json(folder / "config_sentence_transformers.json", max_active_dims=6)
    return folder


def _npz_bytes_per_row(run, folder, texts, tmp_path) -> int:
    """The mean bytes of a row in the .npz `tokenpool embed` writes for ``texts`` (its indices, values and row
    pointers; the leading 0 pointer left out), rounded: the independent reference."""
    source, out = tmp_path / "in.txt", tmp_path / "out.npz"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert run("embed", source, "-o", out, "--model", folder)[0] == 0
    with np.load(out) as data:
        stored = data["indices"].nbytes + data["data"].nbytes + data["indptr"][1:].nbytes
        assert len(data["indptr"]) - 1 == len(texts)
    return round(stored / len(texts))


def test_sts_precision_row_of_a_sparse_model_gives_its_stored_csr_bytes(splade_folder, run, tmp_path):
    """The STS precision table of a SPLADE model said 4 × vocabulary bytes per vector (122,088 for BERT's
    30,522 tokens) where its rows are stored as CSR: 6 non-zeros here, 56 bytes a row in the .npz that
    `tokenpool embed` writes. The row gives those bytes now (the mean over the pairs' distinct sentences)."""
    from tokenpool import Encoder
    from tokenpool.evaluation.precision import evaluate_precisions
    from tokenpool.evaluation.sts import Pairs

    first, second = ["a cat sleeps", "a dog barks", "red cars race"], ["the cat naps", "blue sky", "green car"]
    pairs = Pairs(first, second, np.array([4.0, 1.0, 3.0]))
    want = _npz_bytes_per_row(run, splade_folder, first + second, tmp_path)
    _, table, _ = evaluate_precisions(Encoder(splade_folder, device="cpu"), pairs, [None], ["float32"])
    assert [row.bytes for row in table[None]] == [want] and want < 100


def test_retrieval_precision_row_of_a_sparse_model_gives_its_stored_csr_bytes(splade_folder, run, tmp_path):
    """Likewise the retrieval precision row of a SPLADE model (4 × vocabulary): the mean .npz bytes of the
    documents' rows now, as `tokenpool embed` stores the corpus."""
    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    docs = ["doc about cats and dogs", "red car blue", "green fish swim", "tall tree old", "owl"]
    ids = [f"d{i}" for i in range(len(docs))]
    data = RetrievalSet(ids, docs, ["q0", "q1"], ["cat", "car"], {"q0": {"d0": 1}, "q1": {"d1": 1}})
    want = _npz_bytes_per_row(run, splade_folder, docs, tmp_path)
    (row,), _ = evaluate_retrieval_precisions(data, Encoder(splade_folder, device="cpu"), ["float32"])
    assert row.bytes == want and row.as_dict()["bytes_per_vector"] == want and want < 100


def _ndcg_at_10(ranked: list[str], judged: dict[str, int]) -> float:
    """trec_eval's nDCG@10 (linear gains) of one ranked list, a plain loop."""
    dcg = sum(judged.get(doc, 0) / np.log2(rank + 2) for rank, doc in enumerate(ranked[:10]))
    ideal = sum(grade / np.log2(rank + 2) for rank, grade in enumerate(sorted(judged.values(), reverse=True)[:10]))
    return dcg / ideal if ideal > 0 else 0.0


def test_retrieval_precision_row_of_a_sparse_model_ranks_by_dot_product(splade_folder):
    """docs/precision.md now says a SPLADE model's float32 retrieval row ranks its CSR rows by dot product
    (not cosine): its nDCG@10 is that of a float64 dot-product loop over `encode_sparse`'s rows (documents
    sharing no term left out, equal scores by id in descending byte order, as trec_eval), not the cosine's."""
    from tokenpool import Encoder
    from tokenpool.evaluation.beir import RetrievalSet
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    encoder = Encoder(splade_folder, device="cpu")
    words = ["cat", "dog", "fish", "bird", "cow", "red", "blue", "green", "tall", "old", "sun", "rain"]
    docs = [" ".join(words[(i * 5 + j * 7) % 12] for j in range(1 + i % 4)) for i in range(24)]
    ids = [f"d{i}" for i in range(len(docs))]
    queries = ["cat red", "dog blue green", "fish", "rain sun old", "cow tall bird"]
    qrels = {f"q{q}": {ids[(3 * q + k) % 24]: 1 + k % 2 for k in range(3)} for q in range(len(queries))}
    data = RetrievalSet(ids, docs, list(qrels), queries, qrels)
    d_rows = encoder.encode_sparse(docs).toarray().astype(np.float64)
    q_rows = encoder.encode_sparse(queries).toarray().astype(np.float64)

    def ndcg(cosine: bool) -> float:
        scores = q_rows @ d_rows.T
        if cosine:
            scores = scores / np.outer(np.linalg.norm(q_rows, axis=1), np.linalg.norm(d_rows, axis=1))
        by_id = sorted(range(len(ids)), key=lambda i: ids[i].encode())  # equal scores: the last of these first
        figures = []
        for q, query in enumerate(qrels):
            found = [i for i in range(len(docs)) if scores[q, i] > 0]
            ranked = sorted(found, key=lambda i: (-np.float32(scores[q, i]), -by_id.index(i)))
            figures.append(_ndcg_at_10([ids[i] for i in ranked], qrels[query]))
        return float(np.mean(figures))

    (row,), _ = evaluate_retrieval_precisions(data, encoder, ["float32"])
    assert row.scores.ndcg_at_10 == pytest.approx(ndcg(cosine=False), abs=1e-12)
    assert row.scores.ndcg_at_10 != pytest.approx(ndcg(cosine=True), abs=1e-6)


def test_cli_retrieval_precision_float32_of_a_sparse_model_is_the_python_row(splade_folder, run, tmp_path):
    """docs/precision.md says a SPLADE model takes --precision float32 over a BEIR folder, but the CLI refused
    it ("--precision float32 is for dense models"). Its row now is `evaluate_retrieval_precisions`' row, with
    the bytes of the .npz `tokenpool embed` writes; int8 is still refused (exit 2, one line)."""
    import json

    from test_retrieval import write_beir

    from tokenpool import Encoder
    from tokenpool.evaluation.beir import read_beir
    from tokenpool.evaluation.precision import evaluate_retrieval_precisions

    docs = ["doc about cats and dogs", "red car blue", "green fish swim", "tall tree old", "owl"]
    corpus = [{"_id": f"d{i}", "text": text} for i, text in enumerate(docs)]
    queries = [{"_id": "q0", "text": "cat"}, {"_id": "q1", "text": "car"}]
    folder = write_beir(tmp_path / "beir", corpus, queries, [("q0", "d0", 1), ("q1", "d1", 1)])
    want = _npz_bytes_per_row(run, splade_folder, docs, tmp_path)
    code, out, err = run("evaluate", folder, "--precision", "float32", "--model", splade_folder, "--json")
    assert code == 0, err
    (row,) = json.loads(out)["precision"].values()
    (api,), _ = evaluate_retrieval_precisions(read_beir(str(folder)), Encoder(splade_folder), ["float32"])
    assert row == api.as_dict() and row["bytes_per_vector"] == want
    code, _, err = run("evaluate", folder, "--precision", "int8", "--model", splade_folder)
    assert code == 2 and "is for dense models" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ STS pairs files


def test_a_pairs_csv_with_a_quoted_line_break_reads_as_csv_reads_it(tmp_path):
    """docs/cli.md promises quoted CSV for 3-column pairs files; a quoted field holding a line break (RFC 4180)
    was refused as "line 2: malformed CSV (unexpected end of data)". It reads as Python's csv module reads the
    file now (the reference), and later errors name the line where their row starts."""
    import csv

    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.csv"
    path.write_bytes(b's1,s2,score\n"first line\nsecond line",b,1\n\n"c, d",e,2.5\r\n"x","y\r\nz",3\n')
    with open(path, newline="", encoding="utf-8") as fh:
        want = [row for row in csv.reader(fh) if row][1:]
    pairs = read_pairs(str(path))
    assert [[a, b, f"{s:g}"] for a, b, s in zip(pairs.first, pairs.second, pairs.scores, strict=True)] == want
    path.write_bytes(b's1,s2,score\n"a\nb",c,1\n"d",e\n')
    with pytest.raises(CorpusError, match=r"pairs.csv, line 4: 2 field\(s\), expected 3"):
        read_pairs(str(path))


@pytest.mark.parametrize("content", [b'""\n', b'" "\n', b'"\n"\n', b'\n  \n""\r\n'])
def test_a_pairs_csv_of_one_blank_quoted_field_is_refused_as_a_one_field_header(tmp_path, content):
    """A .csv whose only row is one quoted blank field raised IndexError (its row was dropped as a blank
    line, leaving none); it is refused as a first line of 1 field, as before the quoted-CSV reader."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.csv"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=r"pairs.csv: expected the STS-B layout .* has 1 field\(s\)"):
        read_pairs(str(path))


@pytest.mark.parametrize("blank", [b'" "', b'""'])
def test_a_pairs_row_of_one_quoted_blank_field_is_refused_not_dropped(tmp_path, blank):
    """A row that is one quoted blank field (not a blank line: the file says a field is there) was dropped
    without a word; it is refused by its line, as a row of 1 field. Lines of blanks are still no rows."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    path = tmp_path / "pairs.csv"
    path.write_bytes(b"s1,s2,score\n  \n" + blank + b"\na,b,1\nc,d,2\n")
    with pytest.raises(CorpusError, match=r"pairs.csv, line 3: 1 field\(s\), expected 3"):
        read_pairs(str(path))
    path.write_bytes(b"s1,s2,score\n  \na,b,1\n\t \nc,d,2\n")
    assert read_pairs(str(path)).first == ["a", "c"]
