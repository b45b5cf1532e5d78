"""The platform's daphne (ccgsc/server.py): its loops visit only the connections that changed or
have a deadline due, and daphne's rules still hold. Real daphne protocols (WebSocket and HTTP)
over in-memory transports, with a fake clock; then a real server process."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import types
import urllib.request
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from daphne import http_protocol, ws_protocol
from daphne.http_protocol import HTTPFactory
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from ccgsc.server import Server
from workers import protocol

PEER = IPv4Address("TCP", "127.0.0.1", 50000)
HANDSHAKE = (
    b"GET /ws/work/ HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PING, PONG, CLOSE = 0x89, 0x8A, 0x88


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame (masked, with a zero key: the payload as it is)."""
    return bytes([opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Timer:
    """autobahn's batched timer (the pong timeout, the handshake's): calls fired by hand."""

    def __init__(self) -> None:
        self.calls: list[types.SimpleNamespace] = []

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        call = types.SimpleNamespace(delay=delay, fn=fn, cancelled=False)
        call.cancel = lambda: setattr(call, "cancelled", True)
        self.calls.append(call)
        return call

    def fire(self, delay: float) -> None:
        for call in [c for c in self.calls if c.delay == delay and not c.cancelled]:
            self.calls.remove(call)
            call.fn()


class Transport(StringTransport):
    def unregisterProducer(self) -> None:
        self.producer = None

    def abortConnection(self) -> None:
        self.loseConnection()


class Unscannable(dict):
    """server.connections that fails a test walking all of it (what daphne's loops did)."""

    def _scan(self, *args: Any) -> Any:
        raise AssertionError("a loop walked every connection")

    __iter__ = keys = values = items = _scan


async def settle(condition: Callable[[], bool]) -> None:
    """Let the event loop run the applications until `condition` holds."""
    await wait_for(condition, turns=1000, pause=0)


class Harness:
    """A ccgsc Server as daphne's run() sets it up, without a reactor or sockets."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, app: Any, **options: Any) -> None:
        self.clock = Clock()
        fake_time = types.SimpleNamespace(time=self.clock)
        monkeypatch.setattr(ws_protocol, "time", fake_time)  # the protocols' own clock
        monkeypatch.setattr(http_protocol, "time", fake_time)
        options = {"ping_interval": 50, "ping_timeout": 30, **options}
        self.server = Server(app, endpoints=["tcp:0"], **options)
        self.server.clock = self.clock
        self.server.connections = Unscannable()
        self.server.http_factory = HTTPFactory(self.server)
        self.server.ws_factory = WebSocketFactory(self.server, server="daphne")
        self.server.ws_factory.setProtocolOptions(
            autoPingTimeout=self.server.ping_timeout, allowNullOrigin=True
        )
        self.timer = self.server.ws_factory._batched_timer = Timer()

    def socket(self) -> tuple[Any, Transport]:
        """A WebSocket as the client's upgrade request arrives (daphne's onConnect runs)."""
        ws = self.server.ws_factory.buildProtocol(PEER)
        ws._raw_query_string = b""
        transport = Transport(peerAddress=PEER, hostAddress=PEER)
        ws.makeConnection(transport)
        ws.dataReceived(HANDSHAKE)
        return ws, transport

    async def open_socket(self) -> tuple[Any, Transport]:
        ws, transport = self.socket()
        await settle(lambda: transport.value().startswith(b"HTTP/1.1 101"))
        transport.clear()
        return ws, transport

    def advance(self, seconds: float) -> None:
        """Time passes; both loops run once, as their ticks would."""
        self.clock.now += seconds
        self.server.check_due_timeouts()
        self.server.check_applications()


def websocket_app(*, accept: bool = True, on_disconnect: str = "end") -> Any:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        if accept:
            await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.receive" and message["text"] == "fail":
                raise ValueError("the application failed")
            if message["type"] == "websocket.disconnect":
                if on_disconnect == "hang":
                    await asyncio.Event().wait()  # never ends on its own
                return

    return app


def counting_checks(*sockets: Any) -> list[Any]:
    """The sockets whose check_timeouts() runs, in order (daphne's method still runs)."""
    checked: list[Any] = []
    for ws in sockets:
        check = ws.check_timeouts

        def counted(ws: Any = ws, check: Callable[[], None] = check) -> None:
            checked.append(ws)
            check()

        ws.check_timeouts = counted
    return checked


async def test_a_silent_socket_is_pinged_after_the_interval_and_dropped_without_a_pong(
    monkeypatch,
):
    h = Harness(monkeypatch, websocket_app())
    silent, silent_wire = await h.open_socket()
    answering, answering_wire = await h.open_socket()
    talking, talking_wire = await h.open_socket()
    checked = counting_checks(silent, answering, talking)
    h.advance(30)
    talking.dataReceived(client_frame(0x81, b"hi"))  # a message: daphne sets its last_ping
    h.advance(5)
    later = [await h.open_socket() for _ in range(50)]  # at 35 s
    checked_later = counting_checks(*(ws for ws, _ in later))
    # Their handshake deadline (20 s) came and went: open by then, their next deadline is
    # computed without a check.
    assert checked == [] and not silent_wire.value()

    h.advance(15)  # 50 s since the silent ones' last message: not more than ping_interval yet
    assert not silent_wire.value() and not answering_wire.value()
    # The silent ones are looked at (50 s: not more than ping_interval yet); the talking one's
    # deadline came early (it talked at 30 s): moved, not looked at.
    assert sorted(map(id, checked)) == sorted(map(id, [silent, answering]))
    assert not talking_wire.value()
    checked.clear()
    h.advance(0.5)
    assert silent_wire.value()[0] == PING and answering_wire.value()[0] == PING
    assert sorted(map(id, checked)) == sorted(map(id, [silent, answering]))
    assert not checked_later  # the 50 later sockets are not due: not looked at

    ping = answering_wire.value()
    answering.dataReceived(client_frame(PONG, ping[2 : 2 + ping[1]]))
    h.advance(29.5)
    h.timer.fire(h.server.ping_timeout)  # autobahn's pong timeout (armed with the ping)
    assert silent_wire.disconnecting and not answering_wire.disconnecting
    assert not talking_wire.value()  # 50 s since its message: due, not more than that yet
    h.advance(1)
    assert talking_wire.value()[0] == PING
    # The later ones' handshake deadline (55 s) came with nothing to check: never looked at.
    assert checked_later == []
    assert not any(wire.value() for _, wire in later)

    silent.connectionLost(Failure(ConnectionDone()))
    await settle(lambda: h.server.connections[silent]["application_instance"].done())
    h.advance(0)
    assert silent not in h.server.connections and answering in h.server.connections


async def test_a_socket_still_in_its_handshake_after_the_connect_timeout_is_rejected(
    monkeypatch,
):
    h = Harness(monkeypatch, websocket_app(accept=False), websocket_connect_timeout=20)
    ws, wire = h.socket()
    await settle(lambda: "application_instance" in h.server.connections[ws])
    h.advance(20)
    assert not wire.value()  # daphne rejects after more than the timeout
    h.advance(1)
    assert wire.value().startswith(b"HTTP/1.1 403")
    assert "disconnected" in h.server.connections[ws]


async def test_a_finished_application_is_reaped_without_walking_every_connection(
    monkeypatch, caplog
):
    h = Harness(monkeypatch, websocket_app())
    sockets = [await h.open_socket() for _ in range(50)]
    (failing, failing_wire), (closing, _) = sockets[:2]
    failing.dataReceived(client_frame(0x81, b"fail"))
    closing.connectionLost(Failure(ConnectionDone()))
    instance = h.server.connections[failing]["application_instance"]
    await settle(lambda: instance.done() and len(h.server.unsettled) == 2)
    with caplog.at_level(logging.ERROR, logger="daphne.server"):
        h.advance(1)  # h.server.connections refuses to be walked
    # The exception is logged and handed to the still open socket: a 1011 close frame.
    assert "Exception inside application: the application failed" in caplog.text
    assert failing_wire.value() == bytes([CLOSE, 2, 0x03, 0xF3])
    assert "application_instance" not in h.server.connections[failing]
    assert closing not in h.server.connections  # closed, its application ended: forgotten
    assert all("application_instance" in h.server.connections[ws] for ws, _ in sockets[2:])
    assert not h.server.unsettled


async def test_an_application_outliving_its_closed_connection_is_cancelled(monkeypatch, caplog):
    h = Harness(monkeypatch, websocket_app(on_disconnect="hang"), application_close_timeout=10)
    ws, _ = await h.open_socket()
    ws.connectionLost(Failure(ConnectionDone()))
    instance = h.server.connections[ws]["application_instance"]
    h.advance(10)
    assert not instance.cancelled() and not instance.cancelling()
    with caplog.at_level(logging.WARNING, logger="daphne.server"):
        h.advance(0.5)
    assert "took too long to shut down and was killed" in caplog.text
    await settle(instance.done)
    assert instance.cancelled()
    h.advance(0)
    assert ws not in h.server.connections and not h.server.unsettled


async def test_an_application_raising_keyboard_interrupt_stops_the_server(monkeypatch):
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    h = Harness(monkeypatch, lambda scope, receive, send: ended)  # ensure_future gives it back
    h.socket()
    ended.set_exception(KeyboardInterrupt())
    await settle(lambda: bool(h.server.unsettled))
    h.advance(0)
    assert h.server.abort_start  # stop() before the reactor runs; reactor.stop() once it does


async def test_a_long_poll_past_the_http_timeout_gets_503_and_none_is_looked_at_without_one(
    monkeypatch,
):
    async def never_answers(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.Event().wait()

    def request(h: Harness) -> Transport:
        channel = h.server.http_factory.buildProtocol(PEER)
        wire = Transport(peerAddress=PEER, hostAddress=PEER)
        channel.makeConnection(wire)
        body = b"POST /api/v1/work HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        channel.dataReceived(body)
        return wire

    h = Harness(monkeypatch, never_answers, http_timeout=30)
    wire = request(h)
    h.advance(30)
    assert not wire.value()
    h.advance(1)
    assert wire.value().startswith(b"HTTP/1.1 503")

    # daphne's default: no http_timeout, so a request's check would do nothing and none runs.
    h = Harness(monkeypatch, never_answers)
    request(h)
    assert not h.server.deadlines


@pytest.mark.live
def test_the_server_process_is_ours_drops_a_dead_peer_and_serves_both_transports(
    transactional_db,
):
    from websockets.sync.client import connect

    from tests.live import start_server

    hello = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}
    platform = start_server(daphne_args=("--ping-interval", "1", "--ping-timeout", "1"))
    try:
        assert list(platform.proc.args)[1:3] == ["-m", "ccgsc.server"]  # type: ignore[arg-type]
        url = platform.url.replace("http", "ws") + "/ws/work/"
        with connect(url) as ws:  # its client answers pings
            ws.send(protocol.encode(hello))
            assert msgpack.unpackb(ws.recv(timeout=30))["t"] == "welcome"
            # A peer that completes the handshake and then never answers.
            with socket.create_connection(("127.0.0.1", platform.port), timeout=30) as dead:
                key = base64.b64encode(os.urandom(16))
                dead.sendall(HANDSHAKE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", key))
                received = b""
                try:
                    while chunk := dead.recv(4096):
                        received += chunk
                except ConnectionResetError:
                    pass  # dropped: autobahn aborts the connection (a reset, not a FIN)
            head, _, frames = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101") and frames[0] == PING
            # The live session saw the same pings and is still served.
            ws.send(protocol.encode({"t": "ping"}))
            while (answer := msgpack.unpackb(ws.recv(timeout=30)))["t"] != "pong":
                assert answer["t"] in ("idle", "tasks")
        # The HTTP fallback.
        body = protocol.encode({"messages": [hello]})
        post = urllib.request.Request(
            f"{platform.url}/api/v1/work",
            data=body,
            headers={"Content-Type": "application/msgpack"},
        )
        with urllib.request.urlopen(post, timeout=30) as response:
            assert msgpack.unpackb(response.read())["messages"][0]["t"] == "welcome"
    finally:
        platform.stop()


# --- pings answered by the server itself (ShortcutWebSocketProtocol) ---------------------------


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server's frames (unmasked) in what the transport received: (opcode byte, payload)."""
    frames = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0], data[start : start + length]))
        data = data[start + length :]
    return frames


