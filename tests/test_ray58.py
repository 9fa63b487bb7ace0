"""Ray jobs against the command line's own behaviour: empty inputs, outputs refused before Ray starts,
upper-case compression suffixes, calibrations made with the job's batch options (stop 58)."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("transformers")

import pyarrow.parquet as pq  # noqa: E402

import tokenpool.integrations.ray as tp_ray  # noqa: E402
from tokenpool import Encoder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

TEXTS = ["cats purr", "dogs bark at night and all day long", "a longer sentence about pooling tokens", "x"]


def _jsonl(path, texts=TEXTS):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _no_ray(*args, **kwargs):
    raise AssertionError("Ray was started before the output was checked")


def test_a_dangling_symlink_out_is_refused_before_ray_starts(run, tiny_bert_folder, tmp_path, monkeypatch):
    """OUT a dangling symlink: pyarrow saw nothing there, so Ray started, read and embedded, and only the writer
    failed, with pyarrow's "[Errno 17] Cannot create directory ...: non-directory entry exists". Now refused
    before Ray starts, naming OUT, from `embed_parquet` and `tokenpool embed --ray` alike; the link is kept."""
    source = _jsonl(tmp_path / "in.jsonl")
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "missing" / "folder")
    monkeypatch.setattr(tp_ray, "_ray_session", _no_ray)
    with pytest.raises(FileExistsError, match=f"^{out} is a dangling symlink; the Ray job writes a folder"):
        tp_ray.embed_parquet(str(source), str(out), model=str(tiny_bert_folder))
    code, _, err = run("embed", source, "-o", out, "--model", tiny_bert_folder, "--ray")
    assert code == 2 and err.count("\n") == 1 and f"{out} is a dangling symlink" in err, err
    assert out.is_symlink() and not out.exists()


def test_an_upper_case_compression_suffix_is_decompressed(ray_session, tmp_path):
    """``in.jsonl.GZ``: the format was named without the suffix (any case), but Ray's readers guess the codec
    from the suffix with pyarrow's case-sensitive ``Codec.detect``, so the gzip bytes were read as the JSON
    Lines ("the Ray job failed: in.jsonl.GZ, line 1: invalid UTF-8"). The codec is now named to the reader: the
    job's reading tasks (`_read`) give the records. (A whole job on a compressed input, read by the same branch
    of `_read`: test_ray57.test_an_lz4_input_is_read_by_its_inner_format.)"""
    source = tmp_path / "in.jsonl.GZ"
    source.write_bytes(gzip.compress("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS))
                                     .encode()))  # fmt: skip
    rows = tp_ray._read(str(source), "text").take_all()
    assert [row["text"] for row in rows] == TEXTS and [row["n"] for row in rows] == list(range(len(TEXTS)))


def test_the_calibration_is_encoded_with_the_jobs_batch_options(run, ray_session, tiny_bert_folder, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    """An int8 job without a calibration computes one on its first records. `tokenpool embed` encodes them with
    the job's --batch-size (and token budget); Ray's calibration task called `Encoder.calibrate(texts)`, batches
    of 32 whatever the job said, so its ranges differed from the command line's in the last bits (a padded batch
    is not bit-equal to a short one). Now the same ranges as `tokenpool embed --batch-size 2`, exactly.
    Merged with test_ray_jobs.test_embed_ray_reports_the_calibration_file_the_ray_job_wrote (the same kind of
    job): `embed --ray` spelled the calibration file's name itself (``".calibration.json"``) while the Ray job
    writes `tokenpool.io.storage`'s name: both now come from that one place, so a new suffix moves both."""
    from pathlib import Path

    from tokenpool.core.quantize import Calibration

    texts = [" ".join(["word"] * n) + f" {n}" for n in (1, 9, 3, 17, 2, 30, 5)]
    source = _jsonl(tmp_path / "in.jsonl", texts)
    monkeypatch.setattr("tokenpool.io.storage.CALIBRATION_SUFFIX", ".cal.json")
    flags = ["--model", tiny_bert_folder, "--precision", "int8", "--batch-size", "2", "--calibration-size", "5"]
    code, _, err = run("embed", source, "-o", tmp_path / "cli.npy", *flags, "-q")
    assert code == 0, err
    code, _, err = run("embed", source, "-o", f"{tmp_path / 'ray'}/", *flags, "--ray")
    assert code == 0, err
    reported = err.split("; calibration in ", 1)[1].splitlines()[0]
    assert reported == str(tmp_path / "ray.cal.json")  # the folder output's trailing slash dropped
    assert Calibration.load(reported).texts == 5
    assert not (tmp_path / "ray.calibration.json").exists()
    cli = json.loads((tmp_path / "cli.npy.cal.json").read_text())
    mine = json.loads(Path(reported).read_text())
    assert mine == cli


