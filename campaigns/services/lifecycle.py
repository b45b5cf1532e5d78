"""A campaign's lifecycle: start, pause, resume, cancel, approval, and the end (completed or
failed) decided in the transaction that decided its last task."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import (
    Case,
    F,
    OuterRef,
    Q,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat
from django.utils import timezone

from campaigns import signals
from campaigns.jobs import reduce_results
from campaigns.models import Campaign, Result, Task
from campaigns.services.base import ServiceError, announce
from ccgsc.jobs import enqueue

State = Campaign.State


PAST = {"start": "started", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "start": (State.DRAFT,),
    "pause": (State.RUNNING,),
    "resume": (State.PAUSED,),
    "cancel": (State.DRAFT, State.RUNNING, State.PAUSED),
}


def _transition(campaign: Campaign, action: str, new_state: str, **extra: Any) -> Campaign:
    allowed = TRANSITIONS[action]
    with transaction.atomic():
        updated = Campaign.objects.filter(pk=campaign.pk, state__in=allowed).update(
            state=new_state, **extra
        )
        if not updated:
            campaign.refresh_from_db(fields=["state"])
            raise ServiceError(f"A {campaign.state} campaign cannot be {PAST[action]}.")
        if new_state in (State.PAUSED, State.CANCELLED):
            # Outstanding leases are withdrawn: paused replicas go back to the queue (it was not
            # the worker's fault), cancelled ones are closed. Workers are told to stop them.
            leased = Result.objects.filter(campaign=campaign, state=Result.State.LEASED)
            if new_state == State.PAUSED:
                leased.update(
                    state=Result.State.UNSENT,
                    session_id=None,
                    user=None,
                    site_id=None,
                    leased_at=None,
                    deadline=None,
                )
            else:
                Result.objects.filter(
                    campaign=campaign, state__in=(Result.State.UNSENT, Result.State.LEASED)
                ).update(state=Result.State.CANCELLED)
        announce(campaign.pk, new_state)
        if new_state == State.RUNNING:
            transaction.on_commit(
                lambda: signals.work_available.send(Campaign, campaign_id=campaign.pk)
            )
            campaign_check_complete(campaign_id=campaign.pk)
    campaign.refresh_from_db()
    return campaign


def campaign_start(*, campaign: Campaign) -> Campaign:
    if campaign.input_state == Campaign.InputState.FAILED:
        raise ServiceError("The campaign's input failed; fix it and regenerate before starting.")
    return _transition(campaign, "start", State.RUNNING, started_at=timezone.now())


def campaign_pause(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "pause", State.PAUSED)


def campaign_resume(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "resume", State.RUNNING)


def campaign_cancel(*, campaign: Campaign) -> Campaign:
    return _transition(campaign, "cancel", State.CANCELLED, finished_at=timezone.now())


def campaign_set_approved(*, campaign_ids: list[int], approved: bool) -> int:
    """A platform admin approves campaigns for anonymous and embedded volunteers (or withdraws
    the approval: leases already given out finish, no new ones are made). Returns how many
    campaigns changed; idle workers are woken for newly approved running ones."""
    with transaction.atomic():
        changed = list(
            Campaign.objects.filter(pk__in=campaign_ids)
            .exclude(approved=approved)
            .values_list("pk", "state")
        )
        Campaign.objects.filter(pk__in=[pk for pk, _ in changed]).update(approved=approved)
        woken = [pk for pk, state in changed if approved and state == State.RUNNING]
        if woken:
            transaction.on_commit(lambda: _wake(woken))
    return len(changed)


def _wake(campaign_ids: list[int]) -> None:
    for pk in campaign_ids:
        signals.work_available.send(Campaign, campaign_id=pk)


def campaign_check_complete(*, campaign_id: int) -> bool:
    """End a running campaign whose input is final and whose every task is decided: completed,
    or failed with the reason when not one task succeeded (a kernel that cannot run on any
    host must not look like a finished job). Called inside the transaction that decided the
    last tasks; idempotent. One UPDATE whichever way it ends."""
    first_failed = Task.objects.filter(campaign_id=OuterRef("pk"), state=Task.State.FAILED)
    first_failed = first_failed.order_by("seq")[:1]
    all_failed = Q(tasks_done=0)
    done = Campaign.objects.filter(
        pk=campaign_id,
        state=State.RUNNING,
        interactive=False,  # a campaign of synchronous runs waits for the next one
        input_state=Campaign.InputState.READY,
        tasks_total__gt=0,
        tasks_total=F("tasks_done") + F("tasks_failed"),
    ).update(
        state=Case(When(all_failed, then=Value(State.FAILED)), default=Value(State.COMPLETED)),
        error=Case(
            When(
                all_failed,
                then=Concat(
                    Value("Every task failed. The first failure (task "),
                    Cast(Subquery(first_failed.values("seq")), TextField()),
                    Value("): "),
                    Coalesce(
                        Subquery(first_failed.values("failure")),
                        Value("unknown"),
                        output_field=TextField(),
                    ),
                    output_field=TextField(),
                ),
            ),
            default=F("error"),
            output_field=TextField(),
        ),
        finished_at=timezone.now(),
    )
    if done:
        # Once per campaign, so the extra query stays off the per-result path.
        state, reducer = Campaign.objects.values_list("state", "reducer_id").get(pk=campaign_id)
        announce(campaign_id, state)
        if state == State.COMPLETED and reducer is not None:
            enqueue(reduce_results, campaign_id, True)
    return bool(done)
