"""The server's dynamic batcher: round planning (properties against brute force) and the worker thread with a
fake runner (order, isolation, cancellation, back-pressure, prompts, failures)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("starlette")

from serve_fakes import FakeRunner, NanRunner, fake_vector  # noqa: E402

from tokenpool.serve.batcher import (  # noqa: E402
    STARVED_PASSES,
    Batcher,
    Draining,
    Job,
    QueueFull,
    plan_pass,
    split_passes,
)
from tokenpool.serve.settings import ServeSettings  # noqa: E402

ratios = st.sampled_from([0.0, 0.5, 0.8, 1.0])


@given(
    st.lists(st.integers(1, 300), max_size=80),
    st.integers(1, 40),
    ratios,
    st.integers(1, 10),
    st.none() | st.integers(1, 3000),
)
def test_split_passes_sorts_and_bounds_each_pass(lengths, batch_size, ratio, min_pass, max_tokens):
    passes = split_passes(lengths, batch_size, ratio, min_pass, max_tokens)
    flat = [int(i) for p in passes for i in p]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    for k, members in enumerate(passes):
        head = lengths[members[0]]
        assert 1 <= len(members) <= batch_size
        assert max_tokens is None or len(members) == 1 or head * len(members) <= max_tokens
        if len(members) > min_pass:  # past min_pass inputs, none is much shorter than the pass's longest
            assert all(lengths[i] >= ratio * head for i in members[min_pass:])
        if k + 1 < len(passes):  # a pass ends only when full, over the budget, or at a length drop
            nxt = lengths[passes[k + 1][0]]
            over = max_tokens is not None and head * (len(members) + 1) > max_tokens
            assert len(members) == batch_size or over or (len(members) >= min_pass and nxt < ratio * head)
    if ratio == 0 and max_tokens is None:
        assert [len(p) for p in passes] == [
            len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
        ]


def _jobs(spec: list[tuple[list[int], int]]) -> list[Job]:
    """Jobs from (tokens per input, passes skipped so far)."""
    jobs = []
    for counts, skipped in spec:
        job = Job(counts)
        job.skipped = skipped * 2
        jobs.append(job)
    return jobs


job_specs = st.lists(
    st.tuples(st.lists(st.integers(1, 64), min_size=1, max_size=40), st.integers(0, 3)),
    min_size=1,
    max_size=10,
)


def expected_anchor(queue: list[Job]) -> Job:
    """Shortest remaining first, unless some job was passed over STARVED_PASSES times (a plain loop)."""
    best = None
    for job in queue:
        if job.skipped >= STARVED_PASSES:
            if best is None or best.skipped < STARVED_PASSES or job.skipped > best.skipped:
                best = job
        elif best is None or (best.skipped < STARVED_PASSES and len(job.pending) < len(best.pending)):
            best = job
    return best


@given(job_specs, st.integers(1, 600), st.integers(1, 6), st.integers(1, 8))
def test_plan_pass_respects_limits_and_anchors_on_the_right_job(spec, budget, max_requests, batch_size):
    queue = _jobs(spec)
    plan = plan_pass(queue, max_batch_tokens=budget, max_batch_requests=max_requests, batch_size=batch_size)
    anchor = expected_anchor(queue)
    assert plan and plan[0][0] is anchor and plan[0][1], "the anchor always makes progress"
    assert len(plan) <= max_requests
    assert len({id(job) for job, _ in plan}) == len(plan)
    lengths = []
    for job, positions in plan:
        assert positions and set(positions) <= set(job.pending[:batch_size]), "each job offers its longest first"
        lengths.extend(job.lengths[p] for p in positions)
    assert len(lengths) <= batch_size
    assert len(lengths) == 1 or max(lengths) * len(lengths) <= budget


@given(job_specs, st.integers(1, 8))
def test_every_job_is_served_within_a_few_passes(spec, batch_size):
    """Planning and taking passes until the queue is empty (as the worker does): a job's first inputs are
    taken within STARVED_PASSES + one pass per other job, whatever the sizes."""
    queue = _jobs(spec)
    for job in queue:
        job.skipped = 0
    first_served = {}
    for step in range(10_000):
        if not queue:
            break
        plan = plan_pass(queue, max_batch_tokens=10_000, max_batch_requests=64, batch_size=batch_size)
        for job in queue:
            job.skipped += 1
        for job, positions in plan:
            first_served.setdefault(id(job), step)
            job.pending = [p for p in job.pending if p not in positions]
            job.skipped = 0
        queue = [job for job in queue if job.pending]
    assert not queue
    assert max(first_served.values()) < STARVED_PASSES + len(spec)


def test_a_small_request_behind_a_huge_one_joins_the_next_pass():
    huge = Job([3] * 2000)
    small = Job([3])
    plan = plan_pass([huge, small], max_batch_tokens=16384, max_batch_requests=64, batch_size=32)
    assert [(job, len(p)) for job, p in plan] == [(small, 1), (huge, 31)]


def test_equal_requests_finish_in_arrival_order():
    jobs = [Job([5] * 16) for _ in range(8)]
    plan = plan_pass(jobs, max_batch_tokens=16384, max_batch_requests=64, batch_size=32)
    assert [(job, len(p)) for job, p in plan] == [(jobs[0], 16), (jobs[1], 16)]


def _collect(batcher: Batcher, texts: list[str], prompt: str = "") -> tuple[Job, threading.Event]:
    done = threading.Event()
    tokens = batcher.runner.tokenize(texts, prompt, "right")
    job = Job(tokens.lengths, tokens, deliver=lambda _j: done.set())
    batcher.submit(job)
    return job, done


@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=12),
    st.integers(1, 4),
    st.integers(1, 64),
    st.integers(1, 5),
)
def test_every_job_gets_its_own_rows_in_its_own_order(sizes, max_requests, budget_units, batch_size):
    runner = FakeRunner(width=5)
    settings = ServeSettings(max_batch_requests=max_requests, max_batch_tokens=4 * budget_units, batch_size=batch_size,
                             max_wait_ms=1)  # fmt: skip
    batcher = Batcher(runner, settings)
    batcher.start()
    try:
        jobs = []
        for j, n in enumerate(sizes):
            texts = [" ".join(["w"] * ((j * 7 + i * 3) % 5 + 1)) + f" job{j} item{i}" for i in range(n)]
            jobs.append((texts, *_collect(batcher, texts)))
        for texts, job, done in jobs:
            assert done.wait(10)
            assert job.error is None
            expected = np.stack([fake_vector(t, 5) for t in texts])
            np.testing.assert_array_equal(job.rows, expected)
    finally:
        assert batcher.close(10)
    assert sorted(runner.seen) == sorted(t for texts, _, _ in jobs for t in texts), "each input computed once"
    assert all(len(p) <= batch_size for p in runner.passes)
    for texts in runner.passes:  # near-equal lengths in each forward pass, past its first 8 inputs
        counts = sorted((len(text.split()) + 2 for text in texts), reverse=True)
        assert min(counts[8:], default=counts[0]) >= 0.8 * counts[0]


def _run_clients(client, count: int) -> None:
    """``client(k)`` for k < count, each on its own thread; returns when all are done."""
    threads = [threading.Thread(target=client, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class SharingRunner(FakeRunner):
    """A fake runner that lets two forward passes run at once and records, per pass, how many passes were
    running when it began (what `Batcher` hands `share_threads`)."""

    parallel_passes = 2

    def __init__(self, **options):
        super().__init__(**options)
        self.shares: list[int] = []
        self.workers: list[str] = []  # the thread of each pass
        self.running = self.most_running = 0

    def share_threads(self, passes: int, worker: int = 0) -> None:
        with self.lock:
            self.shares.append(passes)

    def embed(self, tokens):
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.workers.append(threading.current_thread().name)
        try:
            yield from super().embed(tokens)
        finally:
            with self.lock:
                self.running -= 1


def test_two_workers_run_passes_at_once_and_deliver_each_job_once_with_its_rows():
    runner = SharingRunner(width=3, delay=0.01)
    batcher = Batcher(runner, ServeSettings(max_batch_requests=3, batch_size=3, max_wait_ms=0))
    assert batcher.workers == 2
    batcher.start()
    deliveries: dict[int, int] = {}
    failures: list[str] = []

    def client(k: int) -> None:
        for r in range(4):
            texts = [f"client {k} request {r} text {i} " + "w " * ((i * 5 + k) % 7) for i in range(1 + (k + r) % 7)]
            done = threading.Event()
            tokens = runner.tokenize(texts, "", "right")
            key = k * 100 + r

            def deliver(_job, key=key, done=done):
                deliveries[key] = deliveries.get(key, 0) + 1
                done.set()

            job = Job(tokens.lengths, tokens, deliver=deliver)
            batcher.submit(job)
            if not done.wait(20) or job.error is not None:
                failures.append(f"{key}: {job.error}")
            elif not np.array_equal(job.rows, np.stack([fake_vector(t, 3) for t in texts])):
                failures.append(f"{key}: wrong rows")

    _run_clients(client, 8)
    assert batcher.close(10)
    assert not failures
    assert len(deliveries) == 32 and set(deliveries.values()) == {1}, "every job delivered exactly once"
    assert len(runner.seen) == len(set(runner.seen)), "each input computed once"
    assert runner.most_running == 2 and 2 in runner.shares  # passes overlapped, each on its share of threads
    assert set(runner.shares) <= {1, 2}


def test_a_lone_client_is_served_by_one_worker_on_all_the_threads():
    runner = SharingRunner(width=3)
    batcher = Batcher(runner, ServeSettings())
    batcher.start()
    try:
        for k in range(6):  # one request at a time, as a lone client sends them
            job, done = _collect(batcher, [f"text number {k}"])
            assert done.wait(10) and job.error is None
        # the second worker starts a pass only while the first runs one: its idle OpenMP threads would spin
        assert runner.shares == [1] * 6 and set(runner.workers) == {"tokenpool-serve-worker-0"}
    finally:
        assert batcher.close(10)


def test_a_pass_begun_alone_while_inputs_wait_takes_its_share_not_all_the_threads():
    """Under load the first worker's pass must not run on both threads: the second worker starts a pass at once
    (inputs wait), and three compute threads would share two cores. Each pass gets one share of two."""
    runner = SharingRunner(width=3)
    batcher = Batcher(runner, ServeSettings(max_batch_requests=1, batch_size=4, max_wait_ms=0))
    jobs = [_collect(batcher, [f"waiting {k}"]) for k in range(3)]  # all queued before a worker starts
    batcher.start()
    try:
        for job, done in jobs:
            assert done.wait(10) and job.error is None
        assert runner.shares[:2] == [2, 2]  # inputs waited at both: neither pass on all the threads
    finally:
        assert batcher.close(10)


def test_concurrent_submitters_from_threads():
    runner = FakeRunner(width=3)
    batcher = Batcher(runner, ServeSettings(max_batch_requests=8, batch_size=4))
    batcher.start()
    results: dict[int, bool] = {}

    def client(k: int) -> None:
        for r in range(5):
            texts = [f"client {k} request {r} text {i}" for i in range(1 + (k + r) % 4)]
            job, done = _collect(batcher, texts)
            assert done.wait(10)
            results[k * 100 + r] = np.array_equal(job.rows, np.stack([fake_vector(t, 3) for t in texts]))

    _run_clients(client, 8)
    assert batcher.close(10)
    assert len(results) == 40 and all(results.values())


def test_batching_combines_requests_and_max_batch_requests_1_does_not():
    for max_requests, combined in ((16, True), (1, False)):
        gate = threading.Event()
        runner = FakeRunner(gate=gate)
        batcher = Batcher(runner, ServeSettings(max_batch_requests=max_requests, batch_size=32))
        batcher.start()
        first, first_done = _collect(batcher, ["blocker"])
        assert runner.started.wait(10)  # the worker is busy with the blocker: the rest queue up
        waiting = [_collect(batcher, [f"single {k}"]) for k in range(6)]
        gate.set()
        for _, done in waiting:
            assert done.wait(10)
        assert batcher.close(10)
        assert runner.passes[0] == ["blocker"]
        if combined:
            assert sorted(runner.passes[1]) == sorted(f"single {k}" for k in range(6))
        else:
            assert runner.passes[1:] == [[f"single {k}"] for k in range(6)]


def test_cancelled_job_is_never_computed():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(batch_size=8))
    batcher.start()
    _collect(batcher, ["blocker"])
    assert runner.started.wait(10)
    gone, _ = _collect(batcher, ["nobody waits for me", "nor me"])
    kept, kept_done = _collect(batcher, ["still wanted"])
    assert batcher.queued == 3
    assert batcher.cancel(gone) == 2
    assert batcher.queued == 1
    gate.set()
    assert kept_done.wait(10)
    assert batcher.close(10)
    assert "nobody waits for me" not in runner.seen and "nor me" not in runner.seen
    assert "still wanted" in runner.seen


def test_full_queue_refuses_with_retry_after_and_closing_refuses():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(max_queue=4, max_inputs=4, batch_size=8))
    batcher.start()
    _collect(batcher, ["blocker"])
    assert runner.started.wait(10)
    _collect(batcher, ["a", "b", "c"])
    with pytest.raises(QueueFull, match="at most 4") as info:
        _collect(batcher, ["d", "e"])
    assert info.value.retry_after >= 1
    _collect(batcher, ["d"])  # exactly full is fine
    with pytest.raises(ValueError, match="never fit"):
        _collect(batcher, list("abcde"))
    gate.set()
    assert batcher.close(10)
    with pytest.raises(Draining):
        _collect(batcher, ["late"])


def test_requests_with_different_prompts_share_a_pass_each_with_its_prompt():
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(batch_size=16))
    batcher.start()
    _collect(batcher, ["blocker"])
    assert runner.started.wait(10)
    jobs = [_collect(batcher, [f"text {k}"], prompt="query: " if k % 2 else "") for k in range(6)]
    gate.set()
    for _, done in jobs:
        assert done.wait(10)
    assert batcher.close(10)
    assert len(runner.passes) == 2  # the prompt is in the token ids: one pass after the blocker's
    for k, (job, _) in enumerate(jobs):
        prompt = "query: " if k % 2 else ""
        np.testing.assert_array_equal(job.rows[0], fake_vector(prompt + f"text {k}", 8))


def test_a_failing_forward_pass_fails_its_requests_only():
    class Failing(FakeRunner):
        def embed(self, tokens):
            if any("boom" in t for t in self.row_texts(tokens)):
                raise RuntimeError("out of memory")
            yield from super().embed(tokens)

    runner = Failing()
    batcher = Batcher(runner, ServeSettings(max_batch_requests=1))
    batcher.start()
    bad, bad_done = _collect(batcher, ["boom"])
    good, good_done = _collect(batcher, ["fine"])
    assert bad_done.wait(10) and good_done.wait(10)
    assert isinstance(bad.error, RuntimeError) and good.error is None
    assert batcher.alive and batcher.close(10)


def test_a_non_finite_row_fails_its_own_request_only():
    """Two requests in one round (one forward pass): the one whose input gives NaN fails naming that input; the
    other gets its vectors."""
    from tokenpool.errors import ModelOutputError

    gate = threading.Event()
    runner = NanRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(max_batch_requests=8, max_wait_ms=500))
    batcher.start()
    good, good_done = _collect(batcher, ["fine words", "more words"])
    bad, bad_done = _collect(batcher, ["ok", "a nan here"])
    gate.set()
    assert good_done.wait(10) and bad_done.wait(10)
    assert len(runner.passes) == 1  # one round, one pass: both requests really shared it
    assert good.error is None
    np.testing.assert_array_equal(good.rows[1], fake_vector("more words", runner.width))
    assert isinstance(bad.error, ModelOutputError) and bad.error.index == 1
    assert str(bad.error) == "the model produced non-finite values (NaN or inf) for input 1"
    assert batcher.alive and batcher.close(10)


def test_a_request_whose_finishing_fails_fails_alone_as_a_server_fault():
    """Two requests with different finishing options in one pass: the one whose finishing step raises (even a
    ValueError) fails alone, as a failure (500), without the other's message; the other gets its rows."""
    from tokenpool.errors import classify

    def doubled(rows):
        return rows * 2

    def broken(rows):
        raise ValueError("secret detail of request B")

    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(max_batch_requests=8, max_wait_ms=500))
    batcher.start()
    jobs: dict[str, Job] = {}
    arrived: dict[str, threading.Event] = {}
    for key, texts, finish in (("A", ["alpha beta", "gamma"], doubled), ("B", ["delta"], broken)):
        tokens = runner.tokenize(texts, "", None)
        arrived[key] = threading.Event()
        jobs[key] = Job(tokens.lengths.tolist(), tokens, finish=finish, finish_key=key,
                        deliver=lambda _job, event=arrived[key]: event.set())  # fmt: skip
        batcher.submit(jobs[key])
    gate.set()
    assert arrived["A"].wait(10) and arrived["B"].wait(10)
    assert len(runner.passes) == 1  # both really shared the pass
    assert jobs["A"].error is None
    np.testing.assert_array_equal(jobs["A"].rows[1], 2 * fake_vector("gamma", runner.width))
    assert classify(jobs["B"].error) == "failed"
    assert batcher.alive and batcher.close(10)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_batch_tokens", 0),
        ("max_batch_requests", -1),
        ("batch_size", 1.5),
        ("max_queue", True),
        ("max_wait_ms", -1),
        ("max_wait_busy_ms", float("nan")),
        ("read_timeout", float("inf")),
        ("workers", 0),
        ("workers", True),
    ],
)
def test_bad_server_settings(option, value):
    with pytest.raises(ValueError, match=option):
        ServeSettings(**{option: value})


