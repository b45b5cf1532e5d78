"""Per-process liveness of WebSocket sessions (workers.liveness): a process vouches for all its
sessions with one statement; the sweeper closes a dead process's sessions within seconds; pings
write nothing; leaked sessions are still closed."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection as dj_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import Result
from operations.models import ProcessHeartbeat
from tests.skips import needs
from tests.test_protocol import HELLO, connect, hello, recv, send
from tests.waiting import until
from workers import connection as worker_connection
from workers import dispatch, liveness, protocol, scheduler, sweeper
from workers.connection import WorkerConnection
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

pytestmark = pytest.mark.django_db(transaction=True)


def _process(key: str, vouched_seconds_ago: float | None) -> ProcessHeartbeat:
    now = timezone.now()
    return ProcessHeartbeat.objects.create(
        key=key,
        host="elsewhere",
        pid=4242,
        started_at=now - timedelta(hours=1),
        seen_at=now,
        vouched_at=None
        if vouched_seconds_ago is None
        else now - timedelta(seconds=vouched_seconds_ago),
    )


def _session(process: str, *, last_seen_ago: float = 0.0, connected_ago: float = 0.0) -> int:
    now = timezone.now()
    return WorkerSession.objects.create(
        kind="native",
        process=process,
        last_seen_at=now - timedelta(seconds=last_seen_ago),
        connected_at=now - timedelta(seconds=connected_ago),
    ).pk


def _open(pk: int) -> bool:
    return WorkerSession.objects.filter(pk=pk, disconnected_at__isnull=True).exists()


def _lease(session_id: int) -> int:
    (lease,) = scheduler.lease(SessionInfo(id=session_id), 1)
    return lease.lease


def test_a_dead_process_sessions_are_closed_and_leases_requeued_at_the_next_sweep(
    make_campaign: Any,
) -> None:
    scheduler.work_available()
    make_campaign(["a", "b", "c"])
    dead_after = liveness.PROCESS_DEAD.total_seconds()
    killed = _process("killed", vouched_seconds_ago=dead_after - 5)
    alive = _process("alive", vouched_seconds_ago=1)
    # Fresh by their own last_seen_at: only the process's silence tells they are gone.
    on_killed = [_session("killed"), _session("killed")]
    leases = [_lease(on_killed[0]), _lease(on_killed[1])]
    # Silent for ten minutes, but its process vouches for it: an idle session, not a dead one.
    quiet = _session("alive", last_seen_ago=600, connected_ago=600)
    quiet_lease = _lease(quiet)

    # The killed process's last vouch is not old enough yet: nothing happens.
    assert sweeper.sweep_once() == (0, 0)
    assert all(_open(pk) for pk in [*on_killed, quiet])

    # One sweep after its vouch is PROCESS_DEAD old, its sessions are closed, leases back.
    ProcessHeartbeat.objects.filter(pk=killed.pk).update(
        vouched_at=timezone.now() - liveness.PROCESS_DEAD - timedelta(seconds=1)
    )
    assert sweeper.sweep_once() == (0, 2)
    assert not any(_open(pk) for pk in on_killed)
    for lid in leases:
        r = Result.objects.get(pk=lid)
        # Released as a closed socket releases them: back in the queue, no attempt counted.
        assert r.state == Result.State.UNSENT and r.session_id is None
        assert r.error_kind != scheduler.LEASE_EXPIRED
    assert _open(quiet)
    assert Result.objects.get(pk=quiet_lease).state == Result.State.LEASED
    assert alive.key == "alive"

    # And the next sweep has nothing left to do.
    assert sweeper.sweep_once() == (0, 0)


def test_sessions_of_an_unknown_process_keep_the_stale_bound() -> None:
    # No row for its process (a server of an earlier version, or a row not written yet): the
    # session's own last_seen_at decides, as before.
    gone = _session("nobody", last_seen_ago=sweeper.STALE_SESSION.total_seconds() + 1)
    recent = _session("nobody", last_seen_ago=sweeper.STALE_SESSION.total_seconds() - 10)
    # A process that never vouched (its row written by the heartbeat thread only) is unknown.
    _process("new", vouched_seconds_ago=None)
    on_new = _session("new", last_seen_ago=sweeper.STALE_SESSION.total_seconds() + 1)
    assert sweeper.sweep_once() == (0, 2)
    assert not _open(gone) and not _open(on_new) and _open(recent)


def test_the_sweeping_process_never_takes_itself_for_dead() -> None:
    me = liveness.process_key()
    _process(me, vouched_seconds_ago=3600)
    mine = _session(me)
    assert sweeper.sweep_once() == (0, 0)
    assert _open(mine)


def test_a_process_vouches_for_all_its_sessions_in_one_statement() -> None:
    liveness.vouch()  # the first vouch writes the row
    for _ in range(50):
        _session(liveness.process_key())
    before = ProcessHeartbeat.objects.get(key=liveness.process_key()).vouched_at
    with CaptureQueriesContext(dj_connection) as queries:
        liveness.vouch()
    assert len(queries) == 1
    assert queries[0]["sql"].startswith("UPDATE")
    row = ProcessHeartbeat.objects.get(key=liveness.process_key())
    assert before is not None and row.vouched_at is not None and row.vouched_at >= before


def test_a_process_key_is_not_its_host_and_pid() -> None:
    # A restarted process with the same pid on the same host name vouches for a new key.
    key = liveness.process_key()
    assert key == liveness.process_key() and len(key) == 32
    saved = liveness._key
    try:
        liveness._key = (-1, key)  # as after a fork or a restart
        assert liveness.process_key() != key
    finally:
        liveness._key = saved


async def test_a_ping_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    comm = await connect()
    welcome = await hello(comm)
    session = welcome["session"]
    row = await sync_to_async(WorkerSession.objects.get)(pk=session)
    assert row.process == liveness.process_key()
    # Every database call of the connection goes through workers.connection.db.
    calls: list[str] = []
    real_db = worker_connection.db

    def counting_db(fn: Any) -> Any:
        if fn.__module__ != liveness.__name__:  # the process's own vouch may run meanwhile
            calls.append(fn.__name__)
        return real_db(fn)

    monkeypatch.setattr(worker_connection, "db", counting_db)
    # Long after the last flush (the old code flushed at a ping 30 s after the last one).
    later = time.monotonic() + 3600
    monkeypatch.setattr(worker_connection, "time", SimpleNamespace(monotonic=lambda: later))
    for _ in range(3):
        await send(comm, {"t": "ping"})
        assert (await recv(comm))["t"] == "pong"
    assert calls == []
    after = await sync_to_async(WorkerSession.objects.get)(pk=session)
    assert after.last_seen_at == row.last_seen_at
    monkeypatch.setattr(worker_connection, "db", real_db)
    await comm.disconnect()
    closed = await sync_to_async(WorkerSession.objects.get)(pk=session)
    assert closed.disconnected_at is not None


async def test_a_leaked_session_in_a_live_process_is_still_closed(make_campaign: Any) -> None:
    await sync_to_async(make_campaign)(["a", "b", "c", "d"])
    me = liveness.process_key()
    # A row of this process that no connection holds (its consumer died before registering),
    # older than the grace a hello needs: closed, its lease released.
    orphan = await sync_to_async(_session)(me, connected_ago=31)
    orphan_lease = await sync_to_async(_lease)(orphan)
    # A younger row is a hello in flight: left alone.
    young = await sync_to_async(_session)(me, connected_ago=1)

    # A connection whose consumer's task ended without closing it (an exception in a handler).
    async def crashed() -> None:
        return None

    task = asyncio.get_running_loop().create_task(crashed())
    await task
    sent: list[Any] = []

    async def collect(message: Any) -> None:
        sent.append(message)

    dead_conn = WorkerConnection(collect, user=None)
    await dead_conn.handle(dead_conn.decode(protocol.encode({**HELLO, "agent": "leaked"})))
    dead_conn.task = task
    assert dead_conn.info is not None
    dead_lease = await sync_to_async(_lease)(dead_conn.info.id)
    # A healthy connection in the same process.
    comm = await connect()
    live = (await hello(comm))["session"]

    assert await liveness.reconcile() == (1, 1, 0)
    for pk in (orphan, dead_conn.info.id):
        assert not await sync_to_async(_open)(pk)
    for lid in (orphan_lease, dead_lease):
        r = await sync_to_async(Result.objects.get)(pk=lid)
        assert r.state == Result.State.UNSENT
    assert await sync_to_async(_open)(young)
    assert await sync_to_async(_open)(live)
    assert dead_conn.info.id not in dispatch.dispatcher().connections
    await comm.disconnect()


async def test_a_connection_whose_session_was_closed_behind_its_back_is_dropped() -> None:
    # This process was stalled longer than PROCESS_DEAD: another process's sweeper closed its
    # sessions. The connection must not go on working for a closed session.
    comm = await connect()
    session = (await hello(comm))["session"]
    await sync_to_async(sweeper.sessions.close_sessions)([session])
    assert await liveness.reconcile() == (0, 0, 1)
    out = await comm.receive_output(timeout=30)
    assert out == {"type": "websocket.close", "code": liveness.CLOSE_SESSION_GONE}
    await comm.disconnect()
    await until(
        lambda: session not in dispatch.dispatcher().connections, what="the connection to go"
    )


@needs(dj_connection.vendor != "postgresql", "SQLite vouches on its one database thread")
async def test_a_busy_process_still_vouches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vouching thread vouches while every thread of the shared database pool is busy
    (10,000 working sessions did that for longer than PROCESS_DEAD, and the sweeper closed a
    live process's sessions)."""
    monkeypatch.setattr(liveness, "VOUCH_SECONDS", 0.05)
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    busy = threading.Event()

    def occupied() -> None:
        busy.set()
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()

    blockers = [loop.run_in_executor(None, occupied) for _ in range(64)]
    try:
        await sync_to_async(busy.wait, thread_sensitive=True)()
        before = timezone.now()
        monkeypatch.setattr(liveness, "_loop_seen", time.monotonic())
        liveness.start_vouching()

        def vouched() -> bool:
            row = ProcessHeartbeat.objects.filter(key=liveness.process_key()).first()
            return row is not None and row.vouched_at is not None and row.vouched_at >= before

        await until(lambda: vouched_in_thread(vouched), what="a vouch with the pool busy")
        assert not any(b.done() for b in blockers)  # the shared pool was busy all along
    finally:
        liveness.stop_vouching()  # joined: no vouch lands in a later test's database
        release.set()
        await asyncio.gather(*blockers)


def vouched_in_thread(check: Any) -> bool:
    """Run a database check in a fresh thread (the loop's pool is what the test keeps busy)."""
    out: list[bool] = []

    def run() -> None:
        try:
            out.append(bool(check()))
        finally:
            dj_connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out[0]


def test_a_stuck_event_loop_vouches_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liveness, "_loop_seen", time.monotonic() - liveness.LOOP_STUCK - 1)
    assert liveness.vouch_if_loop_turns() is False
    assert not ProcessHeartbeat.objects.filter(key=liveness.process_key()).exists()
    monkeypatch.setattr(liveness, "_loop_seen", time.monotonic())
    assert liveness.vouch_if_loop_turns() is True
    assert ProcessHeartbeat.objects.get(key=liveness.process_key()).vouched_at is not None