def messages(transport: Transport) -> list[dict[str, Any]]:
    """The protocol messages the server sent since the last look."""
    out = [msgpack.unpackb(p) for op, p in server_frames(transport.value()) if op == 0x82]
    transport.clear()
    return out


async def arrive(transport: Transport, count: int) -> list[dict[str, Any]]:
    """Wait (for the consumer and its database threads) until `count` frames have come."""
    got: list[dict[str, Any]] = []
    for _ in range(3000):
        got += messages(transport)
        if len(got) >= count:
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {got} came")


@pytest.fixture
def consumer_receives(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The frames the worker endpoint's consumer reads (its receive)."""
    from workers.consumers import WorkConsumer

    seen: list[Any] = []
    receive = WorkConsumer.receive

    async def counted(self: Any, text_data: Any = None, bytes_data: Any = None) -> None:
        seen.append(bytes_data if bytes_data is not None else text_data)
        await receive(self, text_data, bytes_data)

    monkeypatch.setattr(WorkConsumer, "receive", counted)
    return seen


async def worker_socket(monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, Any, Transport]:
    from ccgsc.asgi import application

    h = Harness(monkeypatch, application)
    h.server.connections = {}  # reaping is not what is tested here
    ws, transport = h.socket()
    await wait_for(lambda: transport.value().startswith(b"HTTP/1.1 101"))
    transport.clear()
    return h, ws, transport


async def wait_for(
    condition: Callable[[], bool], *, turns: int = 3000, pause: float = 0.01
) -> None:
    """Wait (for the consumer and its database threads: `pause` between looks; 0 lets only
    the event loop run) until `condition` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(pause)
    raise AssertionError("never happened")


PING_FRAME = msgpack.packb({"t": "ping"})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("version", protocol.VERSIONS)
async def test_an_open_sessions_ping_is_answered_by_the_server_without_the_consumer(
    monkeypatch, consumer_receives, version
):
    h, ws, transport = await worker_socket(monkeypatch)
    # Before hello: the consumer answers, with today's error.
    ws.dataReceived(client_frame(0x82, PING_FRAME))
    (error,) = await arrive(transport, 1)
    assert error["t"] == "error" and error["code"] == "hello_first" and not error["fatal"]
    hello = {"t": "hello", "v": version, "kind": "native", "slots": 1, "agent": "test"}
    ws.dataReceived(client_frame(0x82, msgpack.packb(hello)))
    (welcome,) = await arrive(transport, 1)
    assert welcome["t"] == "welcome" and welcome["v"] == version
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    read = len(consumer_receives)
    # The ping is answered at once, as it arrives: no event-loop turn, no consumer.
    h.clock.now += 40
    ws.dataReceived(client_frame(0x82, PING_FRAME))
    assert messages(transport) == [{"t": "pong"}]
    assert ws.last_ping == h.clock.now  # daphne's keepalive counts it as traffic
    # A flood of pings: each answered, in order, as the consumer answered them (pings count
    # toward no limit; the socket stays open).
    ws.dataReceived(b"".join(client_frame(0x82, PING_FRAME) for _ in range(200)))
    assert messages(transport) == [{"t": "pong"}] * 200
    assert len(consumer_receives) == read and ws.state == ws.STATE_OPEN
    # A ping spelled otherwise (version 1 takes unknown fields) goes to the consumer.
    other = msgpack.packb({"t": "ping", "x": 1})
    ws.dataReceived(client_frame(0x82, other))
    got = await arrive(transport, 1)
    assert consumer_receives[read:] == [other]
    if version == 1:
        assert got == [{"t": "pong"}]
    else:
        assert got[0]["code"] == "invalid"


@pytest.mark.django_db(transaction=True)
async def test_a_ping_behind_a_pending_frame_waits_its_turn_and_refusals_still_close(
    monkeypatch, consumer_receives
):
    _, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}
    ws.dataReceived(client_frame(0x82, msgpack.packb(hello)))
    assert (await arrive(transport, 1))[0]["t"] == "welcome"
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    # A want and then a ping: the pong comes after the want's answer, as before.
    ws.dataReceived(client_frame(0x82, msgpack.packb({"t": "want", "n": 1})))
    ws.dataReceived(client_frame(0x82, PING_FRAME))
    assert messages(transport) == []
    assert [m["t"] for m in await arrive(transport, 2)] == ["idle", "pong"]
    assert consumer_receives[-1] == PING_FRAME
    # Refused frames still go to the consumer and still strike: the fifth closes (4400), and
    # pings in between change nothing of that.
    bad = msgpack.packb({"t": "ping", "x": 1})  # a field version 2 does not declare
    await wait_for(lambda: not ws.shortcut.pending)
    for i in range(protocol_strikes()):
        ws.dataReceived(client_frame(0x82, bad))
        ws.dataReceived(client_frame(0x82, PING_FRAME))
        got = await arrive(transport, 1 if i == protocol_strikes() - 1 else 2)
        assert got[0]["code"] == "invalid"
    assert got[0]["fatal"] is True
    await wait_for(lambda: ws.shortcut.answers == {} and ws.state != ws.STATE_OPEN)
    assert ws.localCloseCode == 4400
    # Closed: nothing is answered here any more.
    ws.dataReceived(client_frame(0x82, PING_FRAME))
    assert not [op for op, _ in server_frames(transport.value()) if op == 0x82]


def protocol_strikes() -> int:
    from workers.connection import MAX_STRIKES

    return MAX_STRIKES


@pytest.mark.django_db(transaction=True)
async def test_a_connection_whose_session_was_closed_behind_its_back_is_closed_for_real(
    monkeypatch,
):
    # Through daphne's protocol and autobahn, which send only codes 1000 and 3000-4999: the
    # consumer-level test cannot see a code the real socket refuses.
    from asgiref.sync import sync_to_async

    from workers import liveness, sessions

    _, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}
    ws.dataReceived(client_frame(0x82, msgpack.packb(hello)))
    (welcome,) = await arrive(transport, 1)
    await sync_to_async(sessions.close_sessions)([welcome["session"]])
    assert (await liveness.reconcile())[2] == 1
    await wait_for(lambda: ws.localCloseCode is not None)
    assert ws.localCloseCode == liveness.CLOSE_SESSION_GONE


# --- frames answered before autobahn parses them, frames sent at once ---------------------------


def masked_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """A client's frame as browsers send it: masked with a key of their choosing."""
    stream = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
    return bytes([opcode, 0x80 | len(payload)]) + key + masked


def test_unmask_reverses_any_key_at_every_short_length():
    from ccgsc.server import unmask

    for n in range(126):
        payload, key = os.urandom(n), os.urandom(4)
        assert unmask(key, masked_frame(0x82, payload, key)[6:]) == payload


@pytest.mark.django_db(transaction=True)
async def test_a_whole_ping_frame_is_answered_before_autobahn_and_anything_else_is_autobahns(
    monkeypatch, consumer_receives
):
    from autobahn.websocket.protocol import WebSocketProtocol

    h, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}
    ws.dataReceived(masked_frame(0x82, msgpack.packb(hello), os.urandom(4)))
    assert (await arrive(transport, 1))[0]["t"] == "welcome"
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    read = len(consumer_receives)
    parsed: list[bytes] = []
    parse = WebSocketProtocol._dataReceived

    def counted(self: Any, data: bytes) -> Any:
        parsed.append(data)
        return parse(self, data)

    monkeypatch.setattr(WebSocketProtocol, "_dataReceived", counted)
    # The protocol's ping and a WebSocket ping, each masked with a random key, each one read:
    # answered without autobahn's parser or the consumer, a WebSocket pong carrying its payload.
    h.clock.now += 40
    for key in (os.urandom(4) for _ in range(20)):
        ws.dataReceived(masked_frame(0x82, PING_FRAME, key))
        ws.dataReceived(masked_frame(PING, b"are you there", key))
    got = server_frames(transport.value())
    transport.clear()
    assert got == [(0x82, msgpack.packb({"t": "pong"})), (PONG, b"are you there")] * 20
    assert ws.last_ping == h.clock.now and parsed == [] and len(consumer_receives) == read
    # Anything else goes through autobahn, with the same answers: two frames in one read, a
    # frame in two reads; and protocol errors, which autobahn refuses by dropping the connection
    # (below).
    key = os.urandom(4)
    ws.dataReceived(masked_frame(0x82, PING_FRAME, key) + masked_frame(PING, b"x", key))
    frame = masked_frame(0x82, PING_FRAME, key)
    ws.dataReceived(frame[:3])
    ws.dataReceived(frame[3:])
    got = server_frames(transport.value())
    transport.clear()
    assert got == [(0x82, msgpack.packb({"t": "pong"})), (PONG, b"x"), (0x82, got[0][1])]
    assert len(parsed) == 3 and len(consumer_receives) == read
    # A WebSocket ping through autobahn is a sign of life too (the server's keepalive waits).
    h.clock.now += 10
    frame = masked_frame(PING, b"y", key)
    ws.dataReceived(frame[:4])
    ws.dataReceived(frame[4:])
    assert server_frames(transport.value()) == [(PONG, b"y")] and ws.last_ping == h.clock.now
    transport.clear()
    # An exact ping inside a fragmented message (a binary frame without FIN before it): a
    # protocol error, as autobahn says in one read or two (it drops the connection).
    assert ws.state == ws.STATE_OPEN
    fragment = masked_frame(0x02, b"\x81", key)
    ws.dataReceived(fragment)
    ws.dataReceived(masked_frame(0x82, PING_FRAME, key))
    assert len(parsed) == 7 and ws.state != ws.STATE_OPEN and transport.disconnecting
    assert not [op for op, _ in server_frames(transport.value()) if op == 0x82]
    # An unmasked frame likewise.
    h, ws, transport = await worker_socket(monkeypatch)
    ws.dataReceived(masked_frame(0x82, msgpack.packb(hello), os.urandom(4)))
    assert (await arrive(transport, 1))[0]["t"] == "welcome"
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    ws.dataReceived(bytes([0x82, len(PING_FRAME)]) + PING_FRAME)
    assert ws.state != ws.STATE_OPEN and transport.disconnecting
    assert not [op for op, _ in server_frames(transport.value()) if op == 0x82]


