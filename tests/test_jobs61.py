"""Stop 61, corpus jobs and Ray: a parquet folder's files that Ray's reader skipped without a word."""

from __future__ import annotations

from pathlib import Path

import pytest


def _parquet_folder(folder: Path, other: str) -> Path:
    """A folder of parquet files: ``a.pq`` (2 rows), ``b.parquet`` (3 rows) and ``other`` (1 row), with the names
    parquet readers skip (``_SUCCESS``, ``.hidden``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    pq.write_table(pa.table({"text": ["one a", "two a"]}), folder / "a.pq")
    pq.write_table(pa.table({"text": ["one b", "two b", "three b"]}), folder / "b.parquet")
    pq.write_table(pa.table({"text": ["other"]}), folder / other)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".hidden").write_bytes(b"not parquet")
    return folder


@pytest.mark.parametrize("other", ["c", "part-0.snappy", "c.dat"])
def test_ray_refuses_a_parquet_folder_holding_files_it_would_leave_out(run, tmp_path, other):
    """`tokenpool embed FOLDER --ray` read only the folder's files named *.parquet (Ray's own filter): a part
    file without that suffix (Hive and Impala write them so) was left out of the output without a word, where
    pyarrow reads the folder's every file. It is now refused before Ray starts, naming the file (exit 2)."""
    pytest.importorskip("pyarrow")
    source = _parquet_folder(tmp_path / "corpus", other)
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray", "--model", tmp_path / "no-model")
    assert code == 2, err
    assert err.count("\n") == 1 and other in err and "is not read" in err, err
    assert not (tmp_path / "out").exists()


def test_ray_refuses_an_input_file_whose_name_says_no_format(run, tmp_path):
    """docs/cli.md said that under --ray "anything else is read as parquet"; Ray's reader found no file in
    `corpus.dat` ("no files found under ['corpus.dat']", after Ray had started). Refused before Ray starts."""
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "corpus.dat")
    code, _, err = run("embed", tmp_path / "corpus.dat", "-o", tmp_path / "out", "--ray", "--model", tmp_path / "m")
    assert code == 2 and "cannot tell the input format from its name" in err, err


def test_ray_reads_every_pq_file_of_a_folder(ray_session, tiny_bert_folder, tmp_path):
    """`.pq` is a parquet suffix of `tokenpool embed` (and of the --ray docs: "the same suffixes as above"), yet
    `embed_parquet` left a folder's `.pq` files out (3 of 5 rows written) and refused a `.pq` file ("no files
    found"). Every row is now written, in the order pyarrow reads the folder. (The folder: a whole job; the one
    file: the job's read of it, `_read`, and its check of the input's name, which are all it does otherwise.)"""
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import _read, _refuse_unread_files, embed_parquet

    source = _parquet_folder(tmp_path / "corpus", "c.PQ")
    options = {"model": str(tiny_bert_folder), "concurrency": 1, "max_length": 16}
    embed_parquet(str(source), str(tmp_path / "out"), **options)
    assert pq.read_table(tmp_path / "out").column("text").to_pylist() == pq.read_table(source).column("text").to_pylist()
    _refuse_unread_files(str(source / "a.pq"))
    assert [row["text"] for row in _read(str(source / "a.pq"), "text").take_all()] == ["one a", "two a"]


@pytest.mark.parametrize("flag", ["--tokens", "--dense"])
def test_cli_docs_name_every_flag_that_ray_refuses(run, tmp_path, flag):
    """docs/cli.md listed the flags `tokenpool embed --ray` refuses (exit 2) without --tokens and --dense, which
    it refuses too (Ray's sparse rows carry no decoded tokens, and it writes no N x V .npy)."""
    source = tmp_path / "in.txt"
    source.write_text("a cat\n", encoding="utf-8")
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray", flag, "--model", tmp_path / "m")
    assert code == 2 and flag in err, err
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    paragraph = docs.split("### `--ray [ADDRESS]`")[1].split("are not available there")[0].split("actors).")[-1]
    assert f"`{flag}`" in paragraph


def _assert_ray_reads_views_as_plain(folder, tmp_path, views, plain, chunks) -> None:
    """Ray's `EmbedBatch` table and `write_in_order` files for ``views`` equal those for ``plain``."""
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import ORDER_KEY, EmbedBatch, write_in_order
    from tokenpool.model.options import EncoderOptions
    from tokenpool.model.request import EncodeRequest

    options = EncoderOptions(model=str(folder), max_length=16)
    embed = EmbedBatch("text", "embedding", options, EncodeRequest(chunks=chunks).check(options), order_column=ORDER_KEY)
    tables = {"views": embed(views), "plain": embed(plain)}
    assert tables["views"].equals(tables["plain"])
    for name, table in tables.items():
        (tmp_path / name).mkdir()
        write_in_order(table, str(tmp_path / name), chunked=chunks is not None)
    assert pq.read_table(tmp_path / "views").equals(pq.read_table(tmp_path / "plain"))


