"""Idle sessions wait in their process's dispatcher (workers.dispatch) and are fed in bulk when
work appears; pushes go only to the sessions concerned (workers.live)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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
    assert (await comm.connect(timeout=30))[0]
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


async def test_the_safety_net_leases_nothing_for_idle_sessions_while_no_campaign_runs(
    make_campaign: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from campaigns import services

    sessions = [await idle_session() for _ in range(3)]
    d = dispatch.dispatcher()
    bulk = _counting(monkeypatch, "lease_many")

    # Nothing runs: the periodic look makes no lease statement for the waiting sessions.
    assert await d.safety_net() == 0
    assert bulk == [] and len(d.waiting) == 3

    # A campaign starts and its nudge is lost (a channel layer at capacity drops messages):
    # the next look feeds everyone waiting, in one bulk lease.
    monkeypatch.setattr(dispatch.Dispatcher, "nudge", lambda self, campaign_id=None: None)
    campaign = await sync_to_async(make_campaign)(["a", "b", "c"], start=False)
    await sync_to_async(services.campaign_start)(campaign=campaign)
    scheduler.work_available()  # what the lost nudge would have done to the directory
    assert await d.safety_net() == 3
    assert bulk == [1] and not d.waiting
    got = [await recv(comm) for comm in sessions]
    assert [frame["t"] for frame in got] == ["tasks"] * 3
    for comm in sessions:
        await comm.disconnect()


def test_every_way_of_running_daphne_runs_ours_and_pings_at_the_protocol_interval(
    monkeypatch,
) -> None:
    """Each keepalive ping is CPU for every idle session (docs/benchmarks.md, Scale): daphne's
    default (20 s) is replaced everywhere the platform starts daphne. And everywhere it is the
    platform's daphne (ccgsc/server.py), whose per-connection loops cost what changed."""
    from pathlib import Path

    from django.core.management import call_command

    from ccgsc import processes, server

    root = Path(__file__).resolve().parent.parent
    args = ["--ping-interval", str(protocol.PING_INTERVAL), "--ping-timeout"]
    assert (*args, str(protocol.PING_TIMEOUT)) == protocol.DAPHNE_KEEPALIVE_ARGS
    # The tests' and benchmarks' servers (processes.start_platform).
    source = Path(processes.__file__).read_text()
    assert "DAPHNE_KEEPALIVE_ARGS" in source and '"ccgsc.server"' in source
    # `make run` is `manage.py serve`, which runs ccgsc.server's command line with the keepalive.
    assert "manage.py serve" in (root / "Makefile").read_text()
    ran: list[tuple[type, list[str]]] = []
    monkeypatch.setattr(
        server.CommandLineInterface, "run", lambda cli, argv: ran.append((cli.server_class, argv))
    )
    call_command("serve", "--port", "8123")
    ((server_class, argv),) = ran
    assert server_class is server.Server
    assert " ".join(protocol.DAPHNE_KEEPALIVE_ARGS) in " ".join(argv)
    # The image and compose.
    dockerfile = (root / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "ccgsc.server",' in dockerfile
    assert f'"--ping-interval", "{protocol.PING_INTERVAL}"' in dockerfile
    assert f'"--ping-timeout", "{protocol.PING_TIMEOUT}"' in dockerfile
    compose = (root / "compose.yaml").read_text()
    assert "command:\n      # daphne" in compose and "- -m\n      - ccgsc.server\n" in compose
    assert f'- --ping-interval\n      - "{protocol.PING_INTERVAL}"' in compose
    assert f'- --ping-timeout\n      - "{protocol.PING_TIMEOUT}"' in compose
    # Nothing else starts daphne's own.
    for path in ["Makefile", "Dockerfile", "compose.yaml", "docs/deployment.md", "README.md"]:
        text = (root / path).read_text()
        assert "-m daphne" not in text and "`daphne -b" not in text and '"daphne", "-b"' not in text


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


def _sessions(n: int, **kw: Any) -> list[SessionInfo]:
    return [
        SessionInfo(id=WorkerSession.objects.create(kind="native", **kw).pk, kind="native")
        for _ in range(n)
    ]


def test_lease_many_is_one_statement_for_many_sessions(
    make_campaign: Any, cached_directory: None
) -> None:
    make_campaign([f"t{i}" for i in range(300)])
    infos = _sessions(120)
    scheduler.running_campaigns(refresh=True)
    with CaptureQueriesContext(connection) as leasing:
        got = scheduler.lease_many([LeaseRequest(session=s, n=2) for s in infos])
    sql = [
        q["sql"]
        for q in leasing.captured_queries
        if q["sql"].startswith(("WITH", "UPDATE", "SELECT"))  # not BEGIN, COMMIT, SAVEPOINT
    ]
    assert sorted(len(got[s.id][0]) for s in infos) == [2] * 120
    every = [x.lease for s in infos for x in got[s.id][0]]
    assert len(set(every)) == 240
    if connection.vendor == "postgresql":
        assert len(sql) == 1, sql  # every session's leases in one statement
    else:
        # SQLite's IMMEDIATE transactions serialize leases: one lease (2 statements) each.
        assert len(sql) == 2 * 120, len(sql)
    held = dict(Result.objects.filter(state=Result.State.LEASED).values_list("id", "session_id"))
    assert held == {x.lease: s.id for s in infos for x in got[s.id][0]}


def test_lease_many_keeps_an_expired_lease_from_its_session(make_campaign: Any) -> None:
    campaign = make_campaign(["only"], task_timeout=1)
    slow, other = _sessions(2)
    (first,) = scheduler.lease(slow, 1)
    Result.objects.filter(pk=first.lease).update(deadline=timezone.now() - timedelta(seconds=1))
    assert scheduler.reclaim_expired() == 1
    scheduler.work_available()
    slow = replace(slow, expired=True)  # as its connection learns from the expiry
    # The slow session asks first, and is still refused the task it let expire.
    got = scheduler.lease_many([LeaseRequest(session=slow, n=1), LeaseRequest(session=other, n=1)])
    assert slow.id not in got
    (lease,) = got[other.id][0]
    assert lease.task == first.task and lease.campaign == campaign.pk


def test_lease_many_shares_sessions_among_campaigns_by_priority(make_campaign: Any) -> None:
    heavy = make_campaign([f"h{i}" for i in range(200)], priority=30)
    light = make_campaign([f"l{i}" for i in range(200)], kernel="noop", priority=10)
    infos = _sessions(80)
    got = scheduler.lease_many([LeaseRequest(session=s, n=1) for s in infos])
    campaigns = [got[s.id][0][0].campaign for s in infos]
    assert campaigns.count(heavy.pk) == 60 and campaigns.count(light.pk) == 20


def test_lease_many_goes_on_to_another_campaign_when_one_runs_out(make_campaign: Any) -> None:
    small = make_campaign(["a", "b", "c"], priority=100)
    big = make_campaign([f"t{i}" for i in range(50)], kernel="noop", priority=1)
    infos = _sessions(4)
    got = scheduler.lease_many([LeaseRequest(session=s, n=2) for s in infos])
    held = Counter(x.campaign for s in infos for x in got[s.id][0])
    assert held == {small.pk: 3, big.pk: 5}
    assert sorted(len(got[s.id][0]) for s in infos) == [2, 2, 2, 2]


def test_lease_many_leaves_replicated_campaigns_to_one_lease_per_session(
    make_campaign: Any, people: Any
) -> None:
    # Two sessions of one user in the same feed never get replicas of one task.
    make_campaign(["a", "b"], min_quorum=2, target_replicas=2)
    same_user = [
        SessionInfo(id=WorkerSession.objects.create(kind="native").pk, user_id=people.owner.pk)
        for _ in range(2)
    ]
    got = scheduler.lease_many([LeaseRequest(session=s, n=2) for s in same_user])
    tasks = [x.task for s in same_user for x in got.get(s.id, ([], {}))[0]]
    assert sorted(tasks) == sorted(set(tasks)) and len(tasks) == 2


@pytest.mark.skipif(
    "connection.vendor != 'postgresql'", reason="the bulk statement is PostgreSQL's (embedded mode)"
)
def test_concurrent_bulk_leases_never_share_a_replica(make_campaign: Any) -> None:
    c = make_campaign([f"t{i}" for i in range(400)])
    groups = [_sessions(50) for _ in range(3)]
    got: list[list[int]] = [[] for _ in groups]
    errors: list[BaseException] = []
    start = threading.Barrier(len(groups))

    def feed(i: int) -> None:
        try:
            start.wait(30)
            for _ in range(3):
                scheduler.work_available()
                out = scheduler.lease_many([LeaseRequest(session=s, n=1) for s in groups[i]])
                got[i].extend(x.lease for leases, _ in out.values() for x in leases)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(len(groups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = [lid for ids in got for lid in ids]
    assert len(every) == len(set(every)) == 400
    assert Result.objects.filter(campaign=c, state=Result.State.LEASED).count() == 400


def test_lease_many_asks_the_lease_gates(make_campaign: Any, hooks: Any) -> None:
    make_campaign([f"t{i}" for i in range(4)])
    refused, served = _sessions(2)
    hooks.lease_gates.append(lambda s: s.id != refused.id)
    got = scheduler.lease_many([LeaseRequest(session=s, n=2) for s in (refused, served)])
    assert list(got) == [served.id] and len(got[served.id][0]) == 2


def _run_campaign(people: Any, kernel: Any) -> int:
    """The organization's campaign of synchronous runs, approved so that the tests' anonymous
    sessions may take its tasks."""
    from campaigns.models import Campaign
    from campaigns.services import runs as run_services

    campaign = run_services.run_campaign(organization=people.org, kernel=kernel, quorum=1)
    Campaign.objects.filter(pk=campaign.pk).update(approved=True)
    scheduler.work_available()
    return campaign.pk


def _submit_run(people: Any, kernel: Any) -> int:
    from campaigns.inputs import TaskSpec
    from campaigns.services import runs as run_services

    return run_services.run_submit(
        organization=people.org, kernel=kernel, spec=TaskSpec(input=b"run")
    ).pk


@pytest.fixture
def echo(people: Any) -> Any:
    from campaigns import services
    from tests.conftest import kernel_bytes

    return services.kernel_upload(organization=people.org, name="echo", data=kernel_bytes("echo"))


async def test_a_runs_nudge_wakes_this_processs_dispatcher_directly(
    people: Any, echo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sync_to_async(_run_campaign)(people, echo)
    comm = await idle_session()
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(live, "_servers_send", events.append)  # no channel layer
    loads = _counting(monkeypatch, "_load_campaigns")
    task_id = await sync_to_async(_submit_run)(people, echo)
    frame = await recv(comm)
    assert frame["t"] == "tasks" and [t["task"] for t in frame["tasks"]] == [task_id]
    # The other processes are told through the layer, marked as from this one.
    assert events == [
        {
            "type": "work.available",
            "campaign": frame["tasks"][0]["c"],
            "run": True,
            "from": dispatch.process_id(),
        }
    ]
    assert loads == []  # the directory knew the campaign: not read again for a new task
    await comm.disconnect()


async def test_a_run_made_in_another_process_comes_through_the_layer(
    people: Any, echo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from channels.layers import get_channel_layer

    campaign_id = await sync_to_async(_run_campaign)(people, echo)
    comm = await idle_session()
    d = dispatch.dispatcher()
    # The run's own nudges are lost; what the other process sends is what wakes this one.
    monkeypatch.setattr(live, "_servers_send", lambda event: None)
    monkeypatch.setattr(live, "nudge_here", lambda campaign_id: None)
    task_id = await sync_to_async(_submit_run)(people, echo)
    before = d.nudges
    layer = get_channel_layer()
    event = {"type": "work.available", "campaign": campaign_id, "run": True}
    # This process's own run nudge, back through the layer: already handled directly.
    await layer.group_send(dispatch.SERVERS_GROUP, {**event, "from": dispatch.process_id()})
    await layer.group_send(dispatch.SERVERS_GROUP, {**event, "from": "elsewhere:1"})
    frame = await recv(comm)
    assert frame["t"] == "tasks" and [t["task"] for t in frame["tasks"]] == [task_id]
    assert d.nudges == before + 1
    await comm.disconnect()