@pytest.mark.django_db(transaction=True)
async def test_a_ping_while_the_server_awaits_its_keepalives_pong_ends_the_wait(monkeypatch):
    h, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": protocol.VERSION, "kind": "native", "slots": 1, "agent": "test"}
    ws.dataReceived(masked_frame(0x82, msgpack.packb(hello), os.urandom(4)))
    assert (await arrive(transport, 1))[0]["t"] == "welcome"
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    h.advance(h.server.ping_interval + 1)  # silent: the server's keepalive pings it
    assert server_frames(transport.value())[-1][0] == PING
    transport.clear()
    # The peer never answers that ping, but sends the protocol's: like any message, it ends the
    # wait (autobahn's rule), and the connection outlives the pong timeout.
    ws.dataReceived(masked_frame(0x82, PING_FRAME, os.urandom(4)))
    assert messages(transport) == [{"t": "pong"}]
    h.timer.fire(h.server.ping_timeout)
    assert ws.state == ws.STATE_OPEN and not transport.disconnecting
    # And the next protocol ping is answered before autobahn again.
    ws.dataReceived(masked_frame(0x82, PING_FRAME, os.urandom(4)))
    assert messages(transport) == [{"t": "pong"}]


async def beaten_socket(monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, Any, Transport]:
    """A worker socket whose session's hello said `pongs`, welcomed and armed."""
    h, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": 2, "kind": "browser", "slots": 1, "agent": "t", "pongs": True}
    ws.dataReceived(masked_frame(0x82, msgpack.packb(hello), os.urandom(4)))
    (welcome,) = await arrive(transport, 1)
    assert welcome["limits"]["beat"] == protocol.PING_INTERVAL == h.server.ping_interval
    assert welcome["limits"]["heartbeat"] == protocol.QUIET_HEARTBEAT
    await wait_for(lambda: ws.shortcut.beat is not None and not ws.shortcut.pending)
    return h, ws, transport


