"""Synchronous runs (`POST /api/v1/run`): one task on the pool, answered to a caller who waits.
This module reads a run and waits for it; campaigns/services/runs.py queues one.

A run is an ordinary task, so it goes through the ordinary path: a connected worker (native or
browser) leases it, runs it in its own host and returns the result, which is recorded exactly
once and validated like any other. Nothing runs in the web process. What is particular:

- The task belongs to its organization's *interactive* campaign for that kernel and quorum (one
  per (kernel, quorum), created running on first use, named "Synchronous runs of ...", listed
  with the organization's other campaigns). The scheduler leases an interactive campaign's
  replicas before any batch campaign's (workers/scheduler.py `_next_campaign`), and such a
  campaign never completes.
- After a result of an interactive task is recorded (or its lease expired: the sweeper), the
  scheduler says so after the commit (services.runs.announce): to requests waiting in the same
  process directly, by an asyncio event of theirs (`wake_here`: no Redis round trip when the
  worker's session and the caller share a process), and to every process on the task's
  channel group (the caller may be on another process than the worker). A waiting request
  re-reads the task when woken either way (`wait_decided`). The task is committed before the
  request registers and subscribes, so it reads it once after both: an answer that came in
  between is not missed.
- Verification is the campaign's: with quorum 1 (the default) a run is one worker's answer,
  unverified (basis "single"); with quorum N it is decided when N independent volunteers
  agreed, exactly as in a batch campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer

from campaigns.models import Result, Task

#: How long a run's kernel may run on the worker (the interactive campaign's task_timeout).
RUN_TASK_TIMEOUT = 60
#: A run's lease lasts its kernel's time limit and this much more (a batch task's lasts twice
#: its limit, for time queued in the worker's prefetch buffer): a run is leased before batch
#: work and someone waits on it, so a worker that went silent should lose it soon.
RUN_LEASE_GRACE = 10
#: The longest a silent worker (crashed, cut off, hung) holds a run: its lease's deadline, plus
#: the sweeper's period (workers/sweeper.py: 2 s) and margin. Then the run is queued again for
#: another worker (never the silent one), or fails ("lease expired on N worker session(s)...")
#: once sessions of the campaign's max_attempts (5), and at least three, distinct networks let
#: it expire (workers/scheduler.py reclaim_expired); a waiting request is told at once.
SILENT_WORKER_SECONDS = RUN_TASK_TIMEOUT + RUN_LEASE_GRACE + 5
#: How long a caller may wait for an answer in one request (POST /run, GET /runs/{id}).
WAIT_MAX_SECONDS = 60.0
WAIT_DEFAULT_SECONDS = 30.0
#: Requests waiting at once in one server process: each holds a thread and a database
#: connection while it waits. Beyond this, a run is queued and answered at once with 202.
MAX_WAITING = 64
GROUP_PREFIX = "ccgsc.run."

log = logging.getLogger(__name__)
_waiting = threading.BoundedSemaphore(MAX_WAITING)
# Requests of this process waiting on a task: its id -> (loop, event) of each (wake_here).
_here: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
_here_lock = threading.Lock()


def group_name(task_id: int) -> str:
    return f"{GROUP_PREFIX}{task_id}"


# --- reads --------------------------------------------------------------------------------------

STATE_QUEUED, STATE_RUNNING, STATE_DONE, STATE_FAILED = "queued", "running", "done", "failed"
BASIS_NAMES = {b.value: b.name.lower() for b in Result.Basis}


@dataclass(frozen=True)
class RunView:
    """What a caller learns about a run (the API's RunOutput)."""

    id: int
    state: str
    campaign: int
    kernel: str
    quorum: int
    ok: bool | None
    exit_code: int | None
    error: str | None
    stdout: bytes | None
    stderr: str
    failure: str
    runtime_ms: int | None
    queued_ms: int | None
    basis: str | None
    agreed_with: int | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def decided(self) -> bool:
        return self.state in (STATE_DONE, STATE_FAILED)

    @property
    def stdout_sha256(self) -> str | None:
        return None if self.stdout is None else hashlib.sha256(self.stdout).hexdigest()


def run_view(task_id: int) -> RunView | None:
    """The run's state and, once decided, its answer: the canonical result of a done task,
    the last attempt of a failed one. Two queries."""
    task = (
        Task.objects.filter(pk=task_id)
        .select_related("campaign__kernel")
        .only(
            "state",
            "failure",
            "created_at",
            "finished_at",
            "canonical_result_id",
            "campaign__min_quorum",
            "campaign__kernel__sha256",
        )
        .first()
    )
    if task is None:
        return None
    results = Result.objects.filter(task_id=task_id)
    if task.state == Task.State.DONE and task.canonical_result_id is not None:
        results = results.filter(pk=task.canonical_result_id)
    else:
        results = results.order_by("-returned_at", "-id")
    answer = results.filter(state=Result.State.RETURNED).first()
    leased = (
        answer.leased_at
        if answer is not None
        else Result.objects.filter(task_id=task_id, state=Result.State.LEASED)
        .values_list("leased_at", flat=True)
        .first()
    )
    if task.state == Task.State.DONE:
        state = STATE_DONE
    elif task.state == Task.State.FAILED:
        state = STATE_FAILED
    else:
        state = STATE_RUNNING if leased is not None else STATE_QUEUED
        answer = None  # an attempt that may be retried, or a replica awaiting its quorum
    return RunView(
        id=task.pk,
        state=state,
        campaign=task.campaign_id,
        kernel=task.campaign.kernel.sha256,
        quorum=task.campaign.min_quorum,
        ok=None if answer is None else answer.outcome == Result.Outcome.SUCCESS,
        exit_code=None if answer is None else answer.exit_code,
        error=(answer.error_kind or None) if answer is not None else None,
        stdout=(
            bytes(answer.output)
            if answer is not None and answer.output is not None and state == STATE_DONE
            else None
        ),
        stderr=answer.stderr_tail if answer is not None else "",
        failure=task.failure,
        runtime_ms=None if answer is None else answer.runtime_ms,
        queued_ms=(
            None
            if leased is None
            else max(0, round((leased - task.created_at).total_seconds() * 1000))
        ),
        basis=(
            BASIS_NAMES.get(answer.basis) if answer is not None and state == STATE_DONE else None
        ),
        agreed_with=None if answer is None else answer.agreed_with,
        created_at=task.created_at,
        finished_at=task.finished_at,
    )


def _decided(task_id: int) -> bool:
    return Task.objects.filter(pk=task_id).exclude(state=Task.State.PENDING).exists()


def wake_here(task_ids: list[int]) -> None:
    """Wake the requests of this process waiting on these tasks (from any thread)."""
    with _here_lock:
        waiters = [w for tid in task_ids for w in _here.get(tid, ())]
    for loop, event in waiters:
        with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
            loop.call_soon_threadsafe(event.set)


class _Listener:
    """One per event loop of the process: receives the run announcements of other processes
    for the tasks its loop's requests wait on (they subscribe its channel to their task's
    group) and wakes them. Requests never receive from the layer themselves: cancelling a
    receive of channels_redis mid-read could lose another consumer's message (a process's
    channels share one Redis list)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        # (task id -> requests of this loop subscribed to its group)
        self.subscribed: dict[int, int] = {}

    async def ensure(self) -> str:
        if self.channel is None:
            self.channel = await self.layer.new_channel()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._listen(self.channel))
        return self.channel

    async def _listen(self, channel: str) -> None:
        while True:
            try:
                event = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("receiving run announcements failed")
                await asyncio.sleep(1.0)
                continue
            task = event.get("task")
            if isinstance(task, int):
                wake_here([task])


_listeners: dict[asyncio.AbstractEventLoop, _Listener] = {}


def _listener(layer: Any) -> _Listener:
    loop = asyncio.get_running_loop()
    found = _listeners.get(loop)
    if found is None or found.layer is not layer:
        for old in [lp for lp in _listeners if lp.is_closed()]:
            del _listeners[old]
        found = _listeners[loop] = _Listener(layer)
    return found


async def wait_decided(task_id: int, seconds: float) -> bool:
    """Wait up to `seconds` for the task to be decided (done or failed), woken by
    services.runs.announce: directly (`wake_here`) when the answer was recorded in this
    process, through the channel layer (this loop's _Listener) when in another. Returns
    whether it was."""
    decided = sync_to_async(_decided, thread_sensitive=True)
    if seconds <= 0:
        return await decided(task_id)
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    woken = asyncio.Event()
    me = (loop, woken)
    with _here_lock:
        _here.setdefault(task_id, set()).add(me)
    listener = _listener(layer) if layer is not None else None
    group = group_name(task_id)
    try:
        if listener is not None:
            listener.subscribed[task_id] = listener.subscribed.get(task_id, 0) + 1
            await layer.group_add(group, await listener.ensure())
        # Read after registering and subscribing: an answer recorded before is seen here.
        while not await decided(task_id):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(woken.wait(), remaining)
            except TimeoutError:
                return await decided(task_id)
            woken.clear()  # a wake from here on is for the read below
        return True
    finally:
        with _here_lock:
            mine = _here.get(task_id)
            if mine is not None:
                mine.discard(me)
                if not mine:
                    del _here[task_id]
        if listener is not None:
            left = listener.subscribed.get(task_id, 1) - 1
            if left > 0:
                listener.subscribed[task_id] = left
            else:
                listener.subscribed.pop(task_id, None)
                if listener.channel is not None:
                    with contextlib.suppress(Exception):
                        await layer.group_discard(group, listener.channel)


def wait(task_id: int, seconds: float) -> bool:
    """wait_decided() from synchronous code (a view's thread; under daphne the waiting happens
    on the server's event loop). At most MAX_WAITING requests of a process wait at once; the
    others get their answer as it is now (a 202 for a run still queued)."""
    if seconds <= 0 or not _waiting.acquire(blocking=False):
        return _decided(task_id)
    try:
        return bool(async_to_sync(wait_decided)(task_id, seconds))
    finally:
        _waiting.release()
