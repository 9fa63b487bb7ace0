"""Stop 47's hunt of the corpus jobs: each case a bug a user met, checked against an independent reference (the
request as the caller wrote it, the disk as it was before the job)."""

from __future__ import annotations

import pytest
from clitools import assert_one_error_line
from test_model_output import TEXTS, poisoned  # noqa: F401 (a fixture)
from tinymodels import SHIFTED_BERT, bert_weights, edit_json

from tokenpool.core.quantize import Calibration
from tokenpool.errors import CorpusError, OptionError
from tokenpool.jobs import EmbedJob, EncodeRequest, check_job


@pytest.mark.parametrize("rows", [{}, {"chunks": "tokens:4"}])
@pytest.mark.parametrize("call, said", [
    ({"normalize": False}, "normalize=False"), ({"truncate_dim": 8}, "truncate_dim=8"),
    ({"pooling": "max"}, "pooling='max'"), ({"finish": False}, "finish=False"),
])  # fmt: skip
def test_a_per_call_finishing_option_in_a_job_request_is_refused(tmp_path, rows, call, said):
    """A job's request with its own pooling, truncate_dim, normalize or finish=False was silently ignored for
    pooled vectors (unit-length 384-wide rows came out of normalize=False, truncate_dim=8), honoured for chunk
    rows but missing from the manifest (a resume could mix rows of both settings): refused before any model
    loads, naming the field, and nothing written."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("one\ntwo\n")
    job = EmbedJob(str(src), str(out), EncodeRequest(**rows, **call))
    with pytest.raises(OptionError, match=f"^{said}: a job writes the encoder's own"):
        check_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_a_refused_calibration_on_resume_gives_advice_that_works(run, tmp_path):
    """A resume of an int8 run made with --calibration A, given --calibration B, told the user to "rerun without
    it"; doing so was refused too (options differ: calibration 'file' then, 'first 1000 records' now). The
    advice names what works (the partial run's calibration again), and that resume succeeds."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    texts = [f"sentence {i} about topic {i % 3}" for i in range(8)]
    src.write_text("\n".join(texts) + "\n")
    assert run("embed", src, "-o", tmp_path / "a.npy", "--precision", "int8", "--calibration-size", 4, "-q")[0] == 0
    given, other = tmp_path / "a.npy.calibration.json", tmp_path / "b.json"
    first = Calibration.load(given)
    Calibration(first.minimum - 0.5, first.maximum, model_id=first.model_id, pooling=first.pooling,
                normalize=first.normalize).save(other)  # fmt: skip
    common = ["--precision", "int8", "--chunk-size", 2, "-q"]
    src.write_bytes(("\n".join(texts[:5]) + "\n\xff\n").encode("latin-1"))  # a bad line 6: 2 chunks kept
    assert run("embed", src, "-o", out, *common, "--calibration", given)[0] == 2
    src.write_text("\n".join(texts) + "\n")
    code, _, err = run("embed", src, "-o", out, *common, "--calibration", other, "--resume")
    assert_one_error_line(code, err, "refusing to resume", "--calibration")
    assert "rerun without it" not in err and "rerun with --calibration giving that calibration" in err
    code, _, err = run("embed", src, "-o", out, *common, "--resume")  # what the old advice led to
    assert_one_error_line(code, err, "refusing to resume", "options differ", "calibration: 'file' then")
    code, _, err = run("embed", src, "-o", out, *common, "--calibration", given, "--resume")
    assert code == 0, err


@pytest.mark.parametrize("skip", [[], ["--skip-empty"]])
def test_a_non_finite_vector_while_calibrating_names_the_line(run, poisoned, tmp_path, skip):  # noqa: F811
    """int8/uint8 calibrate on the first records before any chunk: a model output of NaN there was named as
    "text 9" of the calibration sample (no file, and with --skip-empty not even the line's number), where the
    same record in a chunk is named by its file and line; both now name line 11."""
    src = tmp_path / "in.txt"
    texts = [f"calm sentence number {k}" for k in range(12)]
    texts[2] = "" if skip else texts[2]
    texts[10] = TEXTS[2]
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", src, "-o", out, "--model", poisoned, "--precision", "int8", *skip, "-q")
    assert code == 1 and len(err.strip().splitlines()) == 1, err  # "failed" (exit 1), one line
    assert "non-finite" in err and f"{src}, line 11" in err and not out.exists(), err


def test_a_resume_after_the_model_folders_own_code_changed_is_refused(run, tmp_path):
    """With --trust-remote-code the model folder's own modeling_*.py decides the vectors, but it was not among the
    stamped model files: a resume after it changed reused the chunks of the old code (rows 0-3 shifted by 5.0
    against an uninterrupted run's). Refused, naming the file; nothing of the partial run is touched."""
    model = bert_weights(tmp_path / "model")
    code_file = model / "modeling_shift.py"
    code_file.write_text(SHIFTED_BERT.format(shift=0.0))
    edit_json(model / "config.json", auto_map={"AutoModel": "modeling_shift.ShiftedBert"})
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    texts = [f"sentence {i} about topic {i % 3}" for i in range(8)]
    src.write_bytes(("\n".join(texts[:5]) + "\n\xff\n").encode("latin-1"))  # a bad line 6: 2 chunks kept
    common = ["--model", model, "--trust-remote-code", "--chunk-size", 2, "-q"]
    assert run("embed", src, "-o", out, *common)[0] == 2
    src.write_text("\n".join(texts) + "\n")
    code_file.write_text(SHIFTED_BERT.format(shift=5.25))
    work = tmp_path / "out.npy.tokenpool-partial"
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    code, _, err = run("embed", src, "-o", out, *common, "--resume")
    assert_one_error_line(code, err, "refusing to resume", "model_files modeling_shift.py")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before and not out.exists()


def test_a_chunk_resume_with_other_empty_documents_is_refused(tmp_path, monkeypatch):
    """``empty_documents`` decides chunk rows (a document with no token: one row over its whole text, or an
    error) but was not among the options a resume compares: a run with "whole" stopped after 2 chunks (one row
    for line 2, a zero-width space) was resumed with "error" and wrote that row, which an uninterrupted "error"
    run refuses. Refused; the same options resume. (Since stop 68 a non-blank text with no token is one whole-text
    row under either option, so the line is blank here, which "error" refuses before the run.)"""
    from tokenpool import Encoder
    from tokenpool.jobs import embed_corpus
    from tokenpool.jobs.chunks import Chunks

    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    texts = [f"sentence {i} about topic {i % 3}" for i in range(8)]
    texts[1] = "   "  # only whitespace: no chunk under "error", one whole-text row under "whole"
    src.write_text("\n".join(texts) + "\n")
    encoder, real, calls = Encoder(), Chunks.encode, []

    def stopped(self, kept):  # the third block: as a kill after two chunks
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, kept)

    def job(how: str, resume: bool, output: object = out) -> EmbedJob:
        request = EncodeRequest(chunks="tokens:4", empty_documents=how)
        return EmbedJob(str(src), str(output), request, chunk_size=2, resume=resume)

    monkeypatch.setattr(Chunks, "encode", stopped)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(encoder, job("whole", False), log=print)
    monkeypatch.undo()
    with pytest.raises(CorpusError, match="only whitespace"):  # the reference: an uninterrupted "error" run
        embed_corpus(encoder, job("error", False, tmp_path / "ref.jsonl"), log=print)
    # resumed with "error": refused as the uninterrupted "error" run is (the blank line, before any option is
    # compared); no row that run refuses is written
    with pytest.raises(CorpusError, match="line 2: the text is only whitespace"):
        embed_corpus(encoder, job("error", True), log=print)
    assert embed_corpus(encoder, job("whole", True), log=print).reused_chunks == 2


