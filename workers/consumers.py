"""The worker WebSocket endpoint (/ws/work/): binary msgpack frames (workers/protocol.py)."""

from __future__ import annotations

import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from ccgsc.origins import scope_origin_allowed
from workers import protocol, scheduler
from workers.connection import WorkerConnection
from workers.live import WORKERS_GROUP
from workers.protocol import ProtocolError
from workers.sweeper import ensure_sweeper

log = logging.getLogger(__name__)
CLOSE_POLICY = 4400


class WorkConsumer(AsyncWebsocketConsumer):
    groups = [WORKERS_GROUP]

    async def connect(self) -> None:
        # Browsers only from the platform's own origin, exactly (ccgsc/origins.py).
        if not scope_origin_allowed(self.scope):
            await self.close(code=CLOSE_POLICY)
            return
        ensure_sweeper()
        self.gone = False
        self.conn = WorkerConnection(self._send, user=self.scope.get("user"))
        await self.accept()

    async def _send(self, message: protocol.ServerMessage) -> None:
        # A handler may still be finishing (e.g. a lease query) when the peer hangs up; its
        # answer has nowhere to go, and the leases were already released by disconnect().
        if not self.gone:
            await self.send(bytes_data=protocol.encode(message))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            if bytes_data is None:
                raise ProtocolError("malformed", "frames must be binary msgpack")
            await self.conn.handle(self.conn.decode(bytes_data))
        except ProtocolError as exc:
            if await self.conn.protocol_error(exc):
                await self.close(code=CLOSE_POLICY)
        if self.conn.closed and not self.gone:
            self.gone = True
            await self.close()

    async def disconnect(self, code: int) -> None:
        self.gone = True
        conn = getattr(self, "conn", None)
        if conn is not None:
            await conn.close()

    # Group events (see workers.live).
    async def work_available(self, event: dict[str, Any]) -> None:
        # The nudge may come from another process (a Celery job, another server, the CLI's
        # API call): this process's campaign directory may not know the campaign yet.
        scheduler.work_available(event.get("campaign"))
        await self.conn.on_work_available()

    async def campaign_changed(self, event: dict[str, Any]) -> None:
        await self.conn.on_campaign_changed(event["campaign"], event["state"])

    async def leases_cancelled(self, event: dict[str, Any]) -> None:
        await self.conn.on_leases_cancelled(event["leases"], event["reason"])
