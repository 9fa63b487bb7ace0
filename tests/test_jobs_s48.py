"""Stop 48's hunt of the corpus jobs: what a resumed job reuses, and what a kill leaves beside the output."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from test_job_resume_model_files import _flip_last_byte, dense_folder  # noqa: F401 (a fixture)
from tinymodels import SHIFTED_BERT, bert_folder, bert_weights, edit_json

from tokenpool import Encoder
from tokenpool.errors import CorpusError
from tokenpool.jobs import EmbedJob, EncodeRequest, embed_corpus
from tokenpool.jobs.skeleton import model_stamps


class Killed(BaseException):
    """A kill at a chosen step (BaseException: what the job does on SIGINT/SIGKILL alike, nothing caught)."""


@pytest.fixture(scope="module")
def encoder():
    return Encoder()


def _beside(out):
    """The files beside the output (not its work folder), by name."""
    return {p.name: p.read_bytes() for p in out.parent.iterdir() if p.is_file() and p.name.startswith(out.name)}


ROWS = [({"precision": "int8", "calibration_size": 3}, True), ({"output": "tokens"}, False),
        ({"chunks": "tokens:4"}, True), ({}, True)]  # fmt: skip


@pytest.mark.parametrize("request_fields, skip", ROWS)
def test_a_kill_while_the_output_goes_into_place_leaves_no_side_file_of_another_output(
    encoder, tmp_path, monkeypatch, request_fields, skip
):
    """A job killed after its output was renamed into place but before its side files (calibration, --skip-empty
    line numbers, .npy row index) left an earlier run's side files beside the new output: int8 codes read with
    another calibration, rows matched to other lines. Killed after each rename or delete beside the output: the
    side files there are the output's own or absent, and --resume writes what an uninterrupted run writes."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"

    def job(texts, resume=False, output=out):
        src.write_text("\n".join(texts) + "\n")
        return EmbedJob(str(src), str(output), EncodeRequest(**request_fields), chunk_size=2, skip_empty=skip,
                        resume=resume)  # fmt: skip

    old = [f"an older sentence {i}" for i in range(5)] + ["", "old end"]
    new = [f"sentence {i} about topic {i % 3}" for i in range(6)] + ["", "new end"]
    (tmp_path / "ref").mkdir()
    embed_corpus(encoder, job(new, output=tmp_path / "ref" / "out.npy"))  # the uninterrupted run
    reference = _beside(tmp_path / "ref" / "out.npy")
    real_replace, real_unlink, steps = os.replace, os.unlink, []

    def step(operation):
        def done(path, *args, **kwargs):
            operation(path, *args, **kwargs)
            target = os.fspath(args[0] if operation is real_replace else path)
            if os.path.dirname(os.path.abspath(target)) == str(tmp_path):  # beside the output
                steps.append(target)
                if len(steps) == kill_at:
                    raise Killed

        return done

    kill_at = 0
    embed_corpus(encoder, job(old))
    before = _beside(out)
    monkeypatch.setattr(os, "replace", step(real_replace))
    monkeypatch.setattr(os, "unlink", step(real_unlink))
    embed_corpus(encoder, job(new))
    count = len(steps)
    assert count >= 2 and _beside(out) == reference
    for kill_at in range(1, count + 1):
        for name in list(_beside(out)):
            (tmp_path / name).unlink()
        for name, data in before.items():
            (tmp_path / name).write_bytes(data)
        steps.clear()
        with pytest.raises(Killed):
            embed_corpus(encoder, job(new))
        left = _beside(out)
        side = reference if left.get(out.name) == reference[out.name] else before
        mixed = {name for name in left if name != out.name and left[name] != side.get(name)}
        assert not mixed, f"killed at step {kill_at} of {count}: {sorted(mixed)} beside another output"
        embed_corpus(encoder, job(new, resume=True))
        assert _beside(out) == reference


def _stopped_run(model, tmp_path, **encoder_options):
    """A run of 8 records in chunks of 2 stopped by a bad line 6 (2 chunks kept), the line then fixed; returns
    the resuming job."""
    src, out = tmp_path / "in.txt", tmp_path / "out.npy"
    texts = [f"sentence {i} about topic {i % 3}" for i in range(8)]
    src.write_bytes(("\n".join(texts[:5]) + "\n\xff\n").encode("latin-1"))
    with pytest.raises(CorpusError, match="line 6"):
        embed_corpus(Encoder(model, **encoder_options), EmbedJob(str(src), str(out), chunk_size=2))
    src.write_text("\n".join(texts) + "\n")
    return EmbedJob(str(src), str(out), chunk_size=2, resume=True)


def _same_stamp(path, like):
    """Give ``path`` the modification time of ``like`` (same size: a copy made with `cp -p`, a Nix store file)."""
    os.utime(path, ns=(like.stat().st_atime_ns, like.stat().st_mtime_ns))


def test_a_resume_after_a_symlinked_module_folder_changed_is_refused(dense_folder, tmp_path):  # noqa: F811
    """A module folder that is a symlink (2_Dense -> a shared copy) was not entered by the model-file stamps: a
    resume after its weights changed reused the chunks of the old weights. Refused, naming the file."""
    model, shared = tmp_path / "model", tmp_path / "shared-dense"
    shutil.copytree(dense_folder, model)
    (model / "2_Dense").rename(shared)
    (model / "2_Dense").symlink_to(shared, target_is_directory=True)
    job = _stopped_run(model, tmp_path)
    weights = shared / "model.safetensors"
    before = Encoder(model).encode(["sentence 1 about topic 1"])
    _flip_last_byte(weights)
    assert not np.allclose(Encoder(model).encode(["sentence 1 about topic 1"]), before)
    with pytest.raises(CorpusError, match="refusing to resume: options differ .*model_files 2_Dense/model.safet"):
        embed_corpus(Encoder(model), job)


