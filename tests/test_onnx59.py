"""Stop 59, ONNX / Hub / model folders: `tokenpool inspect` of ONNX-only folders, a Hub repo's ONNX file in the
Transformer module's subfolder, sentence-transformers >= 6.3 tokenizer options in a Transformer config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_integ57 import online_hub  # noqa: F401  (the fixture, used by name)
from tinymodels import onnx_only_copy


@pytest.mark.parametrize("name", ["onnx/model.onnx", "model.onnx"])
def test_inspect_reports_an_onnx_only_folder_that_embed_runs(run, tiny, tiny_onnx, tmp_path, name):
    """``tokenpool embed --runtime onnx`` runs a folder with an ONNX file, config and tokenizer but no torch weights;
    inspect refused it ("is missing torch weights"). It reports what it reports for the torch folder (the same
    pooling, dimension and max length, each from the same file), and the runtime and file that run it."""
    from tokenpool import Encoder

    folder = onnx_only_copy(tiny, tiny_onnx, tmp_path / "onnx-only", name)
    code, out, err = run("inspect", folder, "--json")
    assert code == 0, err
    report = json.loads(out)
    code, out, err = run("inspect", tiny, "--json")
    torch_report = json.loads(out)
    runtime = report["fields"].pop("runtime")
    assert report["fields"] == torch_report["fields"] and report["modules"] == torch_report["modules"]
    flag = [] if name == "onnx/model.onnx" else ["--onnx-file", name]
    # (the flags that run it: a key of their own, not in "source", which names a file as every field's does)
    assert runtime == {"value": "onnx", "source": name, **({"advice": f"embed with --runtime onnx --onnx-file {name}"} if flag else {})}
    encoder = Encoder(folder, runtime="onnx", onnx_file=flag[1] if flag else None)
    assert report["fields"]["dimension"]["value"] == encoder.dimension
    assert report["fields"]["max_length"]["value"] == encoder.max_length
    (tmp_path / "in.txt").write_text("a text\n")
    code, out, err = run("embed", tmp_path / "in.txt", "--model", folder, "--runtime", "onnx", *flag,
                         "--output", tmp_path / "v.npy")  # fmt: skip
    assert code == 0, err
    code, out, err = run("inspect", folder)
    shown = "; ".join([name, *([runtime["advice"]] if flag else [])])
    assert code == 0 and f"runtime             onnx  ({shown})" in out.splitlines()


@pytest.mark.parametrize(("file", "status"), [("config.json", 0), ("tokenizer_config.json", 2)])
def test_inspect_of_an_onnx_only_folder_refuses_what_the_onnx_runtime_refuses(run, tiny, tiny_onnx, tmp_path, file,
                                                                               status):  # fmt: skip
    """An ONNX-only folder's own model class (config.json's auto_map, as Jina v2 folders have) is no matter to the
    onnx runtime (the graph is the model); a tokenizer class of its own is refused unless trusted. Inspect says the
    same of the folder: the exit status says whether it runs."""
    from tokenpool import Encoder
    from tokenpool.errors import UnsafeModelFolderError

    folder = onnx_only_copy(tiny, tiny_onnx, tmp_path / "onnx-only")
    (folder / file).unlink()
    data = json.loads((tiny / file).read_text())
    (folder / file).write_text(json.dumps({**data, "auto_map": {"AutoModel": "own.Model"}}))
    code, out, err = run("inspect", folder)
    assert code == status and ("auto_map" in err) == bool(status), err
    if status:
        with pytest.raises(UnsafeModelFolderError, match="auto_map"):
            Encoder(folder, runtime="onnx")
        assert run("inspect", folder, "--trust-remote-code")[0] == 0
    else:
        Encoder(folder, runtime="onnx")


def _subfolder_repo(tiny: Path, graph: Path) -> dict[str, bytes]:
    """`tiny` in the older sentence-transformers layout, its Transformer module in 0_Transformer/ (modules.json
    says so), shipping its ONNX export there as 0_Transformer/onnx/model.onnx, as a Hub repo's files."""
    repo = {}
    for file in (p for p in tiny.rglob("*") if p.is_file()):
        rel = file.relative_to(tiny).as_posix()
        top = rel in ("modules.json", "README.md", "config_sentence_transformers.json") or "/" in rel
        repo[rel if top else f"0_Transformer/{rel}"] = file.read_bytes()
    modules = json.loads(repo["modules.json"])
    modules[0]["path"] = "0_Transformer"
    repo["modules.json"] = json.dumps(modules).encode()
    repo["0_Transformer/onnx/model.onnx"] = graph.read_bytes()
    return repo