PONG_FRAME = msgpack.packb({"t": "pong"})


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
async def test_a_silent_session_that_answers_pings_gets_the_protocols_ping_and_its_pong_stays_here(
    monkeypatch, consumer_receives, split
):
    h, ws, transport = await beaten_socket(monkeypatch)
    read = len(consumer_receives)
    h.advance(h.server.ping_interval - 1)
    assert transport.value() == b""  # not silent long enough
    h.advance(2)
    # The keepalive's ping is the protocol's (a browser's script sees it), not a WebSocket one.
    assert server_frames(transport.value()) == [(0x82, msgpack.packb({"t": "ping"}))]
    transport.clear()
    answer = masked_frame(0x82, PONG_FRAME, os.urandom(4))
    if split:  # through autobahn: the same outcome
        ws.dataReceived(answer[:3])
        ws.dataReceived(answer[3:])
    else:
        ws.dataReceived(answer)
    assert ws.autoPingTimeoutCall is None and ws.last_ping == h.clock.now
    h.timer.fire(h.server.ping_timeout)
    assert ws.state == ws.STATE_OPEN and not transport.disconnecting
    assert transport.value() == b""  # a pong is answered with nothing
    # The worker's own ping is still answered here (its pong after nothing pending).
    ws.dataReceived(masked_frame(0x82, PING_FRAME, os.urandom(4)))
    assert messages(transport) == [{"t": "pong"}]
    assert consumer_receives[read:] == []  # neither reached the consumer
    # The next beat comes after the next silence, and one not answered closes the socket.
    h.advance(h.server.ping_interval + 1)
    assert messages(transport) == [{"t": "ping"}]
    h.timer.fire(h.server.ping_timeout)
    assert transport.disconnecting


