"""Corners of `tokenpool embed`'s resumable job (the jobs hunt): symlinks and hard links planted in the work
folder, a kill while a finished job removes it, side files of an earlier run of another kind, outputs on disk
before their rename, resumes with another ONNX file or add_eos, damaged JSON in the folder, bad ids before the
model loads. Every case compares against an independent reference: the disk as it was before the command, an
uninterrupted run's bytes, or a run into an empty folder. Also: a user's empty file named like a side file is
never taken for one, and a chunk spec spelled otherwise resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_error_line

N = 12


def _lines(n: int = N) -> list[str]:
    return [json.dumps({"text": f"sentence {i} about topic {i % 3}"}) for i in range(n)]


def _disk(folder: Path) -> dict[str, object]:
    """Every path under ``folder``: a symlink's target, a file's bytes, or a folder marker."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = ("link", os.readlink(path))
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


def _partial_run(run, tmp_path: Path, *options: object) -> tuple[Path, Path, Path]:
    """A run (with ``options``) stopped by a bad line 7 with chunks of 2: 3 complete chunks in the work folder;
    the input is then fixed, so that --resume would go on."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.npy"
    good = _lines()
    src.write_text("\n".join([*good[:6], "{bad", *good[7:]]) + "\n")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "-q", *options)
    assert code == 2 and "line 7" in err, err
    src.write_text("\n".join(good) + "\n")
    work = Path(f"{out}.tokenpool-partial")
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 3
    return src, out, work


@pytest.mark.parametrize(
    "name", ["chunk-000003.embedding.npy.tmp", "manifest.json.tmp", "output.npy", "output.lines.txt", "lock"]
)
def test_a_symlink_under_a_name_the_job_creates_is_refused_untouched(run, tmp_path, name):
    """A symlink planted in the work folder under a name the job writes would have the job write through it
    into a file it did not create (and rename the link onto OUT); refused before anything is touched."""
    src, out, work = _partial_run(run, tmp_path, "--skip-empty")  # it writes output.lines.txt too
    victim = tmp_path / "victim.bin"
    if name != "lock":  # the lock is opened for appending: a dangling link would create its target
        victim.write_bytes(b"the user's data")
    (work / name).unlink(missing_ok=True)
    os.symlink(victim, work / name)
    before = _disk(tmp_path)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "--skip-empty")
    assert_one_error_line(code, err, name, "symlink")
    assert _disk(tmp_path) == before


@pytest.mark.parametrize("name", ["output.npy", "chunk-000003.embedding.npy.tmp"])
def test_a_hard_link_under_a_name_the_job_writes_in_place_is_refused_untouched(run, tmp_path, name):
    """A hard link planted in the work folder under a name the job opens for writing would have it overwrite
    the linked file, which it did not create; refused before anything is touched."""
    src, out, work = _partial_run(run, tmp_path)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"the user's data")
    os.link(victim, work / name)
    before = _disk(tmp_path)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume")
    assert_one_error_line(code, err, name, "hard link")
    assert _disk(tmp_path) == before


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, not even cleanup code (no handler catches it)."""


def test_a_kill_while_the_work_folder_is_removed_leaves_nothing_to_refuse(run, tmp_path, monkeypatch):
    """The output is complete when its work folder goes; a kill after some of the folder's files are deleted
    must not leave a manifest counting chunks that are gone (every rerun was refused, OUT being complete)."""
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(_lines()) + "\n")
    reference = tmp_path / "ref.npy"
    assert run("embed", src, "-o", reference, "--chunk-size", 2, "-q")[0] == 0
    out = tmp_path / "out.npy"
    real_unlink, real_iterdir = Path.unlink, Path.iterdir

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path.name.startswith("chunk-000001."):  # the kill comes once chunk 0's files are gone
            raise Killed
        real_unlink(path, missing_ok=missing_ok)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "unlink", unlink)
        patch.setattr(Path, "iterdir", lambda path: iter(sorted(real_iterdir(path))))  # an order a disk may list
        with pytest.raises(Killed):
            run("embed", src, "-o", out, "--chunk-size", 2, "-q")
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "-q")
    assert code == 0, err
    assert out.read_bytes() == reference.read_bytes()
    assert not Path(f"{out}.tokenpool-partial").exists()


