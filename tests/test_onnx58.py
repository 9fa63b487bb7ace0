"""Stop 58, ONNX export and runtime: defects found by the helper, each pinned against the documented behaviour
(docs/runtimes.md: tokenpool never replaces nor deletes a file it did not create) or an independent reference."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_the_copy_fallback_never_removes_a_file_someone_put_at_the_target(tmp_path, monkeypatch):
    """Without hard links, `link_into_place` creates the target and copies into it; when the copy failed, it
    removed whatever then stood at the target, also a file someone had renamed there meanwhile."""
    from tokenpool.model import onnx as onnx_module

    made, target = tmp_path / "made.onnx", tmp_path / "model.onnx"
    made.write_bytes(b"the export's bytes")

    def no_hard_links(source, destination):
        raise PermissionError("hard links not supported here")

    def someone_replaces_the_target_then_the_copy_fails(source, destination, length):
        mine = tmp_path / "mine.onnx"
        mine.write_bytes(b"someone else's model")
        os.replace(mine, target)
        raise OSError("no space left on device")

    monkeypatch.setattr(onnx_module.os, "link", no_hard_links)
    monkeypatch.setattr(onnx_module.shutil, "copyfileobj", someone_replaces_the_target_then_the_copy_fails)
    with pytest.raises(OSError, match="no space left"):
        onnx_module.link_into_place(made, target)
    assert target.read_bytes() == b"someone else's model"


def test_the_copy_fallback_removes_its_own_partial_copy(tmp_path, monkeypatch):
    """The other half of the same rule: the target the failed copy created itself is removed."""
    from tokenpool.model import onnx as onnx_module

    made, target = tmp_path / "made.onnx", tmp_path / "model.onnx"
    made.write_bytes(b"the export's bytes")

    def no_hard_links(source, destination):
        raise PermissionError("hard links not supported here")

    def fails(source, destination, length):
        destination.write(b"the exp")
        raise OSError("no space left on device")

    monkeypatch.setattr(onnx_module.os, "link", no_hard_links)
    monkeypatch.setattr(onnx_module.shutil, "copyfileobj", fails)
    with pytest.raises(OSError, match="no space left"):
        onnx_module.link_into_place(made, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made.onnx"]


def _export_with_external_data(monkeypatch) -> None:
    """Make `export_onnx` write its graph's weights to ``model.onnx.data`` beside it, as torch does for a model
    over 2 GiB (a tiny model with external data stands for a big one)."""
    import onnx

    from tokenpool.model import onnx as onnx_module

    export = onnx_module.export_onnx

    def export_big(folder, target, **options):
        made = export(folder, target, **options)
        model = onnx.load(str(made))
        onnx.save_model(model, str(made), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
        return made

    monkeypatch.setattr(onnx_module, "export_onnx", export_big)


@pytest.mark.parametrize("meanwhile", [False, True])
def test_a_failed_publish_removes_the_weight_files_this_export_linked(tiny, tmp_path, monkeypatch, meanwhile):
    """A model over 2 GiB: `export_fp32` linked its external weight files beside the target before `_publish`; when
    publishing failed they stayed there, without a graph. Now the files this export linked are removed, and a file
    someone else put at such a name meanwhile is left alone."""
    from tokenpool.model import onnx_export

    _export_with_external_data(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    data = out / "model.onnx.data"

    def publish_fails(made, target, record):
        assert data.is_file()  # (linked before the graph)
        if meanwhile:
            mine = tmp_path / "mine.data"
            mine.write_bytes(b"someone else's weights")
            os.replace(mine, data)
        raise OSError("no space left on device")

    monkeypatch.setattr(onnx_export, "_publish", publish_fails)
    with pytest.raises(OSError, match="no space left"):
        onnx_export.export_fp32(tiny, out / "model.onnx")
    assert sorted(p.name for p in out.iterdir()) == (["model.onnx.data"] if meanwhile else [])
    if meanwhile:
        assert data.read_bytes() == b"someone else's weights"


def test_an_export_with_external_data_is_published_and_runs(tiny, tmp_path, monkeypatch):
    """The same export, not failing: graph, weights and record land beside each other and the runtime runs them
    as it runs the one-file export."""
    from tokenpool import Encoder
    from tokenpool.model import onnx_export

    _export_with_external_data(monkeypatch)
    target = tmp_path / "out" / "model.onnx"
    onnx_export.export_fp32(tiny, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.data", "model.onnx.json"]
    texts = ["A man is playing a guitar.", "hello"]
    big = Encoder(tiny, runtime="onnx", onnx_file=target).encode(texts)
    torch = Encoder(tiny, device="cpu").encode(texts)
    assert abs(big - torch).max() < 1e-5


def test_the_onnx_runtimes_dtype_refusal_names_what_the_caller_gave(run, tiny, tiny_onnx, tmp_path):
    """A command-line user never passes None: `--runtime onnx --dtype float16` said "--dtype must be None". The
    message names the flag with its value (the parameter, from Python) and what to do: leave it out."""
    from tokenpool import Encoder
    from tokenpool.errors import OptionError

    texts = tmp_path / "in.txt"
    texts.write_text("hello\n", encoding="utf-8")
    argv = ["embed", texts, "-o", tmp_path / "out.npy", "--model", tiny, "--runtime", "onnx", "--onnx-file", tiny_onnx]
    code, _, err = run(*argv, "--dtype", "float16")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "takes no --dtype float16: leave that option out" in err and "None" not in err
    with pytest.raises(OptionError, match="takes no dtype='float16': leave that option out"):
        Encoder(tiny, runtime="onnx", onnx_file=tiny_onnx, dtype="float16")
    assert run(*argv, "--dtype", "float32")[0] == 0  # (what the message offers is taken)


def _subfolder_layout(tiny: Path, root: Path) -> Path:
    """``tiny`` as a sentence-transformers folder whose modules.json keeps the Transformer in ``0_Transformer``."""
    modules = json.loads((tiny / "modules.json").read_text(encoding="utf-8"))
    shutil.copytree(tiny, root / "0_Transformer", ignore=shutil.ignore_patterns("modules.json", "1_*", "2_*"))
    for module in modules[1:]:
        shutil.copytree(tiny / module["path"], root / module["path"])
    modules[0]["path"] = "0_Transformer"
    (root / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return root


def test_into_folder_writes_where_the_runtime_and_the_docs_say(run, tiny, tmp_path, monkeypatch):
    """docs/runtimes.md said `--into-folder` writes `FOLDER/onnx/model.onnx`; for a folder whose modules.json keeps
    the Transformer in a subfolder it writes that subfolder's onnx/, which is where the runtime looks (the file
    there is the one it runs, with no export of its own). The docs and --help now say so."""
    from tokenpool import Encoder

    root = _subfolder_layout(tiny, tmp_path / "model")
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    code, out, err = run("export-onnx", root, "--into-folder")
    assert code == 0, err
    written = root / "0_Transformer" / "onnx" / "model.onnx"
    assert out.splitlines()[0] == str(written) and written.is_file()
    texts = ["A man is playing a guitar.", "hello"]
    encoder = Encoder(root, runtime="onnx")
    assert encoder.runner.path == written and not (tmp_path / "cache").exists()
    reference = Encoder(tiny, device="cpu").encode(texts)  # (the same model in the usual layout, on torch)
    assert abs(encoder.encode(texts) - reference).max() < 1e-5
    docs = " ".join((Path(__file__).parents[1] / "docs" / "runtimes.md").read_text(encoding="utf-8").split())
    assert "`FOLDER/0_Transformer/onnx/model.onnx`" in docs and "`--into-folder` writes `FOLDER/onnx/" not in docs
    code, out, _ = run("export-onnx", "--help")
    assert "FOLDER/0_Transformer/onnx/" in " ".join(out.split())


def _activation_ranges(path: Path) -> dict[str, tuple[float, float]]:
    """The (min, max) each uint8 activation QuantizeLinear of a QDQ graph stands for: from its scale and zero
    point, rmin = -zp * scale, rmax = (255 - zp) * scale."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    ranges = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in values:  # (an activation, not a weight)
            scale, zero = float(values[node.input[1]]), int(values[node.input[2]])
            ranges[node.input[0]] = (-zero * scale, (255 - zero) * scale)
    return ranges


