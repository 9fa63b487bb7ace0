"""Stop 47's hunt in `tokenpool serve`: what a long-running server, its clients and its protocols run into.

Servers bind 127.0.0.1 on free ports and are stopped here; the fake runner (`serve_fakes.FakeRunner`) or a tiny
random BERT keeps them fast."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from clitools import assert_one_error_line  # noqa: E402
from serve_fakes import FakeRunner  # noqa: E402
from test_serve_corners import served  # noqa: E402, F401  (the fixture: what `tokenpool serve` would serve)

from tokenpool.errors import OptionError  # noqa: E402
from tokenpool.serve import metrics as metrics_module  # noqa: E402
from tokenpool.serve.metrics import Metrics  # noqa: E402
from tokenpool.serve.server import start_server  # noqa: E402
from tokenpool.serve.settings import ServeSettings  # noqa: E402


def test_a_server_never_scraped_keeps_one_window_of_passes(monkeypatch):
    """The tokens-per-second window forgot old passes only when /metrics was scraped: a server nobody scraped
    kept a record of every forward pass since it started (memory growing without bound). Now each pass drops
    the records older than the window, and the gauge still reads the window's tokens."""
    clock = [0.0]
    monkeypatch.setattr(metrics_module.time, "monotonic", lambda: clock[0])
    model = Metrics(window=10.0).for_model("m")
    for _ in range(1000):
        clock[0] += 1.0
        model.observe_pass(inputs=1, requests=1, padded_tokens=4, tokens=3, seconds=0.01)
    assert len(model._recent) <= 11
    assert model.tokens_per_second() == pytest.approx(3 * 11 / 10.0)


def test_served_model_names_given_as_one_string_is_refused_not_split_into_letters():
    """``ServeSettings(served_model_names="my-model")`` served the model as "m", "y", "-", ... (a string is a
    sequence of names, one per character): /v1/models listed letters, and with strict_model_name "my-model"
    itself was a 404. Now a string (or None) is refused, naming the value; a list or tuple is as before."""
    for value in ("my-model", None):
        with pytest.raises(OptionError, match="served_model_names must be a list or tuple of names, got"):
            ServeSettings(served_model_names=value)
    assert ServeSettings(served_model_names=["a", "b"]).served_model_names == ("a", "b")


@pytest.mark.parametrize("name", ["strict_model_name", "auto_truncate"])
@pytest.mark.parametrize("value", ["false", "no", 0, 1, None])
def test_a_switch_of_the_settings_takes_true_or_false_only(name, value):
    """``ServeSettings(auto_truncate="false")`` (a value read from an environment variable or a config file)
    turned TEI's auto-truncation on, and ``strict_model_name="no"`` the 404 for unknown models: any non-empty
    string is true. Now each switch takes True or False only, and names the value it was given."""
    with pytest.raises(OptionError, match=f"{name} must be True or False, got {value!r}"):
        ServeSettings(**{name: value})
    assert getattr(ServeSettings(**{name: True}), name) is True


@pytest.mark.parametrize("key", ["clé-secrète", "two\nlines", "k\x00y"])
def test_an_api_key_no_client_can_send_is_refused_at_start(key):
    """A key with a character outside printable ASCII served a server no client could use: the openai client
    fails before sending it (UnicodeEncodeError), requests sends it as Latin-1 (the server compared UTF-8:
    401), and a newline cannot be sent at all. Now it is refused at start-up, naming its position, never the
    key; an inner space is sent as is and stays allowed."""
    with pytest.raises(OptionError, match="printable ASCII") as refused:
        ServeSettings(api_key=key)
    assert key not in str(refused.value)
    assert not any(char in str(refused.value) for char in key if not " " <= char <= "~")
    assert ServeSettings(api_key="s3cret with space!~").api_key == "s3cret with space!~"


@pytest.mark.parametrize("host", ["", " "])
def test_an_empty_host_is_refused_not_every_interface(run, served, host):  # noqa: F811
    """``tokenpool serve --host "$HOST"`` with HOST unset (and ``start_server(runner, host="")``) listened on
    every interface, 0.0.0.0, where the default is this machine only: the OS reads "" as "any address". Now an
    empty host is refused before anything loads, as an empty --api-key is."""
    code, _, err = run("serve", "--host", host, "--port", "0")
    assert_one_error_line(code, err, "host must name an address", "0.0.0.0 for every interface")
    assert not served
    with pytest.raises(OptionError, match="host must name an address"):
        start_server(FakeRunner(), ServeSettings(), host=host)


def test_an_unknown_log_level_is_named_not_a_key_error():
    """``start_server(runner, log_level="verbose")`` raised a bare ``KeyError: 'verbose'`` from inside uvicorn.
    Now it is an OptionError naming the argument, its value and the levels; a level in capitals (uvicorn's
    own reading) still starts."""
    with pytest.raises(OptionError, match="log_level must be one of critical, error, warning, info, debug, trace, got 'verbose'"):
        start_server(FakeRunner(), ServeSettings(), log_level="verbose")
    with start_server(FakeRunner(), ServeSettings(), log_level="ERROR") as server:
        assert server.url.startswith("http://127.0.0.1:")


def test_serve_without_httptools_says_what_to_install_before_loading(run, served, monkeypatch):  # noqa: F811
    """The server runs on uvicorn's httptools protocol (`uvicorn[standard]`, in the serve extra), but the
    command's check of what is installed left it out: with plain ``pip install uvicorn`` the model loaded, then
    the command stopped on "No module named 'httptools'" without the install hint. Now it is checked with the
    others, first."""
    monkeypatch.setitem(sys.modules, "httptools", None)  # (import httptools: ImportError)
    code, _, err = run("serve", "--port", "0")
    assert_one_error_line(code, err, "httptools", "pip install 'tokenpool[serve]'")
    assert not served


@pytest.mark.parametrize("given", [".", "./", "../{name}"])
def test_a_model_served_from_a_relative_folder_is_named_by_the_folder(run, served, tiny_bert_folder, monkeypatch, given):  # noqa: F811
    """``cd my-model && tokenpool serve --model .`` served the model as "." (/v1/models listed ".", every answer
    said "model": ".", and with --strict-model-name clients had to send "."), where the default name is the
    folder's. Now a relative folder is named as its absolute path: the folder's own name."""
    monkeypatch.chdir(tiny_bert_folder)
    code, _, err = run("serve", "--port", "0", "--model", given.format(name=tiny_bert_folder.name))
    assert code == 0, err
    assert served.runners[-1].name == tiny_bert_folder.name