@pytest.mark.parametrize("rows", [["--chunks", "tokens:4"], ["--token-vectors"]], ids=["chunk-rows", "token-rows"])
def test_chunk_and_token_rows_remove_the_stale_side_files_of_a_pooled_run(run, tmp_path, rows):
    """An int8 --skip-empty run leaves OUT.calibration.json and OUT.lines.txt; rows of another kind written to
    the same OUT then describe other rows: the side files beside OUT are those a run into an empty folder
    leaves (a stale calibration made `read_calibration(OUT)` answer for a float32 output)."""
    src = tmp_path / "in.txt"
    src.write_text("".join(f"line {i} of the text\n" if i % 4 else "\n" for i in range(1, 13)), encoding="utf-8")
    fresh, out = tmp_path / "fresh", tmp_path / "over"
    fresh.mkdir(), out.mkdir()
    assert run("embed", src, "-o", fresh / "o.parquet", *rows, "--skip-empty", "-q")[0] == 0
    code, _, err = run("embed", src, "-o", out / "o.parquet", "--precision", "int8", "--skip-empty", "-q")
    assert code == 0 and {p.name for p in out.iterdir()} > {"o.parquet"}, err
    code, _, err = run("embed", src, "-o", out / "o.parquet", *rows, "--skip-empty", "-q")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())
    assert (out / "o.parquet").read_bytes() == (fresh / "o.parquet").read_bytes()


def _stream(fmt: str):
    """Three rows for ``fmt``'s writer: pooled vectors, or sparse rows for .npz."""
    import numpy as np

    from tokenpool.io.writers import RowStream
    from tokenpool.jobs.rows import sparse_rows, vector_rows

    docs = np.arange(3, dtype=np.int64)
    if fmt == "npz":
        nnz = np.array([1, 0, 2], dtype=np.int64)
        parts = {"doc": docs, "indices": np.array([4, 1, 7], np.int32), "values": np.ones(3, np.float32),
                 "nnz": nnz, "line": docs + 1}  # fmt: skip
        return RowStream(sparse_rows(10), lambda: [parts], 3, 3)
    parts = {"doc": docs, "embedding": np.ones((3, 4), np.float32), "line": docs + 1}
    return RowStream(vector_rows(4), lambda: [parts], 3, 3)


@pytest.mark.parametrize("fmt", ["npy", "parquet", "jsonl", "npz"])
def test_every_writer_flushes_the_output_to_disk_before_it_is_renamed(tmp_path, monkeypatch, fmt):
    """The job deletes its verified chunks once the output is renamed into place, so the output's bytes must be
    on disk first (fsync): a power cut must not leave an empty OUT and no chunks."""
    from tokenpool.io.writers import WRITERS

    synced = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        info = os.fstat(fd)
        synced.add((info.st_ino, info.st_size))

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / f"output.{fmt}"
    WRITERS[fmt].write(path, _stream(fmt), None)
    assert (path.stat().st_ino, path.stat().st_size) in synced


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """The bundled model exported once, through the command users run."""
    pytest.importorskip("onnxruntime")
    from tokenpool import cli

    target = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert cli.main(["export-onnx", "--output", str(target)]) == 0
    return target


def test_resuming_with_another_onnx_file_is_refused(run, tmp_path, onnx_file):
    """--onnx-file decides the vectors (a quantized variant, say) as much as the model folder's weights do; a
    resume that runs another file is refused naming it, and the same file resumes to the uninterrupted bytes."""
    other = tmp_path / "variant.onnx"
    other.write_bytes(onnx_file.read_bytes())
    onnx = ["--runtime", "onnx", "--onnx-file", onnx_file]
    src, out, work = _partial_run(run, tmp_path, *onnx)
    before = _disk(tmp_path)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "--runtime", "onnx", "--onnx-file", other)
    assert_one_error_line(code, err, "refusing to resume", "variant.onnx")
    assert _disk(tmp_path) == before
    reference = tmp_path / "ref.npy"
    assert run("embed", src, "-o", reference, "--chunk-size", 2, "-q", *onnx)[0] == 0
    assert run("embed", src, "-o", out, "--chunk-size", 2, "--resume", "-q", *onnx)[0] == 0
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("name", ["manifest.json", "tokenpool-work-folder.json"])
def test_json_nested_too_deeply_in_the_work_folder_is_a_refusal(run, tmp_path, name):
    """A manifest or owner marker replaced by JSON nested too deeply for Python's parser is damaged input like
    any other: one line, exit 2, the folder left as found (it was exit 1, 'maximum recursion depth exceeded')."""
    src, out, work = _partial_run(run, tmp_path)
    (work / name).write_text('{"version": 3, "kind": ' + "[" * 100_000 + "]" * 100_000 + "}")
    before = _disk(tmp_path)
    code, _, err = run("embed", src, "-o", out, "--chunk-size", 2, "--resume")
    assert_one_error_line(code, err, str(work))
    assert _disk(tmp_path) == before


