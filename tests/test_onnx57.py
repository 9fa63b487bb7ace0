"""Stop 57, ONNX export and precision evaluation: defects found by the helper's hunt, each pinned against the
documented behaviour or an independent reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    file = tmp_path_factory.mktemp("texts") / "calibration.txt"
    file.write_text("A man is playing a guitar.\nThe cat sat on the mat.\nhello world\nrain in spain\n", "utf-8")
    return file


def test_trust_remote_code_reaches_the_encoders_that_score_a_variant(run, tiny_copy, tiny_onnx, texts_file, tmp_path):
    """A folder whose tokenizer_config.json has an auto_map runs on the onnx runtime with trust (its tokenizer.json,
    no code): `export-onnx --quantize int8 --trust-remote-code` told the user to pass --trust-remote-code."""
    folder = tiny_copy
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "auto_map": {"AutoTokenizer": ["t.T", None]}}))
    target = tmp_path / "q.onnx"
    argv = ["export-onnx", folder, "--onnx-file", tiny_onnx, "--output", target]
    code, _, err = run(*argv, "--quantize", "int8", "--calibration-texts", texts_file, "--force")
    assert code == 2 and "--trust-remote-code" in err and not target.exists()  # refused without trust
    code, out, err = run(*argv, "--quantize", "int8", "--calibration-texts", texts_file, "--force", "--trust-remote-code")
    assert code == 0, err
    assert target.is_file() and str(target) in out


def test_a_record_name_taken_meanwhile_leaves_no_file_behind(tiny, tiny_onnx, tmp_path, monkeypatch):
    """A failed export leaves nothing beside its target (docs/runtimes.md): when the record's name was taken after
    the start-up check, the ONNX file was already linked into place and stayed there, without its record."""
    from tokenpool.errors import CorpusError
    from tokenpool.model import onnx_export

    target = tmp_path / "out" / "opt.onnx"
    stamp = onnx_export._stamp

    def stamp_then_someone_writes_the_record(source, stamped, record):
        stamp(source, stamped, record)
        onnx_export.record_path(target).write_text("someone else's\n")

    monkeypatch.setattr(onnx_export, "_stamp", stamp_then_someone_writes_the_record)
    with pytest.raises(CorpusError, match="already exists"):
        onnx_export.make_variant(tiny, tiny_onnx, target, onnx_export.Recipe(optimize=True))
    assert sorted(p.name for p in target.parent.iterdir()) == ["opt.onnx.json"]
    assert onnx_export.record_path(target).read_text() == "someone else's\n"


def test_a_target_folder_that_is_a_file_is_refused_before_any_export(run, tiny_copy, tmp_path, monkeypatch):
    """An existing target is refused before any export runs (docs/runtimes.md); FOLDER/onnx being a file was found
    only after the fp32 export (minutes on a real model) had been made into the cache."""
    folder = tiny_copy
    (folder / "onnx").write_text("not a folder")
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, _, err = run("export-onnx", folder, "--into-folder", "--optimize")
    assert code == 2 and f"cannot write into {str(folder / 'onnx')!r}: not a folder" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "cache").exists()


def test_a_variant_of_an_export_made_on_the_way_records_the_weights(run, tiny_copy, texts_file, tmp_path, monkeypatch):
    """docs/runtimes.md: a variant made from tokenpool's export records the folder's weights, and the runtime
    refuses it once they change. `export-onnx FOLDER --quantize int8` without an fp32 export exports one into the
    cache on the way — without a record, so its variant named no weights and ran on, stale, after a rewrite."""
    from safetensors.numpy import load_file, save_file

    from tokenpool import Encoder
    from tokenpool.errors import ModelFolderError
    from tokenpool.model.onnx_export import read_record

    folder = tiny_copy
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    target = tmp_path / "q.onnx"
    code, _, err = run("export-onnx", folder, "--quantize", "int8", "--calibration-texts", texts_file, "--output",
                       target, "--force")  # fmt: skip
    assert code == 0, err
    assert read_record(target)["source"]["weights"]["digests"]["model.safetensors"]
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    save_file({**weights, name: weights[name] + 1}, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match="model.safetensors"):
        Encoder(folder, runtime="onnx", onnx_file=target)


def test_static_activations_after_optimize_are_refused_not_mislabelled(tiny, tiny_onnx, tmp_path):
    """`--optimize --quantize int8 --activations static` wrote a graph without a single QuantizeLinear (onnxruntime's
    static quantiser finds no type for the fused nodes' outputs: weights only, fp32 products) whose record said
    "activations uint8 with min/max ranges calibrated". Refused now, before any work; unfused static still works."""
    import onnx

    from tokenpool.errors import OptionError
    from tokenpool.model.onnx_export import Recipe, make_variant

    texts = ["A man is playing a guitar.", "The cat sat on the mat.", "hello world", "rain in spain"] * 3
    with pytest.raises(OptionError, match="static.* cannot follow .*optimize"):
        make_variant(tiny, tiny_onnx, tmp_path / "os.onnx", Recipe(optimize=True, quantize="int8", activations="static"),
                     texts=texts, force=True)  # fmt: skip
    assert not list(tmp_path.iterdir())
    make_variant(tiny, tiny_onnx, tmp_path / "s.onnx", Recipe(quantize="int8", activations="static"), texts=texts, force=True)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "s.onnx")).graph.node}
    assert "QuantizeLinear" in ops  # (activations quantised with calibrated ranges, as the record says)


def test_a_quantized_file_is_not_taken_as_a_variants_fp32_source(tiny, tiny_onnx, tmp_path):
    """--onnx-file is the fp32 file a variant starts from and is scored against (docs/runtimes.md); an int8 file
    given there was quantized (or optimised) again and recorded "cosine vs its fp32 source" 1.000000."""
    from tokenpool.errors import ModelFolderError
    from tokenpool.model.onnx_export import Recipe, make_variant

    texts = ["A man is playing a guitar.", "The cat sat on the mat.", "hello world"]
    int8 = tmp_path / "q.onnx"
    make_variant(tiny, tiny_onnx, int8, Recipe(quantize="int8"), texts=texts, force=True)
    for recipe in (Recipe(quantize="int8"), Recipe(optimize=True)):
        with pytest.raises(ModelFolderError, match="is already quantized .*MatMulInteger"):
            make_variant(tiny, int8, tmp_path / "again.onnx", recipe, texts=texts, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.json"]
