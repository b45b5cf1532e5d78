"""The worker protocol at the ASGI boundary: WebSocket consumer and HTTP fallback."""

from __future__ import annotations

import threading

import msgpack
import pytest
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from campaigns.models import Result, Task
from ccgsc.asgi import application
from workers import protocol, scheduler
from workers.models import WorkerSession

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 2, "agent": "test"}


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


async def connect(headers=None):
    comm = WebsocketCommunicator(application, "/ws/work/", headers=headers or [])
    connected, _ = await comm.connect(timeout=30)
    assert connected
    return comm


async def send(comm, msg):
    await comm.send_to(bytes_data=protocol.encode(msg))


async def recv(comm, timeout=30):
    return msgpack.unpackb(await comm.receive_from(timeout), raw=False, strict_map_key=False)


async def hello(comm, **extra):
    await send(comm, {**HELLO, **extra})
    welcome = await recv(comm)
    assert welcome["t"] == "welcome" and welcome["v"] == extra.get("v", protocol.VERSION)
    return welcome


def ok(lease, out):
    return {"lease": lease, "ok": True, "output": out, "exit": 0, "ms": 4}


async def test_tasks_results_and_acks_over_websocket(make_campaign):
    from asgiref.sync import sync_to_async

    campaign = await sync_to_async(make_campaign)(["one", "two", "three"])
    comm = await connect()
    welcome = await hello(comm)
    await send(comm, {"t": "want", "n": 3})
    frame = await recv(comm)
    assert frame["t"] == "tasks"
    # The first session's frame carries the campaign descriptor once.
    descriptor = frame["campaigns"][campaign.pk]
    assert descriptor["kind"] == "wasm" and len(descriptor["kernel"]) == 64
    tasks = frame["tasks"]
    # slots=2 and no speed known yet: the server hands out at most 2 x slots.
    assert 1 <= len(tasks) <= 4
    results = [ok(t["lease"], t["in"].upper()) for t in tasks]
    await send(comm, {"t": "result", "results": results, "want": 3})
    ack = await recv(comm)
    assert ack == {"t": "ack", "leases": [t["lease"] for t in tasks], "ignored": []}
    # Nothing left to lease: the piggy-backed want is answered with idle (wait for a push).
    assert (await recv(comm))["t"] == "idle"
    # The same results again: acknowledged as ignored, nothing changes.
    await send(comm, {"t": "result", "results": results})
    dup = await recv(comm)
    assert dup["ignored"] == [t["lease"] for t in tasks] and dup["leases"] == []
    done = await sync_to_async(Task.objects.filter(state=Task.State.DONE).count)()
    assert done == len(tasks)
    await comm.disconnect()
    session = await sync_to_async(WorkerSession.objects.get)(pk=welcome["session"])
    assert session.disconnected_at is not None and session.tasks_done == len(tasks)


async def test_disconnect_releases_leases_at_once(make_campaign):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a", "b"])
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 2})
    frame = await recv(comm)
    assert len(frame["tasks"]) == 2
    await comm.disconnect()
    states = await sync_to_async(lambda: sorted(Result.objects.values_list("state", flat=True)))()
    assert states == [Result.State.UNSENT, Result.State.UNSENT]


async def test_idle_worker_is_pushed_work_when_it_appears(make_campaign):
    from asgiref.sync import sync_to_async

    from campaigns import services
    from campaigns.inputs import TaskSpec

    campaign = await sync_to_async(make_campaign)(["first"])
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 4})
    first = await recv(comm)
    assert len(first["tasks"]) == 1
    await send(comm, {"t": "result", "results": [ok(first["tasks"][0]["lease"], b"1")], "want": 4})
    assert (await recv(comm))["t"] == "ack"
    assert (await recv(comm))["t"] == "idle"
    # New work for the (completed, now reopened) campaign is pushed without another request.
    await sync_to_async(services.tasks_add)(campaign=campaign, specs=[TaskSpec(input=b"second")])
    pushed = await recv(comm, timeout=30)
    assert pushed["t"] == "tasks" and pushed["tasks"][0]["in"] == b"second"
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\xc1\xc1\xc1", "malformed"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (protocol.encode({"t": "launch_missiles"}), "unknown_type"),
        (protocol.encode({"t": "want", "n": -1}), "invalid"),
    ],
)
async def test_bad_frames_get_an_error_and_change_nothing(make_campaign, frame, code):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a"])
    comm = await connect()
    await hello(comm)
    await comm.send_to(bytes_data=frame)
    error = await recv(comm)
    assert error["t"] == "error" and error["code"] == code and error["fatal"] is False
    # The connection still works.
    await send(comm, {"t": "ping"})
    assert (await recv(comm))["t"] == "pong"
    await comm.disconnect()


