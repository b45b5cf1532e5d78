"""What operations/ plugs into the other apps (called once from OperationsConfig.ready).

- the scheduler's validated-hook counts results validated inline (unreplicated campaigns) for
  /metrics; replicated ones are counted where rewards.validation.apply writes verdicts;
- campaigns' `campaign_changed` signal sends the "completed" and "failed" notifications;
- every server process's heartbeat thread (operations.health.start_heartbeat, started by
  ccgsc/asgi.py) reports the process and offers to run the deployment-wide jobs of
  operations.periodic, which one process per period wins.
"""

from __future__ import annotations

from typing import Any

from campaigns.models import Campaign
from ccgsc import metrics
from operations import notifications
from workers import scheduler


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
