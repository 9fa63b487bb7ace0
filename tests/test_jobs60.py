"""Stop 60, corpus jobs, readers/writers and Ray: paths given as `pathlib.Path`, ..."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXTS = ["a cat sleeps", "a dog barks", "red cars race", "the owl hoots", "", "green fish swim"]


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return source


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_a_job_of_paths_calibrates_as_a_job_of_strings(small, tmp_path, precision):
    """`EmbedJob(Path(...), Path(...))` ran every kind but int8/uint8, whose calibration named its sample with
    ``source.rstrip("/")``: an AttributeError after the sample was embedded. It now writes what the same job
    of strings writes (codes and calibration file), byte for byte."""
    from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

    source, request = _source(tmp_path), EncodeRequest(precision=precision, calibration_size=4)
    for name, kind in (("str", str), ("path", Path)):
        embed_corpus(small, EmbedJob(kind(source), kind(tmp_path / f"{name}.npy"), request), log=lambda m: None)
    assert (tmp_path / "path.npy").read_bytes() == (tmp_path / "str.npy").read_bytes()
    sidecar = "{}.npy.calibration.json"
    assert (tmp_path / sidecar.format("path")).read_bytes() == (tmp_path / sidecar.format("str")).read_bytes()
    assert np.load(tmp_path / "path.npy").shape == (len(TEXTS), int(small.dimension))


def test_ray_embed_parquet_takes_paths(ray_session, tiny_bert_folder, tmp_path):
    """`embed_parquet(Path(...), Path(...))` raised TypeError ("argument of type 'PosixPath' is not iterable")
    before Ray started. Paths are read as the strings they name: the same rows as a call with strings."""
    pytest.importorskip("transformers")
    import pyarrow.parquet as pq

    from tokenpool.integrations.ray import embed_parquet

    source, options = _source(tmp_path), {"model": str(tiny_bert_folder), "concurrency": 1, "max_length": 16}
    embed_parquet(str(source), str(tmp_path / "str"), **options)
    embed_parquet(source, tmp_path / "path", **options)
    assert pq.read_table(tmp_path / "path").equals(pq.read_table(tmp_path / "str"))
    assert (tmp_path / "path" / "_SUCCESS").is_file()


@pytest.mark.parametrize("rows", [["--chunks", "tokens:4"], ["--token-vectors"]])
def test_skip_empty_chunk_and_token_rows_number_records_in_doc_as_the_docs_say(run, tiny_bert_folder, tmp_path, rows):
    """docs/cli.md and `embed --help` said that --skip-empty writes OUT.lines.txt; chunk and token rows write
    none (their `doc` column numbers the kept records). The docs and the help say so now."""
    import pyarrow.parquet as pq

    from tokenpool.cli import build_parser

    out = tmp_path / "out.parquet"
    code, _, err = run("embed", _source(tmp_path), "-o", out, "--model", tiny_bert_folder, "--skip-empty", *rows)
    assert code == 0, err
    assert not (tmp_path / "out.parquet.lines.txt").exists()
    kept = [k for k, text in enumerate(TEXTS) if text.strip()]
    assert sorted(set(pq.read_table(out)["doc"].to_pylist())) == kept
    docs = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    paragraph = docs.split("**`--skip-empty`**")[1].split("```")[0]
    assert "Chunk and token rows (`--chunks`,\n`--token-vectors`) write no `OUT.lines.txt`" in paragraph
    embed = build_parser()._subparsers._group_actions[0].choices["embed"]
    (flag,) = [a for a in embed._actions if "--skip-empty" in a.option_strings]
    assert "chunk and token rows: none" in flag.help


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_invalid_utf8_in_a_csv_names_the_line_counted_as_its_rows_are(run, tmp_path, ending):
    """docs/cli.md: .csv rows end at \\n, \\r\\n or a lone \\r, "and line numbers in messages count them the same
    way". Invalid UTF-8 in an old-Mac file (lone \\r) was named "line 1", its column counted from the file's
    start. The line and column are now those of `bytes.splitlines` (which ends lines at the same three)."""
    lines = [b"text", b"good", b'"a quoted', b'field"', b"bad \xff here", b"last"]
    data = ending.join(lines) + ending
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    number = next(k for k, line in enumerate(data.splitlines(), 1) if b"\xff" in line)
    column = data.splitlines()[number - 1].index(b"\xff") + 1
    code, _, err = run("embed", source, "-o", tmp_path / "out.npy")
    assert code == 2
    assert err.strip().endswith(f"in.csv, line {number}: invalid UTF-8 (byte 0xff at column {column})")


def test_invalid_utf8_in_an_old_mac_pairs_file_names_its_line(tmp_path):
    """The STS pairs reader reads its lines as a .csv's (`csv_lines`): the same line and column there."""
    from tokenpool.errors import CorpusError
    from tokenpool.evaluation.sts import read_pairs

    source = tmp_path / "pairs.csv"
    source.write_bytes(b"score,s1,s2\r4.0,a cat,a dog\r3.\xff,x,y\r")
    with pytest.raises(CorpusError, match=r"pairs\.csv, line 3: invalid UTF-8 \(byte 0xff at column 3\)$"):
        read_pairs(str(source))


