"""Validation seen from the workers, at the ASGI boundary: when a quorum is met, the worker still
running another replica of the task is told to cancel it, and its late answer is ignored."""

from __future__ import annotations

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from accounts.models import ApiToken, Membership, User
from campaigns.models import Result, Task
from ccgsc.asgi import application
from rewards.models import LedgerEntry
from workers import protocol, scheduler

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()


async def send(comm, msg):
    await comm.send_to(bytes_data=protocol.encode(msg))


async def recv(comm, timeout=5):
    return msgpack.unpackb(await comm.receive_from(timeout), raw=False, strict_map_key=False)


def tokens_of_distinct_users(org, n):
    raws = []
    for i in range(n):
        user = User.objects.create_user(f"w{i}@example.test", "pw")
        Membership.objects.create(user=user, organization=org)
        raws.append(ApiToken.issue(organization=org, name=f"w{i}", created_by=user)[1])
    return raws


async def worker(token):
    comm = WebsocketCommunicator(application, "/ws/work/")
    connected, _ = await comm.connect(timeout=30)
    assert connected
    await send(
        comm, {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "token": token}
    )
    assert (await recv(comm))["t"] == "welcome"
    await send(comm, {"t": "want", "n": 1})
    frame = await recv(comm)
    assert frame["t"] == "tasks" and len(frame["tasks"]) == 1
    return comm, frame["tasks"][0]


def result(task, out):
    return {
        "t": "result",
        "results": [{"lease": task["lease"], "ok": True, "output": out, "ms": 3}],
    }


async def test_quorum_cancels_the_replica_still_running(make_campaign, people):
    await sync_to_async(make_campaign)(["job"], min_quorum=2, target_replicas=3)
    raws = await sync_to_async(tokens_of_distinct_users)(people.org, 3)
    (a, ta), (b, tb), (c, tc) = [await worker(raw) for raw in raws]
    assert ta["task"] == tb["task"] == tc["task"]
    await send(a, result(ta, b"42"))
    assert (await recv(a))["leases"] == [ta["lease"]]
    await send(b, result(tb, b"42"))
    assert (await recv(b))["leases"] == [tb["lease"]]
    cancel = await recv(c)
    assert cancel == {"t": "cancel", "leases": [tc["lease"]], "reason": "task decided"}
    # The answer arrives anyway: acknowledged as ignored, not an error, not paid.
    await send(c, result(tc, b"42"))
    assert await recv(c) == {"t": "ack", "leases": [], "ignored": [tc["lease"]]}
    task = await sync_to_async(Task.objects.get)(pk=ta["task"])
    assert task.state == Task.State.DONE
    paid = await sync_to_async(
        lambda: sorted(x or 0 for x in LedgerEntry.objects.values_list("result_id", flat=True))
    )()
    assert paid == sorted([ta["lease"], tb["lease"]])
    state = await sync_to_async(lambda: Result.objects.get(pk=tc["lease"]).state)()
    assert state == Result.State.CANCELLED
    for comm in (a, b, c):
        await comm.disconnect()
