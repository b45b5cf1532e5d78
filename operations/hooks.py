"""What operations/ plugs into the other apps (called once from OperationsConfig.ready).

- the scheduler's validated-hook counts results validated inline (unreplicated campaigns) for
  /metrics; replicated ones are counted where rewards.validation.apply writes verdicts;
- campaigns' `campaign_changed` signal sends the "completed" and "failed" notifications;
- the sweeper loop of every server process runs the periodic jobs below: the heartbeat in each
  process, the others once per deployment (operations.periodic.claim).
"""

from __future__ import annotations

from typing import Any

from campaigns.models import Campaign
from ccgsc import metrics
from operations import health, notifications, periodic
from workers import scheduler, sweeper

HEARTBEAT_SECONDS = 5.0
# How often a process offers to run the deployment-wide jobs; claim() lets one win per period.
OFFER_SECONDS = 10.0


def count_inline(rows: list[tuple[int, int, int, int | None, int | None]]) -> None:
    metrics.validated(len(rows))


def on_campaign_changed(sender: Any, campaign_id: int, state: str, **kwargs: Any) -> None:
    if state == Campaign.State.COMPLETED:
        notifications.notify(campaign_id, notifications.Event.COMPLETED)
    elif state == Campaign.State.FAILED:
        notifications.notify(campaign_id, notifications.Event.FAILED)


def register() -> None:
    if count_inline not in scheduler.validated_hooks:
        scheduler.validated_hooks.append(count_inline)
    jobs = [
        (HEARTBEAT_SECONDS, health.heartbeat),
        (OFFER_SECONDS, periodic.deployment_jobs),
    ]
    for period, job in jobs:
        if not any(existing is job for _, existing in sweeper.periodic):
            sweeper.periodic.append((period, job))
