"""The row schemas (`tokenpool.jobs.rows` on `tokenpool.io.rows`) against a plain Python loop: for random
chunks of chunk rows, token rows and sparse rows, the JSON lines, the .npy sidecar lines and the Arrow columns
hold the rows the loop builds; concatenated blocks pass the work folder's check, and a part of the wrong length
or dtype is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.jobs.rows import chunk_rows, sparse_rows, token_rows, vector_rows

pa = pytest.importorskip("pyarrow")

WIDTH = 3
IDS = st.one_of(st.none(), st.text(alphabet="ab😀é", max_size=3))


@st.composite
def token_blocks(draw):
    """Blocks of token rows: (doc, id, [(token id, start, end, vector), ...]) per row, docs increasing."""
    blocks, doc = [], 0
    for _ in range(draw(st.integers(1, 3))):
        rows = []
        for _ in range(draw(st.integers(0, 4))):
            doc += draw(st.integers(1, 3))
            tokens = [(draw(st.integers(0, 99)), draw(st.integers(-1, 9)), draw(st.integers(-1, 9)),
                       draw(st.lists(st.floats(-2, 2, width=32), min_size=WIDTH, max_size=WIDTH)))
                      for _ in range(draw(st.integers(0, 4)))]  # fmt: skip
            rows.append((doc, draw(IDS), tokens))
        blocks.append(rows)
    return blocks


def _token_parts(rows):
    tokens = [t for _, _, ts in rows for t in ts]
    return {
        "doc": np.array([d for d, _, _ in rows], dtype=np.int64),
        "id": [i for _, i, _ in rows],
        "n_tokens": np.array([len(ts) for _, _, ts in rows], dtype=np.int64),
        "token_ids": np.array([t[0] for t in tokens], dtype=np.int64),
        "token_spans": np.array([[t[1], t[2]] for t in tokens], dtype=np.int64).reshape(-1, 2),
        "token_embeddings": np.array([t[3] for t in tokens], dtype=np.float32).reshape(-1, WIDTH),
    }


@given(token_blocks(), st.booleans(), st.integers(0, 50))
def test_token_rows_match_a_loop_in_every_form(blocks, has_ids, first):
    schema = token_rows(WIDTH)
    parts = schema.concat([_token_parts(rows) for rows in blocks])
    rows = [row for block in blocks for row in block]
    assert schema.check(parts, 0, (rows[-1][0] + 1) if rows else 0, complete=False) is None
    want, offset = [], first
    for doc, ident, tokens in rows:
        row = {"doc": doc, **({"id": ident} if has_ids else {}), "n_tokens": len(tokens),
               "token_ids": [t[0] for t in tokens], "token_spans": [[t[1], t[2]] for t in tokens],
               "token_embeddings": [[float(np.float32(v)) for v in t[3]] for t in tokens]}  # fmt: skip
        want.append((row, offset))
        offset += len(tokens)
    lines = [json.loads(line) for line in schema.json_lines(parts, has_ids)]
    assert lines == [row for row, _ in want]
    sidecar = [json.loads(line) for line in schema.json_lines(parts, has_ids, "sidecar", first)]
    assert [list(line) for line in sidecar[:1]] in ([], [["doc", *(["id"] if has_ids else []), "offset", "n_tokens",
                                                          "token_ids", "token_spans"]])  # fmt: skip
    assert sidecar == [{**{k: v for k, v in row.items() if k != "token_embeddings"}, "offset": at}
                       for row, at in want]  # fmt: skip
    table = pa.table(schema.arrow_columns(parts, has_ids), schema=schema.arrow_schema(has_ids))
    assert table.to_pylist() == [row for row, _ in want]
    assert schema.items(parts) == offset - first


@given(token_blocks())
def test_parts_of_the_wrong_shape_are_refused(blocks):
    schema = token_rows(WIDTH)
    parts = schema.concat([_token_parts(rows) for rows in blocks])
    stop = int(parts["doc"][-1]) + 1 if len(parts["doc"]) else 0
    if len(parts["token_ids"]):
        assert schema.check({**parts, "token_ids": parts["token_ids"][1:]}, 0, stop, False) is not None
        assert schema.check({**parts, "token_spans": parts["token_spans"].astype(np.int32)}, 0, stop, False)
    if len(parts["doc"]) > 1:
        reversed_docs = {**parts, "doc": parts["doc"][::-1].copy()}
        assert "out of order" in schema.check(reversed_docs, 0, stop, False)
        assert "outside" in schema.check(parts, 0, stop - 1, False)


@given(st.lists(st.tuples(st.integers(0, 5), IDS, st.integers(0, 30), st.integers(0, 30)), max_size=8),
       st.booleans())  # fmt: skip
def test_chunk_rows_match_a_loop(chunks, has_ids):
    chunks = sorted(chunks, key=lambda c: c[0])
    vectors = np.arange(len(chunks) * WIDTH, dtype=np.float32).reshape(-1, WIDTH) / 7
    parts = {"doc": np.array([c[0] for c in chunks], dtype=np.int64), "id": [c[1] for c in chunks],
             "chunk": np.arange(len(chunks), dtype=np.int64), "start": np.array([c[2] for c in chunks], dtype=np.int64),
             "end": np.array([c[3] for c in chunks], dtype=np.int64), "embedding": vectors}  # fmt: skip
    schema = chunk_rows(WIDTH)
    assert schema.check(parts, 0, 6, complete=True) is None  # several rows per record: none "missing"
    want = [{"doc": c[0], **({"id": c[1]} if has_ids else {}), "chunk": k, "start": c[2], "end": c[3],
             "embedding": vectors[k].tolist()} for k, c in enumerate(chunks)]  # fmt: skip
    assert [json.loads(line) for line in schema.json_lines(parts, has_ids)] == want
    sidecar = [json.loads(line) for line in schema.json_lines(parts, has_ids, "sidecar")]
    assert sidecar == [{k: v for k, v in row.items() if k != "embedding"} for row in want]
    table = pa.table(schema.arrow_columns(parts, has_ids), schema=schema.arrow_schema(has_ids))
    assert table.to_pylist() == want


@given(st.lists(st.lists(st.tuples(st.integers(0, 9), st.floats(0, 5, width=32)), max_size=4), max_size=6))
def test_sparse_rows_and_pooled_rows_match_a_loop(rows):
    rows = [sorted(dict(row).items()) for row in rows]  # indices ascending, each once
    parts = {"doc": np.arange(len(rows), dtype=np.int64), "line": np.arange(len(rows), dtype=np.int64) + 1,
             "nnz": np.array([len(r) for r in rows], dtype=np.int64),
             "indices": np.array([i for r in rows for i, _ in r], dtype=np.int32),
             "values": np.array([v for r in rows for _, v in r], dtype=np.float32)}  # fmt: skip
    names = [f"t{i}" for i in range(10)]
    schema = sparse_rows(10, lambda indices: [names[i] for i in indices.tolist()])
    assert schema.check(parts, 0, len(rows), complete=True) is None
    want = [{"id": k, "indices": [i for i, _ in r], "values": [float(np.float32(v)) for _, v in r],
             "tokens": [names[i] for i, _ in r]} for k, r in enumerate(rows)]  # fmt: skip
    assert [json.loads(line) for line in schema.json_lines(parts, False)] == want
    table = pa.table(schema.arrow_columns(parts, False), schema=schema.arrow_schema(False))
    assert table.to_pylist() == want
    assert schema.items(parts) == sum(len(r) for r in rows)
    codes = vector_rows(2, "|i1")
    pooled = {"doc": parts["doc"], "line": parts["line"], "embedding": np.ones((len(rows), 2), np.int8)}
    assert pa.table(codes.arrow_columns(pooled, False)).to_pylist() == [{"id": k, "embedding": [1, 1]}
                                                                        for k in range(len(rows))]  # fmt: skip
    if rows:
        assert "has" in codes.check({**pooled, "doc": pooled["doc"][:-1], "line": pooled["line"][:-1],
                                     "embedding": pooled["embedding"][:-1]}, 0, len(rows), complete=True)  # fmt: skip
