"""Concurrent requests -> batched searches on one worker thread.

Requests arrive on the event loop; each becomes a job (a key naming the search settings, and its sentences)
in a queue. The worker takes the first job, keeps collecting for a short window from that job's arrival (or
until enough sentences are in hand), then runs one search per key over the sentences of all its jobs and
hands each job its own slice of the results. Other work for the model (`call`) runs on the same thread, so
the model is never used by two threads at once."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

_STOP = object()


class Busy(Exception):
    """More sentences are waiting than the server takes (`max_pending`)."""


class ShuttingDown(Exception):
    """The server stops; the job was not run."""


@dataclass
class _Job:
    key: Hashable | None  # None: `call` work, run alone
    items: Sequence[Any]
    future: Future
    arrived: float = field(default_factory=time.monotonic)
    work: Callable[[], Any] | None = None


class Batcher:
    """run(key, items) -> one result per item, called on the worker thread with the items of every job of
    that key collected in one window. window_s: how long to collect after a job arrives (0: take what is
    queued and go). max_batch: stop collecting at this many items. max_pending: refuse (Busy) a job that
    would make more items wait. on_batch(n) is told each batch's size."""

    def __init__(
        self,
        run: Callable[[Hashable, list[Any]], list[Any]],
        window_s: float = 0.005,
        max_batch: int = 256,
        max_pending: int = 4096,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_batch = on_batch or (lambda n: None)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ikd-serve-search", daemon=True)

    @property
    def pending(self) -> int:
        """Items queued or being searched."""
        return self._pending

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new jobs, run those already queued, end the thread; jobs still queued after `timeout`
        seconds fail with ShuttingDown."""
        with self._lock:
            self._stopping = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                self._release(job)
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ShuttingDown("the server is shutting down"))

    def submit(self, key: Hashable, items: Sequence[Any]) -> Future:
        """A future of run(key, items)'s results for these items (in order)."""
        return self._put(_Job(key, list(items), Future()))

    def call(self, work: Callable[[], Any]) -> Future:
        """A future of work(), run on the worker thread between batches (counts as one pending item)."""
        return self._put(_Job(None, [None], Future(), work=work))

    def _put(self, job: _Job) -> Future:
        with self._lock:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self._pending and self._pending + len(job.items) > self.max_pending:
                raise Busy(f"{self._pending} sentences are waiting (at most {self.max_pending})")
            self._pending += len(job.items)
        self._queue.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs, stop = self._collect(first)
            self._execute(jobs)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """The first job and those that arrive within the window (up to max_batch items); True when the
        stop marker came too."""
        jobs, size = [first], len(first.items)
        deadline = first.arrived + self.window_s
        while size < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return jobs, True
            jobs.append(job)
            size += len(job.items)
        return jobs, False

    def _execute(self, jobs: list[_Job]) -> None:
        live = []
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:  # cancelled: its client went away
                self._release(job)
        groups: dict[Hashable, list[_Job]] = {}
        for job in live:
            if job.work is not None:
                self._finish([job], lambda work=job.work: [work()])
            else:
                groups.setdefault(job.key, []).append(job)
        for key, group in groups.items():
            items = [item for job in group for item in job.items]
            self.on_batch(len(items))
            self._finish(group, lambda key=key, items=items: self.run(key, items))

    def _finish(self, group: list[_Job], compute: Callable[[], list[Any]]) -> None:
        """Run compute() for the group's items and give each job its slice (or the error)."""
        try:
            results = compute()
        except Exception as e:  # the error goes to the requests; the thread goes on
            for job in group:
                self._release(job)
                job.future.set_exception(e)
            return
        start = 0
        for job in group:
            n = len(job.items)
            value = results[0] if job.work is not None else results[start : start + n]
            start += n
            self._release(job)
            job.future.set_result(value)

    def _release(self, job: _Job) -> None:
        with self._lock:
            self._pending -= len(job.items)
