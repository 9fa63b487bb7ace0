"""Stop 49 (jobsfix): a --calibration that is the output's own calibration file is the user's input, never
deleted or rewritten by the job; the model-files fingerprint stamps every tokenizer file transformers reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tokenpool import Encoder
from tokenpool.core.quantize import Calibration, quantize
from tokenpool.io.storage import calibration_file_for, read_calibration
from tokenpool.jobs import skeleton

TEXTS = ["the cat sat on the mat", "a dog barked at night", "quantum fields and particles", "bread rises slowly",
         "rain on a tin roof", "the stock market fell"]  # fmt: skip


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"{t}\n" for t in TEXTS), encoding="utf-8")
    return path


def _hand_edited_sidecar(run, corpus: Path, out: Path) -> tuple[Path, bytes, Calibration]:
    """An int8 run's ``OUT.calibration.json``, then edited by hand: ranges widened, a note added, laid out
    otherwise than tokenpool writes it. Returns the file, its bytes and the calibration it holds."""
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration-size", "4")
    assert code == 0, err
    sidecar = calibration_file_for(out)
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    data["maximum"] = [m + 0.5 for m in data["maximum"]]
    data["extra"] = {**data["extra"], "note": "widened by hand"}
    sidecar.write_text(json.dumps(data, indent=3) + "\n", encoding="utf-8")
    edited = Calibration.load(sidecar)
    assert edited.extra["note"] == "widened by hand" and edited.maximum[0] == np.float32(data["maximum"][0])
    return sidecar, sidecar.read_bytes(), edited


def test_a_calibration_given_as_the_outputs_own_sidecar_is_kept_as_the_user_wrote_it(run, tmp_path, corpus, encoder):
    """``--calibration OUT.calibration.json`` (hand-edited): the job deleted it while placing its output and
    wrote its own text in its place; now the file stays, byte for byte (the same file), and describes the rows,
    which are quantized with the ranges it holds."""
    out = tmp_path / "c.npy"
    sidecar, before, edited = _hand_edited_sidecar(run, corpus, out)
    inode = sidecar.stat().st_ino
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 0, err
    assert sidecar.read_bytes() == before and sidecar.stat().st_ino == inode
    assert read_calibration(out) == edited
    floats = encoder.encode(TEXTS, batch_size=32)
    np.testing.assert_array_equal(np.load(out), quantize(floats, "int8", edited))


def test_a_failure_while_placing_the_output_leaves_the_given_calibration_file(run, tmp_path, corpus, monkeypatch):
    """The side files were removed before the output was renamed into place: a failure (or a kill) there lost
    the user's --calibration file; now it is never touched."""
    out = tmp_path / "c.npy"
    sidecar, before, _ = _hand_edited_sidecar(run, corpus, out)
    real = skeleton.replace_synced

    def failing(source: Path, target: Path) -> None:
        if Path(target) == out:
            raise OSError(5, "Input/output error (injected)")
        real(source, target)

    monkeypatch.setattr(skeleton, "replace_synced", failing)
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 2 and "injected" in err, err
    assert sidecar.read_bytes() == before


def test_a_given_sidecar_changed_while_the_job_ran_is_left_and_the_job_fails(run, tmp_path, corpus, monkeypatch):
    """The sidecar held the --calibration the rows are quantized with when the job started and holds another one
    when the output is placed: it is the user's file, so it is not replaced; the job says so (exit 2) and its
    chunks stay for --resume."""
    out = tmp_path / "c.npy"
    sidecar, _, edited = _hand_edited_sidecar(run, corpus, out)
    old_output = out.read_bytes()
    changed = json.dumps({**edited.to_dict(), "texts": 99}, indent=3) + "\n"
    real = skeleton.run_chunks

    def editing(*args, **kwargs):
        real(*args, **kwargs)
        sidecar.write_text(changed, encoding="utf-8")  # the user edits it again, mid-job

    monkeypatch.setattr(skeleton, "run_chunks", editing)
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 2 and str(sidecar) in err and "changed while the job ran" in err, err
    assert sidecar.read_text(encoding="utf-8") == changed and out.read_bytes() == old_output
    assert os.path.isdir(f"{out}.tokenpool-partial")


def test_the_outputs_sidecar_given_as_calibration_in_any_json_layout_is_read_not_refused(run, tmp_path, corpus):
    """A calibration file written compactly (``jq -c``, ``separators=(",", ":")``) is read by --calibration for
    any output, but given for its own output it was refused as "not a tokenpool calibration file; refusing to
    replace it", a file the job does not replace: now it is read and kept, and other outputs' rows agree."""
    out = tmp_path / "c.npy"
    sidecar, _, _ = _hand_edited_sidecar(run, corpus, out)
    sidecar.write_text(json.dumps(json.loads(sidecar.read_text(encoding="utf-8")), separators=(",", ":")))
    before = sidecar.read_bytes()
    other = tmp_path / "other.npy"
    code, _, err = run("embed", corpus, "-o", other, "--precision", "int8", "--calibration", sidecar)
    assert code == 0, err
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", sidecar)
    assert code == 0, err
    assert sidecar.read_bytes() == before
    np.testing.assert_array_equal(np.load(out), np.load(other))
    assert read_calibration(out) == read_calibration(other) == Calibration.load(sidecar)
    real = tmp_path / "real.calibration.json"  # a sidecar that is a symlink to the file given is still refused
    sidecar.rename(real)
    sidecar.symlink_to(real)
    code, _, err = run("embed", corpus, "-o", out, "--precision", "int8", "--calibration", real)
    assert code == 2 and "c.npy.calibration.json exists and is not a tokenpool calibration file" in err, err
    assert sidecar.is_symlink() and real.read_bytes() == before


