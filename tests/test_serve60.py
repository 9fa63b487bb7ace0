"""Stop 60's hunt in `tokenpool serve`: settings a worker's wait cannot take, what /metrics counts as embedded.
Servers bind 127.0.0.1 on free ports and are stopped here."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from clitools import assert_one_error_line
from serve_fakes import FakeRunner, NanRunner, metric_value, post

from tokenpool.errors import OptionError
from tokenpool.serve.batcher import Batcher, Job
from tokenpool.serve.server import start_server
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


def test_an_input_the_model_gives_nan_for_is_not_counted_as_embedded():
    """A row the model gave NaN for fails its request (500) but was counted in tokenpool_inputs_total and
    tokenpool_tokens_total (and tokens/s) as embedded, as a failed pass once was. The counters hold what was
    embedded: the served requests' usage."""
    with start_server(NanRunner(), ServeSettings(max_batch_requests=1)) as server:
        served = post(server, "/v1/embeddings", {"input": ["a b", "c"]})
        assert served.status_code == 200, served.text
        failed = post(server, "/v1/embeddings", {"input": "a nan in many words"})
        assert failed.status_code == 500 and "non-finite" not in failed.text, failed.text
        used = served.json()["usage"]["prompt_tokens"]
        assert metric_value(server, "tokenpool_inputs_total") == 2
        assert metric_value(server, "tokenpool_tokens_total") == used
        assert metric_value(server, "tokenpool_tokens_per_second") * 10 == pytest.approx(used)


def test_the_readme_names_langchain_with_the_setting_the_server_needs():
    """The README listed LangChain among the OpenAI clients served, although its ``OpenAIEmbeddings`` sends
    tiktoken token ids by default, which the server refuses (400) naming the setting that sends text; the README
    names LangChain with that setting."""
    with start_server(FakeRunner(), ServeSettings()) as server:  # what OpenAIEmbeddings sends by default
        refused = post(server, "/v1/embeddings", {"input": [[9906, 1917], [40, 1097]], "model": "m"})
    assert refused.status_code == 400, refused.text
    setting = re.search(r"\w+=False", refused.json()["error"]["message"])[0]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    serve_section = readme.split("## Serving embeddings")[1].split("\n## ")[0]
    mentions = [m.start() for m in re.finditer("LangChain", serve_section)]
    assert mentions and all(setting in serve_section[at:at + 80] for at in mentions), serve_section[:600]
