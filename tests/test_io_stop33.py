"""Corpus input/output corners found by the stop-33 I/O hunt: each test names the standard it checks against."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenpool.io.readers import iter_records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_parquet_dotted_column_beside_a_struct_of_that_path(tmp_path: Path) -> None:
    """A top-level string column "a.b" is read, not the struct "a" whose field "b" has the same dotted path
    (pyarrow's column selection adds "a" to the batch, ahead of "a.b")."""
    path = tmp_path / "dotted.parquet"
    table = pa.table({"a": pa.array([{"b": "nested"}]), "a.b": pa.array(["top"]), "id": pa.array(["i1"])})
    pq.write_table(table, path)
    assert list(iter_records(str(path), "parquet", column="a.b", extras=("id", "a"))) == [
        (1, "top", ("i1", {"b": "nested"}))
    ]
