"""A benchmark client's side of the protocol's heartbeat, kept as the browser harness and the
native worker keep theirs (workers/native/client.py heartbeat_step): the hello says `pongs`;
a server that then pings the session when it is silent (`beat` in welcome's limits) gets its
`pong`, and the client pings only when that server has been silent a `heartbeat`; a server
without `beat` (an earlier commit's, in a `--before` run) is pinged every `heartbeat`, the first
ping at a random point of the first period so that N sessions spread, as browsers' do."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import msgpack

from workers.native.client import heartbeat_step

PING = msgpack.packb({"t": "ping"})
PONG = msgpack.packb({"t": "pong"})


class Heartbeat:
    def __init__(
        self,
        ws: Any,
        limits: dict[str, Any],
        sent: list[int] | None = None,
        spread: float = 0.0,
    ) -> None:
        self.ws = ws
        # Seconds: each pong goes out after a random delay up to this (0: at once), standing
        # for the spread of round trips of workers on real networks (bench.scale --pong-spread).
        self.spread = spread
        self.later: set[asyncio.Task[None]] = set()
        self.heartbeat = float(limits["heartbeat"])
        beat = limits.get("beat")
        self.beat = float(beat) if beat else None
        self.heard = time.monotonic()
        self.pinged = -math.inf if self.beat else self.heard - random.uniform(0, self.heartbeat)
        self.sent = sent if sent is not None else [0]  # pings and pongs sent

    async def message(self, msg: dict[str, Any]) -> None:
        """Every message read from the server: the server heard; its ping answered."""
        self.heard = time.monotonic()
        if msg.get("t") != "ping":
            return
        self.sent[0] += 1
        if not self.spread:
            await self.ws.send(PONG)
            return
        task = asyncio.create_task(self._pong_after(random.uniform(0, self.spread)))
        self.later.add(task)
        task.add_done_callback(self.later.discard)

    async def _pong_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.ws.send(PONG)

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            step, wait = heartbeat_step(now, self.heard, self.pinged, self.heartbeat, self.beat)
            if step == "ping":
                await self.ws.send(PING)
                self.pinged = now
                self.sent[0] += 1
            else:  # a benchmark client does not give a silent server up
                await asyncio.sleep(wait or self.heartbeat)
