"""The worker socket's edges: a frame over the size cap gets the documented `too_large` error
before the close (over the socket, through real daphne, and as 413 on the HTTP fallback), and
sends racing a close are dropped quietly instead of ending the consumer with a traceback."""

from __future__ import annotations

import asyncio
import logging
import random

import msgpack
import pytest
from autobahn.exception import Disconnected
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from ccgsc.asgi import application
from workers import protocol

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 2, "agent": "test"}
OVERSIZED = b"\x00" * (protocol.MAX_FRAME + 1)


async def test_an_oversized_frame_gets_the_error_then_a_4400_close():
    comm = WebsocketCommunicator(application, "/ws/work/")
    assert (await comm.connect(timeout=30))[0]
    await comm.send_to(bytes_data=protocol.encode(HELLO))
    assert msgpack.unpackb(await comm.receive_from(timeout=5))["t"] == "welcome"
    await comm.send_to(bytes_data=OVERSIZED)
    error = msgpack.unpackb(await comm.receive_from(timeout=5))
    assert error["t"] == "error" and error["code"] == "too_large" and error["fatal"] is True
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4400}
    await comm.wait()


@pytest.mark.live
def test_daphne_delivers_an_oversized_frame_to_the_consumer_not_a_1006(live_platform):
    """Through the real server with the flags `manage.py serve` and the Dockerfile use: before,
    daphne's own limit was MAX_FRAME and it dropped the connection (1006) without a word."""
    import websockets
    from websockets.sync.client import connect

    url = live_platform.url.replace("http", "ws") + "/ws/work/"
    with connect(url, max_size=protocol.MAX_FRAME) as ws:
        ws.send(protocol.encode(HELLO))
        welcome = ws.recv(timeout=10)
        assert isinstance(welcome, bytes) and msgpack.unpackb(welcome)["t"] == "welcome"
        ws.send(OVERSIZED)
        error = msgpack.unpackb(ws.recv(timeout=30))
        assert error["code"] == "too_large" and error["fatal"] is True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_the_http_fallback_answers_an_oversized_body_with_413():
    client = AsyncClient()
    for body in (OVERSIZED, protocol.encode({"session": None, "messages": [], "pad": OVERSIZED})):
        response = await client.post("/api/v1/work", body, content_type="application/msgpack")
        assert response.status_code == 413
        (error,) = msgpack.unpackb(response.content)["messages"]
        assert error["t"] == "error" and error["code"] == "too_large" and error["fatal"] is True


class DaphneLikeSocket:
    """Drives the ASGI application as daphne does, including its race: once the socket is
    closing (our close frame went out, or the peer's arrived) a send raises autobahn's
    Disconnected ("Attempt to send on a closed protocol") until the disconnect event is
    delivered."""

    def __init__(self, path: str = "/ws/work/") -> None:
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.closing = False
        self.closed_by_server = asyncio.Event()
        self.sent: list[dict] = []
        scope = {"type": "websocket", "path": path, "headers": [], "subprotocols": []}
        self.task = asyncio.ensure_future(application(scope, self.inbox.get, self._send))

    async def _send(self, message: dict) -> None:
        if message["type"] == "websocket.send" and self.closing:
            raise Disconnected("Attempt to send on a closed protocol")
        self.sent.append(message)
        if message["type"] == "websocket.close":
            self.closing = True
            self.closed_by_server.set()

    async def frame(self, data: bytes) -> None:
        await self.inbox.put({"type": "websocket.receive", "bytes": data})

    async def hang_up(self) -> None:
        self.closing = True
        await self.inbox.put({"type": "websocket.disconnect", "code": 1006})


GARBAGE = [
    b"",
    b"\xc1",
    b"\x91\x01",
    msgpack.packb({"t": "nope"}),
    msgpack.packb({"t": "want", "n": "many"}),
    msgpack.packb({"t": "result", "results": [{"lease": 1, "ok": True}]}),
    msgpack.packb({"t": "ping"}),
    OVERSIZED,
]


async def test_fuzzed_frames_and_close_races_log_no_traceback(caplog):
    """Garbage frames, oversized frames and hang-ups at random points (a fixed seed): every
    consumer ends cleanly and nothing is logged at ERROR (daphne logs an application's
    exception as "Exception inside application" with its traceback)."""
    rng = random.Random(1234)
    caplog.set_level(logging.WARNING)
    sockets = []
    for _ in range(12):
        sock = DaphneLikeSocket()
        await sock.inbox.put({"type": "websocket.connect"})
        if rng.random() < 0.7:
            await sock.frame(protocol.encode(HELLO))
        for _ in range(rng.randint(1, 8)):
            await sock.frame(rng.choice(GARBAGE))
            if rng.random() < 0.3:
                await sock.frame(protocol.encode({"t": "want", "n": 4}))
        # The peer goes away while the consumer may still be answering the frames above.
        sock.closing = rng.random() < 0.5
        await sock.hang_up()
        sockets.append(sock)
    for sock in sockets:
        await asyncio.wait_for(sock.task, timeout=30)  # raises the consumer's exception, if any
    assert any(m["type"] == "websocket.close" for s in sockets for m in s.sent)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_a_send_after_a_fatal_close_is_dropped_quietly(caplog):
    """The deterministic case of the race: an event for the connection (sent to its channel)
    arrives after the consumer closed the socket for a fatal protocol error and before daphne
    delivered the disconnect."""
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from workers.models import WorkerSession

    caplog.set_level(logging.WARNING)
    sock = DaphneLikeSocket()
    await sock.inbox.put({"type": "websocket.connect"})
    await sock.frame(protocol.encode(HELLO))
    await sock.frame(OVERSIZED)  # fatal: error, then our close
    await asyncio.wait_for(sock.closed_by_server.wait(), timeout=30)
    channel = await sync_to_async(
        lambda: WorkerSession.objects.values_list("channel", flat=True).get()
    )()
    assert channel
    event = {"type": "leases.cancelled", "leases": [1], "reason": "test"}
    await get_channel_layer().send(channel, event)
    await sock.frame(protocol.encode({"t": "ping"}))
    await sock.hang_up()
    await asyncio.wait_for(sock.task, timeout=30)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
