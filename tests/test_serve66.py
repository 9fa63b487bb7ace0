"""Stop 66 (the HTTP server): defects fixed (each test failing before its fix) and items settled (the API key
gate's separator: a pinned rule). Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import signal
import sys
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_fakes import spawn  # noqa: E402

# the command, with a note on stderr of the objects the interpreter's last collections will walk (atexit
# handlers run after `main` returns, before the interpreter's teardown)
_COMMAND = ("import atexit, gc, sys; atexit.register(lambda: print('tracked objects', len(gc.get_objects()), "
            "file=sys.stderr)); from tokenpool.__main__ import main; sys.exit(main())")


@pytest.mark.slow
def test_sigterm_after_a_request_leaves_no_objects_to_walk():
    """Stop 66: SIGTERM on an idle server with a real model took 7-8 s to exit after one request (25 s after a
    heavy /tokenize), though the drain itself ended in a fraction of a second: the interpreter's teardown
    walked every object the loaded model and libraries left (~465,000) in its garbage collections. The console
    script's entry point now freezes them once a command returns (`gc.freeze`)."""
    process, url = spawn([sys.executable, "-c", _COMMAND, "serve", "--port", "0", "--workers", "1"])
    try:
        with httpx.Client() as client:
            assert client.post(url + "/embed", json={"inputs": ["one request"]}, timeout=60).status_code == 200
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        waited = time.monotonic() - began
        stderr = process.stderr.read()
        assert code == 0, stderr
        tracked = int(stderr.split("tracked objects ", 1)[1].split()[0])
        # (the objects count, not the wall time, is the assertion: wall times depend on the machine's load)
        assert tracked < 10_000, f"the interpreter's teardown walks {tracked} objects ({waited:.1f} s after SIGTERM)"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_command_that_loaded_a_model_leaves_no_objects_to_walk(tmp_path):
    """Stop 66: the same teardown after `embed` (every command that loads a model paid it once it had finished)."""
    import subprocess
    from pathlib import Path

    corpus = Path(__file__).resolve().parents[1] / "examples" / "corpus.txt"
    out = tmp_path / "out.npy"
    done = subprocess.run([sys.executable, "-c", _COMMAND, "embed", str(corpus), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.exists()
    tracked = int(done.stderr.split("tracked objects ", 1)[1].split()[0])
    assert tracked < 10_000, f"the interpreter's teardown walks {tracked} objects"


@pytest.mark.parametrize("name", ["strict_model_name", "auto_truncate"])
def test_serve_settings_switches_are_the_projects_one_bool_check(name):
    """Stop 66: ServeSettings had a bool check of its own beside `errors.check_bool`, the one every other switch
    of the project passes (EncoderOptions, EncodeRequest): numpy's bools, which those take, were refused here.
    Now the one check, with the same OptionError and message for what is no bool."""
    import numpy as np

    from tokenpool.errors import OptionError, check_bool
    from tokenpool.serve.settings import ServeSettings

    for value in (np.True_, np.False_, True, False):
        stored = getattr(ServeSettings(**{name: value}), name)
        assert stored is check_bool(name, value) and type(stored) is bool
    for value in ("false", 1, None, np.int64(1)):
        with pytest.raises(OptionError) as caught:
            ServeSettings(**{name: value})
        assert str(caught.value) == f"{name} must be True or False, got {value!r}"
        with pytest.raises(TypeError, match=f"^{name} must be True or False"):  # (the same words as check_bool's)
            check_bool(name, value, or_none=False)


@pytest.mark.parametrize(
    ("header", "passes"),
    [(b"Bearer KEY", True), (b"bearer   KEY", True), (b"Bearer\tKEY", False), (b"Bearer\t KEY", False), (None, False)],
)
def test_the_api_key_gate_takes_rfc_6750_credentials(header, passes):
    """Stop 66, settled (no change): RFC 6750 section 2.1 (credentials = "Bearer" 1*SP b64token) and RFC 9110
    section 11.4 (auth-scheme [ 1*SP ... ]) separate the scheme from its token by spaces only; a TAB is no
    separator (vLLM and TEI compare "Bearer " + key exactly), so "Bearer<TAB>KEY" stays a 401."""
    from tokenpool.serve.http import ApiKeyGate

    class Metrics:
        def answered(self, *args):
            pass

    scope = {"type": "http", "path": "/embed", "headers": [] if header is None else [(b"authorization", header)]}
    refusal = ApiKeyGate("KEY", Metrics()).refusal(scope)
    assert (refusal is None) is passes
    if not passes:
        assert refusal.status_code == 401 and (b"www-authenticate", b"Bearer") in refusal.raw_headers
