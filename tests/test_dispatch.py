"""Idle sessions wait in their process's dispatcher (workers.dispatch) and are fed in bulk when
work appears; pushes go only to the sessions concerned (workers.live)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from campaigns.models import Result
from ccgsc.asgi import application
from workers import dispatch, live, protocol, scheduler
from workers.models import WorkerSession
from workers.scheduler import LeaseRequest, SessionInfo

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"t": "hello", "v": 1, "kind": "native", "slots": 1, "agent": "test"}


@pytest.fixture(autouse=True)
def _fresh_directory() -> None:
    scheduler.work_available()
    with scheduler._directory.lock:
        scheduler._directory.passes.clear()


async def idle_session() -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/work/")
    assert (await comm.connect())[0]
    await comm.send_to(bytes_data=protocol.encode(HELLO))
    assert (await recv(comm))["t"] == "welcome"
    await comm.send_to(bytes_data=protocol.encode({"t": "want", "n": 1}))
    assert (await recv(comm))["t"] == "idle"
    return comm


async def recv(comm: WebsocketCommunicator, timeout: float = 10) -> dict[str, Any]:
    out: dict[str, Any] = msgpack.unpackb(
        await comm.receive_from(timeout), raw=False, strict_map_key=False
    )
    return out


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(scheduler, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scheduler, name, counted)
    return calls


async def test_idle_sessions_make_no_queries_and_are_fed_together_when_work_appears(
    make_campaign: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from campaigns import services

    sessions = [await idle_session() for _ in range(12)]
    d = dispatch.dispatcher()
    assert len(d.waiting) == 12
    # No timer per session: nothing but the dispatcher's one task and the sweeper waits.
    per_session = _counting(monkeypatch, "lease_for_session")
    bulk = _counting(monkeypatch, "lease_many")

    campaign = await sync_to_async(make_campaign)([f"t{i}" for i in range(12)], start=False)
    await sync_to_async(services.campaign_start)(campaign=campaign)
    got = [await recv(comm) for comm in sessions]

    assert all(frame["t"] == "tasks" and len(frame["tasks"]) == 1 for frame in got)
    leases = {frame["tasks"][0]["lease"] for frame in got}
    assert len(leases) == 12  # each replica to one session
    assert per_session == []  # nobody asked for itself: the dispatcher fed them all
    assert 1 <= len(bulk) <= 2
    assert not d.waiting
    held = await sync_to_async(
        lambda: dict(
            Result.objects.filter(state=Result.State.LEASED).values_list("id", "session_id")
        )
    )()
    assert set(held) == leases and len(set(held.values())) == 12
    for comm in sessions:
        await comm.disconnect()


async def test_a_closed_session_stops_waiting() -> None:
    comm = await idle_session()
    d = dispatch.dispatcher()
    assert len(d.waiting) == 1 and len(d.connections) == 1
    await comm.disconnect()
    assert not d.waiting and not d.connections


def test_lease_many_splits_the_work_available_among_waiting_sessions(
    make_campaign: Any,
) -> None:
    make_campaign([f"t{i}" for i in range(7)])
    infos = [
        SessionInfo(id=WorkerSession.objects.create(kind="native").pk, kind="native")
        for _ in range(4)
    ]
    requests = [LeaseRequest(session=s, n=3, budget=lambda cid: 2) for s in infos]
    got = scheduler.lease_many(requests)
    # Budgets cap each at 2: the first three sessions get 2, 2, 2 and the last the one left.
    assert [len(got[s.id][0]) for s in infos] == [2, 2, 2, 1]
    assert all(got[s.id][1] for s in infos)  # each is sent the campaign's descriptor
    leased = Result.objects.filter(state=Result.State.LEASED)
    assert leased.count() == 7
    for s in infos:
        assert {x.lease for x in got[s.id][0]} == set(
            leased.filter(session_id=s.id).values_list("id", flat=True)
        )
    assert scheduler.lease_many(requests) == {}  # nothing left


def test_cancels_go_only_to_the_session_holding_the_lease(
    make_campaign: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_campaign(["a", "b"])
    holder = WorkerSession.objects.create(kind="native", channel="specific.x!holder")
    other = WorkerSession.objects.create(kind="native", channel="specific.x!other")
    mine = scheduler.lease(SessionInfo(id=holder.pk), 1)
    theirs = scheduler.lease(SessionInfo(id=other.pk), 1)
    sent: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(live, "_layer_call", lambda method, *args: sent.append((method, args)))

    live.on_leases_cancelled([mine[0].lease], "task decided")

    assert sent == [
        (
            "send",
            (
                "specific.x!holder",
                {"type": "leases.cancelled", "leases": [mine[0].lease], "reason": "task decided"},
            ),
        )
    ]
    assert theirs  # the other session's lease was not announced to anyone
