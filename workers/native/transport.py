"""The two ways to reach a server, behind one small interface.

A Transport carries protocol messages both ways: the worker's as workers.protocol structs,
the server's as the maps they decode to (the worker checks each field itself, so a server bug
cannot crash it):

- `send(message)` queues a message and returns at once (it is called from plain callbacks on
  the event loop; a writer task does the I/O, in order);
- `await recv()` returns the next message from the server, or None once the connection is
  gone (then it keeps returning None);
- `await close()` ends it (idempotent).

WebSocketTransport: `ws(s)://HOST/ws/work/`, one binary msgpack frame per message.

HttpTransport: the fallback for networks that block WebSockets, `POST {server}/api/v1/work`
with `{session, secret, messages}`. The server keeps no socket for us, so the transport turns
the stream of messages into requests: at most one *poll* is in flight (a request carrying a
want; the server holds it up to 10 s when there is no work), and everything else (results,
checkpoints, pings, releases) goes out in separate *push* requests without waiting for it.
A want that arrives while a poll is out is dropped: that poll either brings tasks, whose
results will carry the next want, or comes back empty and is repeated.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgpack
import msgspec
import websockets
from websockets.asyncio.client import ClientConnection, connect

from workers import protocol

from .backoff import Backoff

log = logging.getLogger("ccgsc.worker")

#: Largest frame accepted from the server. Above the protocol's MAX_FRAME on purpose: a tasks
#: frame carries task inputs (and checkpoints) whose sizes the server does not bound per frame.
MAX_INCOMING_FRAME = 256 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
#: The HTTP fallback's messages per request (the server accepts at most 64).
MAX_HTTP_MESSAGES = 64
#: A push request is retried this often (with backoff) before the connection counts as lost;
#: retrying is safe because results are exactly-once on the server.
HTTP_ATTEMPTS = 5
#: Polls that come back empty are repeated no faster than this.
MIN_POLL_INTERVAL = 1.0
#: The server long-polls for 10 s; anything much longer than that is a dead request.
HTTP_TIMEOUT = httpx.Timeout(40.0, connect=CONNECT_TIMEOUT)


class Transport(Protocol):
    #: "websocket" or "http", for logs.
    name: str
    #: Whether the client should pace result frames by their acks. True for the WebSocket.
    #: False for HTTP, which batches queued messages into requests by itself and whose acks
    #: may be held back by a long poll (a poll carries the results queued before it).
    paced: bool

    def send(self, message: protocol.Message) -> None: ...

    async def recv(self) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


def websocket_url(server: str) -> str:
    """http://host:port/prefix -> ws://host:port/prefix/ws/work/ (https -> wss)."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported server URL scheme: {server!r}")
    path = parts.path.rstrip("/") + "/ws/work/"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def http_base(server: str) -> str:
    """The server's root URL for HTTP requests (ws:// given by mistake is accepted too)."""
    parts = urlsplit(server)
    scheme = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


# --- WebSocket ---------------------------------------------------------------------------------


async def _until(
    settled: Callable[[], bool], changed: asyncio.Event, task: asyncio.Task[Any]
) -> None:
    """Wait until `settled()` holds or `task` ends, waking each time `task` sets `changed`
    (event-driven: close() waits for the last frames to leave without polling)."""
    while not settled() and not task.done():
        changed.clear()
        waiter = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()