def test_static_calibration_ranges_cover_every_batch(tiny, tiny_onnx, tmp_path):
    """Static int8 asked onnxruntime to keep at most 8 batches' outputs (CalibMaxIntermediateOutputs=8), which
    drops them without taking their ranges (onnxruntime #18893): ranges came from the batches after the last
    multiple of 8 only, and exactly 8 or 16 batches failed with "No data is collected.". The ranges of 9 batches
    must be the union of each batch's own (each calibrated alone: one batch is never dropped)."""
    from tokenpool import Encoder
    from tokenpool.model.onnx_export import Recipe, quantize_onnx

    encoder = Encoder(tiny, runtime="onnx", onnx_file=tiny_onnx)
    texts = ["In vitro studies show that the protein binds its receptor with high affinity. " * 3, "hello"]
    texts += [f"sentence number {i} about a cat" for i in range(7)]
    feeds = [encoder.runner.feed(b.input_ids, b.attention_mask) for b in encoder.tokenization.id_batches(
        encoder.tokenize(texts).ids, 1)]  # fmt: skip
    assert len(feeds) == 9
    recipe = Recipe(quantize="int8", activations="static")
    alone = []
    for i, feed in enumerate(feeds):
        quantize_onnx(tiny_onnx, tmp_path / f"one{i}.onnx", recipe, calibration=[feed])
        alone.append(_activation_ranges(tmp_path / f"one{i}.onnx"))
    quantize_onnx(tiny_onnx, tmp_path / "all.onnx", recipe, calibration=feeds)
    together = _activation_ranges(tmp_path / "all.onnx")
    assert together.keys() == alone[0].keys()
    for name, (low, high) in together.items():
        union = (min(r[name][0] for r in alone), max(r[name][1] for r in alone))
        step = (union[1] - union[0]) / 255  # (the zero point is rounded: each end is known to half a step)
        assert low == pytest.approx(union[0], abs=step) and high == pytest.approx(union[1], abs=step), name
    quantize_onnx(tiny_onnx, tmp_path / "eight.onnx", recipe, calibration=feeds[:8])  # (was "No data is collected")


