"""The sweeper's periodic maintenance hooks (ccgsc.hooks: periodic)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection as dj_connection
from django.utils import timezone

from campaigns.models import Result
from ccgsc.hooks import PeriodicJob, Registry
from rewards import validation
from tests.waiting import until
from workers import protocol, scheduler, sessions, sweeper
from workers.connection import limits as connection_limits
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


def test_rewards_registers_its_catch_up(hooks: Registry) -> None:
    assert [job.job for job in hooks.periodic] == [validation.catch_up]


class SweepClock:
    """The sweeper's clock in a test (its `time` module: monotonic only): each sweep moves it
    on by one second, until it stops at `end`. How fast the machine is plays no part."""

    def __init__(self, end: float) -> None:
        self.now = 0.0
        self.end = end
        self.sweeps = 0

    def monotonic(self) -> float:
        return self.now

    def sweep(self) -> tuple[int, int]:
        self.sweeps += 1
        self.now = min(self.now + 1.0, self.end)
        return (0, 0)


# The loop runs its steps on the database thread, which checks that thread's connection first
# (Channels' database_sync_to_async): a connection an earlier test left open there is touched,
# which pytest-django refuses without database access (seen in the embedded mode under xdist).
@pytest.mark.django_db
async def test_periodic_jobs_run_at_their_period_and_a_failing_one_stops_nothing(
    monkeypatch: pytest.MonkeyPatch, hooks: Registry
) -> None:
    often: list[float] = []
    rarely: list[float] = []
    failed: list[float] = []
    clock = SweepClock(end=20.0)

    def broken() -> None:
        failed.append(clock.now)
        raise RuntimeError("boom")

    monkeypatch.setattr(sweeper, "SWEEP_SECONDS", 0)
    monkeypatch.setattr(sweeper, "time", clock)
    monkeypatch.setattr(sweeper, "sweep_once", clock.sweep)
    monkeypatch.setattr(sweeper, "hold_sweeper_lock", lambda: True)
    hooks.periodic[:] = [
        PeriodicJob(0.0, broken),
        PeriodicJob(5.0, lambda: often.append(clock.now)),
        PeriodicJob(3600.0, lambda: rarely.append(clock.now)),
    ]
    task = asyncio.get_running_loop().create_task(sweeper._loop())
    # Five sweeps after the clock stopped at 20 s: nothing is due any more.
    await until(lambda: clock.sweeps >= 25, timeout=60, what="25 sweeps")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A job first runs one period after the sweeper first saw it (at 1 s), then once per
    # period; the one that fails at every sweep stops nothing.
    assert often == [6.0, 11.0, 16.0]
    assert rarely == []
    assert failed[:20] == [float(s) for s in range(1, 21)]


# --- one sweeper per deployment, stale HTTP sessions, visible lag -------------------------------


def _silent_session(transport: str, seconds: float) -> WorkerSession:
    return WorkerSession.objects.create(
        kind="browser",
        transport=transport,
        last_seen_at=timezone.now() - timedelta(seconds=seconds),
    )


def test_http_session_silent_for_two_long_polls_is_closed_and_its_leases_freed(
    make_campaign: Any,
) -> None:
    scheduler.work_available()  # forget campaigns earlier tests left looking empty
    c = make_campaign(["a", "b"])
    two_polls = 2 * sessions.LONG_POLL_SECONDS
    http_gone = _silent_session(WorkerSession.Transport.HTTP, two_polls + 1)
    http_alive = _silent_session(WorkerSession.Transport.HTTP, two_polls - 5)
    # A WebSocket session as silent as http_gone is alive: it pings only every 45 s (and a
    # session's own silence no longer matters when its process vouches for it).
    ws_quiet = _silent_session(WorkerSession.Transport.WEBSOCKET, two_polls + 1)
    ws_gone = _silent_session(WorkerSession.Transport.WEBSOCKET, 91)
    held = scheduler.lease(SessionInfo(id=http_gone.pk), 1)
    assert len(held) == 1

    assert sweeper.sweep_once() == (0, 2)

    closed = set(
        WorkerSession.objects.filter(disconnected_at__isnull=False).values_list("pk", flat=True)
    )
    assert closed == {http_gone.pk, ws_gone.pk}
    assert {http_alive.pk, ws_quiet.pk}.isdisjoint(closed)
    lease = Result.objects.get(pk=held[0].lease)
    assert lease.state == Result.State.UNSENT and lease.session_id is None
    assert Result.objects.filter(campaign=c, state=Result.State.UNSENT).count() == 2


def test_http_sessions_are_told_to_ping_within_one_long_poll() -> None:
    assert connection_limits(WorkerSession.Transport.HTTP).heartbeat < (sessions.LONG_POLL_SECONDS)
    # WebSocket sessions need no ping to stay open (their process vouches for them): the
    # heartbeat only lets workers notice a silent server, and keeps proxies from timing out.
    ws_heartbeat = connection_limits(WorkerSession.Transport.WEBSOCKET).heartbeat
    assert ws_heartbeat == protocol.WEBSOCKET_HEARTBEAT == 45
    assert ws_heartbeat < 55  # the idle timeouts of common proxies and load balancers
    # Within the server's keepalive interval: a pinging worker is never pinged by the server.
    assert ws_heartbeat < protocol.PING_INTERVAL
    # A worker the server pings (hello: pongs) pings only a server silent longer than the
    # server's keepalive plus its 1 s check and some, and still within common proxies' 60 s.
    beaten = connection_limits(WorkerSession.Transport.WEBSOCKET, beat=protocol.PING_INTERVAL)
    assert (beaten.beat, beaten.heartbeat) == (protocol.PING_INTERVAL, protocol.QUIET_HEARTBEAT)
    assert protocol.PING_INTERVAL + 3 < beaten.heartbeat < 60
    assert connection_limits(WorkerSession.Transport.HTTP, beat=50).beat is None


@pytest.mark.django_db
def test_a_sweep_is_recorded_with_its_lag(client: Any) -> None:
    cache.delete(sweeper.LAST_SWEEP_KEY)
    assert sweeper.last_sweep()["at"] is None
    try:
        assert sweeper.tick() is True
    finally:
        sweeper.release_sweeper_lock()
    last = sweeper.last_sweep()
    assert last["by"] == sweeper.WHO
    assert last["at"] is not None and 0 <= last["lag_seconds"] < 5
    assert last["reclaimed"] == 0 and last["closed"] == 0
    cache.delete("ccgsc:status")
    assert client.get("/api/v1/status").json()["sweeper"]["at"] == last["at"]


def _in_thread(fn: Any) -> Any:
    """Run fn in a new thread: its own Django connection, i.e. its own database session,
    as another server process would have."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        finally:
            dj_connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    return out[0]