class WebSocketTransport:
    name = "websocket"
    paced = True

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._outbox: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()  # set by the writer after each frame it sends
        self._closed = False
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    @classmethod
    async def open(cls, server: str, *, agent: str) -> WebSocketTransport:
        """Connect; raises OSError, TimeoutError or websockets.InvalidHandshake on failure."""
        ws = await connect(
            websocket_url(server),
            user_agent_header=agent,
            open_timeout=CONNECT_TIMEOUT,
            max_size=MAX_INCOMING_FRAME,
            # msgpack of random-ish task data compresses poorly; deflate would only cost CPU.
            compression=None,
            # No library-level keepalive: the protocol's `ping`s (the server's to a silent
            # session, answered with `pong`, or ours after `heartbeat` of the server's silence:
            # client.py) find a silent server (SILENT_HEARTBEATS) and keep proxies open, and
            # the server takes them as the sign of life its own keepalive waits for. A
            # WebSocket ping on top was a second frame and answer per idle session for the
            # server (docs/benchmarks.md, Scale).
            ping_interval=None,
            close_timeout=2,
        )
        return cls(ws)

    def send(self, message: protocol.Message) -> None:
        if self._closed:
            return
        # Encoded here, once, in the order messages were produced.
        self._outbox.append(protocol.encode(message))
        self._wake.set()

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                # Popped only once sent, so close() can tell when everything went out.
                while self._outbox:
                    await self._ws.send(self._outbox[0])
                    self._outbox.popleft()
                    self._sent.set()
        except websockets.ConnectionClosed:
            pass
        except Exception:
            log.exception("websocket writer failed")
            await self._ws.close()

    async def recv(self) -> dict[str, Any] | None:
        while not self._closed:
            try:
                frame = await self._ws.recv(decode=False)
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                    log.warning(
                        "server closed the connection: %s %s", exc.rcvd.code, exc.rcvd.reason
                    )
                self._closed = True
                return None
            try:
                return protocol.decode_map(frame, max_frame=MAX_INCOMING_FRAME)
            except protocol.ProtocolError as exc:
                log.warning("ignoring a malformed frame from the server: %s", exc.message)
        return None

    async def close(self) -> None:
        if self._closed and self._writer.done():
            return
        self._closed = True
        # Let queued frames (bye, the last results) go out before closing.
        with contextlib.suppress(Exception):
            if self._outbox:
                self._wake.set()
                await asyncio.wait_for(asyncio.shield(self._drained()), timeout=2.0)
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writer
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def _drained(self) -> None:
        await _until(lambda: not self._outbox, self._sent, self._writer)


# --- HTTP fallback -----------------------------------------------------------------------------


#: Bytes of payload per HTTP request (the server accepts bodies up to protocol.MAX_FRAME).
HTTP_BODY_BUDGET = protocol.MAX_FRAME // 2


def _approx_size(msg: protocol.Message) -> int:
    """Roughly the encoded size of a message: its byte payloads plus a little per field."""
    if isinstance(msg, protocol.Checkpoint):
        return 64 + len(msg.data)
    if isinstance(msg, protocol.Result):
        return 64 + sum(48 + len(item.output) + len(item.stderr) for item in msg.results)
    return 64


class HttpError(Exception):
    """A request that failed for good (after retries, or with an answer that will not change)."""


def _decode_body(body: bytes) -> list[dict[str, Any]]:
    if len(body) > MAX_INCOMING_FRAME:
        raise HttpError("response too large")
    try:
        data = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise HttpError(f"response is not msgpack: {exc}") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list):
        raise HttpError("response has no message list")
    return [m for m in messages if isinstance(m, dict) and isinstance(m.get("t"), str)]