def test_an_unpadded_runner_gets_passes_of_any_lengths_a_padded_one_near_equal_lengths():
    texts = [" ".join(["w"] * n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 30, 31, 32)]  # 4 to 34 tokens
    for unpadded in (False, True):
        gate = threading.Event()
        runner = FakeRunner(gate=gate, max_length=64)
        runner.unpadded = unpadded
        batcher = Batcher(runner, ServeSettings(batch_size=32, workers=1))
        batcher.start()
        _, blocker_done = _collect(batcher, ["blocker"])
        assert runner.started.wait(10)  # the rest queue up behind the blocker
        waiting = [_collect(batcher, [text]) for text in texts]
        gate.set()
        for _, done in waiting:
            assert done.wait(10)
        assert batcher.close(10)
        sizes = [len(p) for p in runner.passes[1:]]
        # padded: cut at the first length drop once a pass holds MIN_PASS (8) inputs (34, 33, 32, 12 … 8 tokens;
        # then the rest); unpadded: one pass
        assert sorted(sizes) == ([12] if unpadded else [4, 8]), sizes


@pytest.mark.parametrize("busy_ms", [0, 400])
def test_a_pass_waits_for_the_requests_just_answered_to_come_back(busy_ms):
    """``max_wait_busy_ms``: after a pass answers requests, the next pass waits (at most that long) until as many
    new requests have arrived, so passes fill under many clients; ``max_wait_ms`` otherwise."""
    import time

    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(workers=1, max_wait_ms=0, max_wait_busy_ms=busy_ms))
    batcher.start()
    try:
        _, first_done = _collect(batcher, ["first"])  # taken at once, held at the gate
        assert runner.started.wait(10)
        waiting = [_collect(batcher, [text])[1] for text in ("second", "third")]
        gate.set()  # "first" is answered: one request may come back
        assert first_done.wait(10)
        time.sleep(0.15)
        _, back_done = _collect(batcher, ["back"])
        assert back_done.wait(10) and all(done.wait(10) for done in waiting)
        shared = [p for p in runner.passes if "second" in p][0]
        assert ("back" in shared) == (busy_ms > 0)  # waited for it, or had started without it
    finally:
        gate.set()
        assert batcher.close(10)


