"""Stop 60's hunt in `tokenpool serve`: settings a worker's wait cannot take, what /metrics counts as embedded.
Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import threading
import time

import pytest
from clitools import assert_one_error_line
from serve_fakes import FakeRunner

from tokenpool.errors import OptionError
from tokenpool.serve.batcher import Batcher, Job
from tokenpool.serve.settings import ServeSettings


@pytest.mark.parametrize("name", ["max_wait_ms", "max_wait_busy_ms", "drain_timeout", "read_timeout"])
def test_a_wait_longer_than_a_thread_can_wait_is_refused_at_start(name):
    """``max_wait_ms=1e13`` (and the other waits past `threading.TIMEOUT_MAX`) was accepted; the first request
    then stopped the model worker with an OverflowError (a 500, then 503 for every request). Such a wait is now
    refused when the settings are made, naming it."""
    unit = 1000 if name.endswith("_ms") else 1
    with pytest.raises(OptionError, match=rf"^{name} must be a number from 0 to \d+, got 1\d+\.0$"):
        ServeSettings(**{name: 1e10 * unit})
    ServeSettings(**{name: threading.TIMEOUT_MAX * unit})  # the longest a thread waits is taken


def test_the_longest_accepted_wait_leaves_the_worker_running():
    """A worker waiting the longest accepted ``max_wait_ms`` for company keeps running, and a close still ends
    its wait and answers the request."""
    runner = FakeRunner()
    batcher = Batcher(runner, ServeSettings(max_wait_ms=threading.TIMEOUT_MAX * 1000, workers=1))
    batcher.start()
    done = threading.Event()
    tokens = runner.tokenize(["a few words"], "", "right")
    job = Job(tokens.lengths, tokens, deliver=lambda _job: done.set())
    batcher.submit(job)
    time.sleep(0.3)
    assert batcher.alive and not done.is_set()
    assert batcher.close(10) and done.is_set() and job.error is None


def test_serve_refuses_a_wait_past_the_longest_in_one_line(run, monkeypatch):
    from tokenpool.cli import serve

    def loaded(*args):
        raise AssertionError("the model was loaded (and then served for ever)")

    monkeypatch.setattr(serve, "_runner", loaded)
    code, _, err = run("serve", "--max-wait-ms", "1e13", "--port", 0)
    assert_one_error_line(code, err, "--max-wait-ms must be a number from 0 to")