def test_a_resume_after_a_weights_symlink_points_elsewhere_is_refused(dense_folder, tmp_path):  # noqa: F811
    """A weights file that is a symlink (a Hub cache snapshot, a Nix store) was stamped by its target's size and
    modification time only: pointed at other weights of the same size and time, the resume reused the chunks of
    the first ones. Where the link leads is stamped too."""
    model = tmp_path / "model"
    shutil.copytree(dense_folder, model)
    first, second = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    (model / "2_Dense" / "model.safetensors").rename(first)
    shutil.copy(first, second)
    _flip_last_byte(second)
    _same_stamp(second, first)
    (model / "2_Dense" / "model.safetensors").symlink_to(first)
    job = _stopped_run(model, tmp_path)
    (model / "2_Dense" / "model.safetensors").unlink()
    (model / "2_Dense" / "model.safetensors").symlink_to(second)
    with pytest.raises(CorpusError, match="refusing to resume: options differ .*model_files 2_Dense/model.safet"):
        embed_corpus(Encoder(model), job)
    (model / "2_Dense" / "model.safetensors").unlink()
    (model / "2_Dense" / "model.safetensors").symlink_to(first)
    assert embed_corpus(Encoder(model), job).reused_chunks == 2  # the same link: resumed


def test_tiktoken_and_bpe_codes_tokenizer_files_are_model_files(tmp_path):
    """Tokenizers in tiktoken's format (``qwen.tiktoken``, read by a trusted folder's tokenizer code) and PhoBERT's
    BPE merges (``bpe.codes``) were not among the model files a resume compares."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "qwen.tiktoken").write_text("IQ== 0\n")
    (model / "bpe.codes").write_text("t@@ h 1\n")
    (model / "corpus.txt").write_text("not a model file\n")
    assert sorted(model_stamps(model)) == ["bpe.codes", "qwen.tiktoken"]


def test_a_resume_after_the_code_of_another_repo_changed_is_refused(tmp_path, monkeypatch):
    """An ``auto_map`` naming another repo's code (``other/code--modeling_shift.ShiftedBert``: transformers
    imports it from a folder of that name, else the Hub cache) was not stamped: a resume after that code changed
    reused the chunks of the old code. Its Python files are stamped (with --trust-remote-code)."""
    monkeypatch.chdir(tmp_path)
    model, code = bert_weights(tmp_path / "model"), tmp_path / "other" / "code" / "modeling_shift.py"
    code.parent.mkdir(parents=True)
    code.write_text(SHIFTED_BERT.format(shift=0.0))
    edit_json(model / "config.json", auto_map={"AutoModel": "other/code--modeling_shift.ShiftedBert"})
    job = _stopped_run(model, tmp_path, trust_remote_code=True)
    before = Encoder(model, trust_remote_code=True).encode(["sentence 1 about topic 1"])
    code.write_text(SHIFTED_BERT.format(shift=5.25))
    assert not np.allclose(Encoder(model, trust_remote_code=True).encode(["sentence 1 about topic 1"]), before)
    with pytest.raises(CorpusError, match=f"refusing to resume: options differ .*model_files {code}"):
        embed_corpus(Encoder(model, trust_remote_code=True), job)


def test_the_code_of_another_repo_is_stamped_by_its_hub_cache_revision(tmp_path, monkeypatch):
    """Where no folder of the repo's name is there, transformers imports the code from the Hub cache's snapshot
    of its main revision: a new revision downloaded between two runs changes the stamps (by snapshot path), and a
    module found nowhere is stamped None (it appearing later changes them too)."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = tmp_path / "model"
    edit_json(model / "config.json", auto_map={"AutoModel": "org/code--modeling_x.X", "AutoTokenizer": [None, "x"]})
    assert model_stamps(model, True)["org/code--modeling_x.py"] is None
    assert "org/code--modeling_x.py" not in model_stamps(model, False)  # (untrusted: the code never runs)
    repo = tmp_path / "hub" / "models--org--code"
    stamps = []
    for revision in ("1" * 40, "2" * 40):
        (repo / "snapshots" / revision).mkdir(parents=True)
        (repo / "snapshots" / revision / "modeling_x.py").write_text("X = 1\n")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        stamps.append(model_stamps(model, True))
    assert [sorted(s) for s in stamps] == [
        [f"{repo}/snapshots/{r * 40}/modeling_x.py", "config.json"] for r in "12"
    ]


def test_a_resume_after_an_onnx_files_external_weights_changed_is_refused(tmp_path):
    """An ONNX file with its weights in an external data file (``model.onnx_data``, as exports over 2 GB have)
    was stamped without it: a resume after those weights changed reused the chunks of the old ones. The files
    named after the ONNX file beside it are stamped too."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tokenpool import cli

    model = bert_folder(tmp_path / "model")
    assert cli.main(["export-onnx", str(model), "--output", str(tmp_path / "a.onnx")]) == 0
    graph, exported = onnx.load(str(tmp_path / "a.onnx")), tmp_path / "onnx" / "model.onnx"
    exported.parent.mkdir()
    onnx.save_model(graph, str(exported), save_as_external_data=True, location="model.onnx_data", size_threshold=0)
    job = _stopped_run(model, tmp_path, runtime="onnx", onnx_file=exported)
    weights = exported.parent / "model.onnx_data"
    values = np.frombuffer(weights.read_bytes(), np.float32).copy()
    values[-200:] *= 3
    weights.write_bytes(values.tobytes())
    with pytest.raises(CorpusError, match="refusing to resume: options differ .*runtime_file"):
        embed_corpus(Encoder(model, runtime="onnx", onnx_file=exported), job)
