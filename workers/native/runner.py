"""Kernels in slot threads, and what they report back to the event loop.

Kernels run in a ThreadPoolExecutor of `slots` threads sharing one KernelHost (one wasmtime
Engine). Every job that is ready to run is submitted to the pool at once, so a slot that
finishes a task takes the next one without a round trip through the loop; the pool's own
queue is the "queued, not started" list, and `Future.cancel()` atomically takes a job back out
of it. Slot threads hand results, checkpoints and progress back through one inbox; the loop is
woken once per burst (not once per task) and processes the whole inbox in one go.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .executor import DONE, Job, RunHost, execute

#: What the loop is told of each report: (kind: DONE, CHECKPOINT or PROGRESS, job, payload).
Report = Callable[[int, Job, Any], None]


class JobRunner:
    """Runs jobs in `slots` threads. `report(kind, job, payload)` is called on the loop for
    each item a slot posted (a DONE payload is the result item, or None when the job was
    stopped before it ran), then `reported()` once per burst. `host(job)` names the host that
    runs a job's kernel (wasmtime's, or the GPU host for gpu kernels)."""

    def __init__(
        self,
        slots: int,
        *,
        host: Callable[[Job], RunHost],
        report: Report,
        reported: Callable[[], None],
    ) -> None:
        self._host = host
        self._report = report
        self._reported = reported
        self.running = 0  # jobs submitted to the pool and not yet reported back, all sessions
        self._none_running: asyncio.Event | None = None  # set when `running` drops to 0
        self._pool = ThreadPoolExecutor(slots, thread_name_prefix="ccgsc-slot")
        self._inbox: list[tuple[int, Job, Any]] = []
        self._inbox_lock = threading.Lock()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop reports are delivered on."""
        self._loop = loop

    def submit(self, job: Job) -> None:
        self.running += 1
        job.future = self._pool.submit(self._execute, job)

    def take_back(self, job: Job) -> bool:
        """Take a job that has not started back out of the pool's queue (its result will never
        be reported); False when it is running or done already."""
        if job.future is None or not job.future.cancel():
            return False
        self._job_gone()
        return True

    def drop(self, job: Job) -> None:
        """Make sure a job's result is never sent; take it back from the pool's queue if it
        has not started, else stop its kernel."""
        job.cancelled = True
        if job.future is not None and not self.take_back(job):
            job.cancel.set()

    def _job_gone(self) -> None:
        """A submitted job will not run (any more): on the loop, where `running` lives."""
        self.running -= 1
        if self.running == 0 and self._none_running is not None:
            self._none_running.set()

    def _execute(self, job: Job) -> None:
        """Slot thread: run one job and post its result (None when it was stopped before)."""
        item = None if job.cancel.is_set() else execute(self._host(job), job, self._post)
        self._post(DONE, job, item)

    # --- the inbox: slot threads -> loop --------------------------------------------------------

    def _post(self, kind: int, job: Job, payload: Any) -> None:
        """Called from slot threads. One loop wake-up per burst: while a drain is scheduled,
        later items just join the inbox."""
        with self._inbox_lock:
            self._inbox.append((kind, job, payload))
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting anyway
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._wake_scheduled = False
        for kind, job, payload in items:
            if kind == DONE:
                self._job_gone()
            self._report(kind, job, payload)
        self._reported()

    async def finish(self) -> None:
        """Stop what still runs (their sessions are gone) and let the pool wind down."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.running > 0:
            self._none_running = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._none_running.wait(), timeout=2.0)
