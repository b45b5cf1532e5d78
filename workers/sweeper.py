"""Reclaiming expired leases and stale sessions, every few seconds, once per deployment.

Every server process runs this loop, but only the one holding the sweeper lock sweeps: on
PostgreSQL a session-level advisory lock (SWEEPER_LOCK) taken on a connection that only this
loop's thread uses, so it lives exactly as long as that connection (a process that dies or
loses its database connection lets another process take over within one period). In the
embedded mode (SQLite) there is one process, which always sweeps.

Not a busy loop: one conditional UPDATE per period finds the leases past their deadline
(through a partial index of leased rows). Concurrent sweeps would still be correct (each row
is claimed by exactly one UPDATE); the lock saves the other processes the work.

The last sweep (when, by which process, what it did) goes to the cache (Redis when there is
one, so every process reports the deployment's sweeper): `last_sweep()`, shown by
/api/v1/status as `sweeper`, makes a stuck or missing sweeper visible.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from ccgsc import hooks
from workers import liveness, scheduler, sessions
from workers.models import WorkerSession

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
# WebSocket sessions of a live process are vouched for by it (workers.liveness): their
# last_seen_at only moves when their counters are flushed. A session whose process is dead (not
# vouched for liveness.PROCESS_DEAD) is closed at the next sweep. This bound is for the rest: a
# session whose process row is unknown (not written yet, deleted, or a server of an earlier
# version, which flushed last_seen_at every 30 s at a ping) and silent this long is gone.
STALE_SESSION = timedelta(seconds=90)
# An HTTP-fallback session is seen at every request; its clients ping within one long poll
# (workers.sessions.HTTP_HEARTBEAT_SECONDS), so two long-poll periods of silence mean gone.
STALE_HTTP_SESSION = timedelta(seconds=2 * sessions.LONG_POLL_SECONDS)
# Sessions closed per statement (a dead process's may be tens of thousands: a few statements a
# chunk, several chunks a sweep).
CLOSE_CHUNK = 1000
CLOSE_PER_SWEEP = 20_000
# pg_try_advisory_lock key of the deployment's one sweeper ("ccgs"; below 2**31 so pg_locks
# shows it as classid 0, objid SWEEPER_LOCK).
SWEEPER_LOCK = 0x63636773
HOLD_OR_TAKE_LOCK = (
    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND classid = 0 AND objid = %s AND objsubid = 1 AND pid = pg_backend_pid() AND granted)"
    " THEN true ELSE pg_try_advisory_lock(%s) END"
)
LAST_SWEEP_KEY = "ccgsc:sweeper:last"

_task: asyncio.Task[None] | None = None
# PostgreSQL: one thread, so the advisory lock's connection (Django's per-thread connection)
# is the same at every tick.
_executor: ThreadPoolExecutor | None = None
WHO = f"{socket.gethostname()}:{os.getpid()}"


def hold_sweeper_lock() -> bool:
    """True when this thread's connection holds (or has just taken) the sweeper lock."""
    if connection.vendor != "postgresql":
        return True  # the embedded mode is one process
    with connection.cursor() as cursor:
        cursor.execute(HOLD_OR_TAKE_LOCK, [SWEEPER_LOCK, SWEEPER_LOCK])
        return bool(cursor.fetchone()[0])


def release_sweeper_lock() -> None:
    """Give the lock up (this thread's connection) for another process to take."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEPER_LOCK])


def stale_sessions_filter(now: datetime) -> Q:
    """Open sessions that nobody vouches for and that have been silent too long: HTTP ones
    after two long polls, WebSocket ones of no live process after STALE_SESSION."""
    return Q(disconnected_at__isnull=True) & (
        Q(transport=WorkerSession.Transport.HTTP, last_seen_at__lt=now - STALE_HTTP_SESSION)
        | (
            Q(transport=WorkerSession.Transport.WEBSOCKET, last_seen_at__lt=now - STALE_SESSION)
            & ~Q(process__in=liveness.live_processes(now))
        )
    )


def dead_process_sessions_filter(now: datetime) -> Q:
    """Open sessions of the server processes that stopped vouching (workers.liveness)."""
    return Q(disconnected_at__isnull=True, process__in=liveness.dead_processes(now))


def _close(where: Q, budget: int) -> int:
    closed = 0
    while closed < budget:
        ids = list(
            WorkerSession.objects.filter(where).values_list("pk", flat=True)[
                : min(CLOSE_CHUNK, budget - closed)
            ]
        )
        if not ids:
            break
        sessions.close_sessions(ids)
        closed += len(ids)
    return closed


def sweep_once() -> tuple[int, int]:
    """Returns (expired leases reclaimed, sessions closed: of dead processes and stale)."""
    reclaimed = scheduler.reclaim_expired()
    now = timezone.now()
    closed = _close(dead_process_sessions_filter(now), CLOSE_PER_SWEEP)
    closed += _close(stale_sessions_filter(now), CLOSE_PER_SWEEP)
    return reclaimed, closed


def tick() -> bool:
    """One period of this process's sweeper: sweep if it is the deployment's sweeper.
    Returns whether it swept."""
    try:
        if not hold_sweeper_lock():
            return False
        started = time.monotonic()
        reclaimed, closed = sweep_once()
    except Exception:
        # A broken connection lost the lock with it: start over on a fresh one next period.
        connection.close()
        raise
    cache.set(
        LAST_SWEEP_KEY,
        {
            "at": timezone.now().isoformat(),
            "by": WHO,
            "ms": round((time.monotonic() - started) * 1000, 1),
            "reclaimed": reclaimed,
            "closed": closed,
        },
        timeout=None,
    )
    return True


def last_sweep() -> dict[str, Any]:
    """The deployment's last sweep and how long ago it was (`lag_seconds`; a healthy
    deployment stays near SWEEP_SECONDS). `at` is None before the first sweep."""
    last = cache.get(LAST_SWEEP_KEY)
    if not last:
        return {"at": None, "lag_seconds": None, "period_seconds": SWEEP_SECONDS}
    at = datetime.fromisoformat(last["at"])
    lag = round((timezone.now() - at).total_seconds(), 1)
    return {**last, "lag_seconds": lag, "period_seconds": SWEEP_SECONDS}


async def _run(fn: Callable[[], Any]) -> Any:
    from workers.connection import db

    if connection.vendor != "postgresql":
        return await db(fn)()
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccgsc-sweeper")
    return await asyncio.get_running_loop().run_in_executor(_executor, fn)


async def _loop() -> None:
    last_run: dict[Callable[[], object], float] = {}
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            swept = await _run(tick)
        except Exception:
            log.exception("sweep failed")
            continue
        if not swept:
            continue
        now = time.monotonic()
        # Slower maintenance other apps register (ccgsc.hooks: periodic), on the same database
        # thread. Each must still be safe to run concurrently (a sweeper that lost its
        # connection mid-job may overlap with the next one for a moment).
        for period, job in list(hooks.registry.periodic):
            if now - last_run.setdefault(job, now) >= period:
                last_run[job] = now
                try:
                    await _run(job)
                except Exception:
                    log.exception("periodic %s failed", getattr(job, "__name__", job))


def let_go() -> None:
    """Close this process's sweeper thread's database connection, which gives the sweeper lock
    up (tests: a sweeper started by an in-process consumer outlives its test's event loop, and
    its connection kept the lock from every later server process on the same database)."""
    if _executor is not None:
        _executor.submit(_close_connection).result(30)


def _close_connection() -> None:
    connection.close()  # the calling thread's own connection (Django's are per thread)


def ensure_sweeper() -> None:
    """Start this process's sweeper loop on the running event loop, once."""
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_loop())