def test_chunk_rows_refuse_a_bad_id_before_the_model_loads(run, tmp_path, monkeypatch):
    """--chunks checks every record before the model loads (its docstring's promise); an id the id column cannot
    store (true, 1.5, an object) was refused only when its block was encoded, after the model and the chunks
    before it."""
    from tokenpool.cli import common

    def no_model(options):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(common, "build_encoder", no_model)
    src = tmp_path / "in.jsonl"
    records = [{"text": "one", "id": "a"}, {"text": "two", "id": 2}, {"text": "three", "id": True}]
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    code, _, err = run("embed", src, "-o", tmp_path / "out.parquet", "--chunks", "tokens:4")
    assert_one_error_line(code, err, "line 3", "id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_resuming_with_another_add_eos_is_refused(tmp_path, tmp_path_factory, monkeypatch):
    """``add_eos`` (an EOS token appended to each text of a last-token model) decides every vector; a resume
    whose Encoder appends none was accepted and mixed its vectors with the partial run's."""
    from test_encoder import _qwen2_weights, _save_sentence_transformer

    from tokenpool import Encoder
    from tokenpool.errors import CorpusError
    from tokenpool.io.workdir import WorkDir
    from tokenpool.jobs import EmbedJob, embed_corpus

    folder = tmp_path_factory.mktemp("qwen2-last")
    _qwen2_weights(folder, padding_side="left")
    _save_sentence_transformer(folder, pooling_mode="lasttoken")
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("".join(f"text number {i}\n" for i in range(8)), encoding="utf-8")
    real, calls = WorkDir.write_manifest, []

    def killed_at_the_third(work: WorkDir, manifest: dict) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Killed
        real(work, manifest)

    with monkeypatch.context() as patch:
        patch.setattr(WorkDir, "write_manifest", killed_at_the_third)
        with pytest.raises(Killed):
            embed_corpus(Encoder(folder, device="cpu"), EmbedJob(str(src), str(out), chunk_size=2), log=print)
    assert Encoder(folder, device="cpu").add_eos
    before = _disk(tmp_path)
    with pytest.raises(CorpusError, match="add_eos"):
        job = EmbedJob(str(src), str(out), chunk_size=2, resume=True)
        embed_corpus(Encoder(folder, device="cpu", add_eos=False), job, log=print)
    assert _disk(tmp_path) == before


# ----------------------------------------------------------------- a user's empty file named like a side file


TEXTS = [f"sentence {i} about topic {i % 3}" for i in range(6)]


def _jsonl(path: Path, texts: list[str] = TEXTS) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.mark.parametrize("suffix", [".lines.txt", ".chunks.jsonl", ".tokens.jsonl"])
def test_a_users_empty_file_named_like_a_side_file_is_left_alone(run, tmp_path, suffix):
    """A run that writes no such side file leaves a user's empty ``OUT<suffix>`` where it is (was: removed as a
    stale side file of an earlier run: an empty file passed for tokenpool's line numbers or row index)."""
    src, out = _jsonl(tmp_path / "in.jsonl"), tmp_path / "out.npy"
    mine = tmp_path / f"out.npy{suffix}"
    mine.write_bytes(b"")
    code, _, err = run("embed", src, "-o", out, "-q")
    assert code == 0, err
    assert mine.is_file() and mine.read_bytes() == b""
    assert out.is_file()


@pytest.mark.parametrize(
    ("suffix", "flags"),
    [(".lines.txt", ("--skip-empty",)), (".chunks.jsonl", ("--chunks", "tokens:4"))],
)
def test_a_users_empty_file_the_job_would_write_is_refused_untouched(run, tmp_path, suffix, flags):
    """A run that writes ``OUT<suffix>`` refuses, before any work, to replace a user's empty file of that name
    (was: replaced, as if an earlier run's)."""
    src, out = _jsonl(tmp_path / "in.jsonl"), tmp_path / "out.npy"
    mine = tmp_path / f"out.npy{suffix}"
    mine.write_bytes(b"")
    code, _, err = run("embed", src, "-o", out, "-q", *flags)
    assert_one_error_line(code, err, str(mine), "is empty", "refusing to replace it")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.jsonl", mine.name])


def test_an_earlier_runs_side_file_is_still_replaced_and_removed(run, tmp_path):
    """What tokenpool wrote (non-empty line numbers) is still recognised: replaced by a --skip-empty rerun,
    removed by a rerun without it."""
    src, out = _jsonl(tmp_path / "in.jsonl", ["a", "", "b"]), tmp_path / "out.npy"
    lines = tmp_path / "out.npy.lines.txt"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    _jsonl(src, ["a", "b"])
    assert run("embed", src, "-o", out, "-q")[0] == 0
    assert not lines.exists()


def test_a_skip_empty_run_that_keeps_nothing_writes_no_line_numbers_and_runs_again(run, tmp_path):
    """Every text empty: no OUT.lines.txt (an empty one could not be told from a user's file, so the same
    command run again was refused); an earlier run's line numbers no longer describe OUT and are removed."""
    src, out = _jsonl(tmp_path / "in.jsonl", ["a", "", "b"]), tmp_path / "out.npy"
    lines = tmp_path / "out.npy.lines.txt"
    assert run("embed", src, "-o", out, "-q", "--skip-empty")[0] == 0
    assert lines.read_text() == "1\n3\n"
    _jsonl(src, ["", " "])
    for _ in range(2):
        code, _, err = run("embed", src, "-o", out, "-q", "--skip-empty")
        assert (code, err) == (0, "")
        assert np.load(out).shape == (0, 384) and not lines.exists()


# ----------------------------------------------------------------------------------- the chunk spec on resume


def _chunk_job(tmp_path: Path, spec: str, name: str = "out.npy", resume: bool = False):
    from tokenpool.jobs import EmbedJob, EncodeRequest

    src = _jsonl(tmp_path / "in.jsonl", [f"{t} and then some more words to cut" for t in TEXTS])
    return EmbedJob(str(src), str(tmp_path / name), EncodeRequest(chunks=spec), chunk_size=2, resume=resume)


def _embed(encoder, job) -> int:
    from tokenpool.jobs import embed_corpus

    return embed_corpus(encoder, job, lambda message: None).reused_chunks


def _partial_chunk_run(small, monkeypatch, tmp_path: Path, spec: str) -> None:
    """A ``--chunks spec`` run of chunks of two records stopped by a failure in the third chunk's encode."""
    calls, encode = [], small.run

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stopped")
        return encode(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(small, "run", failing)
        with pytest.raises(RuntimeError, match="stopped"):
            _embed(small, _chunk_job(tmp_path, spec))
    manifest = json.loads((tmp_path / "out.npy.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks_done"] == 2


@pytest.mark.parametrize(("first", "then"), [("tokens:4", "tokens:4:0"), ("tokens:4:0", " TOKENS:4 ")])
def test_the_same_chunk_spec_spelled_otherwise_resumes(small, monkeypatch, tmp_path, first, then):
    """``tokens:4`` and ``tokens:4:0`` are one chunking: the resume goes on, and writes what an uninterrupted run
    writes (was: refused, "options differ from the partial run (chunks: 'tokens:4' then, 'tokens:4:0' now)")."""
    import numpy as np

    _partial_chunk_run(small, monkeypatch, tmp_path, first)
    assert _embed(small, _chunk_job(tmp_path, then, resume=True)) == 2
    assert _embed(small, _chunk_job(tmp_path, first, "ref.npy")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.load(tmp_path / "ref.npy"))
    assert (tmp_path / "out.npy.chunks.jsonl").read_bytes() == (tmp_path / "ref.npy.chunks.jsonl").read_bytes()


def test_a_chunk_spec_stored_as_spelled_by_an_earlier_version_still_resumes(small, monkeypatch, tmp_path):
    """A manifest written before the spec was stored canonically holds it as the user spelled it: compared in
    canonical form, an equal spec resumes and another is still refused."""
    from tokenpool.errors import CorpusError
    from tokenpool.io.workdir import WorkDir

    _partial_chunk_run(small, monkeypatch, tmp_path, "tokens:4")
    work = WorkDir(tmp_path / "out.npy")
    manifest = work.read_manifest()
    assert manifest["options"]["chunks"] == "tokens:4:0"  # stored canonically now
    manifest["options"]["chunks"] = "Tokens:4"  # as an earlier version stored it
    work.write_manifest(manifest)
    with pytest.raises(CorpusError, match=r"chunks: 'tokens:4:0' then, 'tokens:5:0' now"):
        _embed(small, _chunk_job(tmp_path, "tokens:5", resume=True))
    assert _embed(small, _chunk_job(tmp_path, "tokens:4:0", resume=True)) == 2