def test_a_lone_client_never_waits_the_busy_wait():
    """A lone client's next request is the one its answer was waiting for: no pass waits for more."""
    import time

    batcher = Batcher(FakeRunner(), ServeSettings(workers=2, max_wait_ms=0, max_wait_busy_ms=60_000))
    batcher.start()
    try:
        start = time.monotonic()
        for text in ("one", "two", "three"):
            _, done = _collect(batcher, [text])
            assert done.wait(10)
        assert time.monotonic() - start < 5  # not the minute of the busy wait
    finally:
        assert batcher.close(10)


def test_answers_older_than_the_busy_wait_are_forgotten():
    """A burst's last answers, whose clients never come back, do not make a later lone client's passes wait."""
    import time

    batcher = Batcher(FakeRunner(), ServeSettings(workers=1, max_wait_ms=0, max_wait_busy_ms=300))
    batcher.start()
    try:
        burst = [_collect(batcher, [f"burst {k}"])[1] for k in range(6)]
        assert all(done.wait(10) for done in burst)
        time.sleep(0.35)  # past the busy wait: the burst's clients are gone
        start = time.monotonic()
        for text in ("one", "two", "three"):
            _, done = _collect(batcher, [text])
            assert done.wait(10)
        assert time.monotonic() - start < 0.3  # three passes without a 300 ms wait (each answer came back)
    finally:
        assert batcher.close(10)


