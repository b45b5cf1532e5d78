"""Pushes to connected workers through a Channels group.

Only nudges go through the group ("there is work", "campaign X paused"): tasks themselves are
always sent on the worker's own connection, because group_send drops messages silently at
capacity. A lost nudge costs at most the idle re-check interval of workers.connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from workers import scheduler

log = logging.getLogger(__name__)
WORKERS_GROUP = "ccgsc.workers"
NUDGE_INTERVAL = 0.25
_last_nudge: dict[int, float] = {}
_pending: set[int] = set()
_lock = threading.Lock()


def _group_send(event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # On the event loop thread itself (nothing to block): schedule the send instead.
        loop.create_task(layer.group_send(WORKERS_GROUP, event))
    else:
        async_to_sync(layer.group_send)(WORKERS_GROUP, event)


def on_work_available(sender: Any, campaign_id: int, **kwargs: Any) -> None:
    scheduler.work_available(campaign_id)
    event = {"type": "work.available", "campaign": campaign_id}
    now = time.monotonic()
    with _lock:
        # Coalesce: a generator committing a batch every few milliseconds nudges a few times a
        # second, not hundreds. A nudge inside the interval is not dropped but sent once at its
        # end, so the last change always reaches idle workers promptly.
        wait = _last_nudge.get(campaign_id, -NUDGE_INTERVAL) + NUDGE_INTERVAL - now
        if wait > 0:
            if campaign_id not in _pending:
                _pending.add(campaign_id)
                timer = threading.Timer(wait, _send_pending, args=(campaign_id, event))
                timer.daemon = True
                timer.start()
            return
        _last_nudge[campaign_id] = now
    _group_send(event)


def _send_pending(campaign_id: int, event: dict[str, Any]) -> None:
    with _lock:
        _pending.discard(campaign_id)
        _last_nudge[campaign_id] = time.monotonic()
    try:
        _group_send(event)
    except RuntimeError:
        log.debug("nudge for campaign %s dropped (shutting down)", campaign_id)


def on_leases_cancelled(lease_ids: list[int], reason: str) -> None:
    """Replicas were withdrawn (their task was decided elsewhere): whichever connections hold
    them tell their workers to stop. Sent to every connection, which keeps its own leases; in
    chunks, so one event stays small."""
    for i in range(0, len(lease_ids), 500):
        _group_send(
            {"type": "leases.cancelled", "leases": lease_ids[i : i + 500], "reason": reason}
        )


def on_campaign_changed(sender: Any, campaign_id: int, state: str, **kwargs: Any) -> None:
    scheduler.work_available(campaign_id)
    _group_send({"type": "campaign.changed", "campaign": campaign_id, "state": state})
