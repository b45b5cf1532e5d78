"""The platform's daphne: daphne's Server with its two periodic loops costing what changed, not
what is connected. Same command line as daphne (every option, same defaults):

    python -m ccgsc.server -b 127.0.0.1 -p 8000 [daphne options] ccgsc.asgi:application

(`manage.py serve`, ccgsc/processes.py, the Dockerfile and compose.yaml start it so.)

daphne.server.Server keeps `connections` (protocol -> {"connected", "application_instance",
"disconnected"}) and walks ALL of it in two loops, which at 10,000 idle sessions were most of
an idle process's CPU (docs/benchmarks.md, Scale):

- application_checker, every 1 s: cancels an application still running application_close_timeout
  after its connection closed; reaps a finished application (its exception logged and, on a
  connection still open, handed to protocol.handle_exception; KeyboardInterrupt stops the
  server); forgets a closed connection once its application has ended.
- timeout_checker, every 2 s: protocol.check_timeouts() on every connection. A WebSocket is
  rejected if still in its handshake after websocket_connect_timeout, closed after
  websocket_timeout, and pinged once silent for ping_interval (autobahn then drops it if no
  pong comes within ping_timeout); an HTTP request (the long-poll fallback) gets its 503 after
  http_timeout.

Here the same rules apply, by daphne's own per-connection code (check_timeouts, handle_exception,
serverReject...), to fewer connections:

- The application checker looks only at `unsettled` connections: one that closed
  (protocol_disconnected) or whose application ended (a done callback on its future). A closed
  connection stays unsettled until its application has ended and it is forgotten.
- check_timeouts() runs for a connection when its next deadline comes (`deadlines`, a heap),
  computed from what daphne's check reads (socket_opened, state, last_ping, request_start).
  A received message moves a socket's ping deadline (daphne's onMessage sets last_ping) without
  telling the server, so a deadline can come early: the next one is then computed, without a
  check. Never late, since last_ping only grows. Both loops run every second (the
  timeouts were checked every 2 s), so a silent peer is pinged at most 1 s after ping_interval.

And a WebSocket connection answers some frames itself (ShortcutWebSocketProtocol): an idle
worker's only traffic is its keepalive (a `ping` every 45 s, or its `pong` to the server's ping
when its hello said `pongs`, below), which went through the Channels consumer (queue,
dispatch, decode, handle, encode, send) for a `pong`. Once the worker endpoint has opened a
session it arms the connection's Shortcut (ccgsc/sockets.py) with the exact ping frame of
workers/protocol.py and its pong; such a frame is then answered here, as daphne's onMessage
would hand it on (last_ping set, nothing while muted), unless an earlier frame is still pending
in the consumer (answers keep their order). Such a ping, or a WebSocket-level ping, arriving
as one whole small frame with nothing of an earlier one buffered, is answered before autobahn
parses it (answer_frame): an idle session's traffic then costs a header check, a 4-byte unmask
and one send. A session whose hello said `pongs` is not left to ping: armed with a beat, the
connection's keepalive (daphne's check_timeouts, when it has been silent ping_interval) sends
the protocol's ping where it would send a WebSocket ping (_sendAutoPing), and the worker's exact
pong is taken here like a WebSocket pong (heard_pong). The keepalive pings every connection due
in the same pass of the timeout loop, once a second, so their pongs arrive together: one wake-up
of the event loop reads many, where pings each worker times for itself arrive one by one, each
costing a wake-up (epoll, a loop turn, the kernel's scheduling), which was most of an idle
session's cost (docs/benchmarks.md, Scale).

Its reads skip Twisted's per-event logging context (read_directly). Frames go out at once
(send_now): a frame to a plain TCP connection with nothing of an earlier
one waiting in Twisted's buffer is written to the socket directly, the rest (if the socket takes
less) through Twisted's buffer as before. Twisted's own write registers the socket for writing
and sends on the next loop turn, then unregisters it: two epoll updates and a loop turn per
frame, which were most of feeding 10,000 waiting sessions at a campaign's start and a large part
of answering their pings (docs/benchmarks.md, Scale).

And the process's garbage collector leaves what lives long alone (Collector): CPython's full
collection walks every object, about a second at 10,000 sessions, and runs each time the
long-lived objects have grown by a quarter: some thirty pauses of up to 1.3 s while 10,000
sessions connected, and one in the middle of feeding them all at a campaign's start.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import logging
import sys
import time
import weakref
from concurrent.futures import CancelledError
from typing import Any

# daphne.server installs Twisted's asyncio reactor when imported: before anything imports it.
from daphne import cli, ws_protocol
from daphne import server as daphne_server
from daphne.http_protocol import WebRequest
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor as _reactor
from twisted.internet import tcp

from ccgsc.sockets import SHORTCUT, Shortcut

# daphne's own logger: the settings' LOGGING and log handlers treat these records as before.
logger = logging.getLogger("daphne.server")

reactor: Any = _reactor  # the asyncio reactor daphne.server installed (untyped: a module)

#: Seconds between two runs of each loop.
TICK = 1.0
#: A connection of a kind not known here is checked as daphne checks every one: every 2 s.
OTHER_PERIOD = 2.0


#: First bytes of a client's frame (FIN, no extension bits; the mask bit is checked apart).
_BINARY, _PING = 0x82, 0x89
#: The longest payload with a one-byte length (RFC 6455 5.2): the frames answered here.
_SHORT = 125


def send_now(transport: Any, data: bytes) -> bool:
    """Write data on a plain TCP connection whose Twisted buffer is empty: to its socket at once,
    what the socket does not take (or all of it, after an error, which Twisted then finds and
    handles as its own) through that buffer, in order; True. False, having written nothing, when
    Twisted still holds an earlier write (the data must queue behind it) or for any other
    transport (TLS, a test's): use transport.write()."""
    if (
        not isinstance(transport, tcp.Connection)
        or transport.TLS
        or not transport.connected
        or transport.disconnecting
        or transport._aborting
        or transport._writeDisconnected
        or transport._tempDataLen
        or transport.offset != len(transport.dataBuffer)
    ):
        return False
    sent = transport.writeSomeData(data)  # at most SEND_LIMIT bytes; an int or ConnectionLost
    if isinstance(sent, int) and sent > 0:
        data = data[sent:]
    if data:
        transport.write(data)
    return True


def read_directly(transport: Any, reactor_: Any = None) -> bool:
    """Have the event loop hand a plain TCP connection's readable events to Twisted's read
    (the reactor's _readOrWrite) without Twisted's per-event logging context (callWithLogger:
    the connection's log prefix looked up and a context pushed and popped for every read, about
    a seventh of an idle session's ping in a profile); a failure is still logged and the
    connection still closed by the reactor as before. True if so; False (nothing changed) for
    another reactor, transport or a connection not reading."""
    reactor_ = reactor_ or reactor
    loop = getattr(reactor_, "_asyncioEventloop", None)
    read = getattr(reactor_, "_readOrWrite", None)
    readers = getattr(reactor_, "_readers", None)
    if (
        loop is None
        or read is None
        or readers is None
        or not isinstance(transport, tcp.Connection)
        or transport.TLS
        or readers.get(transport) != transport.fileno()
    ):
        return False
    # The same fd's reader, replaced; the reactor's removeReader still removes it.
    loop.add_reader(transport.fileno(), _read, read, transport)
    return True


def _read(read: Any, transport: Any) -> None:
    try:
        read(transport, True)
    except KeyboardInterrupt:
        raise
    except BaseException:
        logger.exception("Reading from %r failed", transport)


def short_frame(payload: bytes) -> bytes:
    """A server's binary frame of at most _SHORT bytes (RFC 6455 5.2: unmasked, one-byte
    length)."""
    return bytes((_BINARY, len(payload))) + payload


def unmask(key: bytes, payload: bytes) -> bytes:
    """A client frame's payload (RFC 6455 5.3), for the short frames answered here."""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


class ShortcutWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket protocol, answering the frames its Shortcut is armed with, and sending
    its frames at once (send_now)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shortcut = Shortcut()

    def connectionMade(self) -> None:
        super().connectionMade()
        read_directly(self.transport)

    def dataReceived(self, data: bytes) -> None:
        if not self.answer_frame(data):
            super().dataReceived(data)

    def answer_frame(self, data: bytes) -> bool:
        """Answer `data` here, before autobahn, when it is exactly one whole short frame that
        is answered without the application (a WebSocket ping, an exact frame of the
        Shortcut: see onMessage, or the pong to its beat, which is taken and answered with
        nothing) and nothing of an earlier frame is buffered; True if so. As autobahn would
        answer: a ping's pong carries its payload. Anything else (a fragment, a data frame
        inside a fragmented message, two frames in one read, compressed or unmasked frames, a
        closing socket, a frame other than the beat's pong while the server awaits its
        keepalive's pong) is autobahn's."""
        size = len(data)
        if (
            size < 6
            or size > 6 + _SHORT
            or data[1] != 0x80 | (size - 6)  # masked, and its length is the rest
            or self.state != WebSocketProtocol.STATE_OPEN
            or self.data
            or self.current_frame is not None
            or self.logOctets
            or self.logFrames
        ):
            return False
        first = data[0]
        if first == _PING:
            if self.autoPingTimeoutCall is not None:
                return False
            self.last_ping = ws_protocol.time.time()  # as onPing below
            self.sendData(bytes((0x8A, size - 6)) + unmask(data[2:6], data[6:]))
            return True
        # Inside a fragmented message a data frame is a protocol error (RFC 6455 5.4):
        # autobahn's to refuse.
        if first != _BINARY or self.muted or self.inside_message:
            return False
        shortcut = self.shortcut
        pong = shortcut.pong
        taken = pong is not None and size - 6 == len(pong)
        if not taken and (shortcut.pending or size - 6 > shortcut.longest):
            return False  # without unmasking it
        payload = unmask(data[2:6], data[6:])
        if taken and payload == pong:
            self.heard_pong()
            return True
        # A data frame ends a wait for the pong to the server's keepalive ping (autobahn's
        # autoPingRestartOnAnyTraffic): rare, autobahn's to do.
        if self.autoPingTimeoutCall is not None:
            return False
        answer = shortcut.lookup(payload)
        if answer is None:
            return False
        self.send_answer(answer)
        return True

    def heard_pong(self) -> None:
        """The peer's pong to the Shortcut's beat: the wait for it (autobahn's keepalive
        timeout) ends. Like a WebSocket pong it leaves last_ping alone: the keepalive set it
        when it pinged, so the next beat is due ping_interval after this one (moving it by the
        round trip would only make that deadline come early and be pushed back once more)."""
        if self.autoPingTimeoutCall is not None:
            self._cancelAutoPingTimeoutCall()

    def _sendAutoPing(self) -> None:
        # daphne's keepalive ping to a socket silent for ping_interval (check_timeouts): the
        # Shortcut's beat, when armed with one (the peer answers its pong; autobahn's timeout
        # drops the connection if neither it nor any other frame comes), else autobahn's
        # WebSocket ping.
        beat = self.shortcut.beat
        if beat is None:
            super()._sendAutoPing()
            return
        self.autoPingPendingCall = None
        self.autoPingPending = None  # no WebSocket pong is awaited
        self.sendData(short_frame(beat))
        if self.autoPingTimeout:
            self.autoPingTimeoutCall = self.factory._batched_timer.call_later(
                self.autoPingTimeout, self.onAutoPingTimeout
            )

    def send_answer(self, answer: bytes) -> None:
        """Send a Shortcut's answer, as daphne's onMessage would have let the application: the
        peer is there (last_ping, daphne's clock). A short one as its frame, built here."""
        self.last_ping = ws_protocol.time.time()
        if len(answer) <= _SHORT:
            self.sendData(short_frame(answer))
        else:
            self.sendMessage(answer, True)

    def onPing(self, payload: bytes) -> None:
        # A peer's WebSocket ping is a sign of life as good as a message: daphne's keepalive
        # need not ping it (daphne counts only messages).
        self.last_ping = ws_protocol.time.time()
        super().onPing(payload)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # autobahn's, for the writes it makes with transport.write (not chopped or synced ones,
        # nor any while its own queue holds some).
        if not (sync or chopsize or self.send_queue or self.logOctets) and send_now(
            self.transport, data
        ):
            if self.state == WebSocketProtocol.STATE_OPEN:
                self.trafficStats.outgoingOctetsWireLevel += len(data)
            return
        super().sendData(data, sync, chopsize)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.muted:
            if isBinary and payload == self.shortcut.pong:
                self.heard_pong()  # autobahn has already ended the wait (any traffic does)
                return
            if not isBinary:
                self.shortcut.pending += 1
            else:
                answer = self.shortcut.answer(payload)
                if answer is not None:
                    self.send_answer(answer)
                    return
        super().onMessage(payload, isBinary)


class Collector:
    """The server process's garbage collection: what survived a full collection is frozen
    (gc.freeze: never walked again), so the next full collection (CPython's, when long-lived
    objects have grown by a quarter) walks only what came since. Freezing would keep reference
    cycles among frozen objects that later become garbage (a closed connection's protocol,
    consumer and their tasks) until the next unfreeze; so once WebSocket connections have
    closed in number (a quarter of those open, at least CHURN) or UNFREEZE_SECONDS have passed,
    everything is unfrozen, collected in full once and frozen again: what closed connections
    leave is freed after as much churn as CPython's own rule would wait for growth.
    Runs on the server's tick (the event loop's thread); gc's own callback only notes that a
    full collection happened (it may run on any thread)."""

    CHURN = 1000
    UNFREEZE_SECONDS = 3600.0

    def __init__(self, collector: Any = gc, clock: Any = time.monotonic) -> None:
        self.gc, self.clock = collector, clock
        self.collected = False  # a full collection ran since the last tick
        self.closed = 0  # WebSocket connections closed since the last full unfreeze
        self.last_full = clock()
        self.full_collections = 0  # unfreeze-and-collect rounds (for tests and benchmarks)

    def install(self) -> None:
        self.gc.callbacks.append(self._noticed)

    def uninstall(self) -> None:
        if self._noticed in self.gc.callbacks:
            self.gc.callbacks.remove(self._noticed)

    def _noticed(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self.collected = True

    def tick(self, open_connections: int) -> None:
        if self.closed >= max(self.CHURN, open_connections // 4) or (
            self.clock() - self.last_full >= self.UNFREEZE_SECONDS
        ):
            self.gc.unfreeze()
            self.gc.collect()
            self.gc.freeze()
            self.closed, self.collected = 0, False
            self.last_full = self.clock()
            self.full_collections += 1
        elif self.collected:
            self.collected = False
            self.gc.collect(1)  # the young generations' garbage, not frozen with the rest
            self.gc.freeze()


class Server(daphne_server.Server):
    #: What "now" is, for the deadlines and the close timeout (a fake clock in tests). daphne's
    #: protocols read time.time() themselves.
    clock = staticmethod(time.time)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # run() makes `connections` afresh; made here too so that the methods below work
        # without a reactor (tests).
        self.connections: dict[Any, dict[str, Any]] = {}
        self.unsettled: set[Any] = set()
        # (due, tie-breaker, weak reference to the protocol): a forgotten connection's entry
        # lapses when it comes due, without keeping the protocol alive until then.
        self.deadlines: list[tuple[float, int, weakref.ref[Any]]] = []
        self._order = itertools.count()
        self.collector = Collector()

    def run(self) -> None:
        self.collector.install()
        try:
            super().run()
        finally:
            self.collector.uninstall()

    # --- what daphne's protocols tell the server -------------------------------------------------

    def protocol_connected(self, protocol: Any) -> None:
        super().protocol_connected(protocol)
        self._schedule(protocol, self.clock())

    def protocol_disconnected(self, protocol: Any) -> None:
        # daphne's, with this server's clock (the first time counts: see its comment).
        details = self.connections[protocol]
        if "disconnected" not in details:
            details["disconnected"] = self.clock()
            if isinstance(protocol, WebSocketProtocol):
                self.collector.closed += 1
        self.unsettled.add(protocol)

    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        # daphne's run() makes its WebSocketFactory: its connections speak the protocol above.
        factory.protocol = ShortcutWebSocketProtocol
        self._ws_factory = factory

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
        shortcut = getattr(protocol, "shortcut", None)
        if isinstance(shortcut, Shortcut):
            shortcut.keepalive = self.ping_interval
            scope.setdefault("extensions", {})[SHORTCUT] = shortcut
        queue = super().create_application(protocol, scope)
        instance = self.connections.get(protocol, {}).get("application_instance")
        if instance is not None:
            instance.add_done_callback(lambda _: self._application_ended(protocol))
        return queue

    def _application_ended(self, protocol: Any) -> None:
        self.unsettled.add(protocol)
        shortcut = getattr(protocol, "shortcut", None)
        if isinstance(shortcut, Shortcut):
            shortcut.disarm()  # nothing answers for an application that has ended

    # --- the application checker -----------------------------------------------------------------

    def application_checker(self) -> None:
        """daphne's loop (run() starts it), over the unsettled connections only."""
        try:
            self.check_applications()
            self.collector.tick(len(self.connections))
        finally:
            reactor.callLater(TICK, self.application_checker)

    def check_applications(self) -> None:
        now = self.clock()
        for protocol in list(self.unsettled):
            try:
                settled = not self._check_application(protocol, now)
            except Exception:
                # daphne's loop would have died here (say, handle_exception failing on a
                # socket half gone); its closing puts the connection back in view.
                logger.exception("Checking the application of %r failed", protocol)
                settled = True
            if settled:
                self.unsettled.discard(protocol)

    def _check_application(self, protocol: Any, now: float) -> bool:
        """daphne's application_checker for one connection; True while it stays unsettled (closed,
        its application not yet ended)."""
        details = self.connections.get(protocol)
        if details is None:
            return False
        disconnected = details.get("disconnected")
        instance = details.get("application_instance")
        # Closed, and its application has taken too long to end.
        closed_for = now - disconnected if disconnected else 0.0
        if closed_for > self.application_close_timeout and instance and not instance.done():
            logger.warning(
                "Application instance %r for connection %s took too long to shut down and "
                "was killed.",
                instance,
                repr(protocol),
            )
            instance.cancel()
        # The application has ended: reap it.
        if instance and instance.done():
            try:
                exception = instance.exception()
            except (CancelledError, asyncio.CancelledError):
                pass  # cancelled: nothing to say
            else:
                if isinstance(exception, KeyboardInterrupt):
                    self.stop()  # the application asks the server to exit (likely a test)
                elif exception:
                    logger.error("Exception inside application: %s", exception, exc_info=exception)
                    if not disconnected:
                        protocol.handle_exception(exception)
            del details["application_instance"]
            instance = None
        # Closed and its application ended: forget the connection.
        if not instance and disconnected:
            del self.connections[protocol]
            return False
        return bool(disconnected)

    # --- the timeout checker ---------------------------------------------------------------------

    def timeout_checker(self) -> None:
        """daphne's loop (run() starts it), over the connections with a deadline due."""
        try:
            self.check_due_timeouts()
        finally:
            reactor.callLater(TICK, self.timeout_checker)

    def check_due_timeouts(self) -> None:
        now = self.clock()
        due = []
        # All that are due first: a check that rescheduled for now waits for the next tick.
        while self.deadlines and self.deadlines[0][0] <= now:
            due.append(heapq.heappop(self.deadlines)[2]())
        for protocol in due:
            if protocol is None or protocol not in self.connections:
                continue  # forgotten since
            if isinstance(protocol, WebSocketProtocol):
                at = self.next_deadline(protocol, now)
                if at is not None and at > now:
                    # Its deadline moved since (a message came): nothing to check yet. An idle
                    # worker's ping comes before each deadline; this is its every visit.
                    self._push(protocol, at)
                    continue
            try:
                protocol.check_timeouts()
            except Exception:
                # daphne's loop would have died here, leaving every later timeout unchecked.
                logger.exception("Checking the timeouts of %r failed", protocol)
            self._schedule(protocol, now)

    def _schedule(self, protocol: Any, now: float) -> None:
        due = self.next_deadline(protocol, now)
        if due is not None:
            self._push(protocol, due)

    def _push(self, protocol: Any, due: float) -> None:
        heapq.heappush(self.deadlines, (due, next(self._order), weakref.ref(protocol)))

    def next_deadline(self, protocol: Any, now: float) -> float | None:
        """When protocol.check_timeouts() may next do something (None: never), from what it
        reads. Before a WebSocket's onConnect has set socket_opened and last_ping (it calls
        protocol_connected first) they count as now: they are set later, so the deadline is
        early, never late."""
        if isinstance(protocol, WebSocketProtocol):
            opened = getattr(protocol, "socket_opened", now)
            deadlines = []
            if self.websocket_timeout >= 0:
                deadlines.append(opened + self.websocket_timeout)
            state = getattr(protocol, "state", protocol.STATE_CONNECTING)
            if state == protocol.STATE_CONNECTING:
                deadlines.append(opened + self.websocket_connect_timeout)
            elif state == protocol.STATE_OPEN:
                deadlines.append(getattr(protocol, "last_ping", now) + self.ping_interval)
            # Closing or closed: only websocket_timeout applies (a socket never opens again).
            return min(deadlines, default=None)
        if isinstance(protocol, WebRequest):
            if not self.http_timeout:
                return None  # its check_timeouts does nothing
            return float(getattr(protocol, "request_start", now) + self.http_timeout)
        return now + OTHER_PERIOD


class CommandLineInterface(cli.CommandLineInterface):
    """daphne's command line, running the Server above."""

    server_class = Server


if __name__ == "__main__":
    CommandLineInterface().run(sys.argv[1:])