def test_a_hub_repo_with_its_onnx_file_in_the_transformer_subfolder_runs_that_file(tiny, tiny_onnx, tmp_path,
                                                                                    monkeypatch, online_hub):  # noqa: F811
    """The onnx runtime runs the Transformer module folder's onnx/model.onnx (0_Transformer/onnx/model.onnx in
    that layout, docs/runtimes.md), but a Hub download asked only for onnx/model.onnx at the root: it came without
    the repo's file, fetched the torch weights and exported them. modules.json comes first now, then its file."""
    import huggingface_hub
    from test_rev1_57 import _CountingHub

    from tokenpool import Encoder

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "exports"))
    repo = _subfolder_repo(tiny, tiny_onnx)
    online_hub(repo, tmp_path / "snapshot")
    encoder = Encoder("org/st-subfolder", runtime="onnx")
    assert encoder.runner.path == (tmp_path / "snapshot" / "0_Transformer" / "onnx" / "model.onnx").absolute()
    assert not (tmp_path / "snapshot" / "0_Transformer" / "model.safetensors").exists()  # no torch weights fetched
    assert not (tmp_path / "exports").exists()  # nothing exported
    texts = ["the repo's own ONNX file", "not an export of its torch weights"]
    expected = Encoder(tiny, device="cpu").encode(texts)
    np = pytest.importorskip("numpy")
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)
    hub = _CountingHub(repo, tmp_path / "snapshot")  # complete now: a later online load asks the Hub nothing
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    assert Encoder("org/st-subfolder", runtime="onnx").runner.path == encoder.runner.path and hub.asked == []


_MESSAGE = {"text": {"method": "forward", "method_output_name": "last_hidden_state"},
            "message": {"method": "forward", "method_output_name": "last_hidden_state"}}  # fmt: skip


@pytest.mark.parametrize(("key", "value"), [
    ("processing_kwargs", {"text": {"max_length": 6}}), ("processing_kwargs", {"common": {"truncation": False}}),
    ("query_length", 6), ("document_length", 6), ("query_expansion", {"strategy": "fixed", "attend": True, "length": 32}),
    ("modality_config", _MESSAGE),
])  # fmt: skip
def test_transformer_config_options_that_change_the_tokens_are_refused(tiny, tmp_path, key, value):
    """sentence-transformers >= 6.3 tokenises by a Transformer config's ``processing_kwargs`` (the tokenizer's
    call options: max_length, truncation), its per-task ``query_length`` / ``document_length`` /
    ``query_expansion`` (encode_query / encode_document) and renders texts with the chat template when its
    modality_config has a ``message`` entry. tokenpool read none of them and gave other vectors, silently; such a
    folder is refused now (docs/configs.md: options that could change a token are refused), naming the file and
    the option."""
    import shutil

    from sentence_transformers import SentenceTransformer

    from tokenpool import Encoder
    from tokenpool.errors import ConfigError

    folder = Path(shutil.copytree(tiny, tmp_path / "model"))
    config = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps({**config, key: value}))
    if key == "modality_config":  # (a chat template for sentence-transformers to render)
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
        template = "{% for m in messages %}[unused1] {{ m['content'] }} [unused2]{% endfor %}"
        (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "chat_template": template}))
    texts = ["a text long enough to be cut by a limit of six tokens " * 6]
    given = SentenceTransformer(str(folder), device="cpu")
    plain = SentenceTransformer(str(tiny), device="cpu")
    # (the option changes sentence-transformers' vectors: in plain encode, or in encode_query / encode_document)
    assert any(float((a * b).sum()) < 0.9999 for a, b in zip(
        (given.encode(texts), given.encode_query(texts), given.encode_document(texts)),
        (plain.encode(texts), plain.encode_query(texts), plain.encode_document(texts)), strict=True))  # fmt: skip
    with pytest.raises(ConfigError, match=rf"sentence_bert_config\.json: .*{key}"):
        Encoder(folder, device="cpu")


