"""Stop 67 review (a): the batcher's re-run of a failed shared forward pass (s67-serve). References are
independent: the fake model's `fake_vector` of each text, or what the same request gets in a pass of its own."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from serve_fakes import FakeRunner, fake_vector, submit_texts

from tokenpool.errors import ModelOutputError
from tokenpool.serve.batcher import Batcher
from tokenpool.serve.settings import ServeSettings


class Tricky(FakeRunner):
    """A model whose pass raises ``error`` at once when it holds a text with "boom" (after the gate, when set);
    a pass holding a text with "tail" yields its rows (NaN for texts with "nan") and then raises."""

    error: Exception = RuntimeError("device-side assert triggered")

    def embed(self, tokens):
        texts = self.row_texts(tokens)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if any("boom" in text for text in texts):
            raise self.error
        for rows, vectors in super().embed(tokens):
            poisoned = np.array([["nan" in texts[i]] for i in rows])
            yield rows, np.where(poisoned, np.float32("nan"), vectors)
        if any("tail" in text for text in texts):
            raise RuntimeError("the runtime failed after its last rows")


def _batcher(runner: FakeRunner) -> Batcher:
    batcher = Batcher(runner, ServeSettings(max_batch_requests=8, max_wait_ms=1000, max_wait_busy_ms=1000))
    batcher.start()
    return batcher


def test_a_cancelled_request_of_a_failed_shared_pass_is_not_run_again():
    """A request whose client went away while its shared pass ran was run again alone when the pass failed: a
    pass for nobody ("a cancelled one stops costing anything after the running pass", the batcher's promise).
    It ends with the pass's error, as before the re-run existed; the other requests are re-run."""
    gate = threading.Event()
    runner = Tricky(gate=gate)
    batcher = _batcher(runner)
    try:
        (good, good_done), (_, bad_done), (gone, gone_done) = (
            submit_texts(batcher, texts) for texts in (["fine words"], ["boom"], ["left early"])
        )
        assert runner.started.wait(20)
        assert batcher.cancel(gone) == 0  # (all its inputs are in the running pass)
        gate.set()
        for done in (good_done, bad_done, gone_done):
            assert done.wait(20)
        assert "left early" not in runner.seen
        assert gone.error is runner.error
        assert good.error is None
        np.testing.assert_array_equal(good.rows, [fake_vector("fine words", runner.width)])
    finally:
        assert batcher.close(10)


@pytest.mark.parametrize("texts", [["tail words", "more"], ["nan tail", "more"]])
def test_a_re_run_request_ends_as_it_does_in_a_pass_of_its_own(texts):
    """Re-run alone after a shared pass failed, a request whose pass raised after all its rows came back was
    failed (its vectors thrown away), and one whose row was NaN got the later error instead of the NaN one: in
    a pass of its own (the reference) the first keeps its vectors and the second its `ModelOutputError`."""
    runner = Tricky()
    batcher = _batcher(runner)
    try:
        alone, done = submit_texts(batcher, texts)
        assert done.wait(20)
        jobs = [submit_texts(batcher, some) for some in (["fine words"], ["boom"], texts)]
        for _, done in jobs:
            assert done.wait(20)
        (good, _), (bad, _), (retried, _) = jobs
        assert bad.error is runner.error and good.error is None
        assert type(retried.error) is type(alone.error)
        if alone.error is None:
            expected = [fake_vector(text, runner.width) for text in texts]
            np.testing.assert_array_equal(alone.rows, expected)
            np.testing.assert_array_equal(retried.rows, expected)
        else:
            assert isinstance(alone.error, ModelOutputError) and str(retried.error) == str(alone.error)
    finally:
        assert batcher.close(10)
