"""Synchronous runs (POST /api/v1/run): queueing one run, and telling those who wait on it
that it returned. Reading and waiting: campaigns/runs.py."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Organization, User
from campaigns import replicas, signals
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Kernel, Task
from campaigns.runs import RUN_TASK_TIMEOUT, group_name, wake_here
from campaigns.services.base import ServiceError, limits
from campaigns.services.creation import campaign_create
from campaigns.services.lifecycle import campaign_start

__all__ = ["RUN_TASK_TIMEOUT", "announce", "run_campaign", "run_submit"]


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
    if connection.vendor == "postgresql":
        task = _insert_run(campaign.pk, spec, quorum)
        transaction.on_commit(
            lambda: signals.work_available.send(Campaign, campaign_id=campaign.pk, urgent=True)
        )
        return task
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


def _insert_run(campaign_id: int, spec: TaskSpec, quorum: int) -> Task:
    """PostgreSQL: the run's task (numbered by the campaign's counter, whose row lock orders
    concurrent runs as the SELECT ... FOR UPDATE of the general path does), its `quorum`
    unsent replicas and the counter, in one statement: one round trip, committed on its own
    (atomic as any statement) unless the caller holds a transaction."""
    now = timezone.now()
    C, T = Campaign._meta.db_table, Task._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH c AS (UPDATE {C} SET tasks_total = tasks_total + 1, input_state = %s"  # noqa: S608 (our tables, bound values)
            " WHERE id = %s RETURNING tasks_total - 1 AS seq),"
            f" t AS (INSERT INTO {T} (campaign_id, seq, input, args, env, state, error_count,"
            " failure, created_at) SELECT %s, c.seq, %s, %s::jsonb, %s::jsonb, %s, 0, '', %s"
            " FROM c RETURNING id, seq),"
            f" r AS (INSERT INTO {replicas.R} ({replicas.COLUMNS})"
            f" SELECT %s, t.id, {replicas.FRESH} FROM t, generate_series(1, %s))"
            " SELECT id, seq FROM t",
            [
                Campaign.InputState.READY.value,
                campaign_id,
                campaign_id,
                spec.input,
                None if spec.args is None else json.dumps(spec.args),
                None if spec.env is None else json.dumps(spec.env),
                Task.State.PENDING.value,
                now,
                campaign_id,
                quorum,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        raise ServiceError("The campaign of synchronous runs is gone.")
    task = Task(
        pk=row[0],
        campaign_id=campaign_id,
        seq=row[1],
        input=spec.input,
        args=spec.args,
        env=spec.env,
        created_at=now,
    )
    task._state.adding = False
    return task


def announce(task_ids: list[int]) -> None:
    """Results of these interactive tasks were recorded (in the current transaction): tell the
    requests waiting on them after commit. Best-effort; a waiter also reads the database."""
    if task_ids:
        transaction.on_commit(lambda: _tell(task_ids))


def _tell(task_ids: list[int]) -> None:
    # This process's waiting requests first (no Redis round trip), then every process's.
    wake_here(task_ids)
    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(_send_all)
    send(layer, task_ids)


async def _send_all(layer: Any, task_ids: list[int]) -> None:
    for task_id in task_ids:
        await layer.group_send(group_name(task_id), {"type": "run.returned", "task": task_id})
