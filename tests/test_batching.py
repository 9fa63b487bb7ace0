"""Token-budget batching and out-of-memory splitting (a runner that fails above a size, as a GPU would)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpool.model.batching import budget_groups, forward_splitting, is_out_of_memory


@given(
    lengths=st.lists(st.integers(0, 600), min_size=0, max_size=200),
    batch_size=st.integers(1, 64),
    budget=st.one_of(st.none(), st.integers(1, 20000)),
)
def test_budget_groups_cover_every_row_once_within_both_limits(lengths, batch_size, budget):
    ordered = np.sort(np.asarray(lengths, dtype=np.int64))[::-1]
    groups = list(budget_groups(ordered, batch_size, budget))
    covered = [i for g in groups for i in range(*g.indices(len(ordered)))]
    assert covered == list(range(len(ordered)))
    for g in groups:
        rows = ordered[g]
        assert 1 <= len(rows) <= batch_size
        padded = len(rows) * max(1, int(rows.max()))
        if budget is not None:
            assert padded <= budget or len(rows) == 1  # a single over-long row still runs, alone
            # greedy: one more row would have broken a limit
            if g.stop < len(ordered):
                assert len(rows) == batch_size or (len(rows) + 1) * max(1, int(rows[0])) > budget
        elif g.stop < len(ordered):
            assert len(rows) == batch_size


def test_is_out_of_memory_recognises_the_runtimes_messages():
    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name
        pass

    assert is_out_of_memory(OutOfMemoryError("CUDA error"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(
        RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory")
    )
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("bad input"))


class OomAbove:
    """Wraps a runner: raises CUDA's out-of-memory error when a batch has more than ``limit`` padded tokens."""

    def __init__(self, runner, limit: int) -> None:
        self.inner, self.limit, self.shapes, self.failures = runner, limit, [], 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, input_ids, attention_mask):
        self._allocate(input_ids)
        return self.inner.forward(input_ids, attention_mask)

    def pass_forward(self, input_ids, attention_mask):  # a pass side by side with another (CPU, 2+ threads)
        self._allocate(input_ids)
        return self.inner.pass_forward(input_ids, attention_mask)

    def _allocate(self, input_ids) -> None:
        if input_ids.size > self.limit:
            self.failures += 1
            raise RuntimeError(f"CUDA out of memory. Tried to allocate {input_ids.size} tokens")
        self.shapes.append(input_ids.shape)


@pytest.fixture(scope="module")
def encoder():
    from tokenpool import Encoder

    return Encoder(device="cpu")


TEXTS = [
    "A man is playing a guitar.",
    "short",
    "The quick brown fox jumps over the lazy dog " * 6,
    "Ünïcödé text with accents",
    "a b c d e f g h i j k l m n o p",
    "",
    "Another sentence about cats and dogs living together in a house.",
    "x " * 120,
] * 3


def test_oom_batches_are_split_and_the_job_goes_on(encoder, monkeypatch):
    reference = encoder.encode(TEXTS, batch_size=64)
    flaky = OomAbove(encoder.runner, limit=150)
    monkeypatch.setattr(encoder, "runner", flaky)
    vectors = encoder.encode(TEXTS, batch_size=64)
    assert flaky.failures > 0
    assert all(rows * width <= 150 for rows, width in flaky.shapes)
    # the halves are trimmed to their own longest row, and give the same vectors (padding is never read)
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=2e-6)


def test_a_single_row_that_does_not_fit_reraises(encoder, monkeypatch):
    monkeypatch.setattr(encoder, "runner", OomAbove(encoder.runner, limit=5))
    with pytest.raises(RuntimeError, match="out of memory"):
        encoder.encode(["a sentence longer than five tokens for sure"])


def test_other_errors_are_not_retried():
    calls = []

    def forward(ids, mask):
        calls.append(ids.shape)
        raise RuntimeError("shape mismatch")

    ids = np.ones((4, 3), dtype=np.int64)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(forward_splitting(forward, np.arange(4), ids, ids.copy()))
    assert calls == [(4, 3)]