@pytest.mark.django_db(transaction=True)
async def test_a_pong_behind_a_pending_frame_is_taken_at_once_and_a_ping_still_waits_its_turn(
    monkeypatch, consumer_receives
):
    h, ws, transport = await beaten_socket(monkeypatch)
    h.advance(h.server.ping_interval + 1)
    assert messages(transport) == [{"t": "ping"}]
    read = len(consumer_receives)
    # A want goes to the consumer (pending); the pong behind it answers nothing, so it has no
    # order to keep: taken at once. The worker's ping behind both waits for the want's answer.
    ws.dataReceived(masked_frame(0x82, msgpack.packb({"t": "want", "n": 1}), os.urandom(4)))
    assert ws.shortcut.pending == 1
    ws.dataReceived(masked_frame(0x82, PONG_FRAME, os.urandom(4)))
    assert ws.autoPingTimeoutCall is None and ws.shortcut.pending == 1
    ws.dataReceived(masked_frame(0x82, PING_FRAME, os.urandom(4)))
    assert [m["t"] for m in await arrive(transport, 2)] == ["idle", "pong"]
    assert PONG_FRAME not in consumer_receives[read:]


@pytest.mark.django_db(transaction=True)
async def test_a_session_that_does_not_answer_pings_keeps_websocket_pings_and_its_own_heartbeat(
    monkeypatch, consumer_receives
):
    h, ws, transport = await worker_socket(monkeypatch)
    hello = {"t": "hello", "v": 2, "kind": "native", "slots": 1, "agent": "t"}
    ws.dataReceived(masked_frame(0x82, msgpack.packb(hello), os.urandom(4)))
    (welcome,) = await arrive(transport, 1)
    assert "beat" not in welcome["limits"]
    assert welcome["limits"]["heartbeat"] == protocol.WEBSOCKET_HEARTBEAT
    await wait_for(lambda: ws.shortcut.answers != {} and not ws.shortcut.pending)
    assert ws.shortcut.beat is None
    h.advance(h.server.ping_interval + 1)
    assert [op for op, _ in server_frames(transport.value())] == [PING]
    transport.clear()
    # A pong nobody asked for goes to the consumer, which takes it without a word (no error,
    # no strike); the ping behind it is answered once it has.
    ws.dataReceived(masked_frame(0x82, PONG_FRAME, os.urandom(4)))
    ws.dataReceived(masked_frame(0x82, PING_FRAME, os.urandom(4)))
    assert await arrive(transport, 1) == [{"t": "pong"}]  # an error would have come first
    # (The ping too: the server still awaits its WebSocket pong, so autobahn reads both.)
    assert consumer_receives[-2:] == [PONG_FRAME, PING_FRAME]


