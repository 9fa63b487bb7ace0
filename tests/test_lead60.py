"""Lead's fixes of stop 60 (defects other helpers reported in files outside their own)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from clitools import assert_one_error_line  # noqa: E402
from test_serve_corners import served  # noqa: E402, F401  (the fixture: what `tokenpool serve` would serve)

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.serve.server import bind  # noqa: E402


def test_an_empty_host_on_the_command_line_is_named_as_its_flag(run, served):  # noqa: F811
    """``tokenpool serve --host ""`` said "host must name an address": the Python name, where every other
    option of the command is named by its flag. Now it says ``--host``; Python's `bind` keeps ``host``."""
    code, _, err = run("serve", "--host", "", "--port", "0")
    assert_one_error_line(code, err, "--host must name an address, got ''")
    assert not served
    with pytest.raises(OptionError, match="^host must name an address"):
        bind("", 0)


def test_served_model_name_help_says_what_the_default_is(run):
    """--served-model-name's help said "default: the model folder's name", but the bundled model (a folder named
    'model') is served as its package's name and a Hub id as org/name (docs/serve.md)."""
    code, out, _ = run("serve", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "default: the model folder's name" not in text
    assert "its parent's for a folder named 'model', a Hub id's org/name" in text


def test_an_install_hint_the_message_already_gives_is_not_repeated(monkeypatch, capsys):
    """``tokenpool evaluate SET --modes bm25`` without bm25s said "... pip install 'tokenpool[bm25]'; this command
    needs: pip install 'tokenpool[bm25]'": the hint twice. A message naming its hint is now printed alone; a bare
    import error still gets it (``embed --ray`` without Ray)."""
    import sys

    from tokenpool.cli.common import run_command
    from tokenpool.errors import require

    monkeypatch.setitem(sys.modules, "bm25s", None)  # (an import of it fails as when it is not installed)
    monkeypatch.setitem(sys.modules, "ray", None)
    assert run_command("evaluate", lambda: require("bm25s", "BM25 needs bm25s: pip install 'tokenpool[bm25]'")) == 2
    err = capsys.readouterr().err
    assert err == "tokenpool evaluate: error: BM25 needs bm25s: pip install 'tokenpool[bm25]'\n"

    def import_ray():
        import ray  # noqa: F401

    assert run_command("embed", import_ray) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("; this command needs: pip install 'tokenpool[ray]'")


def test_boundary_chunks_without_their_library_are_named_as_the_command_line_gives_them(run, tmp_path, monkeypatch):
    """``tokenpool embed ... --chunks boundaries:64`` without semantic-text-splitter said "chunks='boundaries:MAX'
    split texts ...": Python's spelling in a command's message. It now says ``--chunks boundaries:MAX``, once with
    its install hint; Python's `Encoder` keeps ``chunks='boundaries:MAX'``."""
    import sys

    monkeypatch.setitem(sys.modules, "semantic_text_splitter", None)
    source = tmp_path / "in.txt"
    source.write_text("one text.\nanother text.\n", encoding="utf-8")
    code, _, err = run("embed", str(source), "-o", str(tmp_path / "out.parquet"), "--chunks", "boundaries:64")
    assert_one_error_line(code, err, "--chunks boundaries:MAX splits texts with the semantic-text-splitter library")
    assert err.count("pip install 'tokenpool[chunking]'") == 1
    assert not (tmp_path / "out.parquet").exists()