def test_the_busy_wait_never_shortens_the_plain_wait():
    """A ``max_wait_busy_ms`` below ``max_wait_ms`` does not cut a pass's wait short while answers come back."""
    assert Batcher(FakeRunner(), ServeSettings(max_wait_ms=50, max_wait_busy_ms=5)).max_wait_busy == 0.05
    assert Batcher(FakeRunner(), ServeSettings(max_wait_ms=2, max_wait_busy_ms=16)).max_wait_busy == 0.016


def test_a_request_split_over_two_passes_counts_as_one_answer():
    """Its client comes back once: the next request must not wait for a second return that never comes."""
    import time

    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    batcher = Batcher(runner, ServeSettings(workers=2, batch_size=2, max_wait_ms=0, max_wait_busy_ms=60_000))
    batcher.start()
    try:
        _, split_done = _collect(batcher, ["a b", "c d", "e f", "g h"])  # two passes of 2, both held at the gate
        deadline = time.monotonic() + 10
        while batcher.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.queued == 0  # both passes took their inputs and run at once
        gate.set()
        assert split_done.wait(10) and len(runner.passes) == 2
        start = time.monotonic()
        _, back_done = _collect(batcher, ["back"])  # the one client, back
        assert back_done.wait(10) and time.monotonic() - start < 5  # not the minute of the busy wait
    finally:
        gate.set()
        assert batcher.close(10)
