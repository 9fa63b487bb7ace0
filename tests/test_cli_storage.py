"""`tokenpool embed --precision/--calibration` and sparse outputs: files checked against `Encoder` + numpy,
scipy and pyarrow readers; every bad combination is one stderr line and exit status 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse
from clitools import assert_one_error_line, kill_after_chunks
from tinymodels import splade_tiny

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.io.storage import calibration_file_for, calibration_uri_for, read_calibration

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "corpus.txt"
LINES = CORPUS.read_text(encoding="utf-8").split("\n")[:-1]  # 51 records, one empty
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture(scope="module")
def floats(encoder) -> np.ndarray:
    """What `embed` computes for the corpus: the same texts and batch size, so the same batches."""
    return encoder.encode(LINES, batch_size=32)


def _calibration_floats(encoder, count: int) -> np.ndarray:
    return encoder.encode(LINES[:count], batch_size=32)


# ------------------------------------------------------------------------------------------ precisions


def test_int8_npy_with_calibration_from_the_first_records(run, tmp_path, encoder, floats):
    out = tmp_path / "c.npy"
    code, _, err = run(
        "embed", CORPUS, "-o", out, "--precision", "int8", "--calibration-size", "30", "--chunk-size", "16"
    )
    assert code == 0, err
    assert "51 x 384 int8" in err and f"calibration in {out}.calibration.json" in err
    calibration = Calibration.load(f"{out}.calibration.json")
    reference = _calibration_floats(encoder, 30)
    np.testing.assert_array_equal(calibration.minimum, reference.min(axis=0))
    np.testing.assert_array_equal(calibration.maximum, reference.max(axis=0))
    assert calibration.texts == 30 and calibration.model_id == encoder.model_id
    assert calibration.pooling == ("mean",) and calibration.normalize is True and calibration.dimension == 384
    codes = np.load(out)
    assert codes.dtype == np.int8 and codes.shape == (51, 384)
    np.testing.assert_array_equal(codes, quantize(floats, "int8", calibration))


def test_calibration_file_is_reused_and_parquet_carries_it(run, tmp_path, floats):
    first = tmp_path / "first.npy"
    assert run("embed", CORPUS, "-o", first, "--precision", "uint8", "--calibration-size", "20")[0] == 0
    sidecar = f"{first}.calibration.json"
    out = tmp_path / "again.parquet"
    code, _, err = run("embed", CORPUS, "-o", out, "--precision", "uint8", "--calibration", sidecar)
    assert code == 0, err
    calibration = Calibration.load(sidecar)
    assert read_calibration(out) == calibration  # the parquet metadata (the sidecar says the same)
    other = Calibration.load(sidecar).to_dict()  # an earlier run's sidecar, left by a kill between the renames:
    other["maximum"] = [m + 1.0 for m in other["maximum"]]  # the rows' own metadata wins (stop 47)
    Path(f"{out}.calibration.json").write_text(json.dumps(other), encoding="utf-8")
    assert read_calibration(out) == calibration
    os.remove(f"{out}.calibration.json")
    assert read_calibration(out) == calibration  # the parquet metadata
    assert read_calibration(first) == calibration  # npy: its sidecar
    table = pq.read_table(out)
    meta = table.schema.metadata
    assert meta[b"tokenpool.precision"] == b"uint8" and meta[b"tokenpool.dimension"] == b"384"
    codes = np.array(table.column("embedding").to_pylist(), dtype=np.uint8)
    np.testing.assert_array_equal(codes, np.load(first))
    np.testing.assert_array_equal(codes, quantize(floats, "uint8", calibration))


@pytest.mark.parametrize("precision", ["binary", "ubinary", "float16"])
def test_uncalibrated_precisions(run, tmp_path, floats, precision):
    out = tmp_path / "c.jsonl"
    code, _, err = run("embed", CORPUS, "-o", out, "--precision", precision)
    assert code == 0, err
    assert not Path(f"{out}.calibration.json").exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    got = np.array([r["embedding"] for r in rows])
    if precision == "float16":
        np.testing.assert_array_equal(got, floats.astype(np.float16).astype(np.float64))
    else:
        ubinary = np.packbits(floats > 0, axis=-1)
        np.testing.assert_array_equal(got, ubinary if precision == "ubinary" else ubinary.astype(int) - 128)
        npy = tmp_path / "c.npy"
        assert run("embed", CORPUS, "-o", npy, "--precision", precision)[0] == 0
        assert (
            np.load(npy).shape == (51, 48)
            and "(packed: 48 bytes per row)" in run("embed", CORPUS, "-o", npy, "--precision", precision)[2]
        )


def test_a_float_run_removes_a_stale_calibration_sidecar(run, tmp_path):
    out = tmp_path / "c.npy"
    assert run("embed", CORPUS, "-o", out, "--precision", "int8", "--calibration-size", "10")[0] == 0
    assert Path(f"{out}.calibration.json").exists()
    assert run("embed", CORPUS, "-o", out)[0] == 0
    assert not Path(f"{out}.calibration.json").exists() and np.load(out).dtype == np.float32


def test_int8_never_replaces_a_users_calibration_file(run, tmp_path):
    """OUT.calibration.json was replaced whatever it held; now only a calibration tokenpool wrote is."""
    out = tmp_path / "c.npy"
    mine = Path(f"{out}.calibration.json")
    mine.write_text('{"mine": true}\n', encoding="utf-8")
    code, _, err = run("embed", CORPUS, "-o", out, "--precision", "int8", "--calibration-size", "10")
    assert_one_error_line(code, err, "c.npy.calibration.json exists and is not a tokenpool calibration file")
    assert mine.read_text(encoding="utf-8") == '{"mine": true}\n' and not out.exists()
    mine.unlink()
    for _ in range(2):  # the second run replaces the first run's calibration
        assert run("embed", CORPUS, "-o", out, "--precision", "int8", "--calibration-size", "10")[0] == 0
    assert read_calibration(out).to_dict()["texts"] == 10


def test_skip_empty_calibrates_on_the_kept_records(run, tmp_path, encoder):
    out = tmp_path / "kept.npy"
    code, _, err = run(
        "embed", CORPUS, "-o", out, "--precision", "int8", "--calibration-size", "20", "--skip-empty"
    )
    assert code == 0, err
    kept = [t for t in LINES[:20] if t.strip()]  # line 13 is empty
    reference = encoder.encode(kept, batch_size=32)
    calibration = Calibration.load(f"{out}.calibration.json")
    assert calibration.texts == 19
    np.testing.assert_array_equal(calibration.maximum, reference.max(axis=0))


def test_precision_and_calibration_errors(run, tmp_path, encoder):
    cls_out = tmp_path / "cls.npy"
    assert run("embed", CORPUS, "-o", cls_out, "--pooling", "cls", "--precision", "int8")[0] == 0
    same = tmp_path / "same.txt"
    same.write_text("one line\n" * 5)
    cases = [
        (["--precision", "int4"], ["invalid choice: 'int4'"]),
        (["--calibration", cls_out.with_name("cls.npy.calibration.json")] + ["--precision", "int8"],
         ["pooling ['cls']", "['mean']"]),
        (["--calibration", tmp_path / "missing.json", "--precision", "int8"], ["missing.json: no such file"]),
        (["--calibration", CORPUS, "--precision", "int8"], ["corpus.txt: not valid JSON"]),
        (["--calibration", cls_out.with_name("cls.npy.calibration.json")], ["--calibration is for --precision int8 or uint8"]),
        (["--precision", "int8", "--calibration-size", "1"], ["--calibration-size must be at least 2 (texts), got 1"]),
        (["--calibration-size", "0"], ["expected a positive integer, got '0'"]),
        (["--top-k", "5"], ["--top-k 5 applies to sparse (SPLADE) rows"]),
        (["--dense"], ["--dense is for sparse (SPLADE) models"]),
    ]  # fmt: skip
    for extra, needles in cases:
        code, _, err = run("embed", CORPUS, "-o", tmp_path / "bad.npy", *extra)
        assert_one_error_line(code, err, *needles)
    code, _, err = run("embed", same, "-o", tmp_path / "bad.npy", "--precision", "int8")
    assert_one_error_line(code, err, "no spread over the 5 calibration texts")
    one = tmp_path / "one.txt"
    one.write_text("a single record\n")
    code, _, err = run("embed", one, "-o", tmp_path / "bad.npy", "--precision", "int8")
    assert_one_error_line(
        code, err, "one.txt: cannot calibrate int8 on its first 1 text(s)", "at least 2 texts, got 1"
    )
    code, _, err = run("embed", CORPUS, "-o", tmp_path / "bad.npz")
    assert_one_error_line(code, err, ".npz holds sparse rows")
    assert not list(tmp_path.glob("bad*"))


# ------------------------------------------------------------------------------------------ sparse


@pytest.fixture(scope="module")
def splade_folder(tmp_path_factory) -> Path:
    folder = splade_tiny()
    if folder is not None:
        return folder
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("splade"), mlm=True)


def test_sparse_outputs_in_every_format(run, tmp_path, splade_folder):
    model = Encoder(splade_folder, pooling="splade")
    expected = model.encode_sparse(LINES, batch_size=32)
    common = ["--model", splade_folder, "--pooling", "splade", "--chunk-size", "20"]
    code, _, err = run("embed", CORPUS, "-o", tmp_path / "s.npz", *common)
    assert code == 0, err
    assert "51 sparse rows over a 30522-token vocabulary" in err and "% zeros" in err
    matrix = scipy.sparse.load_npz(tmp_path / "s.npz")
    assert matrix.shape == (51, 30522) and matrix.dtype == np.float32
    assert (matrix != expected).nnz == 0

    code, _, err = run("embed", CORPUS, "-o", tmp_path / "s.parquet", *common, "--tokens")
    assert code == 0, err
    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("indices").type) == "list<element: int32>"
    assert str(table.schema.field("values").type) == "list<element: float>"
    assert table.schema.metadata[b"tokenpool.vocabulary_size"] == b"30522"
    for i, (ids, values, tokens) in enumerate(
        zip(
            table.column("indices").to_pylist(),
            table.column("values").to_pylist(),
            table.column("tokens").to_pylist(),
            strict=True,
        )
    ):
        row = expected[i]
        assert ids == row.indices.tolist() and np.array_equal(np.float32(values), row.data)
        assert tokens == model.tokenizer.convert_ids_to_tokens(ids)

    code, _, err = run("embed", CORPUS, "-o", tmp_path / "s.jsonl", *common, "--top-k", "4", "--skip-empty")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    kept = [i for i, t in enumerate(LINES) if t.strip()]
    top = model.encode_sparse([LINES[i] for i in kept], batch_size=32, top_k=4)
    assert [r["id"] for r in rows] == kept and all(len(r["indices"]) <= 4 for r in rows)
    for j, r in enumerate(rows):
        assert r["indices"] == top[j].indices.tolist() and np.array_equal(
            np.float32(r["values"]), top[j].data
        )

    code, _, err = run("embed", CORPUS, "-o", tmp_path / "dense.npy", *common, "--dense")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "dense.npy"), expected.toarray())


def test_sparse_errors(run, tmp_path, splade_folder):
    common = ["--model", splade_folder, "--pooling", "splade"]
    for extra, needles in [
        (["-o", tmp_path / "s.npy"], ["is a sparse (SPLADE) model and writes sparse rows", ".npz, .parquet or .jsonl"]),
        (["-o", tmp_path / "s.npz", "--precision", "int8"], ["--precision int8 is for dense models"]),
        (["-o", tmp_path / "s.npz", "--tokens"], ["--tokens needs a .parquet or .jsonl output"]),
        (["-o", tmp_path / "s.npz", "--top-k", "0"], ["--top-k: expected a positive integer, got '0'"]),
        (["-o", tmp_path / "s.npz", "--threshold", "-1"], ["--threshold: expected a finite number >= 0, got '-1'"]),
    ]:  # fmt: skip
        code, _, err = run("embed", CORPUS, *common, *extra)
        assert_one_error_line(code, err, *needles)


# ------------------------------------------------------------------------------------------ resume


@pytest.fixture(scope="module")
def tiny_dense(tmp_path_factory) -> Path:
    from tinymodels import bert_folder

    return bert_folder(tmp_path_factory.mktemp("tiny-dense"))


def test_int8_sigkill_then_resume_keeps_the_calibration_and_the_bytes(run, tmp_path, tiny_dense):
    """A real SIGKILL after 2 chunks, then --resume: the stored calibration is used, the output and its sidecar
    are byte-identical to an uninterrupted run's; resuming with other calibration options is refused."""
    import torch

    src = tmp_path / "in.txt"
    src.write_text("".join(f"{LINES[i % len(LINES)]} ({i})\n" for i in range(3000)), encoding="utf-8")
    args = ["embed", str(src), "--model", str(tiny_dense), "--chunk-size", "20", "--batch-size", "8",
            "--precision", "int8", "--calibration-size", "60"]  # fmt: skip
    out = tmp_path / "out.npy"
    manifest = tmp_path / "out.npy.tokenpool-partial" / "manifest.json"
    stored = kill_after_chunks([sys.executable, "-m", "tokenpool.cli", *args, "-o", str(out)], out, ENV, timeout=300)
    assert stored["calibration"]["texts"] == 60 and stored["options"]["precision"] == "int8"
    done = stored["chunks_done"]
    assert 2 <= done < 150

    # other calibration options are refused (the stored ranges would not be what was asked for)
    code, _, err = run(*args[:-1], "30", "-o", out, "--resume")
    assert_one_error_line(code, err, "refusing to resume", "first 60 records", "first 30 records")
    stored_calibration = Calibration.from_dict(stored["calibration"])
    shifted = Calibration(stored_calibration.minimum - 0.5, stored_calibration.maximum,
                          model_id=stored_calibration.model_id, pooling=stored_calibration.pooling,
                          normalize=stored_calibration.normalize)  # fmt: skip
    shifted.save(tmp_path / "other.json")
    code, _, err = run(*args[:-2], "--calibration", tmp_path / "other.json", "-o", out, "--resume")
    assert_one_error_line(code, err, "refusing to resume")
    assert json.loads(manifest.read_text())["chunks_done"] == done  # the refusals changed nothing

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process (OMP_NUM_THREADS=1): the same float32 sums
    try:
        reference = run(*args, "-o", tmp_path / "ref.npy")
        resumed = run(*args, "-o", out, "--resume")
    finally:
        torch.set_num_threads(threads)
    assert reference[0] == 0 and resumed[0] == 0, (reference, resumed)
    assert f"chunks computed {150 - done}, reused {done}" in resumed[2]
    assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert Calibration.load(tmp_path / "ref.npy.calibration.json") == stored_calibration
    assert (
        Path(f"{out}.calibration.json").read_bytes() == (tmp_path / "ref.npy.calibration.json").read_bytes()
    )


