"""Reclaiming expired leases and stale sessions, every few seconds, in each server process.

Not a busy loop: one conditional UPDATE per period finds the leases past their deadline
(through a partial index of leased rows); several processes may sweep concurrently because
each row is claimed by exactly one UPDATE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from workers import scheduler, sessions
from workers.models import WorkerSession

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
# An HTTP-fallback session that has not been heard from for this long is gone; a WebSocket
# session pings every 20 s, so this long a silence means its server process died.
STALE_SESSION = timedelta(seconds=90)

# Slower maintenance other apps register (rewards/apps.py): (period in seconds, function),
# run by the same loop on the same database thread. Each must be safe to run concurrently in
# several server processes.
periodic: list[tuple[float, Callable[[], object]]] = []

_task: asyncio.Task[None] | None = None


def sweep_once() -> tuple[int, int]:
    """Returns (expired leases reclaimed, stale sessions closed)."""
    reclaimed = scheduler.reclaim_expired()
    cutoff = timezone.now() - STALE_SESSION
    stale = list(
        WorkerSession.objects.filter(
            disconnected_at__isnull=True, last_seen_at__lt=cutoff
        ).values_list("pk", flat=True)[:500]
    )
    for session_id in stale:
        sessions.session_close(session_id, {})
    return reclaimed, len(stale)


async def _loop() -> None:
    from workers.connection import db

    last_run: dict[Callable[[], object], float] = {}
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            await db(sweep_once)()
        except Exception:
            log.exception("sweep failed")
        now = time.monotonic()
        for period, job in list(periodic):
            if now - last_run.setdefault(job, now) >= period:
                last_run[job] = now
                try:
                    await db(job)()
                except Exception:
                    log.exception("periodic %s failed", getattr(job, "__name__", job))


def ensure_sweeper() -> None:
    """Start this process's sweeper on the running event loop, once."""
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_loop())
