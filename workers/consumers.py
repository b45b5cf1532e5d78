"""The worker WebSocket endpoint (/ws/work/): binary msgpack frames (workers/protocol.py)."""

from __future__ import annotations

import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from ccgsc.origins import scope_origin_allowed
from ccgsc.sockets import QuietWhenClosed, scope_shortcut
from workers import identity, protocol
from workers.connection import WorkerConnection
from workers.liveness import ensure_liveness
from workers.protocol import ProtocolError
from workers.sweeper import ensure_sweeper

log = logging.getLogger(__name__)
CLOSE_POLICY = 4400


class WorkConsumer(QuietWhenClosed, AsyncWebsocketConsumer):
    # In no group: work and campaign changes reach this process's dispatcher once
    # (workers.dispatch); cancels and campaign changes reach this connection by its channel
    # name (workers.live, workers.dispatch), only when it holds the leases concerned.

    # The server answers an open session's exact `ping` frames itself, without waking this
    # consumer (ccgsc/server.py: the connection's Shortcut, armed here once the session is open
    # and as long as it is; None under another server). A ping is then one WebSocket message
    # each way, and a `pong` all it changes: a ping writes nothing (workers/liveness.py) and
    # counts toward no limit (strikes count refused frames, which always come here). For a
    # session whose hello said `pongs` the Shortcut also carries the server's own ping
    # (protocol.BEAT), sent to the socket when it is silent, whose exact pong stays there too.
    shortcut = None

    async def connect(self) -> None:
        self.shortcut = scope_shortcut(self.scope)
        # Browsers only from the platform's own origin, exactly (ccgsc/origins.py).
        if not scope_origin_allowed(self.scope):
            await self.close(code=CLOSE_POLICY)
            return
        ensure_sweeper()
        ensure_liveness()
        self.gone = False
        origin, profile = identity.scope_identity(self.scope)
        self.conn = WorkerConnection(
            self._send,
            user=self.scope.get("user"),
            origin=origin,
            profile=profile,
            channel=self.channel_name or "",
            kick=self._close,
            beats=self.shortcut.keepalive if self.shortcut is not None else None,
        )
        await self.accept()

    async def _send(self, message: protocol.ServerMessage) -> None:
        # A handler may still be finishing (e.g. a lease query) when the peer hangs up; its
        # answer has nowhere to go, and the leases were already released by disconnect().
        if not self.gone:
            await self.send(bytes_data=protocol.encode(message))

    async def _close(self, code: int) -> None:
        # Nothing more goes out after our close frame (a group event may still arrive before
        # disconnect() runs).
        self.gone = True
        if self.shortcut is not None:
            self.shortcut.disarm()
        await self.close(code=code)

    def _arm(self) -> None:
        """Let the server answer pings while the session is open, in its version, and ping
        the session when it is silent if its hello asked for that (`pongs`)."""
        if self.shortcut is None:
            return
        if self.conn.info is not None and not self.conn.closed and not self.gone:
            self.shortcut.arm(
                protocol.PING_ANSWERS[self.conn.version],
                protocol.BEAT if self.conn.beating else None,
            )
        else:
            self.shortcut.disarm()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            await self._receive(text_data, bytes_data)
        finally:
            if self.shortcut is not None:
                self._arm()
                self.shortcut.done()

    async def _receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None and len(bytes_data) > protocol.MAX_FRAME:
            # The documented error, then the close. The server (daphne) reads messages up to
            # protocol.MAX_WEBSOCKET_MESSAGE so that a frame a little over the limit reaches
            # this line instead of being dropped with no word (1006).
            await self._send(
                protocol.Error(
                    code="too_large",
                    message=f"frame of {len(bytes_data)} bytes exceeds {protocol.MAX_FRAME}",
                    fatal=True,
                )
            )
            await self._close(CLOSE_POLICY)  # daphne may not send 1009 ("too big")
            return
        try:
            if bytes_data is None:
                raise ProtocolError("malformed", "frames must be binary msgpack")
            await self.conn.handle(self.conn.decode(bytes_data))
        except ProtocolError as exc:
            if await self.conn.protocol_error(exc):
                await self._close(CLOSE_POLICY)
                return
        if self.conn.closed and not self.gone:
            await self._close(1000)

    async def disconnect(self, code: int) -> None:
        self.gone = True
        if self.shortcut is not None:
            self.shortcut.disarm()
        conn = getattr(self, "conn", None)
        if conn is not None:
            await conn.close()

    # Group events (see workers.live).
    async def campaign_changed(self, event: dict[str, Any]) -> None:
        await self.conn.on_campaign_changed(event["campaign"], event["state"])

    async def leases_cancelled(self, event: dict[str, Any]) -> None:
        await self.conn.on_leases_cancelled(event["leases"], event["reason"])
