"""One worker session's protocol state machine, independent of the transport.

The WebSocket consumer keeps one WorkerConnection per socket; the HTTP fallback rebuilds one per
request. Database work runs in threads (`db`); everything else stays on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import msgspec
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from workers import dispatch, protocol, scheduler, selectors, sessions
from workers.models import WorkerSession
from workers.protocol import ProtocolError

Send: TypeAlias = Callable[[protocol.ServerMessage], Awaitable[None]]

# How far ahead a session is fed: besides the task each slot is running, enough queued work to
# keep every slot busy for this long, estimated from the session's own run times per campaign
# (one campaign's tasks may take a millisecond, another's a minute). Fast sessions hold more,
# and the round trip hides behind work without hoarding tasks other sessions could run. Half a
# second also leaves room for workers to hold results a while and batch them (see
# workers/native/client.py), which halves the server's frames for tasks of tens of ms.
PREFETCH_MS = 500.0
# Run time assumed for a campaign this session has not returned a result of yet.
UNKNOWN_TASK_MS = 100.0
MAX_IN_HAND = 4 * protocol.MAX_BATCH
FLUSH_SECONDS = 5.0
# An HTTP-fallback request waiting for more work while it still holds some looks again this
# often (its leases may have been answered by a concurrent request, maybe on another process,
# which frees room the dispatcher cannot know of). Idle sessions never poll (workers.dispatch).
HTTP_BUSY_RECHECK_SECONDS = 1.0
MAX_STRIKES = 5
STRIKE_WINDOW_SECONDS = 60.0
# A session whose results for one campaign keep failing (a browser out of memory, a broken
# machine) gets none of that campaign's tasks for a while, and gives back those it holds: the
# retries go to other workers instead of spending every attempt here. Each further streak
# doubles the pause; a success ends it. A session is not benched when no other connected
# session may run the campaign: the retries would have nowhere else to go, and the pause would
# only hold back a failing kernel's honest outcome (issue 12: a campaign of two tasks that
# exit 1 took 61 s to fail on `make run`'s one worker, and said nothing meanwhile).
ERROR_STREAK = 6
BENCH_SECONDS = 30.0
BENCH_MAX_SECONDS = 600.0


def db(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run ORM work in a thread. On PostgreSQL in a pool (sessions proceed in parallel, each
    thread with its own connection); on SQLite in the one thread Channels uses, because SQLite
    allows a single writer anyway and queueing in Python is cheaper than busy-waiting on locks."""
    if settings.IS_POSTGRES:
        return database_sync_to_async(fn, thread_sensitive=False)
    return database_sync_to_async(fn)


def limits(
    transport: str = WorkerSession.Transport.WEBSOCKET, *, beat: int | None = None
) -> protocol.Limits:
    """`beat`: the server pings this WebSocket session once it has been silent that many
    seconds (protocol.BEAT); the worker then pings only a server silent QUIET_MARGIN longer."""
    cfg = settings.CCGSC
    # The HTTP fallback keeps no socket: its session lives on its requests, so it must be heard
    # from well within the sweeper's two-long-poll cutoff (workers.sweeper).
    if transport == WorkerSession.Transport.HTTP:
        heartbeat, beat = sessions.HTTP_HEARTBEAT_SECONDS, None
    else:
        heartbeat = protocol.WEBSOCKET_HEARTBEAT if beat is None else beat + protocol.QUIET_MARGIN
    return protocol.Limits(
        max_frame=protocol.MAX_FRAME,
        max_batch=protocol.MAX_BATCH,
        max_output=int(cfg["RESULT_MAX_BYTES"]),
        max_checkpoint=int(cfg["CHECKPOINT_MAX_BYTES"]),
        heartbeat=int(heartbeat),
        beat=beat,
    )


def _estimate_ms(avg_ms_by_campaign: dict[int, float], campaign_id: int) -> float:
    return max(avg_ms_by_campaign.get(campaign_id, UNKNOWN_TASK_MS), 0.5)


