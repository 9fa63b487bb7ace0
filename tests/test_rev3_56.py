"""Stop 56 review (jobs, io, integrations, serve): a refused resume that would have reopened the only chunk of a
partial run keeps its work folder; SPLADE rows of `tokenpool embed` are `Encoder.encode_sparse`'s, prompt or not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from jobkill import run_killed_in

from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus

pytest.importorskip("transformers")


def _write(path: Path, count: int) -> None:
    path.write_text("".join(json.dumps({"text": f"record {i} end"}) + "\n" for i in range(count)), encoding="utf-8")


def test_a_refused_resume_of_a_one_chunk_run_keeps_its_work_folder(small, tmp_path, monkeypatch):
    """int8 calibrated on the whole input (6 records: one chunk), killed while the output was written; records
    appended; the resume is refused and the folder stays, as the message says (was: the reopened chunk left the
    in-memory count at 0 chunks, so the refusal removed the whole work folder)."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.npy"
    _write(src, 6)
    job = EmbedJob(str(src), str(out), EncodeRequest(precision="int8", calibration_size=100), chunk_size=8,
                   block_size=4)  # fmt: skip
    run_killed_in(small, job, monkeypatch)
    manifest = tmp_path / "out.npy.tokenpool-partial" / "manifest.json"
    kept = manifest.read_bytes()
    _write(src, 9)
    job.resume = True
    with pytest.raises(CorpusError, match="from the whole input, 6 records, and the input now has more"):
        embed_corpus(small, job, log=lambda m: None)
    assert manifest.read_bytes() == kept
    _write(src, 6)  # the appended records taken back: the partial run resumes
    assert embed_corpus(small, job, log=lambda m: None).reused_chunks == 1


@pytest.mark.parametrize("prompt", [None, "query: "])
def test_cli_splade_rows_are_encode_sparse_rows(run, tmp_path, prompt):
    """`tokenpool embed` on a SPLADE folder (with and without --prompt) writes `Encoder.encode_sparse`'s rows:
    the request fields `encode_sparse_rows` now takes from the job change nothing on the command line."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from tinymodels import bert_folder

    from tokenpool import Encoder

    splade = str(bert_folder(tmp_path / "splade", mlm=True))
    texts = ["the cat sat on the mat", "a b c", " ".join(f"w{i}" for i in range(80))]
    src, out = tmp_path / "in.txt", tmp_path / "out.parquet"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, _, err = run("embed", "--model", splade, src, "-o", out, *(["--prompt", prompt] if prompt else []))
    assert code == 0, err
    table = pq.read_table(out)
    expected = Encoder(splade).encode_sparse(texts, prompt=prompt).toarray()
    got = np.zeros_like(expected)
    for row, (indices, values) in enumerate(zip(table.column("indices").to_pylist(),
                                                table.column("values").to_pylist(), strict=True)):  # fmt: skip
        got[row, indices] = values
    np.testing.assert_array_equal(got, expected)
