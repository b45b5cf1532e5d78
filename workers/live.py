"""Pushes to connected workers through the channel layer, never to every connection.

- "There is work" and "campaign X changed" go to SERVERS_GROUP: one message per server
  process, whose dispatcher (workers.dispatch) feeds its waiting sessions or withdraws the
  campaign's leases from the connections holding them.
- "These replicas are withdrawn" goes to the sessions holding them, by the channel name each
  WebSocket session stored (WorkerSession.channel).

Only nudges go through the layer: tasks themselves are always sent on the worker's own
connection, because the layer drops messages silently at capacity. A lost nudge costs at most
the dispatcher's safety-net interval.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from workers import scheduler
from workers.dispatch import SERVERS_GROUP, nudge_here, process_id

log = logging.getLogger(__name__)
NUDGE_INTERVAL = 0.25
# Lease ids per cancel event, so one event stays small.
CANCEL_CHUNK = 500
_last_nudge: dict[int, float] = {}
_pending: set[int] = set()
_lock = threading.Lock()


def _layer_call(method: str, *args: Any) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    call = getattr(layer, method)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # On the event loop thread itself (nothing to block): schedule the send instead.
        loop.create_task(call(*args))
    else:
        async_to_sync(call)(*args)


def _servers_send(event: dict[str, Any]) -> None:
    _layer_call("group_send", SERVERS_GROUP, event)


def on_work_available(sender: Any, campaign_id: int, urgent: bool = False, **kwargs: Any) -> None:
    event: dict[str, Any] = {"type": "work.available", "campaign": campaign_id}
    if urgent:
        # A synchronous run (campaigns/runs.py): someone waits on this one task, so it is
        # never held back by the coalescing below (one nudge per call, as the call is one).
        # This process's dispatchers are woken directly, the others through the layer; a new
        # task of a campaign the directory knows needs no reading of the directory.
        scheduler.work_available(campaign_id, reload=False)
        nudge_here(campaign_id)
        _servers_send({**event, "run": True, "from": process_id()})
        return
    scheduler.work_available(campaign_id)
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
    _servers_send(event)


def _send_pending(campaign_id: int, event: dict[str, Any]) -> None:
    with _lock:
        _pending.discard(campaign_id)
        _last_nudge[campaign_id] = time.monotonic()
    try:
        _servers_send(event)
    except RuntimeError:
        log.debug("nudge for campaign %s dropped (shutting down)", campaign_id)


def channels_of_leases(lease_ids: list[int]) -> dict[str, list[int]]:
    """The channel of each open WebSocket session that was given these leases (two queries)."""
    from campaigns.models import Result
    from workers.models import WorkerSession

    rows = Result.objects.filter(pk__in=lease_ids, session_id__isnull=False).values_list(
        "pk", "session_id"
    )
    by_session: dict[int, list[int]] = defaultdict(list)
    for rid, sid in rows:
        if sid is not None:
            by_session[sid].append(rid)
    out: dict[str, list[int]] = defaultdict(list)
    for sid, channel in (
        WorkerSession.objects.filter(pk__in=list(by_session), disconnected_at__isnull=True)
        .exclude(channel="")
        .values_list("pk", "channel")
    ):
        out[channel] += by_session[sid]
    return out


def on_leases_cancelled(lease_ids: list[int], reason: str) -> None:
    """Replicas were withdrawn (their task was decided elsewhere): the connections holding them
    tell their workers to stop. Called in a database thread (after the commit)."""
    for channel, leases in channels_of_leases(lease_ids).items():
        leases.sort()
        for i in range(0, len(leases), CANCEL_CHUNK):
            _layer_call(
                "send",
                channel,
                {
                    "type": "leases.cancelled",
                    "leases": leases[i : i + CANCEL_CHUNK],
                    "reason": reason,
                },
            )


def on_campaign_changed(sender: Any, campaign_id: int, state: str, **kwargs: Any) -> None:
    scheduler.work_available(campaign_id)
    _servers_send({"type": "campaign.changed", "campaign": campaign_id, "state": state})