@pytest.mark.parametrize("kind", [[], ["--token-vectors"]], ids=["vectors", "tokens"])
def test_an_empty_input_gives_a_table_of_no_rows_with_the_columns(run, ray_session, tiny_bert_folder, tmp_path, kind):
    """`tokenpool embed` writes a table of no rows, with its columns, for an input of no records; `--ray` wrote a
    folder holding only `_SUCCESS`, which `pyarrow.parquet.read_table` reads as a table of no columns. Now a
    part file of no rows whose columns (types, metadata) are the command line's (Ray's rows carry the input's
    own columns, here `text`, instead of `id`)."""
    source = tmp_path / "in.jsonl"
    source.write_text("", encoding="utf-8")
    flags = ["--model", tiny_bert_folder, "-q", *kind]
    code, _, err = run("embed", source, "-o", tmp_path / "cli.parquet", *flags)
    assert code == 0, err
    code, _, err = run("embed", source, "-o", tmp_path / "ray", *flags, "--ray")
    assert code == 0, err
    expected, got = pq.read_table(tmp_path / "cli.parquet"), pq.read_table(tmp_path / "ray")
    assert got.num_rows == 0 and (tmp_path / "ray" / tp_ray.COMPLETE_MARKER).exists()
    shared = [name for name in expected.column_names if name != "id" or kind]
    assert [name for name in got.column_names if name != "text"] == shared
    for name in shared:
        assert got.schema.field(name).type == expected.schema.field(name).type, name
    assert got.schema.metadata == expected.schema.metadata


def test_rays_own_writer_marks_a_finished_job_too(ray_session, tiny_bert_folder, tmp_path, monkeypatch):
    """With a Ray older than 2.55 (no ``monotonically_increasing_id``) the job falls back to Ray's
    ``write_parquet``, and that branch returned before the `_SUCCESS` marker was written, so a finished job
    looked like one that stopped (docs/integrations.md: the job writes `_SUCCESS` last)."""
    monkeypatch.setattr(tp_ray, "_increasing_id", lambda: None)
    out = tmp_path / "out"
    tp_ray.embed_parquet(str(_jsonl(tmp_path / "in.jsonl")), str(out), model=str(tiny_bert_folder), concurrency=1)
    assert (out / tp_ray.COMPLETE_MARKER).is_file()
    assert sorted(pq.read_table(out).column("text").to_pylist()) == sorted(TEXTS)


