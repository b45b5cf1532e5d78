"""One process, several event loops in turn (as here, where each test has its own loop, and
wherever async code runs through async_to_sync): the worker socket, its dispatcher and the
channel layer work in each loop whatever the previous one left behind (ccgsc/layers.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from ccgsc.asgi import application
from workers import dispatch, protocol, scheduler

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}


def in_a_new_loop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run main() in an event loop of its own, closed (its tasks cancelled) at the end, as
    pytest-asyncio and asyncio.run do."""
    with asyncio.Runner() as runner:
        return runner.run(main())


async def recv(comm: WebsocketCommunicator) -> dict[str, Any]:
    frame: dict[str, Any] = msgpack.unpackb(
        await comm.receive_from(30), raw=False, strict_map_key=False
    )
    return frame


async def pushed_work_when_it_appears(make_campaign: Any) -> list[int]:
    """An idle session waits in this loop's dispatcher and is pushed the task of a campaign
    started afterwards, and answers it; returns the leases."""
    comm = WebsocketCommunicator(application, "/ws/work/")
    assert (await comm.connect(timeout=30))[0]
    await comm.send_to(bytes_data=protocol.encode(HELLO))
    assert (await recv(comm))["t"] == "welcome"
    await comm.send_to(bytes_data=protocol.encode({"t": "want", "n": 1}))
    assert (await recv(comm))["t"] == "idle"
    assert dispatch.dispatcher().waiting
    await sync_to_async(make_campaign)(["a task"])
    frame = await recv(comm)
    assert frame["t"] == "tasks"
    leases = [t["lease"] for t in frame["tasks"]]
    # Answered, so that the next loop's session finds no work before its own campaign starts.
    results = [{"lease": lease, "ok": True, "output": b"done", "ms": 1} for lease in leases]
    await comm.send_to(bytes_data=protocol.encode({"t": "result", "results": results}))
    assert (await recv(comm))["t"] == "ack"
    await comm.disconnect()
    return leases


async def leave_the_layer_mid_receive() -> None:
    """What a loop ending at the wrong moment leaves in channels_redis's layer: its lock for
    reading specific channels held (a receive's clean-up still running) with a receive waiting
    for it, cancelled when the loop closes. The lock is now bound to this loop for good."""
    layer = get_channel_layer()
    assert layer is not None
    key = layer.prefix + layer.non_local_name(await layer.new_channel())
    locks = layer.receive_clean_locks
    await locks.acquire(key)
    waiting = asyncio.get_running_loop().create_task(locks.acquire(key))
    await asyncio.sleep(0)  # one turn of the loop: the waiter is queued on the lock
    assert not waiting.done()


def test_each_event_loop_gets_work_pushed_whatever_the_previous_loop_left(make_campaign):
    scheduler.work_available()
    first = in_a_new_loop(lambda: pushed_work_when_it_appears(make_campaign))
    if settings.REDIS_URL:
        in_a_new_loop(leave_the_layer_mid_receive)
    second = in_a_new_loop(lambda: pushed_work_when_it_appears(make_campaign))
    assert len(first) == len(second) == 1 and first != second


@pytest.mark.skipif(not settings.REDIS_URL, reason="the in-memory layer is made per loop")
def test_the_redis_layer_is_one_instance_per_event_loop():
    async def instance() -> Any:
        layer = get_channel_layer()
        assert layer is not None
        return layer.for_running_loop()

    first, second = in_a_new_loop(instance), in_a_new_loop(instance)
    assert first is not second

    async def same_loop() -> bool:
        return bool(await instance() is await instance())

    assert in_a_new_loop(same_loop)
