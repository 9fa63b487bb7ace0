"""Dynamic batching: requests wait in one bounded queue; model worker threads (``workers``, usually one or
two) each plan (`plan_pass`) and run one forward pass at a time from it, so a new request joins within one
pass and a cancelled one stops costing anything after the running pass (a whole-document request runs a
pass's worth of documents at a time: `document_pass`). Nothing here knows HTTP: `Job.deliver` reports.

With two workers on a CPU one pass computes while the other does its Python work, each on its share of the
threads (`Runner.share_threads`); against one two-thread worker on 2 cores: 64 single-text clients 1.26x the
texts/s, 8 clients 1.12x, 1 client 0.98x."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelOutputError, classify, one_line
from ..model.windows import Cancelled
from .runner import Runner
from .settings import ServeSettings

logger = logging.getLogger(__name__)

__all__ = ["Batcher", "Draining", "Job", "QueueFull", "document_pass", "plan_pass", "split_passes"]

_SEQUENCE = itertools.count()


class QueueFull(Exception):
    """The queue holds ``max_queue`` inputs already; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Draining(Exception):
    """The batcher is closing: it finishes what it holds and takes nothing new."""


@dataclass(eq=False)
class Job:
    """One request's inputs on their way through the queue: its ``tokens`` (`Runner.tokenize`) and their
    ``lengths``; or ``run`` (whole documents), called with a few positions at a time (`document_pass`) and a
    stop check (True once ``cancelled``), its ``(positions, result)`` appended to ``rows``."""

    lengths: Sequence[int]
    tokens: Any = None
    deliver: Callable[[Job], None] | None = None  # called once, from the worker thread, when done or failed
    # dense rows → the answer's rows, applied in the worker; a pass finishes the rows of all its jobs of one
    # ``finish_key`` with one call (the first one's `finish`: jobs of one key finish rows alike, row by row)
    finish: Callable[[np.ndarray], np.ndarray] | None = None
    finish_key: Any = None
    run: Callable[[list[int], Callable[[], bool]], Any] | None = None
    rows: Any = None  # (n, width) float32 (dense runners), (indices, values) per input (sparse), parts of `run`
    error: BaseException | None = None
    delivered: bool = False  # set (under the batcher's lock) by the worker that delivers it
    cancelled: bool = False  # set by `Batcher.cancel`: its client went away (or it failed); nothing more is run
    left: int = field(init=False)  # inputs not computed yet
    pending: list[int] = field(init=False)  # positions not taken yet, longest first (documents: in order)
    enqueued: float = field(default_factory=time.monotonic)
    skipped: int = 0  # passes in a row that took none of its inputs (see `plan_pass`)
    sequence: int = field(default_factory=lambda: next(_SEQUENCE))

    def __post_init__(self) -> None:
        self.left = len(self.lengths)
        if self.run is not None:  # in order: the first bad document is the one named, as in the library
            self.pending = list(range(self.left))
        else:
            # longest first, equal lengths in order (a stable sort: `reverse` keeps their order)
            self.pending = sorted(range(self.left), key=self.lengths.__getitem__, reverse=True)

    @property
    def done(self) -> bool:
        return self.left == 0 or self.error is not None


PASS_LENGTH_RATIO = 0.8  # a forward pass is cut where an input is shorter than this × the pass's longest ...
MIN_PASS = 8  # ... once it holds this many inputs: tiny passes cost more in per-pass overhead than they save