# ------------------------------------------------------------------ the model files a resume compares


def _transformers_vocab_file_names() -> set[str]:
    """Every file name a tokenizer class of the installed transformers declares it loads (``VOCAB_FILES_NAMES``
    / ``vocab_files_names`` in its tokenization modules, names given by module constants resolved), read from
    the source, so that classes needing a missing library (sentencepiece: Marian, Bartpho) count too."""
    import ast

    import transformers

    root = Path(transformers.__file__).parent
    names: set[str] = set()
    for path in root.rglob("tokenization_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
        for node in ast.walk(tree):
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if {"VOCAB_FILES_NAMES", "vocab_files_names"} & set(targets) and isinstance(node.value, ast.Dict):
                for value in node.value.values:
                    name = value.value if isinstance(value, ast.Constant) else constants.get(getattr(value, "id", ""))
                    if isinstance(name, str):
                        names.add(name)
    assert {"vocab.txt", "tokenizer.json", "spiece.model"} <= names  # the scan finds what it should
    return names


def test_every_tokenizer_file_transformers_loads_is_a_model_file(tmp_path):
    """The fingerprint missed SentencePiece files named ``*.spm`` (Marian's ``source.spm``/``target.spm``),
    ProphetNet's ``prophetnet.tokenizer`` and Bartpho's ``dict.txt``: a change between a kill and --resume went
    unnoticed. Each file name transformers' tokenizer classes load is stamped now (a corpus beside them is not)."""
    model = tmp_path / "model"
    model.mkdir()
    names = _transformers_vocab_file_names()
    assert {"source.spm", "target.spm"} <= names
    for name in names:
        (model / name).write_text("x\n", encoding="utf-8")
    (model / "corpus.txt").write_text("not a model file\n", encoding="utf-8")
    stamped = set(skeleton.model_stamps(model))
    assert names - stamped == set() and stamped == names


def test_resume_refuses_a_changed_spm_file(tiny_bert_folder, tmp_path):
    """A folder with Marian-style ``source.spm``/``target.spm``: one edited between a stopped run and --resume
    (same size, later time) is named in the refusal, instead of the stale chunks being reused."""
    import shutil

    from tokenpool.errors import CorpusError
    from tokenpool.jobs import EmbedJob, embed_corpus

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert_folder, folder)
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(b"\x0a\x05spm-1")
    corpus = tmp_path / "corpus.jsonl"
    records = [json.dumps({"text": t}) for t in TEXTS]
    corpus.write_text("\n".join([*records[:4], "not json", *records[4:]]) + "\n", encoding="utf-8")
    job = EmbedJob(str(corpus), str(tmp_path / "out.npy"), chunk_size=2)
    encoder = Encoder(folder, max_length=16, device="cpu")
    with pytest.raises(CorpusError, match="line 5"):  # a bad record stops the run after two chunks
        embed_corpus(encoder, job)
    assert json.loads(Path(f"{job.output}.tokenpool-partial/manifest.json").read_text())["chunks_done"] == 2
    corpus.write_text("\n".join([*records[:4], json.dumps({"text": "fixed"}), *records[4:]]) + "\n")
    spm = folder / "source.spm"
    spm.write_bytes(b"\x0a\x05spm-2")
    os.utime(spm, ns=(spm.stat().st_atime_ns, spm.stat().st_mtime_ns + 10**9))
    resume = EmbedJob(job.input, job.output, chunk_size=2, resume=True)
    with pytest.raises(CorpusError, match=r"refusing to resume: options differ.*model_files source\.spm:"):
        embed_corpus(encoder, resume)
    assert not Path(job.output).exists()


def test_the_hub_download_takes_every_tokenizer_file(monkeypatch, tmp_path):
    """A Hub model is fetched by file patterns: ``*.spm`` (Marian), ``bpe.codes`` (PhoBERT) and
    ``prophetnet.tokenizer`` were not among them, so such a model arrived without its tokenizer. The patterns now
    come from the one list the fingerprint stamps; every name transformers' tokenizer classes load matches."""
    import fnmatch

    from tokenpool.model import hub

    huggingface_hub = pytest.importorskip("huggingface_hub")

    asked = []

    def snapshot_download(repo_id, **options):
        asked.append(options["allow_patterns"])
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub.download_model("org/marian-like")
    missing = [n for n in _transformers_vocab_file_names() if not any(fnmatch.fnmatch(n, p) for p in asked[-1])]
    assert missing == []
