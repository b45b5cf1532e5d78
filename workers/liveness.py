"""Which server process holds each WebSocket session, and whether that process is alive.

A WebSocket session lives exactly as long as its socket, and its socket as long as the server
process holding it. So liveness is the process's, not each session's: every session records
its process (`WorkerSession.process`, the `key` of the process's ProcessHeartbeat row), and the
process vouches for all of its sessions at once by bumping that row's `vouched_at` (one UPDATE
every VOUCH_SECONDS, whatever the number of sessions). Pings from workers write nothing.

The deployment's sweeper (workers.sweeper) closes every open session of a process whose
`vouched_at` is older than PROCESS_DEAD, releasing its leases exactly as a closed socket does:
a process killed with SIGKILL or by the OOM killer has its leases back in the queue within
PROCESS_DEAD + one sweep (about 20 s) instead of at their deadline.

A process is identified by a random key made when it starts (`process_key()`), not by host and
pid: a restarted container's daphne may get the same pid on the same host name, and must not
vouch for the sessions of the process it replaced. Rows are not foreign keys: a session whose
process row does not exist (yet, or any more) is judged by its `last_seen_at` like before
(workers.sweeper.STALE_SESSION).

A session can also leak inside a live process: its consumer died without running disconnect
(an exception in a handler ends the application instance; daphne closes the socket and never
delivers a disconnect). Every RECONCILE_SECONDS the process compares what it holds with what the
database says it holds (one indexed SELECT of its open session ids) and

- closes the sessions it no longer holds (a dead consumer's connection, properly: its leases
  released, its counters flushed; rows opened more than LEAK_GRACE ago that no connection of
  this process claims, in bulk), and
- drops the connections whose session the sweeper closed behind its back (this process was
  stalled for longer than PROCESS_DEAD and was taken for dead): their workers reconnect and
  start a new session, so no connection keeps working for a closed session.

A server process on PostgreSQL vouches from a thread of its own with its own database
connection, so that neither the sessions' queued database work nor a lagging event loop delays
it past PROCESS_DEAD (10,000 working sessions did both, and the sweeper took a busy process for
dead); it stops vouching when the event loop has not turned for LOOP_STUCK (a process whose
loop is stuck serves none of its sessions). The reconciliation runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections, connection
from django.db.models import QuerySet
from django.utils import timezone

from ccgsc.env import env_bool
from operations.models import ProcessHeartbeat
from workers.models import WorkerSession

if TYPE_CHECKING:
    from workers.connection import WorkerConnection

log = logging.getLogger(__name__)

VOUCH_SECONDS = 5.0
# Four vouching periods without a vouch: the process is gone (or its event loop has been stuck
# for LOOP_STUCK, which serves no session either). Its sessions are closed at the next sweep (every
# 2 s): a killed process's leases are back in the queue 15 to 22 s after the kill.
PROCESS_DEAD = timedelta(seconds=20)
RECONCILE_SECONDS = 30.0
# A session row is written before its connection registers with the dispatcher (the hello's
# answer is still on its way): so young a row is not a leak.
LEAK_GRACE = timedelta(seconds=30)
# The WebSocket close code a connection whose session was closed behind its back gets: the
# worker reconnects and starts a new session. An application's own code: a server may send
# only 1000 or 3000-4999 (autobahn, under daphne, refuses 1012 "service restart").
CLOSE_SESSION_GONE = 4012

_key: tuple[int, str] | None = None
_task: asyncio.Task[None] | None = None
_vouching: tuple[int, threading.Thread, threading.Event] | None = None
# When the event loop last turned (monotonic; a callback on the loop sets it every second).
# The vouching thread stops vouching when it is older than LOOP_STUCK: a stuck loop serves no
# session, while a loop merely lagging under load still does.
_loop_seen = time.monotonic()
LOOP_STUCK = 60.0


def process_key() -> str:
    """This process's identity: random, made once per process (again after a fork)."""
    global _key
    pid = os.getpid()
    if _key is None or _key[0] != pid:
        _key = (pid, uuid.uuid4().hex)
    return _key[1]


def vouch(now: datetime | None = None) -> None:
    """This process is alive, and so are all its WebSocket sessions: one statement (two the
    first time, or after the row was deleted)."""
    now = now or timezone.now()
    key = process_key()
    if ProcessHeartbeat.objects.filter(key=key).update(vouched_at=now):
        return
    from operations import health

    ProcessHeartbeat.objects.update_or_create(
        key=key,
        defaults={"vouched_at": now},
        create_defaults={
            "vouched_at": now,
            "seen_at": now,
            "host": health.HOST,
            "pid": os.getpid(),
            "started_at": health.STARTED,
        },
    )


def _vouch_with_own_connection() -> None:
    close_old_connections()
    try:
        vouch()
    finally:
        close_old_connections()


def vouch_if_loop_turns() -> bool:
    """The vouching thread's vouch: only while the event loop has turned within LOOP_STUCK
    (a process whose loop is stuck serves none of its sessions). False when it did not."""
    if time.monotonic() - _loop_seen > LOOP_STUCK:
        return False
    _vouch_with_own_connection()
    return True


def stop_vouching() -> None:
    """Stop this process's vouching thread and wait for it (tests)."""
    if _vouching is not None:
        _vouching[2].set()
        _vouching[1].join()