def split_passes(lengths: Sequence[int], batch_size: int, ratio: float = PASS_LENGTH_RATIO,
                 min_pass: int = MIN_PASS, max_tokens: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """Positions longest first, cut into passes of at most ``batch_size`` and ``max_tokens`` padded tokens
    (one input alone may exceed it) and, once a pass holds ``min_pass``, before an input under ``ratio`` × its
    longest: 64 random STS-B sentences compute 1.1× their real tokens, not 1.37× (``ratio`` 0: fixed size)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    passes: list[np.ndarray] = []
    begin = 0
    for k in range(1, len(order) + 1):
        size, head = k - begin, lengths[order[begin]]
        if (
            k == len(order)
            or size == batch_size
            or (max_tokens is not None and head * (size + 1) > max_tokens)
            or (size >= min_pass and lengths[order[k]] < ratio * head)
        ):
            passes.append(order[begin:k])
            begin = k
    return passes


def document_pass(job: Job, batch_size: int, max_batch_tokens: int) -> list[int]:
    """A whole-document job's next pass: its next untaken documents within both limits (at least one)."""
    taken: list[int] = []
    tokens = 0
    for position in job.pending:
        if len(taken) == batch_size or (taken and tokens + job.lengths[position] > max_batch_tokens):
            break
        taken.append(position)
        tokens += job.lengths[position]
    return taken


STARVED_PASSES = 4  # a job passed over this many times in a row anchors the next pass, whatever its size


def plan_pass(queue: Sequence[Job], *, batch_size: int, max_batch_tokens: int, max_batch_requests: int,
              ratio: float = PASS_LENGTH_RATIO) -> list[tuple[Job, list[int]]]:  # fmt: skip
    """The next forward pass: ``(job, positions)`` of queued jobs' untaken inputs, the anchor job (fewest
    inputs left, or the most passed-over once starved) first. Up to ``batch_size`` of the longest inputs of it
    and of up to ``max_batch_requests - 1`` others are offered (near-equal lengths then fill the pass: 64
    requests of 16 STS-B sentences make passes of 31 inputs at 1.06× their real tokens, not 12 at 1.23×); the
    pass is the `split_passes` group of the anchor's first input."""
    if not queue:
        return []
    starved = [job for job in queue if job.skipped >= STARVED_PASSES]
    anchor = (max(starved, key=lambda job: (job.skipped, -job.sequence)) if starved
              else min(queue, key=lambda job: (len(job.pending), job.sequence)))  # fmt: skip
    if anchor.run is not None:  # a whole-document job runs alone, a pass's worth of documents
        return [(anchor, document_pass(anchor, batch_size, max_batch_tokens))]
    others = sorted((j for j in queue if j is not anchor and j.run is None),
                    key=lambda job: (len(job.pending), job.sequence))
    jobs = [anchor, *others[: max_batch_requests - 1]]
    offered = [(job, position) for job in jobs for position in job.pending[:batch_size]]
    lengths = [job.lengths[position] for job, position in offered]
    group = next(g for g in split_passes(lengths, batch_size, ratio, MIN_PASS, max_batch_tokens) if 0 in g)
    plan: dict[int, tuple[Job, list[int]]] = {}
    for job, position in (offered[k] for k in sorted(group.tolist())):
        plan.setdefault(id(job), (job, []))[1].append(position)
    return list(plan.values())


class Batcher:
    """The queue and its model worker threads (``settings.workers``, else the runner's ``parallel_passes``).
    `submit` from any thread; results arrive through `Job.deliver` on a worker thread."""

    def __init__(self, runner: Runner, settings: ServeSettings | None = None, metrics: Any = None) -> None:
        settings = settings or ServeSettings()
        self.runner = runner
        self.batch_size, self.max_batch_tokens = settings.batch_size, settings.max_batch_tokens
        self.max_batch_requests = settings.max_batch_requests
        self.max_wait = settings.max_wait_ms / 1000.0
        self.max_wait_busy = max(settings.max_wait_busy_ms, settings.max_wait_ms) / 1000.0  # never the shorter
        self.max_queue = settings.max_queue
        self.workers = settings.workers or int(getattr(runner, "parallel_passes", 1))
        self._share_threads = getattr(runner, "share_threads", None)  # optional in the `Runner` protocol
        # a runner whose passes compute real tokens only (`EncoderRunner.unpadded`) gains nothing from passes
        # of near-equal lengths: its passes take all they may, whatever the lengths
        self.length_ratio = 0.0 if getattr(runner, "unpadded", False) else PASS_LENGTH_RATIO
        self.metrics = metrics
        self._queue: list[Job] = []
        self._queued = 0  # inputs waiting (not yet taken into a pass)
        self._busy = 0  # inputs taken into running passes and not yet computed
        self._running = 0  # passes running now
        self._answered, self._answered_at = 0, 0.0  # see `_returning`
        self._cond = threading.Condition()
        self._closing = False
        self._rate = 0.0  # recent inputs per second (for Retry-After)
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None  # set if a worker loop itself died

    def start(self) -> None:
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, args=(k,), daemon=True,
                                              name=f"tokenpool-serve-worker-{k}")
                             for k in range(self.workers)]  # fmt: skip
            for thread in self._threads:
                thread.start()

    def close(self, timeout: float | None = None) -> bool:
        """Take nothing new, finish what is queued, stop the workers; True when they stopped in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        stopped = self.stopped
        release = getattr(self.runner, "release_threads", None)  # optional in the `Runner` protocol
        if stopped and release is not None:
            release()  # the process's threads, as before the server
        elif stopped and self._share_threads is not None:
            self._share_threads(1, 0)  # the runner's threads as they were before any pass
        return stopped

    @property
    def started(self) -> bool:
        """`start` has run: the workers were started (they may have stopped since)."""
        return bool(self._threads)

    @property
    def stopped(self) -> bool:
        """No worker thread runs (none started, or all have finished)."""
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads) and self.failure is None

    @property
    def queued(self) -> int:
        """Inputs waiting for a pass (read-only: the count moves with the queue, under its lock)."""
        return self._queued

    @property
    def queued_requests(self) -> int:
        """Requests with inputs waiting for a pass."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Inputs not computed yet: waiting, or in the running pass."""
        return self._queued + self._busy

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull when it would take the queue past ``max_queue`` inputs, Draining when closing."""
        n = len(job.lengths)
        if n == 0:
            raise ValueError("a job needs at least one input")
        if n > self.max_queue:
            raise ValueError(f"a request of {n} inputs can never fit the queue of {self.max_queue}")
        with self._cond:
            if self._closing:
                raise Draining("the server is shutting down")
            if self._queued + n > self.max_queue:
                raise QueueFull(f"the queue holds {self._queued} inputs and takes at most {self.max_queue}; "
                                f"this request has {n}", self.retry_after(n))  # fmt: skip
            # rows filled in place, pass by pass (whole documents: their parts appended)
            # (finished rows: allocated by the first pass that finishes some, once their width and type are known)
            job.rows = ([] if job.run is not None else [None] * n if self.runner.is_sparse
                        else None if job.finish is not None else np.empty((n, self.runner.width), dtype=np.float32))  # fmt: skip
            self._queue.append(job)
            self._queued += n
            if self._answered:
                self._answered -= 1  # one answered request came back (or another client arrived)
            self._cond.notify_all()

    def cancel(self, job: Job) -> int:
        """Drop a job's inputs no pass has taken yet (its client went away, or it failed) and mark it
        ``cancelled`` (a running whole-document pass stops before its next window pass) → how many dropped."""
        with self._cond:
            job.cancelled = True
            if job not in self._queue:
                return 0
            self._queue.remove(job)
            self._queued -= len(job.pending)
            return len(job.pending)

    def _returning(self, now: float) -> bool:
        """Whether the requests answered (the last less than ``max_wait_busy`` ago) outnumber the requests that
        arrived since: under many clients each answer comes back as a new request and fills the next pass, while
        a lone client, already back, never waits for one."""
        return self._answered > 0 and now - self._answered_at < self.max_wait_busy

    def _note_answer(self) -> None:
        """Count a request delivered (under the lock, once per request); when the last answer is ``max_wait_busy``
        or more old, the earlier ones are forgotten first (clients that stopped: a burst's last answers)."""
        now = time.monotonic()
        self._answered = (self._answered if self._returning(now) else 0) + 1
        self._answered_at = now

    def retry_after(self, extra: int = 0) -> int:
        """Seconds until the queue has likely room for ``extra`` more inputs (at least 1)."""
        rate = self._rate if self._rate > 0 else 1.0
        return max(1, min(60, math.ceil((self._queued + extra - self.max_queue) / rate)))

    def _next(self, worker: int) -> list[tuple[Job, list[int]]] | None:
        """Wait for work and take the next pass (None: closing, nothing left). A pass waits for company at most
        ``max_wait`` past the oldest arrival, or ``max_wait_busy`` while requests just answered have not come
        back yet (`_returning`). Worker k starts one only while k others run, so a lone client keeps worker 0 on
        all the threads (taking turns costs a third: idle OpenMP threads still spin)."""
        with self._cond:
            while not (self._queue and self._running >= worker):
                if self._closing and not self._queue:
                    return None
                self._cond.wait()
            oldest = min(job.enqueued for job in self._queue)
            while not self._closing and self._queued < self.batch_size:
                now = time.monotonic()
                left = oldest + (self.max_wait_busy if self._returning(now) else self.max_wait) - now
                if left <= 0:
                    break
                self._cond.wait(left)
                if not self._queue:
                    return []
            plan = plan_pass(self._queue, batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens,
                             max_batch_requests=self.max_batch_requests, ratio=self.length_ratio)  # fmt: skip
            for job in self._queue:
                job.skipped += 1
            for job, taken in plan:
                gone = set(taken)
                job.pending = [p for p in job.pending if p not in gone]
                job.skipped = 0
                self._queued -= len(taken)
                self._busy += len(taken)
                if not job.pending:
                    self._queue.remove(job)
            if plan:
                self._running += 1
                if self._queue:  # another worker may start a pass now that this one runs (it waits for that)
                    self._cond.notify_all()
                if self._share_threads is not None:  # this worker's share while its pass runs, counting the pass
                    # another worker is about to start: inputs wait, or answered requests are coming back (a
                    # lone client's pass keeps all the threads; under load none runs on the other's cores)
                    coming = self._running < self.workers and bool(self._queue or self._returning(time.monotonic()))
                    self._share_threads(self._running + coming, worker)
        return plan

    def _work(self, worker: int) -> None:
        plan: list[tuple[Job, list[int]]] | None = None
        try:
            while (plan := self._next(worker)) is not None:
                if plan:
                    self._run_pass(plan)
        except BaseException as err:  # the loop itself broke: fail everything, report unhealthy
            self.failure = err
            logger.exception("a tokenpool serve worker stopped")
            with self._cond:
                # the queued jobs, and those of the pass that broke (no longer queued once all their inputs were
                # taken): left undelivered, their requests would wait for ever
                jobs = self._queue + [job for job, _ in plan or () if job not in self._queue]
                self._queue.clear()
                self._queued = 0
                self._closing = True  # the other workers stop too: the server reports unhealthy
                self._cond.notify_all()
            for job in jobs:
                self._finish(job, err)

    def _run_pass(self, plan: list[tuple[Job, list[int]]]) -> None:
        """One forward pass (or a few documents of a whole-document job); each finished job is delivered."""
        owners = [(job, i) for job, taken in plan for i in taken]
        computed: list[tuple[Job, int]] = []  # the inputs whose rows the model gave (a failed pass: fewer)
        began = time.perf_counter()
        try:
            if plan[0][0].run is not None:
                self._documents(*plan[0])
                computed = owners
            else:
                self._forward_each(plan, computed)
        except Exception as err:  # a model failure answers the pass's unfinished requests with an error
            _log_failure(err)
            for job, _ in plan:
                if not job.done:
                    job.error = err
        finally:
            with self._cond:
                self._busy -= len(owners)
                self._running -= 1
                self._cond.notify_all()  # a waiting worker may start a pass, or stop when closing
        seconds = time.perf_counter() - began
        for job, _ in plan:
            if job.error is not None and job.pending:
                self.cancel(job)  # a failed request costs nothing more
            if job.done:
                self._finish(job, None)
        if seconds > 0:
            rate = len(owners) / seconds
            self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
        if self.metrics is not None:
            lengths = [job.lengths[i] for job, i in owners]
            self.metrics.observe_pass(inputs=len(owners), requests=len(plan), padded_tokens=max(lengths) * len(lengths),
                                      tokens=sum(job.lengths[i] for job, i in computed), seconds=seconds,
                                      embedded=len(computed))  # fmt: skip

    def _forward_each(self, plan: list[tuple[Job, list[int]]], computed: list[tuple[Job, int]]) -> None:
        """`_forward`; when a pass of several jobs fails, each job's rows not landed yet run again in a pass of its
        own, so that the job whose input made the pass fail fails alone (with the error, or a 4xx quoting its
        input, that no other client should get) and the others get their rows. A cancelled job is not run again:
        it gets the pass's error."""
        landed: set[tuple[int, int]] = set()
        try:
            self._forward(plan, computed, landed)
            return
        except Exception as err:
            if len(plan) == 1:
                raise
            shared = err  # (the passes below run outside this handler: their errors are not chained to it)
        logger.warning("a forward pass of %d requests failed (%s): running each alone", len(plan), one_line(shared))
        for job, taken in plan:
            rest = [i for i in taken if (id(job), i) not in landed]
            if not rest or job.done:
                continue
            if job.cancelled:  # its client went away: nothing more is run for it
                job.error = shared
                continue
            try:
                self._forward([(job, rest)], computed, landed)
            except Exception as failure:
                _log_failure(failure)
                if not job.done:  # as in a pass of its own: a NaN row's error stays, a job whose rows all landed ends
                    job.error = failure

    def _forward(self, plan: list[tuple[Job, list[int]]], computed: list[tuple[Job, int]],
                 landed: set[tuple[int, int]]) -> None:  # fmt: skip
        """One pass over the planned rows of several jobs' tokens; each row lands (finished) in its job, its
        ``(id(job), position)`` in ``landed`` and its owner, when finite, in ``computed``."""
        sparse = self.runner.is_sparse
        owners = [(job, i) for job, taken in plan for i in taken]
        parts = [job.tokens.select(taken) for job, taken in plan]
        for indices, rows in self.runner.embed(type(parts[0]).concat(parts)):
            owned = [owners[g] for g in np.asarray(indices).tolist()]
            finite = np.isfinite(rows).all(axis=-1).tolist()
            alike: dict[Any, list[int]] = {}  # finish key → rows of the pass to finish together
            for k, (job, i) in enumerate(owned):
                if not finite[k]:  # this request fails; the others in the pass go on
                    if job.error is None:
                        job.error = ModelOutputError(f"input {i}", index=i)
                elif sparse:
                    nonzero = np.flatnonzero(rows[k])
                    job.rows[i] = (nonzero, rows[k][nonzero].astype(np.float32))
                elif job.finish is None:
                    job.rows[i] = rows[k]
                else:
                    alike.setdefault(job.finish_key, []).append(k)
            for ks in alike.values():
                self._finished(np.asarray(rows[ks], dtype=np.float32), [owned[k] for k in ks])
            with self._cond:  # another worker's pass may hold inputs of the same jobs
                for job, _ in owned:
                    job.left -= 1
            landed.update((id(job), i) for job, i in owned)
            computed.extend(owner for owner, ok in zip(owned, finite, strict=True) if ok)  # (NaN: not embedded)

    def _finished(self, rows: np.ndarray, owned: list[tuple[Job, int]]) -> None:
        """Rows of jobs of one finish key, finished in one call, each stored in its job. A failure there fails
        these jobs alone, as a server fault (500): the pass's other requests go on."""
        try:
            done = owned[0][0].finish(rows)  # type: ignore[misc]
        except Exception as err:
            logger.exception("finishing the rows of a request failed")
            failure = RuntimeError(f"finishing the rows failed: {one_line(err)}")
            for job, _ in owned:
                if job.error is None:
                    job.error = failure
            return
        for (job, i), row in zip(owned, done, strict=True):
            if job.rows is None:
                with self._cond:  # another worker may be finishing other inputs of the same job
                    if job.rows is None:
                        job.rows = np.empty((len(job.lengths), *done.shape[1:]), dtype=done.dtype)
            job.rows[i] = row

    def _documents(self, job: Job, taken: list[int]) -> None:
        """Some documents of a whole-document job, appended to its parts."""
        part = job.run(taken, lambda: job.cancelled)
        with self._cond:  # another worker may run other documents of the same job
            job.rows.append((taken, part))
            job.left -= len(taken)

    def _finish(self, job: Job, error: BaseException | None) -> None:
        """Deliver a job once (with two workers, both may see it done)."""
        with self._cond:
            if job.delivered:
                return
            job.delivered = True
            self._note_answer()
            if error is not None:
                job.error = error
        if job.deliver is not None:
            try:
                job.deliver(job)
            except Exception:  # a closed event loop, say: nobody is waiting any more
                logger.debug("could not deliver a result", exc_info=True)


def _log_failure(err: Exception) -> None:
    """Log why a pass failed: at INFO when it is the client's doing (a cancel, bad input), else with its traceback."""
    if isinstance(err, Cancelled):  # `cancel` stopped a whole-document job between its window passes
        logger.info("a cancelled request's documents stopped between window passes")
    elif classify(err) == "bad_input":  # the client's mistake (a bad span, say): answered, not a server fault
        logger.info("a request's input was refused in its forward pass: %s", one_line(err))
    else:
        logger.exception("a forward pass failed", exc_info=err)
