"""Hostile work folders on resume: tampered, replaced, missing or reordered chunks are never used (the run
refuses with exit 2 and deletes nothing); ids are record numbers whatever the chunk sizes; chunks close by time.

Each tamper row names what was done to a partial run's folder, the expected exit status and message, and the
disk state afterwards (the folder exactly as the tamper left it, no output)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from jobkill import run_killed_in

from tokenpool.io.workdir import OWNER_FILE, WorkDir
from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

from .conftest import files_under

N = 24


def _lines(n: int = N, start: int = 0) -> list[str]:
    return [json.dumps({"text": f"sentence {i} about topic {i % 5} " + "word " * (i % 7)}) for i in range(start, n)]


def _partial_run(run, model: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A run stopped by a bad line at record 14 with chunks of 4: 3 complete chunks in the work folder."""
    src = tmp_path / "in.jsonl"
    good = _lines()
    src.write_text("\n".join([*good[:14], "{broken", *good[15:]]) + "\n")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", src, "-o", out, "--model", model, "--chunk-size", 4, "-q")
    assert code == 2 and "line 15" in err, err
    src.write_text("\n".join(good) + "\n")
    work = tmp_path / "out.npy.tokenpool-partial"
    assert json.loads((work / "manifest.json").read_text())["chunks_done"] == 3
    return src, out, work


def _flip_bytes(work: Path) -> None:
    chunk = work / "chunk-000001.embedding.npy"
    data = bytearray(chunk.read_bytes())
    for offset in (-4, -40, -77):
        data[offset] ^= 0x5A
    chunk.write_bytes(bytes(data))


def _wrong_shape(work: Path) -> None:
    np.save(work / "chunk-000001.embedding.npy", np.zeros((4, 3), np.float32))


def _wrong_dtype(work: Path) -> None:
    vectors = np.load(work / "chunk-000001.embedding.npy")
    np.save(work / "chunk-000001.embedding.npy", vectors.astype(np.float64))


def _missing(work: Path) -> None:
    (work / "chunk-000002.embedding.npy").unlink()


def _truncated(work: Path) -> None:
    chunk = work / "chunk-000000.embedding.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])


def _swapped(work: Path) -> None:
    a, b = work / "chunk-000000.embedding.npy", work / "chunk-000001.embedding.npy"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