class HttpTransport:
    name = "http"
    paced = False

    def __init__(self, server: str, *, agent: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = http_base(server) + "/api/v1/work"
        self._client = client or httpx.AsyncClient(
            timeout=HTTP_TIMEOUT, headers={"User-Agent": agent}
        )
        self._own_client = client is None
        self.session: int | None = None
        self.secret: str | None = None
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._outbox: collections.deque[protocol.Message] = collections.deque()
        self._pushing = False  # a push request is in flight
        self._wake = asyncio.Event()
        self._pushed = asyncio.Event()  # set by the send loop after each step
        self._closed = False
        self._want = 0  # the latest want the client expressed
        self._repoll = False  # the last poll came back empty: ask again
        self._poll: asyncio.Task[None] | None = None
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    def send(self, message: protocol.Message) -> None:
        if self._closed:
            return
        self._outbox.append(message)
        self._wake.set()

    async def recv(self) -> dict[str, Any] | None:
        if self._closed and self._inbox.empty():
            return None
        return await self._inbox.get()

    async def close(self) -> None:
        if self._closed:
            return
        # Deliver what is queued (bye, last results) before going.
        with contextlib.suppress(Exception):
            if self._outbox:
                self._wake.set()
                await asyncio.wait_for(self._flushed(), timeout=5.0)
        self._shutdown()
        for task in (self._sender, self._poll):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._own_client:
            await self._client.aclose()

    async def _flushed(self) -> None:
        await _until(lambda: not (self._outbox or self._pushing), self._pushed, self._sender)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._sender, self._poll):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self._inbox.put_nowait(None)

    # --- the request machinery ----------------------------------------------------------------

    def _take(self, *, strip: bool) -> tuple[list[protocol.Message], bool]:
        """Pop queued messages for one request and note the client's latest want. With
        `strip`, wants are taken out (for a push while a poll is out). Adjacent result
        messages are merged (the server records a result frame in one transaction, so
        fewer, larger frames cost it less). The request stays under HTTP_BODY_BUDGET bytes
        (the server refuses bodies above protocol.MAX_FRAME). Returns the messages and
        whether a want was among them."""
        batch: list[protocol.Message] = []
        wanted = False
        size = 0
        while self._outbox and len(batch) < MAX_HTTP_MESSAGES - 1:
            msg = self._outbox[0]
            msg_size = _approx_size(msg)
            if batch and size + msg_size > HTTP_BODY_BUDGET:
                break
            self._outbox.popleft()
            size += msg_size
            if isinstance(msg, protocol.Want):
                self._want, wanted = msg.n, True
                if strip:
                    continue
            elif isinstance(msg, protocol.Result):
                if msg.want is not None:
                    self._want, wanted = msg.want, True
                    if strip:
                        msg = msgspec.structs.replace(msg, want=None)
                else:
                    self._want = 0  # the client asked for nothing more with these results
                last = batch[-1] if batch else None
                if (
                    isinstance(last, protocol.Result)
                    and len(last.results) + len(msg.results) <= protocol.MAX_BATCH
                ):
                    # The merged frame says the later frame's want (or none).
                    batch[-1] = protocol.Result(results=last.results + msg.results, want=msg.want)
                    continue
            elif isinstance(msg, protocol.Release | protocol.Bye):
                self._want = 0  # the server forgets wants on release; so do we
            batch.append(msg)
        return batch, wanted

    @staticmethod
    def _asks(batch: list[protocol.Message]) -> bool:
        """Whether a request carries a want (after merging: the latest result frame's say)."""
        return any(
            isinstance(m, protocol.Want) or (isinstance(m, protocol.Result) and m.want is not None)
            for m in batch
        )

    async def _send_loop(self) -> None:
        """Requests out of the outbox. A batch that carries a want becomes the poll when none
        is out, *with* the results queued before it: the server then counts those results
        before deciding how many tasks to hand out (a poll sent beside a concurrent results
        push would be judged on a stale count of leases in our hands). While a poll is out,
        everything else goes in pushes, one at a time, with wants stripped. A repeated poll
        starts only when no push is in flight, for the same reason."""
        try:
            while True:
                if self.session is None:
                    await self._handshake()
                    continue
                await self._wake.wait()
                self._wake.clear()
                while self._outbox and not self._closed:
                    # A want stripped here needs no poll of its own: the poll out brings tasks
                    # (whose results will carry the next want) or comes back empty (and is
                    # repeated).
                    batch, _ = self._take(strip=self._poll is not None)
                    if self._poll is None and self._asks(batch):
                        self._start_poll(batch)
                        continue
                    if batch:
                        self._pushing = True
                        try:
                            await self._request(batch, attempts=HTTP_ATTEMPTS)
                        finally:
                            self._pushing = False
                            self._pushed.set()
                self._pushed.set()
                if self._poll is None and self._repoll and self._want > 0:
                    self._start_poll([protocol.Want(n=self._want)])
        except asyncio.CancelledError:
            raise
        except HttpError as exc:
            log.warning("HTTP fallback: %s", exc)
            self._shutdown()
        except Exception:
            log.exception("HTTP fallback failed")
            self._shutdown()

    async def _handshake(self) -> None:
        """The first request carries hello (and nothing is retried: if the server cannot be
        reached the client backs off and starts over)."""
        await self._wake.wait()
        self._wake.clear()
        batch, _ = self._take(strip=True)
        if not batch:
            return
        for msg in await self._post({"session": None, "secret": None, "messages": batch}):
            if msg["t"] == "welcome":
                self.session, self.secret = msg.get("session"), msg.get("secret")
            self._inbox.put_nowait(msg)
        if self.session is None:
            raise HttpError("the server did not welcome us")
        if self._want > 0:
            self._repoll = True  # a want that came with hello: poll for it
        self._wake.set()

    def _start_poll(self, batch: list[protocol.Message]) -> None:
        self._repoll = False
        self._poll = asyncio.get_running_loop().create_task(self._poll_once(batch))

    async def _poll_once(self, batch: list[protocol.Message]) -> None:
        started = time.monotonic()
        try:
            got_tasks = await self._request(batch, attempts=HTTP_ATTEMPTS)
            # Ask again when this poll came back empty (that is the long poll: the server
            # waited 10 s for work for us). The sender loop does it, once no push is in
            # flight. A server that answers at once without work (instead of holding the
            # request) must not be polled in a tight loop: this poll counts as out until then.
            if not got_tasks and self._want > 0:
                pause = MIN_POLL_INTERVAL - (time.monotonic() - started)
                if pause > 0:
                    await asyncio.sleep(pause)
                self._repoll = True
        except asyncio.CancelledError:
            raise
        except HttpError as exc:
            log.warning("HTTP fallback: %s", exc)
            self._shutdown()
            return
        finally:
            self._poll = None
        self._wake.set()

    async def _request(self, messages: list[protocol.Message], *, attempts: int) -> bool:
        """POST messages, deliver the answers; True if a tasks frame came back."""
        body = {"session": self.session, "secret": self.secret, "messages": messages}
        backoff = Backoff(initial=0.5, maximum=8.0)
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff.next())
            try:
                answers = await self._post(body)
            except _Transient as exc:
                log.warning("HTTP fallback request failed (%s), retrying", exc)
                continue
            got = False
            for msg in answers:
                got = got or msg["t"] == "tasks"
                self._inbox.put_nowait(msg)
            return got
        raise HttpError(f"the server could not be reached after {attempts} attempts")

    async def _post(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            response = await self._client.post(
                self.url,
                content=protocol.encode(body),
                headers={"Content-Type": "application/msgpack"},
            )
        except httpx.HTTPError as exc:
            if self.session is None:
                raise HttpError(str(exc) or type(exc).__name__) from None
            raise _Transient(str(exc) or type(exc).__name__) from None
        if response.status_code >= 500 or response.status_code == 429:
            if self.session is None:
                raise HttpError(f"HTTP {response.status_code}")
            raise _Transient(f"HTTP {response.status_code}")
        if response.headers.get("content-type", "").startswith("application/msgpack"):
            messages = _decode_body(response.content)
        else:
            raise HttpError(f"HTTP {response.status_code} without a protocol answer")
        if response.status_code != 200:
            # 4xx with protocol errors (unknown session, bad request): hand them to the
            # client, then the connection is over.
            for msg in messages:
                self._inbox.put_nowait(msg)
            raise HttpError(f"HTTP {response.status_code}")
        return messages


class _Transient(Exception):
    """Worth retrying: network error, 5xx, 429."""