@pytest.mark.django_db(transaction=True)
def test_only_one_process_holds_the_sweeper_lock_until_it_goes() -> None:
    if dj_connection.vendor != "postgresql":
        # The embedded mode is one process (in-memory channel layer): it always sweeps.
        assert sweeper.hold_sweeper_lock() is True
        return
    # A sweeper an earlier test's consumer started in this process may hold the lock on its
    # own thread's connection: let it go, as a process that stops does.
    sweeper.let_go()
    ready, release = threading.Event(), threading.Event()
    holder: list[bool] = []

    def first_process() -> None:
        holder.append(sweeper.hold_sweeper_lock())
        holder.append(sweeper.hold_sweeper_lock())  # still held, not taken twice
        ready.set()
        release.wait(30)
        dj_connection.close()  # the process (or its connection) dies: the lock goes with it

    t = threading.Thread(target=first_process)
    t.start()
    assert ready.wait(30)
    try:
        assert holder == [True, True]
        assert _in_thread(sweeper.hold_sweeper_lock) is False
        assert _in_thread(sweeper.tick) is False  # a second process does not sweep
    finally:
        release.set()
        t.join(30)
    assert _in_thread(sweeper.tick) is True  # it takes over once the first is gone


@pytest.mark.django_db(transaction=True)
async def test_a_sweeper_started_in_this_process_lets_its_lock_go() -> None:
    from asgiref.sync import sync_to_async

    if dj_connection.vendor != "postgresql":
        # The embedded mode is one process: it always sweeps, and letting go changes nothing.
        sweeper.let_go()
        assert sweeper.hold_sweeper_lock() is True
        return

    def holders() -> list[Any]:
        # Held by this process's sweeper thread's backend (other processes, such as other
        # test workers' servers, hold theirs).
        with dj_connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND pid = %s",
                [sweeper.SWEEPER_LOCK, backend],
            )
            return cursor.fetchall()

    def backend_pid() -> int:
        with dj_connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    sweeper.let_go()
    assert await sweeper._run(sweeper.hold_sweeper_lock) is True  # on the sweeper's thread
    backend = await sweeper._run(backend_pid)
    assert await sync_to_async(holders)()
    sweeper.let_go()
    assert await sync_to_async(holders)() == []
