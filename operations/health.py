"""Health checks for the status page (public: states only) and the admin health panel (staff:
details, queue depths, per-process figures), and this process's heartbeat.

Every check has a short timeout, so a dead Redis or a missing Celery worker makes the page say
so within about a second rather than hang. The embedded mode (no Redis, jobs in the server
process) reports those components as "not used", which is not an error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Count, Q
from django.utils import timezone

from campaigns.models import Campaign, Result
from ccgsc.env import env_bool
from operations.models import ProcessHeartbeat
from workers import liveness, sweeper
from workers.models import WorkerSession

log = logging.getLogger(__name__)

State = Literal["ok", "degraded", "down", "off"]
CHECK_TIMEOUT = 1.0
# Server processes report every HEARTBEAT_SECONDS: one not seen for PROCESS_GONE is gone. The
# sweeper sweeps every couple of seconds: SWEEPER_LATE without a sweep means it is stuck or gone.
HEARTBEAT_SECONDS = 5.0
PROCESS_GONE = timedelta(seconds=30)
SWEEPER_LATE = timedelta(seconds=20)

STARTED = timezone.now()
HOST = socket.gethostname()[:255]


@dataclass
class Check:
    name: str
    state: State
    summary: str
    # Staff-only detail (versions, addresses, counts); never on the public page.
    detail: str = ""
    ms: float | None = None


@dataclass
class Report:
    checks: list[Check]
    queues: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessHeartbeat] = field(default_factory=list)
    time: datetime = field(default_factory=timezone.now)

    @property
    def state(self) -> State:
        states = {c.state for c in self.checks}
        if "down" in states:
            return "down"
        if "degraded" in states:
            return "degraded"
        return "ok"


def _timed(name: str, fn: Callable[[], Check]) -> Check:
    start = time.perf_counter()
    try:
        check = fn()
    except Exception as exc:
        log.warning("health check %s failed: %s", name, exc)
        check = Check(name, "down", "not reachable", detail=f"{type(exc).__name__}: {exc}"[:300])
    check.ms = round((time.perf_counter() - start) * 1000, 1)
    return check


def check_database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check("Database", "ok", "answering", detail=f"{connection.vendor}")


def check_redis() -> Check:
    if not settings.REDIS_URL:
        return Check("Redis", "off", "not used (embedded mode: in-memory channel layer and cache)")
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
    )
    try:
        client.ping()
        info: dict[str, Any] = client.info(section="server")  # type: ignore[assignment]
        mem: dict[str, Any] = client.info(section="memory")  # type: ignore[assignment]
    finally:
        client.close()
    return Check(
        "Redis",
        "ok",
        "answering",
        detail=f"Redis {info.get('redis_version')}, {mem.get('used_memory_human')} used",
    )


def check_celery() -> Check:
    if not settings.USE_CELERY_BROKER:
        how = "synchronously" if settings.CELERY_EMBEDDED == "eager" else "in a thread pool"
        return Check(
            "Background jobs",
            "off",
            f"no Celery broker: jobs run inside the server process ({how})",
        )
    from ccgsc.celery import app

    replies = app.control.ping(timeout=CHECK_TIMEOUT) or []
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check("Background jobs", "down", "no Celery worker answered")
    return Check(
        "Background jobs",
        "ok",
        f"{len(names)} Celery worker{'s' if len(names) != 1 else ''} answering",
        detail=", ".join(names),
    )


def check_sweeper() -> Check:
    """The deployment's one lease sweeper (workers.sweeper), from its last recorded sweep."""
    last = sweeper.last_sweep()
    lag = last.get("lag_seconds")
    if lag is None:
        return Check(
            "Lease sweeper", "off", "not started yet (it starts with the first worker connection)"
        )
    late = lag > SWEEPER_LATE.total_seconds()
    return Check(
        "Lease sweeper",
        "down" if late else "ok",
        "late" if late else "running",
        detail=f"last swept {lag:.1f} s ago by {last.get('by', '?')}"
        f" ({last.get('reclaimed', 0)} leases reclaimed, {last.get('closed', 0)} stale sessions"
        " closed)",
    )


def queue_depths() -> dict[str, int]:
    """Replica counts by the scheduler's states (each a partial index), and running campaigns."""
    results = Result.objects.filter(
        Q(state=Result.State.UNSENT)
        | Q(state=Result.State.LEASED)
        | Q(state=Result.State.RETURNED, validation=Result.Validation.PENDING)
    ).aggregate(
        pending=Count("pk", filter=Q(state=Result.State.UNSENT)),
        leased=Count("pk", filter=Q(state=Result.State.LEASED)),
        awaiting_validation=Count(
            "pk", filter=Q(state=Result.State.RETURNED, validation=Result.Validation.PENDING)
        ),
    )
    running = Campaign.objects.filter(state=Campaign.State.RUNNING).count()
    return {**{k: int(v or 0) for k, v in results.items()}, "campaigns_running": running}


def connected_workers() -> dict[str, int]:
    rows = (
        WorkerSession.objects.filter(disconnected_at__isnull=True)
        .values_list("kind", "transport")
        .annotate(n=Count("pk"))
    )
    out = {f"{kind}_{transport}": n for kind, transport, n in rows}
    out["total"] = sum(n for _, _, n in rows)
    return out


def live_processes(now: datetime) -> list[ProcessHeartbeat]:
    return list(
        ProcessHeartbeat.objects.filter(seen_at__gte=now - PROCESS_GONE).order_by("host", "pid")
    )


def report(*, detailed: bool) -> Report:
    """All checks; with `detailed`, also queue depths, workers by kind and processes."""
    now = timezone.now()
    processes = live_processes(now)
    checks = [
        _timed("Database", check_database),
        _timed("Redis", check_redis),
        _timed("Background jobs", check_celery),
        _timed("Lease sweeper", check_sweeper),
    ]
    out = Report(checks=checks, time=now)
    if detailed:
        out.queues = queue_depths()
        out.workers = connected_workers()
        out.processes = processes
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def heartbeat() -> None:
    """This process is alive (called every HEARTBEAT_SECONDS by its heartbeat thread)."""
    now = timezone.now()
    ProcessHeartbeat.objects.update_or_create(
        key=liveness.process_key(),
        defaults={
            "host": HOST,
            "pid": os.getpid(),
            "seen_at": now,
            "started_at": STARTED,
            "rss_bytes": _rss_bytes(),
            "cpu_seconds": round(sum(os.times()[:2]), 2),
            "threads": threading.active_count(),
        },
    )
    # Processes gone for a day are forgotten (rare: one row per process start).
    ProcessHeartbeat.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()


_thread: threading.Thread | None = None


def _beat_forever() -> None:
    from operations import periodic

    while True:
        try:
            heartbeat()
            # Every process offers; periodic.claim lets one per deployment run each job.
            periodic.deployment_jobs()
        except Exception:
            log.exception("heartbeat failed")
        finally:
            close_old_connections()
        time.sleep(HEARTBEAT_SECONDS)


def start_heartbeat() -> None:
    """Start this server process's heartbeat thread, once (ccgsc/asgi.py calls it, so every
    daphne process reports itself and offers to run the deployment-wide jobs, whether or not
    any worker ever connects to it). HEARTBEAT=false turns it off (the test suite does: its
    database belongs to the tests)."""
    global _thread
    if not env_bool("HEARTBEAT", True):
        return
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_beat_forever, name="ccgsc-heartbeat", daemon=True)
        _thread.start()