async def test_hello_must_come_first_and_repeat_offenders_are_closed():
    comm = await connect()
    for _ in range(5):
        await send(comm, {"t": "want", "n": 1})
        error = await recv(comm)
        assert error["code"] == "hello_first"
    assert error["fatal"] is True
    output = await comm.receive_output(2)
    assert output["type"] == "websocket.close" and output["code"] == 4400


async def test_result_for_a_lease_not_held_is_an_error_and_stores_nothing(make_campaign):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a"])
    holder = await connect()
    await hello(holder)
    await send(holder, {"t": "want", "n": 1})
    lease = (await recv(holder))["tasks"][0]["lease"]
    thief = await connect()
    await hello(thief)
    await send(thief, {"t": "result", "results": [ok(lease, b"forged")]})
    assert (await recv(thief))["t"] == "ack"
    error = await recv(thief)
    assert error["t"] == "error" and error["code"] == "not_leased"
    result = await sync_to_async(Result.objects.get)(pk=lease)
    assert result.state == Result.State.LEASED and result.output is None
    # The holder is unaffected and its result counts.
    await send(holder, {"t": "result", "results": [ok(lease, b"real")]})
    assert (await recv(holder))["leases"] == [lease]
    await holder.disconnect()
    await thief.disconnect()


async def test_foreign_origin_is_refused():
    comm = WebsocketCommunicator(
        application, "/ws/work/", headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await comm.connect(timeout=30)
    assert not connected


async def test_wrong_protocol_version_is_fatal():
    comm = await connect()
    await send(comm, {**HELLO, "v": 99})
    error = await recv(comm)
    assert error["code"] == "version" and error["fatal"] is True


async def test_checkpoint_is_stored_for_held_leases_only(make_campaign):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a"])
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 1})
    lease = (await recv(comm))["tasks"][0]
    await send(comm, {"t": "checkpoint", "lease": lease["lease"], "data": b"step 3"})
    assert (await recv(comm)) == {"t": "ack", "checkpoint": lease["lease"], "stored": True}
    await send(comm, {"t": "checkpoint", "lease": 999999, "data": b"x"})
    assert (await recv(comm))["code"] == "not_leased"
    task = await sync_to_async(Task.objects.get)(pk=lease["task"])
    assert bytes(task.checkpoint or b"") == b"step 3"
    await comm.disconnect()


async def test_http_fallback_speaks_the_same_messages(make_campaign):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["x", "y"])
    client = AsyncClient()

    async def post(body):
        response = await client.post(
            "/api/v1/work", protocol.encode(body), content_type="application/msgpack"
        )
        return response.status_code, msgpack.unpackb(
            response.content, raw=False, strict_map_key=False
        )

    status, body = await post({"messages": [HELLO, {"t": "want", "n": 2}]})
    assert status == 200
    welcome, tasks = body["messages"]
    assert welcome["t"] == "welcome" and tasks["t"] == "tasks" and len(tasks["tasks"]) == 2
    sid, secret = welcome["session"], welcome["secret"]
    results = [ok(t["lease"], b"done") for t in tasks["tasks"]]
    status, body = await post(
        {"session": sid, "secret": secret, "messages": [{"t": "result", "results": results}]}
    )
    assert body["messages"][0]["leases"] == [t["lease"] for t in tasks["tasks"]]
    status, body = await post({"session": sid, "secret": "wrong", "messages": [{"t": "ping"}]})
    assert status == 404 and body["messages"][0]["code"] == "session"
    done = await sync_to_async(Task.objects.filter(state=Task.State.DONE).count)()
    assert done == 2