@pytest.mark.parametrize("chunks", [None, "tokens:2"])
def test_ray_takes_string_view_columns_as_the_cli_reads_them(tiny_bert_folder, tmp_path, chunks):
    """A parquet input with string_view / binary_view columns (pyarrow >= 16; Polars writes them) failed every
    Ray job with "Function 'array_take' has no kernel matching input types (string_view, ...)": the ordered
    writer's sort and the chunk rows' repeat take rows. Ray's tables and files are now those of the same plain
    string / binary columns (the type `tokenpool embed` writes an id read from a string_view column as)."""
    pytest.importorskip("transformers")
    import pyarrow as pa

    plain = pa.table({"text": ["a cat sat", "x"], "note": ["n1", "n2"], "raw": [b"q", b"r"]})
    views = plain.cast(pa.schema([("text", pa.string_view()), ("note", pa.string_view()), ("raw", pa.binary_view())]))
    _assert_ray_reads_views_as_plain(tiny_bert_folder, tmp_path, views, plain, chunks)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".txt"])
def test_ray_refuses_spans_chunks_of_an_input_without_spans_before_ray_starts(run, tmp_path, suffix):
    """`tokenpool embed in.csv --ray --chunks spans` failed inside the actors ("spans must be a list of [start,
    end] pairs, got '[[0,5]]'": a CSV cell is a string), after Ray and the model had started; without --ray the
    same input is refused at once. Now refused before Ray starts, with the command line's message."""
    source = tmp_path / f"in{suffix}"
    source.write_text("text,spans\na cat,\"[[0,5]]\"\n" if suffix == ".csv" else "a cat\n", encoding="utf-8")
    local = run("embed", source, "-o", tmp_path / "local.parquet", "--chunks", "spans", "--model", tmp_path / "m")
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--ray", "--chunks", "spans", "--model", tmp_path / "m")
    assert local[0] == code == 2 and err == local[2] and "needs .jsonl or .parquet input" in err, (local, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("chunks", [None, "tokens:2"])
def test_ray_takes_view_types_nested_in_passed_columns(tiny_bert_folder, tmp_path, chunks):
    """Only top-level string_view / binary_view columns were cast: a list / struct / map column holding them
    (passed through by Ray) still failed the chunk rows' repeat and the ordered writer's sort with "array_take has
    no kernel ... string_view". Ray's tables and files are now those of the same columns with plain string /
    binary inside (the top-level rule; `tokenpool embed` writes no such column)."""
    pytest.importorskip("transformers")
    import pyarrow as pa

    def kinds(text: pa.DataType, raw: pa.DataType) -> list[tuple[str, pa.DataType]]:
        return [("text", pa.string()), ("tags", pa.list_(text)), ("pair", pa.struct([("x", text), ("y", raw)])),
                ("map", pa.map_(text, raw)), ("fixed", pa.list_(text, 2)), ("large", pa.large_list(raw))]

    values = {"text": ["a cat sat", "x"], "tags": [["a"], ["b", "c"]], "pair": [{"x": "q", "y": b"z"}, None],
              "map": [[("k", b"v")], []], "fixed": [["a", "b"], ["c", "d"]], "large": [[b"a"], []]}
    plain = pa.table(values, pa.schema(kinds(pa.string(), pa.binary())))
    views = pa.table(values, pa.schema(kinds(pa.string_view(), pa.binary_view())))
    _assert_ray_reads_views_as_plain(tiny_bert_folder, tmp_path, views, plain, chunks)


@pytest.mark.parametrize("name", ["c.txt", "corpus", "new.parquet"])
def test_ray_before_input_names_what_it_took_as_its_address(run, tmp_path, monkeypatch, name):
    """`tokenpool embed --ray c.txt -o out` said "the following arguments are required: INPUT": --ray [ADDRESS]
    took the corpus as its ADDRESS. A value that names an existing file or folder, or has a corpus suffix, given
    before INPUT, is now refused saying so (one line, exit 2); --ray=auto before INPUT stays an address."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "auto").mkdir()
    code, _, err = run("embed", "--ray", name, "-o", tmp_path / "out", "--model", tmp_path / "m")
    assert code == 2 and err.count("\n") == 1, err
    assert f"--ray took {name!r} as its ADDRESS; put INPUT before --ray" in err, err
    from tokenpool.cli import build_parser

    args = build_parser().parse_args(["embed", "--ray=auto", "c.txt", "-o", "out"])
    assert (args.ray, args.input) == ("auto", "c.txt")
