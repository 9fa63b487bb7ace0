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