def test_feeding_follows_each_campaigns_own_task_time():
    from workers.connection import WorkerConnection

    async def send(message):
        return None

    conn = WorkerConnection(send, user=None)
    conn.slots = 2
    # Nothing known yet (100 ms assumed): a modest start, 2 x (100 + 500) / 100.
    assert conn._budget(1) == 12
    # Millisecond tasks: hold hundreds, so the round trip hides behind work.
    for _ in range(5):
        conn._learn(1, 1.0)
    assert conn._budget(1) == 1002
    # Long tasks of another campaign already in hand: no more of them, and little else.
    for _ in range(5):
        conn._learn(2, 200.0)
    conn.in_hand = dict.fromkeys(range(7), 2)
    assert conn._budget(2) == 0
    assert conn._budget(1) == 0
    conn.in_hand = {1: 2}
    assert conn._budget(2) == 6  # (2 x (200 + 500) - 200) / 200


class LoopOnlyDict(dict):
    """A dict that fails the test when it is read from another thread than its creator's."""

    def __init__(self, *args):
        super().__init__(*args)
        self.owner = threading.get_ident()

    def _check(self):
        assert threading.get_ident() == self.owner, "read outside the event loop"

    def values(self):
        self._check()
        return super().values()

    def items(self):
        self._check()
        return super().items()

    def __iter__(self):
        self._check()
        return super().__iter__()


async def test_the_lease_query_does_not_read_the_connections_state_from_its_thread(
    make_campaign,
):
    """The lease query runs in a database thread while the event loop goes on changing the
    leases in hand (results, cancels): reading them there races ("dictionary changed size
    during iteration"). The feeding budget is a snapshot taken on the loop."""
    from asgiref.sync import sync_to_async

    from workers.connection import WorkerConnection

    await sync_to_async(make_campaign)(["a", "b", "c"])
    sent = []

    async def collect(message):
        sent.append(message)

    conn = WorkerConnection(collect, user=None)
    await conn.handle(protocol.Hello(v=protocol.VERSION, kind="native", slots=1))
    conn.in_hand = LoopOnlyDict()
    await conn.handle(protocol.Want(n=2))
    (tasks,) = [m for m in sent if isinstance(m, protocol.Tasks)]
    assert len(tasks.tasks) == 2 and set(conn.in_hand) == {t.lease for t in tasks.tasks}
    # Another want with those in hand: the snapshot counts them (still on the loop).
    await conn.handle(protocol.Want(n=1))
    await conn.close()


async def test_leases_taken_while_the_connection_closes_go_back_to_the_queue(
    make_campaign, monkeypatch
):
    """close() releases the session's leases; on PostgreSQL a lease query still running in
    another thread can commit after that release. Those leases must go back too, or they
    expire later as failed attempts of tasks nobody ran."""
    from asgiref.sync import sync_to_async

    from workers import sessions
    from workers.connection import WorkerConnection

    await sync_to_async(make_campaign)(["a", "b", "c"])
    sent = []

    async def collect(message):
        sent.append(message)

    conn = WorkerConnection(collect, user=None)
    await conn.handle(protocol.Hello(v=protocol.VERSION, kind="native", slots=1))
    assert conn.info is not None
    session_id = conn.info.id
    real = scheduler.lease_for_session

    def lease_while_closing(session, *args):
        # The interleaving PostgreSQL's thread pool allows: the socket closes (close() runs on
        # the loop and its release commits) before this query's leases are committed.
        conn.closed = True
        sessions.session_close(session.id, {})
        return real(session, *args)

    monkeypatch.setattr(scheduler, "lease_for_session", lease_while_closing)
    await conn.handle(protocol.Want(n=2))
    held = await sync_to_async(
        Result.objects.filter(session_id=session_id, state=Result.State.LEASED).count
    )()
    assert held == 0
    unsent = await sync_to_async(Result.objects.filter(state=Result.State.UNSENT).count)()
    assert unsent == 3
    assert not any(isinstance(m, protocol.Tasks) for m in sent)


