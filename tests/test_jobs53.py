"""Stop 53 (corpus jobs): a numpy ``calibration_size`` writes the job (was a TypeError from the manifest); the
output's folder is the one that holds OUT's name, not where a symlink at OUT leads; a .jsonl of chunk rows named
like an .npy output's chunk index is not taken for that index (was: removed or replaced)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

TEXTS = [f"text number {i} of the corpus, {'with more words ' * (i % 4)}end" for i in range(12)]


@pytest.fixture(scope="module")
def encoder(tiny_bert_folder):
    from tokenpool import Encoder

    return Encoder(str(tiny_bert_folder), device="cpu")


@pytest.fixture
def corpus(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    return source


def _disk(folder) -> dict[str, str]:
    """Every path under ``folder``: a file's sha256, a link's target, or what else it is."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                out[path] = "link to " + os.readlink(path)
            elif os.path.isfile(path):
                out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                out[path] = "folder" if os.path.isdir(path) else "special"
    return out


# ------------------------------------------------ 1. a calibration_size given as a numpy integer


def test_a_numpy_calibration_size_writes_what_a_python_int_writes(encoder, corpus, tmp_path):
    """``EncodeRequest(precision="int8", calibration_size=np.int64(5))`` passes the request's checks (an integer)
    and gives the output and calibration an ``int`` gives (was: ``TypeError: Object of type bool is not JSON
    serializable`` from the manifest's calibration sample, and no output)."""
    from tokenpool.jobs import EmbedJob, EncodeRequest, check_job, embed_corpus

    outputs = {}
    for name, size in (("plain", 5), ("numpy", np.int64(5))):
        job = EmbedJob(str(corpus), str(tmp_path / f"{name}.npy"),
                       EncodeRequest(precision="int8", calibration_size=size), chunk_size=4)  # fmt: skip
        result = embed_corpus(encoder, job, log=lambda message: None, formats=check_job(job))
        outputs[name] = (result.output.read_bytes(), result.calibration_file.read_bytes())
    assert outputs["numpy"] == outputs["plain"]
    assert np.load(tmp_path / "numpy.npy").shape == (len(TEXTS), encoder.dimension)


# ------------------------------------------------ 2. the output's folder: the one holding OUT's name


def test_a_dangling_symlink_at_out_into_a_missing_folder_is_replaced_as_any_other_link(run, tiny_bert_folder, corpus, tmp_path):
    """A symlink at OUT is replaced by the output (its target left alone), also when it leads into a folder
    that does not exist: OUT's own folder exists (was: refused, ``folder . does not exist``, naming a folder
    that exists)."""
    from clitools import assert_one_error_line

    plain = tmp_path / "plain.npy"
    assert run("embed", corpus, "-o", plain, "--model", tiny_bert_folder, "-q")[0] == 0
    for name, target in (("into-folder.npy", "plain-target.npy"), ("into-nothing.npy", "gone/x.npy")):
        out = tmp_path / name
        out.symlink_to(target)
        code, _, err = run("embed", corpus, "-o", out, "--model", tiny_bert_folder, "-q")
        assert code == 0, err
        assert not out.is_symlink() and out.read_bytes() == plain.read_bytes()
    assert not (tmp_path / "gone").exists() and not (tmp_path / "plain-target.npy").exists()
    code, _, err = run("embed", corpus, "-o", tmp_path / "nowhere" / "x.npy", "--model", tiny_bert_folder)
    assert_one_error_line(code, err, f"folder {tmp_path / 'nowhere'} does not exist")


def test_an_output_under_a_file_names_that_file_as_no_folder(run, tiny_bert_folder, corpus, tmp_path):
    """``-o in.txt/x.npy``: the path before OUT's name is a file, which is said (was: ``folder in.txt does not
    exist``, of a file that exists); nothing is written."""
    from clitools import assert_one_error_line

    before = _disk(tmp_path)
    code, _, err = run("embed", corpus, "-o", corpus / "x.npy", "--model", tiny_bert_folder)
    assert_one_error_line(code, err, f"{corpus} is not a folder")
    assert _disk(tmp_path) == before


# ------------------------------------------------ 3. a .jsonl of chunk rows is no chunk index


def test_a_chunk_rows_jsonl_named_like_a_chunk_index_is_neither_removed_nor_replaced(
    run, tiny_bert_folder, corpus, tmp_path
):
    """``-o x.npy.chunks.jsonl --chunks ...`` is a job's output of its own (rows holding their vectors), not
    the row index an ``-o x.npy`` job writes beside its .npy (which holds none): a later pooled job on
    ``x.npy`` keeps it (was: deleted as an earlier run's index), and a chunk job on ``x.npy`` refuses to
    replace it, exit 2, nothing touched (was: replaced)."""
    from clitools import assert_one_error_line

    rows = tmp_path / "x.npy.chunks.jsonl"
    model = ("--model", tiny_bert_folder, "-q")
    assert run("embed", corpus, "-o", rows, "--chunks", "tokens:4", *model)[0] == 0
    kept = rows.read_bytes()
    assert b'"embedding": ' in kept.partition(b"\n")[0]
    code, _, err = run("embed", corpus, "-o", tmp_path / "x.npy", *model)
    assert code == 0, err
    assert rows.read_bytes() == kept
    before = _disk(tmp_path)
    code, _, err = run("embed", corpus, "-o", tmp_path / "x.npy", "--chunks", "tokens:4", *model)
    assert_one_error_line(code, err, str(rows), "is not a tokenpool chunk index")
    assert _disk(tmp_path) == before