class Reactor:
    """What a Twisted connection asks of its reactor when it buffers: counted."""

    def __init__(self) -> None:
        self.writers: list[Any] = []

    def addWriter(self, fd: Any) -> None:
        self.writers.append(fd)

    def removeWriter(self, fd: Any) -> None:
        self.writers.remove(fd)


def test_a_frame_goes_to_the_socket_at_once_and_what_it_cannot_take_waits_in_order():
    from twisted.internet import tcp
    from twisted.internet.protocol import Protocol

    from ccgsc.server import send_now

    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    reactor = Reactor()
    conn = tcp.Connection(ours, Protocol(), reactor)  # type: ignore[arg-type]
    conn.connected = True
    try:
        # Nothing buffered: written now, without registering for writing.
        assert send_now(conn, b"first") and reactor.writers == []
        assert peer.recv(100) == b"first"
        # More than the socket takes: the rest in Twisted's buffer (registered once), and what
        # follows queues behind it, in order.
        big = os.urandom(4 << 20)
        assert send_now(conn, big) and reactor.writers == [conn]
        assert not send_now(conn, b"after")  # the caller writes it through Twisted
        conn.write(b"after")
        received = bytearray()
        peer.setblocking(False)
        while len(received) < len(big) + 5:
            with contextlib.suppress(BlockingIOError):
                received += peer.recv(1 << 20)
            if reactor.writers:
                conn.doWrite()
        assert bytes(received) == big + b"after" and reactor.writers == []
        # Buffer empty again: at once.
        assert send_now(conn, b"again") and reactor.writers == []
        peer.setblocking(True)
        assert peer.recv(100) == b"again"
        # Not a plain TCP connection (TLS, a test's transport): not ours to write.
        conn.TLS = True
        assert not send_now(conn, b"tls")
        assert not send_now(Transport(), b"test")
    finally:
        ours.close()
        peer.close()