async def test_large_task_batches_are_split_to_fit_the_frame_limit(make_campaign, settings):
    from asgiref.sync import sync_to_async

    # About frames, not the lease allowance (tests/test_lease_discipline.py): room for all 20.
    settings.CCGSC = {**settings.CCGSC, "LEASE_ALLOWANCE_START": 20}

    big = b"x" * (1024 * 1024)
    await sync_to_async(make_campaign)([big] * 20)
    comm = await connect()
    await hello(comm, slots=8)
    await send(comm, {"t": "want", "n": 20})
    frames: list[dict] = []
    while sum(len(f["tasks"]) for f in frames) < 20:
        raw = await comm.receive_from(10)
        assert len(raw) <= protocol.MAX_FRAME
        frames.append(msgpack.unpackb(raw, raw=False, strict_map_key=False))
    assert len(frames) == 2 and all(f["t"] == "tasks" for f in frames)
    await comm.disconnect()


async def test_checkpoint_for_a_withdrawn_lease_is_acknowledged_not_punished(make_campaign):
    from asgiref.sync import sync_to_async

    from campaigns import services

    campaign = await sync_to_async(make_campaign)(["a"])
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 1})
    lease = (await recv(comm))["tasks"][0]["lease"]
    await sync_to_async(services.campaign_pause)(campaign=campaign)
    cancel = await recv(comm)
    assert cancel["t"] == "cancel" and cancel["leases"] == [lease]
    await send(comm, {"t": "checkpoint", "lease": lease, "data": b"late"})
    assert await recv(comm) == {"t": "ack", "checkpoint": lease, "stored": False}
    await comm.disconnect()


async def test_the_only_volunteer_is_not_benched_a_failing_kernel_ends_failed(make_campaign):
    """Issue 12: a kernel that fails everywhere, on a deployment of one worker, ends `failed`
    as soon as its attempts are spent. Benching the only session that could run the campaign
    would send the retries nowhere and only hold back the outcome (minutes, silently)."""
    from asgiref.sync import sync_to_async

    from campaigns.models import Campaign
    from workers.connection import ERROR_STREAK

    campaign = await sync_to_async(make_campaign)(["a", "b"])  # max_attempts: the default
    assert 2 * campaign.max_attempts > ERROR_STREAK
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 1})
    frame = await recv(comm)
    failed = 0
    while frame["t"] == "tasks":
        lease = frame["tasks"][0]["lease"]
        exit1 = {"lease": lease, "ok": False, "err": "exit", "exit": 1, "stderr": b"no", "ms": 3}
        await send(comm, {"t": "result", "results": [exit1], "want": 1})
        assert (await recv(comm))["t"] == "ack"
        failed += 1
        frame = await recv(comm)
    assert frame["t"] != "cancel", frame
    assert failed == 2 * campaign.max_attempts
    await sync_to_async(campaign.refresh_from_db)()
    assert campaign.state == Campaign.State.FAILED
    await comm.disconnect()


async def test_a_session_failing_a_campaign_again_and_again_is_benched_from_it(make_campaign):
    """A broken worker (say, a browser out of memory: every kernel traps) must not spend every
    attempt of a campaign's tasks: after ERROR_STREAK failures in a row it gives back that
    campaign's leases and gets none of its tasks for a while, as long as another connected
    worker could take the retries; other campaigns still run."""
    from asgiref.sync import sync_to_async

    from workers.connection import BENCH_SECONDS, ERROR_STREAK

    broken = await sync_to_async(make_campaign)([f"t{i}" for i in range(20)], max_attempts=10)
    other_worker = await connect()
    await hello(other_worker)
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 4})
    in_hand = [t["lease"] for t in (await recv(comm))["tasks"]]
    failed: list[int] = []
    cancel = None
    while cancel is None:
        lease = in_hand.pop(0)
        failed.append(lease)
        trap = {"lease": lease, "ok": False, "err": "trap", "stderr": b"unreachable", "ms": 3}
        await send(comm, {"t": "result", "results": [trap], "want": 1})
        assert (await recv(comm))["t"] == "ack"
        frame = await recv(comm)
        if frame["t"] == "tasks":
            in_hand += [t["lease"] for t in frame["tasks"]]
        else:
            cancel = frame
    assert len(failed) == ERROR_STREAK
    assert cancel["t"] == "cancel" and sorted(cancel["leases"]) == sorted(in_hand)
    assert f"paused for {BENCH_SECONDS:.0f} s" in cancel["reason"]
    # The leases given back are unsent again, no attempt counted; nothing more comes from
    # that campaign, even when asked.
    states = await sync_to_async(
        lambda: set(Result.objects.filter(pk__in=in_hand).values_list("state", flat=True))
    )()
    assert states == {Result.State.UNSENT}
    await send(comm, {"t": "want", "n": 4})
    assert (await recv(comm))["t"] == "idle"
    # Another campaign's work still reaches this session.
    other = await sync_to_async(make_campaign)(["fine"])
    pushed = await recv(comm)
    # A check racing the new campaign's arrival may say idle once more first (each recv is
    # bounded; an endless stream of idles would be the bug this test is for).
    for _ in range(3):
        if pushed["t"] != "idle":
            break
        pushed = await recv(comm)
    assert pushed["t"] == "tasks"
    assert {t["task"] for t in pushed["tasks"]} <= await sync_to_async(
        lambda: set(Task.objects.filter(campaign=other).values_list("pk", flat=True))
    )()
    await comm.disconnect()
    await other_worker.disconnect()
    assert broken.pk != other.pk


