"""Work for idle sessions, pushed: one dispatcher per server process.

An idle session (hungry, nothing in hand) holds no timer and makes no query. It waits here, in
its process's dispatcher, which waits for work on behalf of all of them: when a campaign gets
work (a nudge from any process through the channel layer's SERVERS_GROUP: one message per
server process, not one per session), the dispatcher leases for every waiting session in one
trip to the database thread (scheduler.lease_many: on PostgreSQL one statement per campaign of
one replica per task for all the sessions it serves, the lease rules of scheduler.lease kept;
replicated campaigns one statement per session) and pushes each its tasks.

The same group carries campaign changes (pause, cancel), which the dispatcher hands only to its
connections holding that campaign's leases. Cancels of single replicas go to the sessions
holding them by their own channel names (workers/live.py); nothing goes to every connection.

Pushes are best-effort (a channel layer at capacity drops messages), so the dispatcher also
looks once per SAFETY_NET_SECONDS, for all its waiting sessions together, while some wait and
some campaign is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from channels.layers import get_channel_layer

from workers import scheduler

if TYPE_CHECKING:
    from workers.connection import WorkerConnection

log = logging.getLogger(__name__)
SERVERS_GROUP = "ccgsc.servers"
# Channel groups expire (channels_redis: a day); the dispatcher joins again well before.
REJOIN_SECONDS = 3600.0
SAFETY_NET_SECONDS = 30.0


class Dispatcher:
    def __init__(self) -> None:
        # Waiting sessions, longest-waiting first (dicts keep insertion order).
        self.waiting: dict[WorkerConnection, None] = {}
        # Every open connection of this process by session id (for campaign changes).
        self.connections: dict[int, WorkerConnection] = {}
        # Bumped by every nudge: a session that looked for work and found none registers as
        # waiting, and if a nudge came meanwhile, wakes the dispatcher (its nudge may have
        # been handled before the session was waiting).
        self.nudges = 0
        self.feeds = 0  # bulk feeds run (for tests and benchmarks)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.channel: str | None = None

    # --- connections ----------------------------------------------------------------------------

    def opened(self, conn: WorkerConnection) -> None:
        assert conn.info is not None
        self.connections[conn.info.id] = conn

    def closed(self, conn: WorkerConnection) -> None:
        self.waiting.pop(conn, None)
        if conn.info is not None and self.connections.get(conn.info.id) is conn:
            del self.connections[conn.info.id]

    def wait_for_work(self, conn: WorkerConnection, seen_nudges: int) -> None:
        """conn found no work (having read `nudges` before it looked): feed it when some
        appears."""
        self.waiting[conn] = None
        if seen_nudges != self.nudges:
            self._wake.set()

    def stop_waiting(self, conn: WorkerConnection) -> None:
        self.waiting.pop(conn, None)

    # --- events ---------------------------------------------------------------------------------

    def nudge(self, campaign_id: int | None = None, *, reload: bool = True) -> None:
        """Work appeared (for one campaign or any; `reload`: see scheduler.work_available)."""
        scheduler.work_available(campaign_id, reload=reload)
        self.nudges += 1
        self._wake.set()

    async def campaign_changed(self, campaign_id: int, state: str) -> None:
        if state == "running":
            self.nudge(campaign_id)
            return
        # Only to the connections holding the campaign's leases, through their own channels:
        # a consumer handles its events between its worker's messages, so a result being
        # recorded right now is acknowledged before its lease is withdrawn.
        layer = get_channel_layer()
        event = {"type": "campaign.changed", "campaign": campaign_id, "state": state}
        for conn in list(self.connections.values()):
            if campaign_id in conn.in_hand.values():
                if layer is not None and conn.channel:
                    await layer.send(conn.channel, event)
                else:
                    await conn.on_campaign_changed(campaign_id, state)

    # --- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self._tasks or any(t.done() for t in self._tasks):
            for t in self._tasks:
                t.cancel()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._feed_loop()), loop.create_task(self._listen())]

    async def _feed_loop(self) -> None:
        while True:
            woken = False
            with contextlib.suppress(TimeoutError):
                woken = await asyncio.wait_for(self._wake.wait(), SAFETY_NET_SECONDS)
            self._wake.clear()
            try:
                if woken:
                    if self.waiting:
                        await self.feed()
                else:
                    await self.safety_net()
            except Exception:
                log.exception("feeding waiting sessions failed")

    async def safety_net(self) -> int:
        """The periodic look for lost nudges: feeds the waiting sessions only when some
        campaign is running (one cached directory read; no lease statement for thousands of idle
        sessions while there is nothing to lease). Returns how many got work."""
        from workers.connection import db

        if not self.waiting or not await db(scheduler.running_campaigns)():
            return 0
        return await self.feed()

    async def feed(self) -> int:
        """Lease for every waiting session at once and push to each; returns how many got
        work."""
        from workers.connection import db

        ready: list[WorkerConnection] = []
        for conn in list(self.waiting):  # one pass (10,000 waiting sessions: no list search)
            if conn.info is not None and not conn.closed and conn.wanted > 0:
                ready.append(conn)
            else:
                self.waiting.pop(conn, None)
        if not ready:
            return 0
        self.feeds += 1
        by_session = {c.info.id: c for c in ready if c.info is not None}
        requests = [c.lease_request() for c in ready]
        got = await db(scheduler.lease_many)(requests)
        fed = 0
        orphans: list[tuple[int, list[int]]] = []
        for sid, (leases, descriptors) in got.items():
            conn = by_session[sid]
            if conn.closed or conn not in self.waiting:
                # Gone (or its request answered) while the statement ran: give them back.
                orphans.append((sid, [x.lease for x in leases]))
                continue
            self.waiting.pop(conn, None)
            await conn.deliver(leases, descriptors)
            fed += 1
        if orphans:
            await db(_release_all)(orphans)
        return fed

    async def _listen(self) -> None:
        """Nudges and campaign changes from every process, through the channel layer."""
        layer = get_channel_layer()
        if layer is None:
            return
        self.channel = await layer.new_channel()
        joined: float | None = None
        while True:
            if joined is None or time.monotonic() - joined > REJOIN_SECONDS:
                await layer.group_add(SERVERS_GROUP, self.channel)
                joined = time.monotonic()
            try:
                event: dict[str, Any] = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("channel layer receive failed")
                await asyncio.sleep(1.0)
                continue
            kind = event.get("type")
            if kind == "work.available":
                if event.get("run"):
                    # A synchronous run's task: this process was nudged directly (nudge_here)
                    # if the run was made here; others' come through the layer.
                    if event.get("from") != process_id():
                        self.nudge(event.get("campaign"), reload=False)
                else:
                    self.nudge(event.get("campaign"))
            elif kind == "campaign.changed":
                await self.campaign_changed(event["campaign"], event["state"])


def _release_all(orphans: list[tuple[int, list[int]]]) -> None:
    for sid, lease_ids in orphans:
        scheduler.release(sid, lease_ids)


_dispatchers: dict[asyncio.AbstractEventLoop, Dispatcher] = {}


def process_id() -> str:
    """This server process, as the nudges it sends name their sender."""
    return f"{socket.gethostname()}:{os.getpid()}"


def nudge_here(campaign_id: int) -> None:
    """A synchronous run's task was committed in this process: wake this process's dispatchers
    now, from any thread, without the channel layer's round trip (the run's nudge still goes
    to the other processes through the layer, marked as from this one, which ignores it)."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, d in list(_dispatchers.items()):
        if loop.is_closed() or not loop.is_running():
            continue
        if loop is running:
            d.nudge(campaign_id, reload=False)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(functools.partial(d.nudge, campaign_id, reload=False))


def dispatcher() -> Dispatcher:
    """This process's dispatcher (one per event loop: tests run several loops in turn),
    started on first use."""
    loop = asyncio.get_running_loop()
    d = _dispatchers.get(loop)
    if d is None:
        for old in [lp for lp in _dispatchers if lp.is_closed()]:
            del _dispatchers[old]
        d = _dispatchers[loop] = Dispatcher()
    d.start()
    return d
