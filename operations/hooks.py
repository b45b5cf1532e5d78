"""What operations/ plugs into the other apps (called once from OperationsConfig.ready).

- ccgsc.hooks' `validated` point counts results validated inline (unreplicated campaigns) for
  /metrics; replicated ones are counted where rewards.validation.apply writes verdicts;
- campaigns' `campaign_changed` signal sends the "completed" and "failed" notifications;
- every server process's heartbeat thread (operations.health.start_heartbeat, started by
  ccgsc/asgi.py) reports the process and offers to run the deployment-wide jobs of
  operations.periodic, which one process per period wins.
"""

from __future__ import annotations

import logging
from typing import Any

from campaigns.models import Campaign
from ccgsc import hooks, metrics
from ccgsc.hooks import ResultRow
from operations import notifications

log = logging.getLogger(__name__)


def count_inline(rows: list[ResultRow]) -> None:
    metrics.validated(len(rows))


def on_campaign_changed(sender: Any, campaign_id: int, state: str, **kwargs: Any) -> None:
    """Runs after the commit that changed the state, in the caller's thread (a results batch,
    a job): a failure here is logged, never raised into the code that finished the campaign."""
    events: dict[str, str] = {
        Campaign.State.COMPLETED: notifications.Event.COMPLETED,
        Campaign.State.FAILED: notifications.Event.FAILED,
    }
    if state not in events:
        return
    try:
        notifications.notify(campaign_id, events[state])
    except Exception:
        log.exception("notifications of campaign %s (%s) failed", campaign_id, state)


def register() -> None:
    hooks.register(hooks.registry.validated, count_inline)