@pytest.mark.parametrize("onnx_file", ["model_O3.onnx", "onnx/model_O3.onnx"])
def test_a_named_onnx_file_of_the_transformer_subfolder_is_fetched_in_a_second_request(tmp_path, monkeypatch,
                                                                                        onnx_file):  # fmt: skip
    """``onnx_file`` names a file in the Transformer folder's onnx/ or in that folder (`find_onnx_file`); in the
    0_Transformer layout both are asked for once modules.json is in, and nothing else (no torch weights)."""
    import huggingface_hub
    from test_rev1_57 import _CountingHub

    from tokenpool.model.hub import download_model
    from tokenpool.model.onnx import find_onnx_file

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    modules = [{"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]  # fmt: skip
    repo = {"modules.json": json.dumps(modules).encode(), "1_Pooling/config.json": b"{}",
            "0_Transformer/config.json": b'{"model_type": "bert"}', "0_Transformer/tokenizer.json": b"{}",
            "0_Transformer/model.safetensors": b"torch weights", "0_Transformer/onnx/model_O3.onnx": b"graph",
            "0_Transformer/onnx/model_O3.onnx_data": b"weights", "onnx/model_O3.onnx": b"another graph"}  # fmt: skip
    hub = _CountingHub(repo, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    folder = download_model("org/st-subfolder", runtime="onnx", onnx_file=onnx_file)
    found = find_onnx_file(folder / "0_Transformer", onnx_file)
    assert found == folder / "0_Transformer" / "onnx" / "model_O3.onnx" and found.read_bytes() == b"graph"
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "0_Transformer/model.safetensors" not in fetched and "0_Transformer/onnx/model_O3.onnx_data" in fetched
    assert len(hub.asked) == 2


def _splade_onnx_only(folder: Path, graph: Path) -> Path:
    """``folder`` (a copy of `tiny`) as a SPLADE folder whose only weights are ``graph`` in onnx/model.onnx."""
    import shutil

    from tokenpool.model.configs import PoolingConfig

    (folder / "model.safetensors").unlink()
    (folder / "onnx").mkdir()
    shutil.copy(graph, folder / "onnx" / "model.onnx")
    PoolingConfig(strategies=("splade",)).save(folder)
    return folder


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_splade_folder_of_onnx_weights_only_is_refused_by_inspect_as_by_the_runtime(run, tiny_copy, tiny_onnx,
                                                                                       tmp_path, runtime):  # fmt: skip
    """The onnx runtime runs no SPLADE model (it needs the MLM logits), the torch runtime no folder without torch
    weights: of a SPLADE folder of ONNX weights only, each refusal advised the other runtime (a loop; inspect in
    the Python spelling ``runtime='torch'``, a flag it does not have). Inspect, embed and the Encoder say one
    thing now, whichever runtime is asked: no runtime can run it."""
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    folder = _splade_onnx_only(tiny_copy, tiny_onnx)
    said = (f"no runtime can run {folder}: splade pooling needs the MLM logits of torch weights (one of "
            "model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json), and "
            "it has only ONNX weights (onnx/model.onnx), which give none")  # fmt: skip
    with pytest.raises(ModelFolderError) as refused:
        Encoder(folder, runtime=runtime)
    assert str(refused.value) == said
    code, out, err = run("inspect", folder)
    assert (code, out, err) == (2, "", f"tokenpool inspect: error: {said}\n")
    (tmp_path / "in.txt").write_text("a text\n")
    code, out, err = run("embed", tmp_path / "in.txt", "--model", folder, "--runtime", runtime,
                         "--output", tmp_path / "v.npy")  # fmt: skip
    assert (code, out, err) == (2, "", f"tokenpool embed: error: {said}\n")


def test_a_splade_hub_repo_run_by_the_onnx_runtime_is_still_told_to_use_torch(tiny_copy, tiny_onnx, tmp_path,
                                                                              online_hub):  # noqa: F811
    """A Hub snapshot fetched for the onnx runtime holds no torch weights although its repo may: the torch
    runtime would fetch them, so the onnx runtime's refusal of a SPLADE repo names that runtime."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    folder = _splade_onnx_only(tiny_copy, tiny_onnx)
    repo = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    online_hub({**repo, "model.safetensors": b"torch weights"}, tmp_path / "models--org--splade" / "snapshots" / "1")
    with pytest.raises(OptionError, match=r"splade pooling is not supported by the onnx runtime .*use runtime='torch'"):
        Encoder("org/splade", runtime="onnx")


def test_serve_names_a_listed_models_options_as_written_in_its_list(run, tiny_copy, tmp_path):
    """serve's --model NAME=FOLDER,OPTION=VALUE options were named with a space where the list has '='
    ("use --model a=...,runtime torch"), and the runtime of a list that gives none (the command line's) as the
    list's ("got --model a=...,runtime torch"). Checked before any server starts."""
    from tokenpool.model.configs import PoolingConfig
    from tokenpool.model.options import spell, spelled_as

    PoolingConfig(strategies=("splade",)).save(tiny_copy)
    code, out, err = run("serve", "--model", f"a={tiny_copy},runtime=onnx")
    assert code == 2 and len(err.splitlines()) == 1 and err.strip().endswith("use --model a=...,runtime=torch"), err
    code, out, err = run("serve", "--model", f"a={tiny_copy},onnx-file=x.onnx")
    assert code == 2 and err.strip().endswith(
        "--model a=...,onnx-file=x.onnx needs --model a=...,runtime=onnx (the runtime is 'torch')"), err
    with spelled_as({"normalize": "--model a=...,normalize"}):
        assert [spell("normalize", value) for value in (True, False)] == [
            "--model a=...,normalize=true", "--model a=...,normalize=false"]  # (as the list takes them)


def test_an_onnx_file_at_the_top_of_a_folder_without_torch_weights_is_named_not_exported(run, tiny, tiny_onnx,
                                                                                          tmp_path, monkeypatch):  # fmt: skip
    """A folder whose only weights are a top-level model.onnx: the onnx runtime, given no ``onnx_file``, tried
    to export the torch weights (transformers: "no file named model.safetensors"). It names the file to pass, as
    inspect does."""
    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "exports"))
    folder = onnx_only_copy(tiny, tiny_onnx, tmp_path / "onnx-only", "model.onnx")
    with pytest.raises(ModelFolderError, match=r"it has only ONNX weights \(model\.onnx\).*onnx_file='model\.onnx'"):
        Encoder(folder, runtime="onnx")
    (tmp_path / "in.txt").write_text("a text\n")
    code, out, err = run("embed", tmp_path / "in.txt", "--model", folder, "--runtime", "onnx",
                         "--output", tmp_path / "v.npy")  # fmt: skip
    assert code == 2 and len(err.splitlines()) == 1 and err.strip().endswith("--onnx-file model.onnx"), err


def test_a_variant_of_a_hub_repos_onnx_file_fetches_that_file_not_the_torch_weights(run, tiny, tiny_onnx, tmp_path,
                                                                                    monkeypatch, online_hub):  # noqa: F811
    """export-onnx's variants need "onnx + onnxruntime, no torch": of a Hub id, it downloaded the torch weights
    only, so ``--onnx-file model.onnx`` was "not found" and without it the repo's onnx/model.onnx was never used
    (its torch weights were exported instead). The repo's ONNX file is fetched now, as the onnx runtime's."""
    from tokenpool.model.onnx_export import read_record

    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "exports"))
    repo = {p.relative_to(tiny).as_posix(): p.read_bytes() for p in tiny.rglob("*") if p.is_file()}
    online_hub({**repo, "onnx/model.onnx": tiny_onnx.read_bytes()}, tmp_path / "snapshot")
    for n, named in enumerate((["--onnx-file", "model.onnx"], [])):
        code, out, err = run("export-onnx", "org/st", "--optimize", *named, "--output", tmp_path / f"opt{n}.onnx")
        assert code == 0, err
        source = read_record(tmp_path / f"opt{n}.onnx")["source"]["file"]
        assert source == str((tmp_path / "snapshot" / "onnx" / "model.onnx").absolute())
        assert not (tmp_path / "snapshot" / "model.safetensors").exists() and not (tmp_path / "exports").exists()
