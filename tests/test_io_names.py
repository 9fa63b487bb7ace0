"""Corpus files by name: a format named only by its suffix, a parquet column by its exact dotted name."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenpool.errors import CorpusError
from tokenpool.io.formats import input_format, output_format
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


@pytest.mark.parametrize("name", [".npy", ".jsonl", ".parquet"])
def test_an_output_named_only_by_its_suffix_is_that_format(name: str) -> None:
    """``-o .npy`` is an .npy output (was: "unsupported output type; name the output .npy, ..."), as ``a.npy``."""
    assert output_format(f"out/{name}") == output_format(f"out/a{name}") == name[1:]


def test_an_input_named_only_by_its_suffix_is_that_format() -> None:
    """``data/.jsonl`` is read as .jsonl (was: "cannot tell the input format from its name; use a ... .jsonl")."""
    assert input_format("data/.jsonl") == "jsonl"


def test_no_suffix_still_names_no_format() -> None:
    """A name without a dot, or ending in one, has no format (the folder's dots do not count)."""
    for path in ("out", "out.", "a.npy/out", "a.jsonl/"):
        with pytest.raises(CorpusError, match="unsupported output type"):
            output_format(path)


@pytest.mark.parametrize("compression", [".gz", ".zst", ".bz2"])
def test_a_compressed_name_is_refused_not_read_as_its_inner_format(compression: str) -> None:
    """The corpus readers and writers do not compress: ``x.jsonl.gz`` is refused (not read as plain JSONL) and
    ``x.npy.gz`` too (not written uncompressed under a compressed name). (Ray's reader names the format of an
    input URI without its compression suffix: `integrations.ray.input_format_of`.)"""
    with pytest.raises(CorpusError, match="cannot tell the input format"):
        input_format(f"data/x.jsonl{compression}")
    with pytest.raises(CorpusError, match="unsupported output type"):
        output_format(f"out/x.npy{compression}")


def test_calibration_read_from_the_metadata_of_a_parquet_named_only_by_its_suffix(tmp_path: Path) -> None:
    """`read_calibration` tells a parquet output by the writers' suffix rule, as the job that wrote it did."""
    import numpy as np

    from tokenpool.core.quantize import Calibration
    from tokenpool.io.storage import parquet_metadata, read_calibration

    calibration = Calibration.from_vectors(np.array([[0.0, 1.0], [1.0, -1.0]], dtype=np.float32))
    schema = pa.schema([("id", pa.int64())], metadata=parquet_metadata("int8", 2, calibration))
    path = tmp_path / ".parquet"
    pq.write_table(pa.table({"id": pa.array([0])}, schema=schema), path)
    assert read_calibration(path).to_json() == calibration.to_json()