def test_static_calibration_sees_a_left_padded_batch_as_the_runtime_runs_it(tiny, tiny_copy, tiny_onnx, tmp_path):
    """The runtime runs a left-padded batch right-aligned (`OnnxRunner._run`: a BERT's positions count from the
    first column); static calibration fed the left-padded batches as they came, so its ranges were taken on
    activations the runtime never computes (all-MiniLM-L6-v2 made left-padded, 200 STS-B texts: 1st-percentile
    cosine 0.906, against 0.912 fed right-aligned). A left-padded copy of a folder must calibrate to the ranges of
    the folder itself."""
    from tokenpool import Encoder
    from tokenpool.model.onnx_export import Recipe, make_variant

    config = tiny_copy / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "padding_side": "left"}), encoding="utf-8")
    texts = ["In vitro studies show that the protein binds its receptor with high affinity.", "hello", "a cat"] * 3
    left = Encoder(tiny_copy, runtime="onnx", onnx_file=tiny_onnx)
    batch = next(iter(left.tokenization.id_batches(left.tokenize(texts).ids, 9)))
    assert batch.attention_mask[:, 0].min() == 0  # (the copy pads on the left)
    recipe = Recipe(quantize="int8", activations="static")
    ranges = []
    for folder, name in ((tiny, "right.onnx"), (tiny_copy, "left.onnx")):
        make_variant(folder, tiny_onnx, tmp_path / name, recipe, texts=texts, force=True)
        ranges.append(_activation_ranges(tmp_path / name))
    assert ranges[0].keys() == ranges[1].keys()
    for name, (low, high) in ranges[1].items():
        assert (low, high) == pytest.approx(ranges[0][name], rel=1e-6, abs=1e-7), name


def test_no_torch_to_export_with_names_the_flag_on_the_command_line(run, tiny, tmp_path, monkeypatch):
    """Without torch, a folder with no ONNX file is refused with advice; on the command line it said "or pass
    onnx_file", the Python parameter, where the flag is --onnx-file."""
    from tokenpool.model import onnx as onnx_module

    monkeypatch.setattr(onnx_module, "_importable", lambda name: False)  # (torch and transformers missing)
    monkeypatch.setenv("TOKENPOOL_CACHE", str(tmp_path / "cache"))
    texts = tmp_path / "in.txt"
    texts.write_text("hello\n", encoding="utf-8")
    code, _, err = run("embed", texts, "-o", tmp_path / "out.npy", "--model", tiny, "--runtime", "onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.rstrip().endswith("where torch is installed, or pass --onnx-file"), err


def test_a_typed_graph_of_an_untyped_model_names_the_flag_on_the_command_line(run, tiny_copy, tiny_onnx, tmp_path):
    """A graph taking token_type_ids for a GPT-2-like model is refused, advising to pass another file "as
    onnx_file": on the command line that is --onnx-file."""
    config = tiny_copy / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "gpt2"}), encoding="utf-8")
    texts = tmp_path / "in.txt"
    texts.write_text("hello\n", encoding="utf-8")
    argv = ["embed", texts, "-o", tmp_path / "out.npy", "--model", tiny_copy, "--runtime", "onnx"]
    code, _, err = run(*argv, "--onnx-file", tiny_onnx)
    assert code == 2 and "has no token-type table" in err, err
    assert err.rstrip().endswith("pass the file it writes as --onnx-file"), err
