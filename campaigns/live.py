"""Live campaign pages: a per-process publisher of rate-limited snapshots.

Owners' campaign pages subscribe to /ws/campaigns/<id>/ (campaigns.consumers). Each consumer
joins the Channels group `campaign.<id>` and tells this process's publisher it is watching.
The publisher is one asyncio task on the server's event loop that, every TICK seconds, reads
the counters of the campaigns watched in this process (campaigns.selectors.snapshots: two
queries for all of them) and sends a snapshot to a campaign's group when something changed,
when the campaign was marked dirty, or at least every HEARTBEAT seconds (so a stalled
campaign's rate falls to zero on the chart).

Why polling and not a push per result: the scheduler's hot path (workers.scheduler
.submit_results) stays free of extra queries and messages, and however busy a campaign is its
pages get at most 1/TICK snapshots per second per process. Consumers throttle again on their
side (MIN_INTERVAL), so several server processes publishing the same campaign into one Redis
group still reach a page at most a few times per second.

The rate is tasks decided (done + failed) per second over the last RATE_WINDOW seconds, from
the publisher's own samples of the counters.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from campaigns import selectors, signals
from campaigns.models import Campaign

log = logging.getLogger(__name__)

TICK = 0.5
HEARTBEAT = 2.0
RATE_WINDOW = 5.0
# A page gets at most one snapshot per MIN_INTERVAL (enforced by the consumer).
MIN_INTERVAL = 0.5
EVENT_TYPE = "campaign.snapshot"


def group_name(campaign_id: int) -> str:
    return f"campaign.{campaign_id}"


class Publisher:
    """Publishes snapshots of the campaigns watched in this process. All methods except
    `mark_dirty` run on the event loop; `mark_dirty` may be called from any thread."""

    def __init__(self) -> None:
        self.watched: Counter[int] = Counter()
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._samples: dict[int, deque[tuple[float, int]]] = {}
        self._last_key: dict[int, tuple[Any, ...]] = {}
        self._last_sent: dict[int, float] = {}
        self.sent: Counter[int] = Counter()  # snapshots sent per campaign (tests, debugging)
        self.on_tick: list[Any] = []  # callables(snapshots) run after each tick (reducer)

    # --- subscriptions --------------------------------------------------------------------

    def watch(self, campaign_id: int) -> None:
        self.watched[campaign_id] += 1
        self.mark_dirty(campaign_id)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            # A new event loop (tests run one per test) gets its own publisher task.
            self._loop = loop
            self._task = loop.create_task(self._run(), name="ccgsc-campaign-publisher")

    def unwatch(self, campaign_id: int) -> None:
        self.watched[campaign_id] -= 1
        if self.watched[campaign_id] <= 0:
            del self.watched[campaign_id]
            self._samples.pop(campaign_id, None)
            self._last_key.pop(campaign_id, None)
            self._last_sent.pop(campaign_id, None)

    def mark_dirty(self, campaign_id: int) -> None:
        """Send this campaign's snapshot on the next tick even if its counters look the same."""
        with self._lock:
            self._dirty.add(campaign_id)

    # --- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while self.watched:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:
                # A database hiccup must not end live updates for every page of the process.
                log.exception("campaign publisher tick failed")
            await asyncio.sleep(max(0.0, TICK - (time.monotonic() - started)))

    async def tick(self) -> int:
        """Read the watched campaigns once and publish what is due. Returns how many snapshots
        were sent."""
        ids = list(self.watched)
        if not ids:
            return 0
        rows = await database_sync_to_async(selectors.snapshots)(ids)
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        layer = get_channel_layer()
        now_mono, now_wall = time.monotonic(), time.time()
        sent = 0
        for cid in ids:
            row = rows.get(cid)
            if row is None:
                continue  # deleted: the page finds out on its next load
            finished = row["tasks_done"] + row["tasks_failed"]
            samples = self._samples.setdefault(cid, deque())
            samples.append((now_mono, finished))
            while len(samples) > 2 and now_mono - samples[1][0] >= RATE_WINDOW:
                samples.popleft()
            key = tuple(row[f] for f in (*selectors.SNAPSHOT_FIELDS, "leased", "workers"))
            last = self._last_sent.get(cid)
            due = (
                cid in dirty
                or key != self._last_key.get(cid)
                or last is None
                or now_mono - last >= HEARTBEAT
            )
            if not due:
                continue
            if last is not None and now_mono - last < MIN_INTERVAL:
                with self._lock:
                    self._dirty.add(cid)  # not yet: next tick
                continue
            first_t, first_n = samples[0]
            span = now_mono - first_t
            rate = (finished - first_n) / span if span > 0 else 0.0
            snapshot = {**row, "rate": round(rate, 3), "t": round(now_wall, 3)}
            self._last_key[cid] = key
            self._last_sent[cid] = now_mono
            if layer is not None:
                await layer.group_send(group_name(cid), {"type": EVENT_TYPE, "snapshot": snapshot})
            self.sent[cid] += 1
            sent += 1
        for hook in self.on_tick:
            try:
                await database_sync_to_async(hook)(rows)
            except Exception:
                log.exception("campaign publisher hook failed")
        return sent


publisher = Publisher()


def _on_campaign_changed(sender: Any, campaign_id: int, **kwargs: Any) -> None:
    publisher.mark_dirty(campaign_id)


# Connected at import: this module is imported by the ASGI routing, i.e. in every process that
# serves live pages; other processes (Celery) need no publisher.
signals.campaign_changed.connect(_on_campaign_changed, dispatch_uid="campaigns.live")


def _reduce_running(rows: dict[int, dict[str, Any]]) -> None:
    """While an owner watches a running campaign that has a reducer, refresh its partial
    reduction now and then (campaigns.services.campaign_reduce_soon throttles)."""
    from campaigns.services.reducer import campaign_reduce_soon

    for cid, row in rows.items():
        if row["reducer_id"] and row["state"] == Campaign.State.RUNNING and row["tasks_done"]:
            campaign_reduce_soon(campaign_id=cid)


publisher.on_tick.append(_reduce_running)