def _pickle_chunk(work: Path) -> None:
    np.save(work / "chunk-000001.embedding.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)


def _manifest(change, resign: bool = False):
    """Edit the manifest; ``resign``: and store it as tokenpool would (its own sha256 recomputed), to reach the
    checks behind that one."""

    def apply(work: Path) -> None:
        path = work / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        if not resign:
            path.write_text(json.dumps(manifest))
            return
        del manifest["manifest_sha256"]
        with WorkDir(work.parent / "out.npy") as folder:
            folder.write_manifest(manifest)

    return apply


def _shift_range(manifest):  # an id shift: chunk 1 claims records 5..9
    manifest["chunks"][1]["records"] = [5, 9]


def _drop_entry(manifest):
    manifest["chunks"].pop()


def _old_version(manifest):
    manifest["version"] = 1


def _fewer_records(manifest):
    manifest["records_done"] = 8


def _no_sha(manifest):
    del manifest["chunks"][0]["files"]["embedding.npy"]


def _one_bit(manifest):  # a value no structural check can doubt
    digest = manifest["prefix_sha256"]
    manifest["prefix_sha256"] = digest[:-1] + ("1" if digest[-1] == "0" else "0")


def _marker_removed(work: Path) -> None:
    (work / OWNER_FILE).unlink()


TAMPER = [
    # (case, tamper, message fragment)
    ("3-bytes-flipped-in-a-chunk", _flip_bytes, "sha256"),
    ("chunk-replaced-wrong-shape", _wrong_shape, "sha256"),
    ("chunk-replaced-float64", _wrong_dtype, "sha256"),
    ("chunk-file-missing", _missing, "cannot be read"),
    ("chunk-truncated", _truncated, "sha256"),
    ("two-chunks-swapped", _swapped, "sha256"),
    ("chunk-replaced-by-a-pickle", _pickle_chunk, "sha256"),
    ("manifest-record-range-shifted", _manifest(_shift_range), "changed after tokenpool wrote it"),
    ("manifest-chunk-entry-dropped", _manifest(_drop_entry), "changed after tokenpool wrote it"),
    ("manifest-old-version", _manifest(_old_version), "version"),
    ("manifest-records-done-lowered", _manifest(_fewer_records), "changed after tokenpool wrote it"),
    ("manifest-file-removed", _manifest(_no_sha), "changed after tokenpool wrote it"),
    ("manifest-prefix-hash-edited", _manifest(_one_bit), "changed after tokenpool wrote it"),
    # the same edits stored with a recomputed manifest sha256: the checks behind it refuse them too
    ("resigned-record-range-shifted", _manifest(_shift_range, True), "record"),
    ("resigned-chunk-entry-dropped", _manifest(_drop_entry, True), "damaged manifest"),
    ("resigned-records-done-lowered", _manifest(_fewer_records, True), "records"),
    ("resigned-file-removed", _manifest(_no_sha, True), "no embedding file"),
    ("resigned-prefix-hash-edited", _manifest(_one_bit, True), "records of the input differ"),
    ("owner-marker-removed", _marker_removed, "not a tokenpool work folder"),
]


@pytest.mark.parametrize(("case", "tamper", "fragment"), TAMPER, ids=[c[0] for c in TAMPER])
def test_tampered_work_folder_is_refused_not_used(run, tiny_bert, tmp_path, case, tamper, fragment):
    src, out, work = _partial_run(run, tiny_bert, tmp_path)
    tamper(work)
    before = files_under(tmp_path)
    code, _, err = run("embed", src, "-o", out, "--model", tiny_bert, "--chunk-size", 4, "--resume", "-q")
    assert code == 2, err
    assert fragment in err and err.count("\n") == 1, err
    assert files_under(tmp_path) == before  # nothing written, nothing deleted: the folder is the user's call
    assert not out.exists()


def test_untampered_resume_matches_an_uninterrupted_run(run, tiny_bert, tmp_path):
    src, out, _ = _partial_run(run, tiny_bert, tmp_path)
    code, _, err = run("embed", src, "-o", out, "--model", tiny_bert, "--chunk-size", 4, "--resume", "-q")
    assert code == 0, err
    whole = tmp_path / "whole.npy"
    assert run("embed", src, "-o", whole, "--model", tiny_bert, "--chunk-size", 4, "-q")[0] == 0
    assert out.read_bytes() == whole.read_bytes()


# ----------------------------------------------------------------- ids are record numbers (the jsonl shift)


def _encoder(tiny_bert: Path):
    from tokenpool import Encoder

    return Encoder(tiny_bert)


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return _encoder(tiny_bert)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "npy"])
def test_ids_after_a_short_chunk_and_appended_input(encoder, tmp_path, monkeypatch, fmt):
    """The issue's case: 990 records in chunks of 100 (the last one short), killed during assembly; 100 records
    appended; resumed: ids are 0..1089 with no gap, and the vectors are those of a fresh run."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    src = tmp_path / "in.txt"
    src.write_text("".join(f"text number {i}\n" for i in range(990)))
    out = tmp_path / f"out.{fmt}"
    job = EmbedJob(str(src), str(out), EncodeRequest(batch_size=64), chunk_size=100)
    run_killed_in(encoder, job, monkeypatch)
    manifest = json.loads((tmp_path / f"out.{fmt}.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks"][-1]["records"] == [900, 990]
    with open(src, "a") as fh:
        fh.write("".join(f"text number {i}\n" for i in range(990, 1090)))
    job.resume = True
    result = embed_corpus(encoder, job, log=lambda m: None)
    assert result.records == 1090
    ids, vectors = _read(out, fmt)
    assert ids.tolist() == list(range(1090))
    fresh = encoder.encode([f"text number {i}" for i in range(1090)], batch_size=64)
    np.testing.assert_allclose(vectors, fresh, atol=1e-5)


def _read(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "npy":
        vectors = np.load(path)
        return np.arange(len(vectors)), vectors
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return np.asarray(table["id"]), np.asarray(table["embedding"].to_pylist(), np.float32)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([r["id"] for r in rows]), np.array([r["embedding"] for r in rows], np.float32)


def test_skip_empty_ids_are_kept_record_numbers_with_time_chunks(encoder, tmp_path):
    texts = ["a", "", "b", "  ", "c", "d", "", "e", "f", ""] * 3
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "o.jsonl"
    job = EmbedJob(str(src), str(out), chunk_size=7, skip_empty=True, checkpoint_seconds=0, block_size=3)
    embed_corpus(encoder, job, log=lambda m: None)
    ids, _ = _read(out, "jsonl")
    assert ids.tolist() == [i for i, t in enumerate(texts) if t.strip()]
    lines = (tmp_path / "o.jsonl.lines.txt").read_text().split()
    assert [int(n) for n in lines] == [i + 1 for i, t in enumerate(texts) if t.strip()]


# ----------------------------------------------------------------------------------- checkpoints by time


def test_time_checkpoints_close_chunks_without_changing_vectors(encoder, tmp_path, monkeypatch):
    """checkpoint_seconds=0: every block is its own chunk; the output is byte-identical to a run by records."""
    from tokenpool.io import workdir

    src = tmp_path / "in.txt"
    src.write_text("".join(f"line {i} " + "x " * (i % 9) + "\n" for i in range(40)))
    written: list[list[int]] = []
    original = workdir.WorkDir.write_chunk

    def spy(self, index, start, stop, parts):
        written.append([start, stop])
        return original(self, index, start, stop, parts)

    monkeypatch.setattr(workdir.WorkDir, "write_chunk", spy)
    embed_corpus(encoder, EmbedJob(str(src), str(tmp_path / "t.npy"), chunk_size=16, block_size=5,
                                   checkpoint_seconds=0), log=lambda m: None)
    assert written == [[0, 5], [5, 10], [10, 15], [15, 16], [16, 20], [20, 25], [25, 30], [30, 32], [32, 35],
                       [35, 40]]
    written.clear()
    embed_corpus(encoder, EmbedJob(str(src), str(tmp_path / "r.npy"), chunk_size=16, block_size=5),
                 log=lambda m: None)
    assert written == [[0, 16], [16, 32], [32, 40]]
    assert (tmp_path / "t.npy").read_bytes() == (tmp_path / "r.npy").read_bytes()


# --------------------------------------------------------------------- the assembled output is checked


def test_assembled_output_checked_before_rename(encoder, tmp_path, monkeypatch):
    """A writer that loses a row: the run fails, the output never appears, the chunks stay for --resume."""
    from tokenpool.io import writers

    src = tmp_path / "in.txt"
    src.write_text("".join(f"t{i}\n" for i in range(10)))
    original = writers.WRITERS["jsonl"]

    def lossy(path, stream, sidecar):
        def drop_last():
            *items, last = stream.chunks()
            yield from items
            yield {key: value[:-1] for key, value in last.items()}

        original.write(path, dataclasses.replace(stream, chunks=drop_last), sidecar)

    monkeypatch.setitem(writers.WRITERS, "jsonl", writers.Writer("jsonl", (".jsonl",), lossy))
    with pytest.raises(RuntimeError, match="assembled"):
        embed_corpus(encoder, EmbedJob(str(src), str(tmp_path / "o.jsonl"), chunk_size=4), log=lambda m: None)
    assert not (tmp_path / "o.jsonl").exists()
    assert (tmp_path / "o.jsonl.tokenpool-partial" / "manifest.json").exists()


def test_chunk_tampered_between_check_and_assembly_is_caught(encoder, tmp_path, monkeypatch):
    """Chunks are verified again as they are assembled (not only at the start of a resume)."""
    from tokenpool.jobs import skeleton

    src = tmp_path / "in.txt"
    src.write_text("".join(f"t{i}\n" for i in range(10)))
    original = skeleton.assemble

    def tamper_then_assemble(work, *args, **kwargs):
        np.save(work.path / "chunk-000000.embedding.npy", np.ones((4, encoder.dimension), np.float32))
        return original(work, *args, **kwargs)

    monkeypatch.setattr(skeleton, "assemble", tamper_then_assemble)
    with pytest.raises(Exception, match="sha256"):
        embed_corpus(encoder, EmbedJob(str(src), str(tmp_path / "o.npy"), chunk_size=4), log=lambda m: None)
    assert not (tmp_path / "o.npy").exists()