@dataclass(frozen=True, slots=True)
class Budget:
    """How many more of a campaign's tasks to hand a session: enough that the work in hand
    covers one running task plus PREFETCH_MS of queue per slot. A snapshot of the connection
    (see WorkerConnection._budget_snapshot), safe to call from the lease query's thread."""

    slots: int
    queued_ms: float
    avg_ms_by_campaign: dict[int, float]

    def __call__(self, campaign_id: int) -> int:
        task_ms = _estimate_ms(self.avg_ms_by_campaign, campaign_id)
        target_ms = self.slots * (task_ms + PREFETCH_MS)
        return max(0, math.ceil((target_ms - self.queued_ms) / task_ms))


class WorkerConnection:
    def __init__(
        self,
        send: Send,
        *,
        user: Any,
        transport: str = WorkerSession.Transport.WEBSOCKET,
        origin: str | None = None,
        profile: str | None = None,
        channel: str = "",
        kick: Callable[[int], Awaitable[None]] | None = None,
        beats: float | None = None,
    ) -> None:
        self.send = send
        # After how many seconds of silence the transport pings a session itself (the
        # platform's server: a WebSocket connection's Shortcut; None: it does not); a hello
        # with `pongs` is then told so (`beat`, limits()).
        self.beats = beats
        self.beating = False
        # Closes the transport (the WebSocket consumer's close, with a code): used when the
        # session was closed behind the connection's back (workers.liveness).
        self._kick = kick
        # The task serving the connection (the consumer's application instance): a connection
        # whose task ended without closing it leaked (workers.liveness closes it).
        try:
            self.task: asyncio.Task[Any] | None = asyncio.current_task()
        except RuntimeError:  # built outside an event loop (tests of the state machine)
            self.task = None
        # The WebSocket consumer's channel name: cancels for this session's leases are sent
        # there (workers.live), from any server process.
        self.channel = channel
        # Network origin and browser profile of the peer (workers.identity), for the session.
        self.origin, self.profile = origin, profile
        self.user = user if user is not None and getattr(user, "is_authenticated", False) else None
        self.transport = transport
        self.info: scheduler.SessionInfo | None = None
        self.secret = ""
        # The protocol version this session speaks: its hello's (frames before it are read as
        # the current version, which reads a hello of every version alike).
        self.version = protocol.VERSION
        self.slots = 1
        self.in_hand: dict[int, int] = {}  # lease id -> campaign id
        # Leases this connection was given and has let go of (answered, cancelled): a result
        # for one of these is late or duplicate and acknowledged as ignored; a result for a
        # lease never given to this session is an error.
        self.let_go: dict[int, None] = {}
        self.sent_campaigns: set[int] = set()
        self.wanted = 0
        self.avg_ms: float | None = None
        self.avg_ms_by_campaign: dict[int, float] = {}
        self.stats: dict[str, Any] = {"done": 0, "failed": 0, "busy_ms": 0, "idle_ms": 0}
        self.last_flush = time.monotonic()
        self.strikes = 0
        self.strike_window = time.monotonic()
        self.failing: dict[int, int] = {}  # campaign id -> failed results in a row
        self.benched: dict[int, tuple[float, int]] = {}  # campaign id -> (until, how often)
        # Lease discipline (docs/security.md): leases this session may hold at once, earned by
        # results returned in time (scheduler.SubmitOutcome.in_time); no leases until
        # benched_until (set by the sweeper when its leases keep expiring).
        self.allowance = 1
        self.benched_until: datetime | None = None
        self.returned_in_time = False
        self.closed = False
        self._fill_lock = asyncio.Lock()
        self.seen_nudges = 0
        # Set when tasks are sent (the HTTP fallback's long poll waits for it).
        self.delivered = asyncio.Event()

    # --- entry points ---------------------------------------------------------------------------

    def decode(self, frame: bytes | msgspec.Raw) -> protocol.WorkerMessage:
        """A frame from this session's worker, in its version; ProtocolError if it is not one."""
        return protocol.decode(frame, version=self.version)

    async def handle(self, msg: protocol.WorkerMessage) -> None:
        if self.info is None:
            if not isinstance(msg, protocol.Hello):
                raise ProtocolError("hello_first", "the first message must be hello")
            await self._hello(msg)
            return
        # Version-1 messages are subclasses of the current ones: class patterns match both.
        match msg:
            case protocol.Result():
                await self._result(msg)
            case protocol.Want():
                await self._want(msg)
            case protocol.Checkpoint():
                await self._checkpoint(msg)
            case protocol.Progress():
                pass  # validated while decoding; live progress views subscribe later
            case protocol.Release():
                await self._release(msg)
            case protocol.Metrics():
                self.stats["idle_ms"] += msg.idle_ms
            case protocol.Ping():
                await self._ping()
            case protocol.Pong():
                pass  # the answer to the server's ping (usually taken before it comes here)
            case protocol.Bye():
                await self._bye()
            case protocol.Hello():  # one per session (as before: not a message it may send now)
                raise ProtocolError("unknown_type", "unknown message type 'hello'")

    async def restore(self, session: WorkerSession) -> None:
        """Rebuild the state of an HTTP-fallback session from the database."""
        self.info = await db(sessions.session_info)(session)
        self.slots = session.slots
        self.version = session.protocol_version
        self.avg_ms = session.avg_task_ms
        self.allowance, self.benched_until = session.lease_allowance, session.benched_until
        await self.reload_leases()

    async def reload_leases(self) -> None:
        assert self.info is not None
        self.in_hand = dict(await db(scheduler.leases_of)(self.info.id))

    async def flush(self) -> None:
        await self._maybe_flush(force=True)

    async def protocol_error(self, exc: ProtocolError) -> bool:
        """Answer a bad message; True when the peer has misbehaved often enough to be closed."""
        now = time.monotonic()
        if now - self.strike_window > STRIKE_WINDOW_SECONDS:
            # Strikes count within a window: a long session's occasional race is not abuse.
            self.strike_window, self.strikes = now, 0
        self.strikes += 1
        fatal = self.strikes >= MAX_STRIKES or exc.code in ("version", "auth", "busy")
        await self.send(protocol.Error(code=exc.code, message=exc.message, fatal=fatal))
        return fatal

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        dispatch.dispatcher().closed(self)
        if self.info is not None:
            await db(sessions.session_close)(self.info.id, self._take_stats())

    async def kick(self, code: int) -> None:
        """Drop the transport; its disconnect closes the session (or close it here)."""
        if self._kick is not None and not self.closed:
            await self._kick(code)
        else:
            await self.close()

    async def on_work_available(self) -> None:
        if self.wanted > 0 and not self.closed:
            await self._fill()

    async def on_campaign_changed(self, campaign_id: int, state: str) -> None:
        """A campaign stopped being runnable: its leases here are withdrawn (the service has
        already returned or closed them in the database)."""
        if state in ("running",):
            await self.on_work_available()
            return
        leases = [lid for lid, cid in self.in_hand.items() if cid == campaign_id]
        for lid in leases:
            self._let_go(lid)
        if leases:
            await self.send(protocol.Cancel(leases=leases, reason=f"campaign {state}"))

    async def on_leases_cancelled(self, leases: list[int], reason: str) -> None:
        """Some replicas were withdrawn (their task was decided): stop those held here."""
        mine = [lid for lid in leases if lid in self.in_hand]
        for lid in mine:
            self._let_go(lid)
        if mine and reason == scheduler.LEASE_EXPIRED_REASON and self.info is not None:
            # The sweeper charged this session for them: read the allowance and bench back.
            self.allowance, self.benched_until = await db(sessions.session_discipline)(self.info.id)
            self.info = dataclasses.replace(self.info, expired=True)
            # Results returned in time before these expired do not end the run of expiries:
            # the next flush must not reset the sweeper's count (a hoarder answering one lease
            # per flush would never be benched).
            self.returned_in_time = False
        if mine:
            await self.send(protocol.Cancel(leases=mine, reason=reason))
            if self.wanted > 0 and not self.closed:
                await self._fill()

    # --- handlers -------------------------------------------------------------------------------

    async def _hello(self, hello: protocol.Hello) -> None:
        if hello.v not in protocol.VERSIONS:
            raise ProtocolError(
                "version", f"this server speaks protocol {protocol.VERSIONS}, not {hello.v}"
            )
        session, secret = await db(sessions.session_open)(
            hello,
            user=self.user,
            transport=self.transport,
            origin=self.origin,
            profile=self.profile,
            channel=self.channel,
        )
        self.secret = secret
        self.slots = session.slots  # what the origin's slot cap left of the hello's claim
        self.allowance = session.lease_allowance
        self.version = hello.v
        self.info = await db(sessions.session_info)(session)
        if self.transport == WorkerSession.Transport.WEBSOCKET:
            dispatch.dispatcher().opened(self)
        beat = (
            max(1, round(self.beats))
            if hello.pongs and self.beats and self.transport == WorkerSession.Transport.WEBSOCKET
            else None
        )
        self.beating = beat is not None
        await self.send(
            protocol.Welcome(
                v=hello.v,
                session=session.pk,
                secret=secret,
                limits=limits(self.transport, beat=beat),
            )
        )

    async def _want(self, msg: protocol.Want) -> None:
        self.wanted = max(self.wanted, msg.n)
        await self._fill(announce_idle=True)

    async def _result(self, msg: protocol.Result) -> None:
        assert self.info is not None
        items = msg.results
        max_output = int(settings.CCGSC["RESULT_MAX_BYTES"])
        for item in items:
            if len(item.output) > max_output:
                raise ProtocolError(
                    "too_large", f"'output' is {len(item.output)} bytes, above {max_output}"
                )
        foreign = [
            it.lease for it in items if it.lease not in self.in_hand and it.lease not in self.let_go
        ]
        if foreign:
            # A lease this session held that was withdrawn while the HTTP fallback (which
            # gets no pushed cancel) was running it is late, not foreign.
            for lid in await db(scheduler.held_before)(self.info.id, foreign):
                self.let_go[lid] = None
            foreign = [lid for lid in foreign if lid not in self.let_go]
        if foreign:
            items = [it for it in items if it.lease not in foreign]
        outcome = await db(scheduler.submit_results)(self.info, items)
        if outcome.in_time:
            # Work shown, as the server measured it, earns room for more (additively: one
            # lease per result, so a session's holding grows with what it returns).
            self.allowance = min(MAX_IN_HAND, self.allowance + outcome.in_time)
            self.returned_in_time = True
        campaign_of = {lid: self.in_hand.get(lid) for lid in outcome.accepted}
        for lid in outcome.accepted + outcome.ignored:
            self._let_go(lid)
        accepted = set(outcome.accepted)
        for item in items:
            if item.lease not in accepted:
                continue
            cid = campaign_of.get(item.lease)
            if item.ok:
                self.stats["done"] += 1
                self._learn(cid, float(item.ms))
            else:
                self.stats["failed"] += 1
            if cid is not None:
                self._count_failure(cid, failed=not item.ok)
            self.stats["busy_ms"] += item.ms
        await self.send(protocol.Ack(leases=outcome.accepted, ignored=outcome.ignored))
        for cid in [c for c, n in self.failing.items() if n >= ERROR_STREAK]:
            await self._bench(cid)
        if msg.want is not None:
            self.wanted = max(self.wanted, msg.want)
        await self._maybe_flush()
        if self.wanted > 0:
            await self._fill(announce_idle=True)
        if foreign:
            # The valid items above are recorded and acknowledged; the foreign ones are not.
            raise ProtocolError("not_leased", f"leases {foreign[:10]} are not held by this session")

    async def _checkpoint(self, msg: protocol.Checkpoint) -> None:
        assert self.info is not None
        lease, data = msg.lease, msg.data
        max_checkpoint = int(settings.CCGSC["CHECKPOINT_MAX_BYTES"])
        if len(data) > max_checkpoint:
            raise ProtocolError("too_large", f"'data' is {len(data)} bytes, above {max_checkpoint}")
        if lease in self.let_go:
            # Withdrawn (paused, cancelled, expired) while the kernel ran: nothing to store.
            await self.send(protocol.Ack(checkpoint=lease, stored=False))
            return
        if lease not in self.in_hand:
            raise ProtocolError("not_leased", f"lease {lease} is not held by this session")
        stored = await db(scheduler.save_checkpoint)(self.info, lease, data)
        await self.send(protocol.Ack(checkpoint=lease, stored=stored))

    async def _release(self, msg: protocol.Release) -> None:
        assert self.info is not None
        leases = [lid for lid in msg.leases if lid in self.in_hand]
        if leases:
            await db(scheduler.release)(self.info.id, leases)
            for lid in leases:
                self._let_go(lid)
        self.wanted = 0
        await self.send(protocol.Ack(released=leases))

    async def _ping(self) -> None:
        # Nothing written: the session's server process vouches for all its sessions at once
        # (workers.liveness), and the HTTP fallback's requests are seen by its view.
        await self.send(protocol.Pong())

    async def _bye(self) -> None:
        await self.close()
        await self.send(protocol.Bye())

    def _let_go(self, lease: int) -> None:
        self.in_hand.pop(lease, None)
        self.let_go[lease] = None
        if len(self.let_go) > 10_000:  # bounded: forget the oldest (dicts keep insertion order)
            del self.let_go[next(iter(self.let_go))]

    def _count_failure(self, campaign_id: int, *, failed: bool) -> None:
        if failed:
            self.failing[campaign_id] = self.failing.get(campaign_id, 0) + 1
        else:  # a success ends the streak, and the doubling
            self.failing.pop(campaign_id, None)
            self.benched.pop(campaign_id, None)

    async def _bench(self, campaign_id: int) -> None:
        """Too many failures in a row for this campaign here: pause it for this session and
        give back its leases (without counting an attempt: they have not failed yet)."""
        assert self.info is not None
        self.failing.pop(campaign_id, None)
        if not await db(selectors.others_may_run)(self.info.id, campaign_id):
            # The only volunteer: its failures are the campaign's, and go on to their end.
            return
        times = self.benched.get(campaign_id, (0.0, 0))[1] + 1
        pause = min(BENCH_MAX_SECONDS, BENCH_SECONDS * 2 ** (times - 1))
        self.benched[campaign_id] = (time.monotonic() + pause, times)
        leases = [lid for lid, cid in self.in_hand.items() if cid == campaign_id]
        if leases:
            await db(scheduler.release)(self.info.id, leases)
            for lid in leases:
                self._let_go(lid)
            reason = f"{ERROR_STREAK} failed in a row here: paused for {pause:.0f} s"
            await self.send(protocol.Cancel(leases=leases, reason=reason))

    def _benched_now(self) -> set[int]:
        now = time.monotonic()
        return {cid for cid, (until, _) in self.benched.items() if until > now}

    # --- feeding --------------------------------------------------------------------------------

    def _learn(self, campaign_id: int | None, ms: float) -> None:
        """Smoothed run time per task: per campaign for feeding, overall for the metrics."""
        self.avg_ms = ms if self.avg_ms is None else 0.8 * self.avg_ms + 0.2 * ms
        if campaign_id is not None:
            prev = self.avg_ms_by_campaign.get(campaign_id)
            self.avg_ms_by_campaign[campaign_id] = ms if prev is None else 0.8 * prev + 0.2 * ms

    def _estimate_ms(self, campaign_id: int) -> float:
        return _estimate_ms(self.avg_ms_by_campaign, campaign_id)

    def _budget_snapshot(self) -> Budget:
        """The feeding budget as of now, taken on the event loop: the lease query runs in a
        database thread while the loop goes on changing `in_hand` (results, cancels), so it
        must not read this connection's state."""
        queued_ms = sum(self._estimate_ms(cid) for cid in self.in_hand.values())
        return Budget(self.slots, queued_ms, dict(self.avg_ms_by_campaign))

    def _budget(self, campaign_id: int) -> int:
        return self._budget_snapshot()(campaign_id)

    async def _fill(self, *, announce_idle: bool = False) -> None:
        async with self._fill_lock:
            assert self.info is not None
            n = self._room()
            benched = self._benched()
            if n <= 0 or benched:
                # Benched (its leases kept expiring): nothing until the bench ends, which the
                # dispatcher's safety net notices.
                if benched and self.wanted > 0 and not self.in_hand:
                    if announce_idle:
                        await self.send(protocol.Idle())
                    self._watch_idle()
                return
            self.seen_nudges = dispatch.dispatcher().nudges
            leases, campaigns = await db(scheduler.lease_for_session)(
                self.info,
                n,
                frozenset(self.sent_campaigns),
                self._budget_snapshot(),
                self._benched_now(),
            )
            if self.closed:
                # The connection closed while the query ran: close() released the session's
                # leases, possibly before these were committed. Give them back now, or they
                # would expire later as failed attempts of tasks nobody ran.
                if leases:
                    await db(scheduler.release)(self.info.id, [x.lease for x in leases])
                return
            if not leases:
                # With work still in hand, the session simply has enough for now: its next
                # results ask again. Only an empty-handed session is told it is idle.
                if not self.in_hand:
                    if announce_idle:
                        await self.send(protocol.Idle())
                    self._watch_idle()
                return
            await self.deliver(leases, campaigns)

    def _room(self) -> int:
        return min(
            self.wanted,
            self.allowance - len(self.in_hand),
            MAX_IN_HAND - len(self.in_hand),
            protocol.MAX_BATCH,
        )

    def _benched(self) -> bool:
        return self.benched_until is not None and self.benched_until > timezone.now()

    def lease_request(self) -> scheduler.LeaseRequest:
        """What the dispatcher leases for this session when it feeds it with others."""
        assert self.info is not None
        return scheduler.LeaseRequest(
            session=self.info,
            n=0 if self._benched() else self._room(),
            budget=self._budget_snapshot(),
            skip=self._benched_now(),
            known=frozenset(self.sent_campaigns),
        )

    async def deliver(
        self, leases: list[scheduler.Lease], campaigns: dict[int, protocol.CampaignDesc]
    ) -> None:
        """Send leased tasks to the worker (from this session's own lease or the dispatcher's)."""
        dispatch.dispatcher().stop_waiting(self)
        self.wanted = max(0, self.wanted - len(leases))
        for lease in leases:
            self.in_hand[lease.lease] = lease.campaign
        self.sent_campaigns.update(campaigns)
        # Several frames when the inputs and checkpoints would not fit in one.
        budget = protocol.MAX_FRAME - 64 * 1024
        batch: list[protocol.TaskItem] = []
        size = 0
        for lease in leases:
            wire = lease.to_wire()
            item = len(lease.input) + len(lease.checkpoint or b"") + 256
            if batch and size + item > budget:
                await self._send_tasks(batch, campaigns)
                batch, size, campaigns = [], 0, {}
            batch.append(wire)
            size += item
        await self._send_tasks(batch, campaigns)
        self.delivered.set()

    async def _send_tasks(
        self, tasks: list[protocol.TaskItem], campaigns: dict[int, protocol.CampaignDesc]
    ) -> None:
        await self.send(protocol.Tasks(tasks=tasks, campaigns=campaigns or None))

    def _watch_idle(self) -> None:
        """Hungry and empty-handed: wait in the process's dispatcher, which feeds its waiting
        sessions together when work appears (no timer or query of this session's own). Not
        for the HTTP fallback: its request waits itself (workers/views.py)."""
        if self.transport != WorkerSession.Transport.HTTP and not self.closed:
            dispatch.dispatcher().wait_for_work(self, self.seen_nudges)

    # --- metrics --------------------------------------------------------------------------------

    def _take_stats(self) -> dict[str, Any]:
        stats = dict(
            self.stats,
            avg_task_ms=self.avg_ms,
            lease_allowance=self.allowance,
            returned_in_time=self.returned_in_time,
        )
        self.returned_in_time = False
        self.stats = {"done": 0, "failed": 0, "busy_ms": 0, "idle_ms": 0}
        self.last_flush = time.monotonic()
        return stats

    async def _maybe_flush(self, *, force: bool = False) -> None:
        if self.info is not None and (force or time.monotonic() - self.last_flush > FLUSH_SECONDS):
            await db(sessions.session_flush)(self.info.id, self._take_stats())
