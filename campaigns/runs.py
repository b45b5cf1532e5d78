"""Synchronous runs (`POST /api/v1/run`): one task on the pool, answered to a caller who waits.

A run is an ordinary task, so it goes through the ordinary path: a connected worker (native or
browser) leases it, runs it in its own host and returns the result, which is recorded exactly
once and validated like any other. Nothing runs in the web process. What is particular:

- The task belongs to its organization's *interactive* campaign for that kernel and quorum (one
  per (kernel, quorum), created running on first use, named "Synchronous runs of ...", listed
  with the organization's other campaigns). The scheduler leases an interactive campaign's
  replicas before any batch campaign's (workers/scheduler.py `_next_campaign`), and such a
  campaign never completes.
- After a result of an interactive task is recorded, the scheduler says so on the task's
  channel group (`announce`); the waiting request re-reads the task (`wait_decided`). The task
  is committed before the request subscribes, so the request reads it once after subscribing:
  an answer that came in between is not missed.
- Verification is the campaign's: with quorum 1 (the default) a run is one worker's answer,
  unverified (basis "single"); with quorum N it is decided when N independent volunteers
  agreed, exactly as in a batch campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import F

from accounts.models import Organization, User
from campaigns import replicas, signals
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Result, Task
from campaigns.services.base import ServiceError, limits
from campaigns.services.creation import campaign_create
from campaigns.services.lifecycle import campaign_start

#: How long a run's kernel may run on the worker (the interactive campaign's task_timeout).
RUN_TASK_TIMEOUT = 60
#: How long a caller may wait for an answer in one request (POST /run, GET /runs/{id}).
WAIT_MAX_SECONDS = 60.0
WAIT_DEFAULT_SECONDS = 30.0
#: Requests waiting at once in one server process: each holds a thread and a database
#: connection while it waits. Beyond this, a run is queued and answered at once with 202.
MAX_WAITING = 64
GROUP_PREFIX = "ccgsc.run."

_waiting = threading.BoundedSemaphore(MAX_WAITING)


def group_name(task_id: int) -> str:
    return f"{GROUP_PREFIX}{task_id}"


# --- writes ---------------------------------------------------------------------------------


def run_campaign(*, organization: Organization, kernel: Kernel, quorum: int) -> Campaign:
    """The organization's running interactive campaign for this kernel and quorum, created
    (and started) on first use. A paused one is returned as it is: its runs wait."""
    found = _interactive(organization, kernel, quorum)
    if found is not None:
        return found
    with transaction.atomic():
        # The kernel's row orders concurrent first runs, so they share one campaign.
        Kernel.objects.select_for_update().only("pk").get(pk=kernel.pk)
        found = _interactive(organization, kernel, quorum)
        if found is not None:
            return found
        name = f"Synchronous runs of {kernel.name}"
        campaign = campaign_create(
            organization=organization,
            name=name if quorum == 1 else f"{name} (quorum {quorum})",
            description="Tasks of POST /api/v1/run: leased before batch work; never completes.",
            kernel=kernel,
            task_timeout=RUN_TASK_TIMEOUT,
            min_quorum=quorum,
            target_replicas=quorum,
            max_total_replicas=max(10, 2 * quorum),
        )
        Campaign.objects.filter(pk=campaign.pk).update(interactive=True)
        return campaign_start(campaign=campaign)


def _interactive(organization: Organization, kernel: Kernel, quorum: int) -> Campaign | None:
    return (
        Campaign.objects.filter(
            organization=organization,
            kernel=kernel,
            interactive=True,
            min_quorum=quorum,
            state__in=(Campaign.State.RUNNING, Campaign.State.PAUSED),
        )
        .order_by("pk")
        .first()
    )


def run_submit(
    *,
    organization: Organization,
    kernel: Kernel,
    spec: TaskSpec,
    quorum: int = 1,
    created_by: User | None = None,
) -> Task:
    """Queue one run: a task of the interactive campaign, with `quorum` replicas to lease.
    Idle workers are told after commit. Returns the task (the run's id is its id)."""
    if kernel.organization_id != organization.pk:
        raise ServiceError("The kernel must belong to the organization.")
    max_input = limits()["TASK_INPUT_MAX_BYTES"]
    if len(spec.input) > max_input:
        raise ServiceError(f"The input is above the {max_input}-byte limit.")
    campaign = run_campaign(organization=organization, kernel=kernel, quorum=quorum)
    with transaction.atomic():
        # The campaign's row orders concurrent runs, so seq numbers never collide.
        locked = Campaign.objects.select_for_update().only("tasks_total").get(pk=campaign.pk)
        task = Task.objects.create(
            campaign_id=campaign.pk,
            seq=locked.tasks_total,
            input=spec.input,
            args=spec.args,
            env=spec.env,
        )
        with connection.cursor() as cursor:
            replicas.insert_replicas(cursor, [(campaign.pk, task.pk)] * quorum)
        Campaign.objects.filter(pk=campaign.pk).update(
            tasks_total=F("tasks_total") + 1, input_state=Campaign.InputState.READY
        )
        transaction.on_commit(
            lambda: signals.work_available.send(Campaign, campaign_id=campaign.pk, urgent=True)
        )
    return task


def announce(task_ids: list[int]) -> None:
    """Results of these interactive tasks were recorded (in the current transaction): tell the
    requests waiting on them after commit. Best-effort; a waiter also reads the database."""
    if task_ids:
        transaction.on_commit(lambda: _tell(task_ids))


def _tell(task_ids: list[int]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(_send_all)
    send(layer, task_ids)


async def _send_all(layer: Any, task_ids: list[int]) -> None:
    for task_id in task_ids:
        await layer.group_send(group_name(task_id), {"type": "run.returned", "task": task_id})


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


async def wait_decided(task_id: int, seconds: float) -> bool:
    """Wait up to `seconds` for the task to be decided (done or failed), woken by `announce`.
    Returns whether it was."""
    if seconds <= 0:
        return await sync_to_async(_decided, thread_sensitive=True)(task_id)
    layer = get_channel_layer()
    if layer is None:
        return await sync_to_async(_decided, thread_sensitive=True)(task_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    channel = await layer.new_channel()
    group = group_name(task_id)
    await layer.group_add(group, channel)
    try:
        # Read after subscribing: an answer recorded before the subscription is seen here.
        while not await sync_to_async(_decided, thread_sensitive=True)(task_id):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(layer.receive(channel), remaining)
            except TimeoutError:
                return await sync_to_async(_decided, thread_sensitive=True)(task_id)
        return True
    finally:
        with contextlib.suppress(Exception):
            await layer.group_discard(group, channel)


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