@pytest.mark.parametrize("extra", [1, 8, 23])
def test_an_output_name_too_long_for_its_work_folder_is_refused_naming_it(small, tmp_path, extra):
    """An OUT name the file system takes (<= 255 bytes) but whose work folder ``OUT.tokenpool-partial``, made as
    ``OUT.tokenpool-partial.new-PID``, is over 255 bytes failed with "[Errno 36] File name too long:
    '<OUT>.tokenpool-partial'" (or "cannot create the work folder ..."), naming a path the user never gave. It
    is now refused before any work, naming OUT and why; a name one byte shorter still runs."""
    import os

    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, embed_corpus

    if os.pathconf(tmp_path, "PC_NAME_MAX") != 255:
        pytest.skip("a file system whose names are not limited to 255 bytes")
    fitting = 255 - len(f".tokenpool-partial.new-{os.getpid()}")  # the longest OUT name whose work folder fits
    source, out = _source(tmp_path), tmp_path / ("o" * (fitting + extra - 4) + ".npy")
    with pytest.raises(CorpusError) as err:
        embed_corpus(small, EmbedJob(str(source), str(out)), log=lambda m: None)
    assert str(err.value) == (
        f"{out}: the output's name is too long: its work folder is made as {out.name}.tokenpool-partial.new-"
        f"{os.getpid()}, {255 + extra} bytes, over the 255 its folder allows; name a shorter output"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    fits = tmp_path / ("o" * (fitting - 4) + ".npy")
    embed_corpus(small, EmbedJob(str(source), str(fits)), log=lambda m: None)
    assert np.load(fits).shape == (len(TEXTS), int(small.dimension))


def test_checkpoint_seconds_help_and_docs_count_the_block_being_encoded():
    """`--checkpoint-seconds S`: the help, docs/cli.md and docs/security.md said "a kill loses at most that much",
    but the clock is read after each block (`run_chunks`), so a chunk closes at the first block end after S
    seconds: a kill loses up to S seconds plus one block's work. All three say so now."""
    from tokenpool.cli import build_parser

    embed = build_parser()._subparsers._group_actions[0].choices["embed"]
    (flag,) = [a for a in embed._actions if "--checkpoint-seconds" in a.option_strings]
    root = Path(__file__).parents[1] / "docs"
    cli = (root / "cli.md").read_text(encoding="utf-8").split("- `--checkpoint-seconds S`")[1].split("\n- ")[0]
    security = (root / "security.md").read_text(encoding="utf-8").split("**Checkpoints by time**")[1].split("\n- ")[0]
    for text in (flag.help, cli, security):
        flat = " ".join(text.split())
        assert "loses at most that much" not in flat
        assert "plus one block's work" in flat