@pytest.mark.parametrize("kind", ["sparse", "int8"])
def test_resume_after_bad_input_reuses_verified_chunks(run, tmp_path, splade_folder, tiny_dense, kind):
    """A run stopped by an invalid line keeps its complete chunks; after the fix, --resume reuses them (their
    sha256 checked) and the output equals a clean run's; a tampered chunk file is refused."""
    good = [f"{LINES[i % len(LINES)]} ({i})".encode() for i in range(70)]
    bad = list(good)
    bad[50] = b"\xff broken"
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(bad) + b"\n")
    if kind == "sparse":
        out, options = tmp_path / "out.npz", ["--model", splade_folder, "--pooling", "splade", "--top-k", "8"]
    else:
        out, options = (
            tmp_path / "out.npy",
            ["--model", tiny_dense, "--precision", "int8", "--calibration-size", "30"],
        )
    common = [*options, "--chunk-size", "20", "--batch-size", "8", "--checkpoint-seconds", "1000"]
    code, _, err = run("embed", src, "-o", out, *common)
    assert_one_error_line(code, err, "line 51", "invalid UTF-8")
    manifest = json.loads((tmp_path / f"{out.name}.tokenpool-partial" / "manifest.json").read_text())
    assert manifest["chunks_done"] == 2 and ("output" in manifest["options"]) == (kind == "sparse")
    src.write_bytes(b"\n".join(good) + b"\n")
    clean = tmp_path / f"clean{out.suffix}"
    assert run("embed", src, "-o", clean, *common)[0] == 0
    code, _, err = run("embed", src, "-o", out, *common, "--resume")
    assert code == 0, err
    assert "chunks computed 2, reused 2" in err
    assert out.read_bytes() == clean.read_bytes()

    # a partial run whose chunk file was changed behind tokenpool's back is refused
    src.write_bytes(b"\n".join(bad) + b"\n")
    assert run("embed", src, "-o", out, *common)[0] == 2
    part = (
        tmp_path
        / f"{out.name}.tokenpool-partial"
        / f"chunk-000001.{'values' if kind == 'sparse' else 'embedding'}.npy"
    )
    data = bytearray(part.read_bytes())
    data[-1] ^= 1
    part.write_bytes(bytes(data))
    src.write_bytes(b"\n".join(good) + b"\n")
    code, _, err = run("embed", src, "-o", out, *common, "--resume")
    assert_one_error_line(code, err, "refusing to use chunk 1", "sha256")


@pytest.mark.parametrize(
    ("output", "sidecar"),
    [
        ("s3://bucket/out/", "s3://bucket/out.calibration.json"),
        ("gs://b/x.parquet", "gs://b/x.parquet.calibration.json"),
        ("out/", "out.calibration.json"),
        ("/data/out.npy", "/data/out.npy.calibration.json"),
    ],
)
def test_a_uri_output_names_its_calibration_as_a_local_path_does(output, sidecar):
    """Ray's outputs may be URIs, which pathlib would mangle (``s3://`` → ``s3:/``); else the same name."""
    assert calibration_uri_for(output) == sidecar
    if "://" not in output:
        assert Path(sidecar) == calibration_file_for(output)