class _Console(logging.Handler):
    """The records of Ray Data's loggers that its console handler prints (not those marked ``hide``)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "hide", False):
            self.shown.append(self.format(record))  # (with its traceback, if any)


def test_rays_own_traceback_stays_off_the_console(run, ray_session, tiny_bert_folder, tmp_path):
    """An actor that fails to start (a model folder without weights) ended `tokenpool embed --ray` with Ray
    Data's console report, "Exception occurred in Ray Data or Ray Core internal code ... Full stack trace:" and
    some 60 lines of Ray's traceback, before tokenpool's one error line. That report now goes to Ray Data's log
    file only; the error line names the folder. (Ray started with log_to_driver, as `tokenpool embed --ray`
    starts it, also forwards the actor's own traceback: not changed.)"""
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_bert_folder / "config.json").read_bytes())
    console = _Console()
    logging.getLogger("ray.data").addHandler(console)
    try:
        code, _, err = run("embed", _jsonl(tmp_path / "in.jsonl"), "-o", tmp_path / "out", "--model", broken, "--ray")
    finally:
        logging.getLogger("ray.data").removeHandler(console)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"tokenpool embed: error: the Ray job failed: model folder '{broken}'")
    shown = "\n".join(console.shown)
    assert "Traceback" not in shown and "Full stack trace" not in shown, shown


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_spans_chunks_without_their_column_name_the_flags(run, ray_session, tiny_bert_folder, tmp_path, suffix):
    """`tokenpool embed --ray --chunks spans` on records without a spans field was refused as a Python call,
    "chunks='spans' needs a spans column 'spans'", where the command line's caller is told its flags (the
    request's `caller="cli"`): now "--chunks spans needs a spans column 'spans' (--spans-field)", whether the
    driver sees the columns (parquet) or an actor does (JSON Lines)."""
    import pyarrow as pa

    source = tmp_path / f"in.{suffix}"
    if suffix == "jsonl":
        _jsonl(source)
    else:
        pq.write_table(pa.table({"text": TEXTS}), source)
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--model", tiny_bert_folder, "--chunks", "spans",
                       "--ray")  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "--chunks spans needs a spans column 'spans' (--spans-field); columns: ['text']" in err, err


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_missing_text_column_names_the_flag(run, ray_session, tiny_bert_folder, tmp_path, precision):
    """`tokenpool embed in.parquet --ray --column body` on a file without that column said "column 'body' not in
    the dataset; columns: [...]", naming no option, where `tokenpool embed` says "choose one with --column": the
    refusal (on the driver, and in the int8 job's calibration sample) now names the flags."""
    import pyarrow as pa

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS, "n": list(range(len(TEXTS)))}), source)
    code, _, err = run("embed", source, "-o", tmp_path / "out", "--model", tiny_bert_folder, "--column", "body",
                       "--precision", precision, "--ray")  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "column 'body' (--field / --column) not in the dataset; columns: ['text', 'n']" in err, err


def test_a_calibration_for_other_vectors_is_bad_input_as_on_the_command_line(run, ray_session, tiny_bert_folder,
                                                                              tmp_path):
    """`--calibration` made for 8-dimensional vectors on a job writing the model's full width: `tokenpool embed`
    refuses it as bad input (exit 2); under `--ray` the actors' `CalibrationMismatch` was not recognised in Ray's
    traceback text (only names ending in Error / Exception were), so it came back as a RuntimeError: "tokenpool
    embed: failed: ... tokenpool.core.quantize.CalibrationMismatch: ...", exit 1. Now the same refusal, exit 2."""
    from pathlib import Path

    calibration = tmp_path / "dim8.json"
    Encoder(tiny_bert_folder, device="cpu", truncate_dim=8).calibrate(TEXTS).save(Path(calibration))
    source = _jsonl(tmp_path / "in.jsonl")
    flags = ["--model", tiny_bert_folder, "--precision", "int8", "--calibration", calibration]
    code, _, plain = run("embed", source, "-o", tmp_path / "plain.parquet", *flags)
    assert code == 2 and "the calibration has dimension 8" in plain, plain
    code, _, err = run("embed", source, "-o", tmp_path / "out", *flags, "--ray")
    assert code == 2 and err.count("\n") == 1, err
    assert plain.split("error: ", 1)[1] in err and "CalibrationMismatch" not in err, err


def test_another_threads_ray_data_report_stays_on_the_console(ray_session):
    """While a job runs, its own Ray Data report is kept off the console; the mark went on every record of Ray
    Data's exception logger, so another thread's Ray Data job in the same process (the caller's own) lost its
    report from the console too. Now only the job's own thread's records are marked; none once it is over."""
    import threading

    reports = logging.getLogger("ray.data.exceptions")
    console = _Console()
    reports.addHandler(console)
    try:
        with tp_ray._ray_session(None):
            other = threading.Thread(target=reports.error, args=("another job's report",))
            other.start()
            other.join()
            reports.error("this job's report")
        reports.error("a later job's report")
    finally:
        reports.removeHandler(console)
    assert console.shown == ["another job's report", "a later job's report"]