@pytest.mark.parametrize("request_fields, job_fields, said", [
    ({}, {"id_field": "doc_id"}, "id_field='doc_id'"),
    ({}, {"spans_field": "cuts"}, "spans_field='cuts'"),
    ({"chunks": "tokens:4"}, {"spans_field": "cuts"}, "spans_field='cuts'"),
    ({"output": "tokens"}, {"spans_field": "cuts"}, "spans_field='cuts'"),
])  # fmt: skip
def test_a_job_field_its_rows_do_not_read_is_refused(tmp_path, request_fields, job_fields, said):
    """EmbedJob(id_field=...) of pooled vectors and spans_field without chunks="spans" were ignored without a word
    (the CLI refuses the flags); refused before any model loads."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    src.write_text("one\ntwo\n")
    job = EmbedJob(str(src), str(out), EncodeRequest(**request_fields), **job_fields)
    with pytest.raises(OptionError, match=f"^{said} is not read by this job"):
        check_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    records = tmp_path / "in.jsonl"  # where the rows read them, the same fields pass
    records.write_text('{"text": "one two", "cuts": [[0, 3]], "doc_id": "a"}\n')
    check_job(EmbedJob(str(records), str(out), EncodeRequest(chunks="spans"), spans_field="cuts", id_field="doc_id"))


@pytest.mark.parametrize("rows", [{"chunks": "tokens:4"}, {"output": "tokens"}])
def test_a_parquet_records_errors_name_its_row_as_the_reader_does(tmp_path, rows):
    """Chunk and token jobs named a bad parquet record "line N" where the readers say "row N"."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["one", "two", "   "], "id": ["a", "b", "c"]}), src)
    job = EmbedJob(str(src), str(tmp_path / "out.parquet"), EncodeRequest(**rows), id_field="id")
    assert job.place(3) == f"{src}, row 3" and EmbedJob("x.txt", "o.npy").place(3) == "x.txt, line 3"
    if "chunks" in rows:
        with pytest.raises(CorpusError, match=r"in\.parquet, row 3: the text is only whitespace"):
            check_job(job)