async def test_a_members_browser_gets_its_organizations_unapproved_campaign(make_campaign, people):
    """Over the real consumer (the hello looks the memberships up in a thread): a signed-in
    member's browser runs the organization's campaign awaiting approval; an anonymous one
    does not."""
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["private"], approved=False)
    anonymous = await connect()
    await hello(anonymous, kind="browser")
    await send(anonymous, {"t": "want", "n": 1})
    assert (await recv(anonymous))["t"] == "idle"
    await anonymous.disconnect()

    member = WebsocketCommunicator(application, "/ws/work/")
    member.scope["user"] = people.teammate
    assert (await member.connect(timeout=30))[0]
    await hello(member, kind="browser")
    await send(member, {"t": "want", "n": 1})
    frame = await recv(member)
    assert frame["t"] == "tasks" and frame["tasks"][0]["in"] == b"private"
    await member.disconnect()


async def test_version_2_refuses_unknown_fields_such_as_version_1s_out(make_campaign):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a"])
    comm = await connect()
    await hello(comm)
    await send(comm, {"t": "want", "n": 1})
    lease = (await recv(comm))["tasks"][0]["lease"]
    await send(comm, {"t": "result", "results": [{"lease": lease, "ok": True, "out": b"a"}]})
    error = await recv(comm)
    assert error["t"] == "error" and error["code"] == "invalid" and "`out`" in error["message"]
    result = await sync_to_async(Result.objects.get)(pk=lease)
    assert result.state == Result.State.LEASED
    await comm.disconnect()


async def test_version_1_workers_keep_working_over_both_transports(make_campaign):
    """Workers (and cached browser pages) from before version 2 send `out`, text for bytes
    and fields the server does not know; their hello names version 1, and the HTTP fallback
    remembers it for the session's later requests."""
    from asgiref.sync import sync_to_async

    await sync_to_async(make_campaign)(["a", "b"])
    comm = await connect()
    await hello(comm, v=1)
    await send(comm, {"t": "want", "n": 1, "extra": True})
    lease = (await recv(comm))["tasks"][0]["lease"]
    await send(comm, {"t": "result", "results": [{"lease": lease, "ok": True, "out": "A"}]})
    assert (await recv(comm))["leases"] == [lease]
    result = await sync_to_async(Result.objects.get)(pk=lease)
    assert bytes(result.output or b"") == b"A"
    await comm.disconnect()

    client = AsyncClient()

    async def post(body):
        response = await client.post(
            "/api/v1/work", protocol.encode(body), content_type="application/msgpack"
        )
        return msgpack.unpackb(response.content, raw=False, strict_map_key=False)["messages"]

    welcome, tasks = await post({"messages": [{**HELLO, "v": 1}, {"t": "want", "n": 1}]})
    assert welcome["v"] == 1
    (task,) = tasks["tasks"]
    (ack,) = await post(
        {
            "session": welcome["session"],
            "secret": welcome["secret"],
            "messages": [
                {"t": "result", "results": [{"lease": task["lease"], "ok": True, "out": b"B"}]}
            ],
        }
    )
    assert ack == {"t": "ack", "leases": [task["lease"]], "ignored": []}


async def test_unsupported_versions_are_refused_and_named():
    comm = await connect()
    await send(comm, {**HELLO, "v": 3})
    error = await recv(comm)
    assert error["code"] == "version" and error["fatal"] is True and "(1, 2)" in error["message"]