def test_max_batch_tokens_bounds_every_forward_and_keeps_the_vectors(encoder, monkeypatch):
    reference = encoder.encode(TEXTS, batch_size=8)
    recorder = OomAbove(encoder.runner, limit=10**9)
    monkeypatch.setattr(encoder, "runner", recorder)
    vectors = encoder.encode(TEXTS, batch_size=8, max_batch_tokens=200)
    np.testing.assert_allclose(vectors, reference, rtol=0, atol=2e-6)
    assert all(rows <= 8 for rows, _ in recorder.shapes)
    assert all(rows * width <= 200 or rows == 1 for rows, width in recorder.shapes)
    assert sum(rows for rows, _ in recorder.shapes) == len(TEXTS)
    with pytest.raises(ValueError, match="max_batch_tokens must be a positive int or None, got 0"):
        encoder.encode(TEXTS, max_batch_tokens=0)


def test_cli_max_batch_tokens(run, tmp_path, encoder):
    corpus = tmp_path / "in.txt"
    corpus.write_text("\n".join(t for t in TEXTS if t), encoding="utf-8")
    out = tmp_path / "out.npy"
    code, _, err = run("embed", corpus, "-o", out, "--max-batch-tokens", "64", "--batch-size", "4")
    assert code == 0, err
    np.testing.assert_allclose(np.load(out), encoder.encode([t for t in TEXTS if t]), rtol=0, atol=2e-6)
    code, _, err = run("embed", corpus, "-o", out, "--max-batch-tokens", "0")
    assert code == 2 and "--max-batch-tokens" in err


# ------------------------------------------------------------------------------------------ parallel passes


class _PassRunner:
    """A runner whose forward returns each row's first id; ``pass_forward`` waits at a barrier so two
    concurrent passes are required to get past it (a sequential loop would time out)."""

    def __init__(self, passes: int, *, fail_on: int | None = None) -> None:
        import threading

        self.parallel_passes = passes
        self.barrier = threading.Barrier(2, timeout=10)
        self.calls: list[tuple[str, int]] = []
        self.fail_on = fail_on

    def forward(self, input_ids, mask):
        self.calls.append(("forward", int(input_ids[0, 0])))
        return input_ids[:, :1].astype(np.float32), mask

    def pass_forward(self, input_ids, mask):
        first = int(input_ids[0, 0])
        self.calls.append(("pass", first))
        if first == self.fail_on:
            raise ValueError(f"pass {first} failed")
        if first < 2:  # the first two small passes must overlap
            self.barrier.wait()
        return input_ids[:, :1].astype(np.float32), mask


def _id_batches(widths: list[int], rows: int = 4) -> list:
    from types import SimpleNamespace

    out, start = [], 0
    for k, width in enumerate(widths):
        ids = np.full((rows, width), k, dtype=np.int64)
        out.append(SimpleNamespace(indices=np.arange(start, start + rows), input_ids=ids, attention_mask=ids * 0 + 1))
        start += rows
    return out


def test_small_passes_run_two_at_a_time_and_come_back_in_order():
    from tokenpool.model.batching import SMALL_PASS_TOKENS, run_passes

    wide = SMALL_PASS_TOKENS // 4 + 1  # 4 rows of this width are over the small-pass size
    widths = [8, 8, 8, wide, 8, 8]
    runner = _PassRunner(2)
    out = list(run_passes(runner, _id_batches(widths)))
    assert [int(hidden[0, 0]) for _, hidden, _ in out] == list(range(len(widths)))  # the batches' order
    np.testing.assert_array_equal(np.concatenate([indices for indices, _, _ in out]), np.arange(4 * len(widths)))
    kinds = dict((first, kind) for kind, first in runner.calls)
    assert kinds == {0: "pass", 1: "pass", 2: "pass", 3: "forward", 4: "pass", 5: "pass"}


@pytest.mark.parametrize("passes", [1, 2])
def test_a_lone_batch_or_a_one_pass_runner_uses_every_thread(passes):
    from tokenpool.model.batching import run_passes

    runner = _PassRunner(passes)
    batches = _id_batches([8] if passes == 2 else [8, 8, 8])
    assert len(list(run_passes(runner, batches))) == len(batches)
    assert {kind for kind, _ in runner.calls} == {"forward"}


def test_a_failed_pass_raises_in_the_caller():
    from tokenpool.model.batching import run_passes

    runner = _PassRunner(2, fail_on=3)
    with pytest.raises(ValueError, match="pass 3 failed"):
        list(run_passes(runner, _id_batches([8, 8, 8, 8, 8])))
