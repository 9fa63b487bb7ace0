"""`embed_parquet`'s writer keeps the input's order whatever order Ray hands the blocks over in (Ray 2.60 was
seen to deliver a later block of the same actor task first, under ``preserve_order``, about 1 run in 12), and
never writes among other files. The property test plays Ray's part: blocks split, reordered and merged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from tokenpool.integrations.ray import ORDER_KEY, embed_parquet, last_column, write_in_order  # noqa: E402

TASK = 1 << 33  # Ray's monotonically_increasing_id: the task number above the row's number within its task


def _rows(chunk_counts: list[int], tasks: list[int], chunked: bool) -> pa.Table:
    """Output rows in input order: one per document (or one per chunk), documents numbered as Ray numbers them
    (``tasks[i]`` is document i's task; row numbers restart in each task)."""
    keys, chunks, last, within = [], [], [], {}
    for count, task in zip(chunk_counts, tasks, strict=True):
        key = task * TASK + within.setdefault(task, 0)
        within[task] += 1
        rows = count if chunked else 1
        keys += [key] * rows
        chunks += list(range(rows))
        last += [k == rows - 1 for k in range(rows)]
    table = pa.table({"text_id": [f"row{i}" for i in range(len(keys))], ORDER_KEY: pa.array(keys, pa.int64())})
    if not chunked:
        return table
    return table.append_column("chunk", pa.array(chunks, pa.int32())).append_column(last_column(ORDER_KEY), pa.array(last))


@st.composite
def deliveries(draw):
    """(rows in input order, chunked, the blocks as Ray delivers them: cut, shuffled, neighbours merged)."""
    chunked = draw(st.booleans())
    docs = draw(st.integers(1, 30))
    counts = draw(st.lists(st.integers(0, 4), min_size=docs, max_size=docs))
    if not chunked:
        counts = [1] * docs
    tasks = sorted(draw(st.lists(st.integers(0, 3), min_size=docs, max_size=docs)))
    rows = _rows(counts, tasks, chunked)
    cuts = sorted(set(draw(st.lists(st.integers(0, rows.num_rows), max_size=8))) | {0, rows.num_rows})
    blocks = [rows.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order = draw(st.permutations(range(len(blocks))))
    delivered = [blocks[i] for i in order]
    merged, k = [], 0
    while k < len(delivered):  # a write task may get several delivered blocks at once, concatenated
        take = draw(st.integers(1, 3))
        merged.append(pa.concat_tables(delivered[k : k + take]))
        k += take
    return rows, chunked, merged


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_files_listed_by_name_give_the_input_order(tmp_path_factory, case):
    rows, chunked, blocks = case
    out = tmp_path_factory.mktemp("out")
    written = [write_in_order(block, str(out), chunked=chunked) for block in blocks]
    names = [name for table in written for name in table.column("file").to_pylist()]
    assert len(names) == len(set(names))  # no file written twice
    assert sum(sum(table.column("rows").to_pylist()) for table in written) == rows.num_rows
    back = pa.concat_tables([pq.read_table(out / name) for name in sorted(names)]) if names else None
    want = rows.drop_columns([name for name in rows.column_names if name.startswith(ORDER_KEY)])
    if back is None:
        assert rows.num_rows == 0
    else:
        assert back.column_names == want.column_names  # the order key is not written
        assert back.column("text_id").to_pylist() == want.column("text_id").to_pylist()


def test_a_later_block_of_one_task_delivered_first_is_put_back(tmp_path):
    """What Ray 2.60 did: one write task got an actor task's second block before its first."""
    rows = _rows([2, 2, 2, 2, 2, 2], [0] * 6, chunked=True)
    swapped = pa.concat_tables([rows.slice(8), rows.slice(0, 8)])
    written = write_in_order(swapped, str(tmp_path), chunked=True)
    assert written.column("file").to_pylist() == [f"part-{0:020d}-{0:010d}.parquet"]
    assert pq.read_table(tmp_path).column("text_id").to_pylist() == [f"row{i}" for i in range(12)]


def test_a_document_split_between_blocks_is_not_joined_to_the_next_one(tmp_path):
    """Found by the property test: document 11's first chunk ended one block, the next document followed it after
    a merge, and its other chunks came in another block; only the last-chunk flag tells that 11 was not done."""
    rows = _rows([4, 4, 4, 1], [0] * 4, chunked=True)  # docs 0-3: rows 0-3, 4-7, 8-11, 12
    first = pa.concat_tables([rows.slice(0, 9), rows.slice(12)])  # doc 2's chunk 0, then doc 3
    written = [write_in_order(block, str(tmp_path), chunked=True) for block in (first, rows.slice(9, 3))]
    assert sum(table.num_rows for table in written) == 3  # doc 3 has a file of its own
    assert pq.read_table(tmp_path).column("text_id").to_pylist() == [f"row{i}" for i in range(13)]


def test_output_among_other_files_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.parquet").write_bytes(b"the user's own file")
    with pytest.raises(FileExistsError, match="already holds files"):
        embed_parquet(str(tmp_path / "missing.txt"), str(out))
    assert (out / "mine.parquet").read_bytes() == b"the user's own file"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        embed_parquet(str(tmp_path / "missing.txt"), str(tmp_path / "a_file"))


def test_the_command_line_names_the_occupied_folder_in_one_line(tmp_path, run):
    from clitools import assert_one_error_line

    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run("embed", source, "-o", out, "--ray")
    assert_one_error_line(code, err, str(out), "already holds files")
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
