"""Lease discipline: a session holds only what it has shown it can do, an expired lease is the
session's fault and not the task's, and a session whose leases keep expiring is benched."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from campaigns.models import Result, Task
from ccgsc.asgi import application
from tests.conftest import fail_item as fail
from tests.conftest import ok_item as ok
from workers import protocol, scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


@pytest.fixture
def session(db):
    def make(origin=None, expired=False):
        s = WorkerSession.objects.create(kind="native", origin=origin, lease_allowance=4)
        return SessionInfo(id=s.pk, origin=origin, expired=expired)

    return make


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


def test_an_expired_lease_is_not_a_failed_attempt_and_never_returns_to_its_session(
    make_campaign, session
):
    make_campaign(["x"], task_timeout=10, max_attempts=1)
    hoarder = session("203.0.113.0/24")
    (lease,) = scheduler.lease(hoarder, 1)
    assert scheduler.reclaim_expired(now=later(21)) == 1
    task = Task.objects.get(pk=lease.task)
    # max_attempts=1, and yet the task is still pending: the expiry did not count against it.
    assert (task.state, task.error_count) == (Task.State.PENDING, 0)
    # (The connection marks a session whose leases expired, so that its finding nothing does
    # not make the campaign look empty to everyone.)
    assert scheduler.lease(dataclasses.replace(hoarder, expired=True), 1) == []
    honest = session("198.51.100.0/24")
    (retry,) = scheduler.lease(honest, 1)
    assert retry.task == lease.task
    scheduler.submit_results(honest, [ok(retry, b"done")])
    task.refresh_from_db()
    assert task.state == Task.State.DONE


def test_a_task_fails_only_after_expiring_on_max_attempts_distinct_networks(make_campaign, session):
    make_campaign(["x"], task_timeout=10, max_attempts=3)
    now = timezone.now()
    origins = ["203.0.113.0/24", "203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24"]
    for i, origin in enumerate(origins):
        # A second session of the first network may hold it again (another session), but
        # its expiry adds no network.
        assert len(scheduler.lease(session(origin), 1)) == 1
        now += timedelta(seconds=21)
        scheduler.reclaim_expired(now=now)
        task = Task.objects.get()
        assert task.state == (Task.State.FAILED if i == 3 else Task.State.PENDING), i
    assert task.error_count == 0
    assert "lease expired on 3 worker session(s) of distinct networks" in task.failure


def test_replicated_expiries_do_not_use_up_the_replica_cap(make_campaign, session):
    make_campaign(["x"], min_quorum=2, target_replicas=2, max_total_replicas=2, task_timeout=10)
    now = timezone.now()
    for i in range(3):
        s = session(f"203.0.{113 + i}.0/24")
        assert len(scheduler.lease(s, 1)) == 1
        now += timedelta(seconds=21)
        scheduler.reclaim_expired(now=now)
    # Two honest volunteers still decide it, although six replicas exist.
    a, b = session("192.0.2.0/24"), session("198.51.100.0/24")
    (la,), (lb,) = scheduler.lease(a, 1), scheduler.lease(b, 1)
    scheduler.submit_results(a, [ok(la, b"42")])
    scheduler.submit_results(b, [ok(lb, b"42")])
    assert Task.objects.get().state == Task.State.DONE


def test_expiries_halve_the_allowance_and_bench_the_session(make_campaign, session, settings):
    settings.CCGSC = {**settings.CCGSC, "LEASE_EXPIRIES_BEFORE_BENCH": 2}
    make_campaign([str(i) for i in range(10)], task_timeout=10)
    s = session()
    WorkerSession.objects.filter(pk=s.id).update(lease_allowance=16)
    now = timezone.now()
    scheduler.lease(s, 3)
    now += timedelta(seconds=21)
    scheduler.reclaim_expired(now=now)
    row = WorkerSession.objects.get(pk=s.id)
    # Three leases expired in one sweep: one round.
    assert (row.leases_expired, row.lease_allowance, row.benched_until) == (1, 8, None)
    scheduler.lease(s, 1)
    now += timedelta(seconds=21)
    scheduler.reclaim_expired(now=now)
    row.refresh_from_db()
    assert (row.leases_expired, row.lease_allowance) == (2, 4)
    assert row.benched_until is not None and row.benched_until > now


def test_only_results_in_measured_time_earn_more_leases(make_campaign, session):
    make_campaign(["a", "b", "c"], task_timeout=10)
    s = session()
    fast, slow, failed = scheduler.lease(s, 3)
    # The server's clock decides, whatever `ms` the worker claims.
    Result.objects.filter(pk=slow.lease).update(leased_at=timezone.now() - timedelta(seconds=15))
    out = scheduler.submit_results(
        s,
        [
            ok(fast, ms=999_999),
            ok(slow, ms=0),
            fail(failed),
        ],
    )
    assert len(out.accepted) == 3 and out.in_time == 1


# --- at the ASGI boundary ------------------------------------------------------------------------


async def send(comm, msg):
    await comm.send_to(bytes_data=protocol.encode(msg))


async def recv(comm, timeout=5):
    return msgpack.unpackb(await comm.receive_from(timeout), raw=False, strict_map_key=False)


@pytest.mark.django_db(transaction=True)
async def test_a_new_session_gets_a_small_allowance_whatever_it_claims(make_campaign, settings):
    settings.CCGSC = {**settings.CCGSC, "LEASE_ALLOWANCE_START": 3}
    await sync_to_async(make_campaign)([str(i) for i in range(50)])
    comm = WebsocketCommunicator(application, "/ws/work/")
    assert (await comm.connect(timeout=30))[0]
    await send(comm, {"t": "hello", "v": 1, "kind": "native", "slots": 256})
    assert (await recv(comm))["t"] == "welcome"
    await send(comm, {"t": "want", "n": 256})
    frame = await recv(comm)
    assert frame["t"] == "tasks" and len(frame["tasks"]) == 3
    # Two answered in time earn two more (and the two freed places): four new tasks.
    done = frame["tasks"][:2]
    await send(
        comm,
        {
            "t": "result",
            "results": [{"lease": t["lease"], "ok": True, "out": b"x", "ms": 0} for t in done],
        },
    )
    assert (await recv(comm))["t"] == "ack"
    more = await recv(comm)
    assert more["t"] == "tasks" and len(more["tasks"]) == 4
    await comm.disconnect()
    allowance = await sync_to_async(
        lambda: WorkerSession.objects.values_list("lease_allowance", flat=True).get()
    )()
    assert allowance == 5


@pytest.mark.django_db(transaction=True)
async def test_a_session_whose_leases_expire_is_benched(make_campaign, settings):
    settings.CCGSC = {**settings.CCGSC, "LEASE_EXPIRIES_BEFORE_BENCH": 1}
    await sync_to_async(make_campaign)(["a", "b"])
    comm = WebsocketCommunicator(application, "/ws/work/")
    assert (await comm.connect(timeout=30))[0]
    await send(comm, {"t": "hello", "v": 1, "kind": "native", "slots": 1})
    assert (await recv(comm))["t"] == "welcome"
    await send(comm, {"t": "want", "n": 1})
    frame = await recv(comm)
    assert frame["t"] == "tasks" and len(frame["tasks"]) == 1
    lease = frame["tasks"][0]["lease"]
    # The sweeper finds it past its deadline: the holder is told, and charged.
    await sync_to_async(scheduler.reclaim_expired)(later(2 * 300 + 1))
    cancel = await recv(comm)
    assert cancel == {"t": "cancel", "leases": [lease], "reason": "lease expired"}
    # Task "b" is free, but this session is benched.
    await send(comm, {"t": "want", "n": 1})
    assert (await recv(comm))["t"] == "idle"
    await comm.disconnect()