def test_a_connections_reads_skip_twisteds_logging_context_and_a_failure_is_still_logged(caplog):
    from twisted.internet import tcp
    from twisted.internet.protocol import Protocol

    from ccgsc.server import read_directly

    class Loop:
        def __init__(self) -> None:
            self.readers: dict[int, tuple[Any, ...]] = {}

        def add_reader(self, fd: int, callback: Any, *args: Any) -> None:
            self.readers[fd] = (callback, *args)

    calls: list[tuple[Any, bool]] = []

    class FakeReactor(Reactor):
        def __init__(self) -> None:
            super().__init__()
            self._asyncioEventloop = Loop()
            self._readers: dict[Any, int] = {}

        def _readOrWrite(self, selectable: Any, read: bool) -> None:
            calls.append((selectable, read))
            if selectable.fail:
                raise RuntimeError("boom")

    ours, peer = socket.socketpair()
    fake = FakeReactor()
    conn = tcp.Connection(ours, Protocol(), fake)  # type: ignore[arg-type]
    conn.fail = False  # type: ignore[attr-defined]
    try:
        # Not reading (not registered with the reactor): left alone.
        assert not read_directly(conn, fake) and fake._asyncioEventloop.readers == {}
        fake._readers[conn] = ours.fileno()
        assert read_directly(conn, fake)
        callback, *args = fake._asyncioEventloop.readers[ours.fileno()]
        callback(*args)  # what the event loop does when the socket is readable
        assert calls == [(conn, True)]
        conn.fail = True  # type: ignore[attr-defined]
        with caplog.at_level(logging.ERROR, logger="daphne.server"):
            callback(*args)
        assert "Reading from" in caplog.text and "boom" in caplog.text
        # TLS, or another kind of transport: Twisted's own way.
        conn.TLS = True
        assert not read_directly(conn, fake)
        assert not read_directly(Transport(), fake)
    finally:
        ours.close()
        peer.close()