def _vouch_forever(stop: threading.Event) -> None:
    try:
        while True:
            try:
                if not vouch_if_loop_turns():
                    log.warning("not vouching: the event loop stuck for %.0f s", LOOP_STUCK)
            except Exception:
                log.exception("vouching for this process's sessions failed")
            if stop.wait(VOUCH_SECONDS):
                return
    finally:
        connection.close()


def start_vouching() -> threading.Event:
    """Start this process's vouching thread (PostgreSQL), once per process; returns the event
    that stops it. The vouch does not share the threads of the sessions' database work
    (workers.connection.db) nor wait on the event loop: 10,000 working sessions kept both
    busy for longer than PROCESS_DEAD, and the sweeper took a live process for dead."""
    global _vouching
    if _vouching is None or _vouching[0] != os.getpid() or not _vouching[1].is_alive():
        stop = threading.Event()
        thread = threading.Thread(
            target=_vouch_forever, args=(stop,), name="ccgsc-vouch", daemon=True
        )
        thread.start()
        _vouching = (os.getpid(), thread, stop)
    return _vouching[2]


def live_processes(now: datetime) -> QuerySet[ProcessHeartbeat, Any]:
    """Keys of the processes that vouched within PROCESS_DEAD."""
    return ProcessHeartbeat.objects.filter(vouched_at__gte=now - PROCESS_DEAD).values("key")


def dead_processes(now: datetime) -> QuerySet[ProcessHeartbeat, Any]:
    """Processes that have vouched once, but not for PROCESS_DEAD. Never this one: a process
    that is sweeping is alive, however late its own vouch is."""
    return (
        ProcessHeartbeat.objects.filter(vouched_at__lt=now - PROCESS_DEAD)
        .exclude(key=process_key())
        .values("key")
    )


def open_sessions_here() -> set[int]:
    """The ids of the sessions the database has open in this process (one read of the index of
    open sessions per process; ids only: at 10,000 sessions reading their timestamps too was
    most of a reconcile's cost)."""
    return set(
        WorkerSession.objects.filter(
            process=process_key(), disconnected_at__isnull=True
        ).values_list("pk", flat=True)
    )


def opened_before(ids: list[int], when: datetime) -> list[int]:
    """Which of these sessions connected before `when`."""
    return list(
        WorkerSession.objects.filter(pk__in=ids, connected_at__lt=when).values_list("pk", flat=True)
    )


def _alive(conn: WorkerConnection) -> bool:
    task = conn.task
    return not conn.closed and (task is None or not task.done())


async def reconcile() -> tuple[int, int, int]:
    """Compare this process's connections with its open session rows (see the module's
    docstring). Returns (dead connections closed, leaked rows closed, connections dropped)."""
    from workers import dispatch, sessions
    from workers.connection import db

    connections = dispatch.dispatcher().connections
    dead = [conn for conn in list(connections.values()) if not _alive(conn)]
    for conn in dead:
        if conn.closed:  # closed, but still registered: forget it
            dispatch.dispatcher().closed(conn)
        else:
            await conn.close()
    held = {sid for sid, conn in connections.items() if _alive(conn)}
    open_rows = await db(open_sessions_here)()
    # Rows no connection holds, older than a hello takes: leaked.
    young = timezone.now() - LEAK_GRACE
    unheld = [sid for sid in open_rows if sid not in held]
    leaked = await db(opened_before)(unheld, young) if unheld else []
    if leaked:
        await db(sessions.close_sessions)(leaked)
    # Registered connections whose row is closed: the sweeper took this process for dead.
    gone = [
        conn
        for sid, conn in list(connections.items())
        if sid in held and sid not in open_rows and _alive(conn)
    ]
    for conn in gone:
        await conn.kick(CLOSE_SESSION_GONE)
    if dead or leaked or gone:
        log.warning(
            "reconciled sessions: %d dead connections, %d leaked rows closed, %d connections"
            " of closed sessions dropped",
            len(dead),
            len(leaked),
            len(gone),
        )
    return len(dead), len(leaked), len(gone)


async def _loop(threaded_vouch: bool) -> None:
    from workers.connection import db

    last_reconcile = time.monotonic()
    while True:
        if not threaded_vouch:  # SQLite, or a test process: the loop vouches itself
            try:
                await db(vouch)()
            except Exception:
                log.exception("vouching for this process's sessions failed")
        if time.monotonic() - last_reconcile >= RECONCILE_SECONDS:
            last_reconcile = time.monotonic()
            try:
                await reconcile()
            except Exception:
                log.exception("reconciling this process's sessions failed")
        await asyncio.sleep(VOUCH_SECONDS)


def _turned() -> None:
    """Every second, on the loop: the loop turns (whatever the database threads are doing)."""
    global _loop_seen
    _loop_seen = time.monotonic()
    asyncio.get_running_loop().call_later(1.0, _turned)


def ensure_liveness() -> None:
    """Start this process's vouching loop on the running event loop, once (the WebSocket
    consumer calls it at connect, before any session of this process exists)."""
    global _task
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _task.get_loop() is not loop:
        # A server process on PostgreSQL vouches from a thread of its own; the test suite
        # (HEARTBEAT=false: no background writes into the tests' database) and SQLite (one
        # database thread, one process) from the loop.
        threaded = connection.vendor == "postgresql" and env_bool("HEARTBEAT", True)
        if threaded:
            _turned()
            start_vouching()
        _task = loop.create_task(_loop(threaded))