# --- the server process's garbage collection (Collector) ----------------------------------------


class FakeGc:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.callbacks: list[Any] = []

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect({generation})")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")


def test_what_survives_a_full_collection_is_frozen_until_connections_have_closed_in_number():
    from ccgsc.server import Collector

    fake, clock = FakeGc(), Clock()
    c = Collector(fake, clock)
    c.install()
    c.tick(10_000)
    assert fake.calls == []  # nothing happened: nothing to do
    for callback in fake.callbacks:  # what CPython calls around a collection
        callback("start", {"generation": 1})
        callback("stop", {"generation": 1})
    c.tick(10_000)
    assert fake.calls == []  # a young collection: nothing to freeze
    fake.callbacks[0]("stop", {"generation": 2})
    c.tick(10_000)
    assert fake.calls == ["collect(1)", "freeze"]  # a full one: freeze what survived it
    c.tick(10_000)
    assert fake.calls == ["collect(1)", "freeze"]  # once
    # Closed connections: at a quarter of those open (at least CHURN), one full round.
    c.closed = 2_499
    c.tick(10_000)
    assert fake.calls == ["collect(1)", "freeze"]
    c.closed += 1
    c.tick(10_000)
    assert fake.calls[2:] == ["unfreeze", "collect(2)", "freeze"] and c.closed == 0
    c.closed = Collector.CHURN - 1
    c.tick(100)
    assert len(fake.calls) == 5
    c.closed += 1
    c.tick(100)
    assert fake.calls[5:] == ["unfreeze", "collect(2)", "freeze"]
    # And at least once an hour, whatever happened.
    clock.now += Collector.UNFREEZE_SECONDS
    c.tick(100)
    assert fake.calls[8:] == ["unfreeze", "collect(2)", "freeze"] and c.full_collections == 3
    c.uninstall()
    assert fake.callbacks == []


def test_a_cycle_frozen_alive_is_freed_by_the_full_round_after_churn():
    import gc
    import weakref

    from ccgsc.server import Collector

    class Node:
        pass

    c = Collector()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        alive = weakref.ref(a)
        c.collected = True  # as after a full collection
        c.tick(0)  # frozen with everything else
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: not looked at
        c.closed = Collector.CHURN
        c.tick(0)
        assert alive() is None and c.full_collections == 1
    finally:
        gc.unfreeze()


@pytest.mark.django_db(transaction=True)
async def test_the_server_counts_closed_websockets_for_its_collector(monkeypatch):
    h = Harness(monkeypatch, websocket_app())
    ws, _ = await h.open_socket()
    before = h.server.collector.closed
    ws.connectionLost(Failure(ConnectionDone()))
    ws.connectionLost(Failure(ConnectionDone()))  # told twice: counted once
    assert h.server.collector.closed == before + 1
