"""The scheduler: leasing tasks to worker sessions and recording what they return.

This is the hot path. Every function handles a batch in a fixed, small number of queries
(pinned by tests/test_scheduler.py):

- lease(): one statement on PostgreSQL (a CTE that picks unsent replicas FOR UPDATE SKIP LOCKED,
  marks them leased and joins their task inputs); on SQLite an UPDATE ... RETURNING inside an
  IMMEDIATE transaction (which holds the database write lock, so concurrent sessions serialize)
  plus one SELECT of the inputs.
- lease_many(): many waiting sessions at once; on PostgreSQL one such statement per campaign
  (of one replica per task) for all of them, the rows dealt out in order.
- submit_results(): one UPDATE of the replicas (conditional on LEASED by *this* session, which
  is what makes results exactly-once: a duplicate or late answer matches no row), one UPDATE of
  the decided tasks, one UPDATE of the campaign counters.

Fair share: each process keeps stride-scheduling passes per running campaign; a lease goes to
the eligible campaign with the lowest pass, which advances by tasks/priority.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from campaigns import runs
from campaigns.models import Campaign, Kernel, Result, Task
from campaigns.replicas import insert_replicas
from campaigns.services.lifecycle import campaign_check_complete
from campaigns.services.runs import announce as announce_runs
from ccgsc import hooks, metrics
from ccgsc.hooks import FailedRow, ResultRow
from workers import protocol
from workers.models import WorkerSession

log = logging.getLogger(__name__)

R = Result._meta.db_table
T = Task._meta.db_table
C = Campaign._meta.db_table
UNSENT, LEASED, RETURNED, TIMED_OUT, CANCELLED = (s.value for s in Result.State)
LEASE_EXPIRED = "lease_expired"
SUCCESS, ERROR, TIMEOUT = (
    Result.Outcome.SUCCESS.value,
    Result.Outcome.ERROR.value,
    Result.Outcome.TIMEOUT.value,
)
TASK_PENDING, TASK_DONE, TASK_FAILED = (s.value for s in Task.State)
VALID = Result.Validation.VALID.value
SINGLE_BASIS = Result.Basis.SINGLE.value


def _vendor_types() -> dict[str, str]:
    if connection.vendor == "postgresql":
        return {"int": "bigint", "bytes": "bytea", "text": "text", "ts": "timestamptz"}
    return {"int": "INTEGER", "bytes": "BLOB", "text": "TEXT", "ts": "TEXT"}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


# --- what the scheduler knows about sessions and campaigns --------------------------------------


@dataclass(frozen=True)
class SessionInfo:
    id: int
    kind: str = "native"
    user_id: int | None = None
    organization_id: int | None = None
    site_id: int | None = None
    js: bool = False
    campaign_id: int | None = None
    # Organizations whose unapproved campaigns a signed-in member's own browser may run.
    member_of: frozenset[int] = frozenset()
    # Network origin and browser-profile digest (workers.identity); None when unknown.
    origin: str | None = None
    profile: str | None = None
    # Some lease of this session expired: the tasks concerned are withheld from it, so finding
    # nothing does not mean a campaign is empty for everyone.
    expired: bool = False
    # Its hello's WebGPU adapter (None: no gpu kernels) and the memory it offers a kernel
    # (None: not stated, no limit beyond the campaign's own).
    gpu: protocol.GpuInfo | None = None
    memory: int | None = None


@dataclass
class CampaignInfo:
    """The slice of a running campaign the hot path needs, cached per process."""

    id: int
    organization_id: int
    name: str
    approved: bool
    priority: int
    kernel_kind: str
    kernel_sha256: str
    static_sha256: str | None
    args: list[str]
    env: dict[str, str]
    task_timeout: int
    max_attempts: int
    min_quorum: int
    target_replicas: int
    max_error_replicas: int
    max_total_replicas: int
    has_verifier: bool
    memory_max: int | None
    kernel_id: int = 0
    adaptive_replication: bool = False
    quorum_needs_account: bool = False
    # Kind gpu: the kernel's manifest (sent in the descriptor; its fixed output buffer size
    # keeps the campaign from sessions whose adapter cannot bind it).
    gpu: protocol.GpuManifest | None = None
    # Holds synchronous runs (campaigns/runs.py): served before every batch campaign.
    interactive: bool = False

    @property
    def validates_inline(self) -> bool:
        """One replica and byte equality: a successful result is valid as it arrives."""
        return self.min_quorum == 1 and self.target_replicas == 1 and not self.has_verifier

    @property
    def error_limit(self) -> int:
        return self.max_attempts if self.target_replicas == 1 else self.max_error_replicas

    def descriptor(self) -> protocol.CampaignDesc:
        """What a worker needs to run this campaign's tasks (sent once per session)."""
        return protocol.CampaignDesc(
            name=self.name,
            kernel=self.kernel_sha256,
            kind=self.kernel_kind,
            static=self.static_sha256,
            args=self.args,
            env=self.env,
            timeout=self.task_timeout,
            memory=self.memory_max,
            gpu=self.gpu,
        )


@dataclass
class _Directory:
    campaigns: dict[int, CampaignInfo] = field(default_factory=dict)
    loaded_at: float = 0.0
    passes: dict[int, float] = field(default_factory=dict)
    # Campaigns found without unsent replicas, until this monotonic time.
    empty_until: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_directory = _Directory()
DIRECTORY_TTL = 1.0
EMPTY_BACKOFF = 2.0


def _load_campaigns() -> dict[int, CampaignInfo]:
    rows = Campaign.objects.filter(state=Campaign.State.RUNNING).select_related("kernel")
    out = {}
    for c in rows:
        out[c.pk] = CampaignInfo(
            id=c.pk,
            organization_id=c.organization_id,
            name=c.name,
            approved=c.approved,
            priority=c.priority,
            kernel_kind=c.kernel.kind,
            kernel_sha256=c.kernel.sha256,
            static_sha256=c.static_data_id,
            args=list(c.args),
            env=dict(c.env),
            task_timeout=c.task_timeout,
            max_attempts=c.max_attempts,
            min_quorum=c.min_quorum,
            target_replicas=c.target_replicas,
            max_error_replicas=c.max_error_replicas,
            max_total_replicas=c.max_total_replicas,
            has_verifier=c.verifier_id is not None,
            memory_max=c.kernel.memory_max,
            kernel_id=c.kernel_id,
            adaptive_replication=c.adaptive_replication,
            quorum_needs_account=c.quorum_needs_account,
            gpu=_manifest(c.kernel),
            interactive=c.interactive,
        )
    return out


def _manifest(kernel: Kernel) -> protocol.GpuManifest | None:
    if kernel.kind != Kernel.Kind.GPU or not kernel.manifest:
        return None
    return msgspec.convert(kernel.manifest, protocol.GpuManifest)


def running_campaigns(*, refresh: bool = False) -> dict[int, CampaignInfo]:
    d = _directory
    now = time.monotonic()
    if refresh or now - d.loaded_at > DIRECTORY_TTL:
        campaigns = _load_campaigns()
        with d.lock:
            d.campaigns, d.loaded_at = campaigns, now
            if d.passes:
                floor = min(d.passes.get(cid, 0.0) for cid in campaigns) if campaigns else 0.0
            else:
                floor = 0.0
            # A campaign joining the rotation starts at the current minimum pass, so it neither
            # starves nor gets a burst of catch-up leases.
            d.passes = {cid: max(d.passes.get(cid, floor), floor) for cid in campaigns}
    return d.campaigns


def campaign_info(campaign_id: int) -> CampaignInfo | None:
    info = running_campaigns().get(campaign_id)
    if info is None:
        info = running_campaigns(refresh=True).get(campaign_id)
    return info


def work_available(campaign_id: int | None = None, *, reload: bool = True) -> None:
    """Forget that a campaign (or every campaign) looked empty: work appeared. The directory
    is read again at the next lease (the campaign may have just started) unless `reload` is
    False and the campaign is in it already: a synchronous run's new task (campaigns/runs.py)
    changes nothing the directory holds, and reading it again cost each run a query."""
    with _directory.lock:
        if campaign_id is None:
            _directory.empty_until.clear()
        else:
            _directory.empty_until.pop(campaign_id, None)
        if reload or campaign_id not in _directory.campaigns:
            _directory.loaded_at = 0.0


def eligible(session: SessionInfo, info: CampaignInfo) -> bool:
    """Whether a session may get this campaign's tasks at all: every lease (lease(), and
    lease_many through it) picks its campaign through here, before any SQL."""
    if session.campaign_id is not None and info.id != session.campaign_id:
        return False
    if info.kernel_kind == Kernel.Kind.JS and not session.js:
        return False
    if not fits(session, info):
        return False
    # Unapproved campaigns only reach the owning organization's own workers: native workers
    # started with its API token, and its members' browsers on the contribute page.
    return (
        info.approved
        or info.organization_id == session.organization_id
        or info.organization_id in session.member_of
    )


def fits(session: SessionInfo, info: CampaignInfo) -> bool:
    """The session's capabilities cover the campaign's needs: a gpu kernel needs an adapter
    whose storage buffers hold its output and whose workgroups hold its workgroup size; any
    kernel whose memory maximum exceeds what the session offers is not for it."""
    if session.memory is not None and (info.memory_max or 0) > session.memory:
        return False
    if info.kernel_kind != Kernel.Kind.GPU:
        return True
    gpu, manifest = session.gpu, info.gpu
    if gpu is None or manifest is None:
        return False
    if manifest.workgroup_size > gpu.max_invocations:
        return False
    need = manifest.buffer_bytes
    return need is None or need <= gpu.max_buffer


# --- leasing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    lease: int
    task: int
    campaign: int
    input: bytes
    args: list[str] | None
    env: dict[str, str] | None
    checkpoint: bytes | None

    def to_wire(self) -> protocol.TaskItem:
        return protocol.TaskItem(
            lease=self.lease,
            task=self.task,
            c=self.campaign,
            input=self.input,
            args=self.args or None,
            env=self.env or None,
            ckpt=self.checkpoint,
        )


@metrics.timed_lease
def lease(
    session: SessionInfo,
    n: int,
    budget: Callable[[int], int] | None = None,
    skip: Collection[int] = (),
) -> list[Lease]:
    """Lease up to n replicas for a session, fairly across eligible running campaigns.
    `budget(campaign_id)`, when given, caps how many of one campaign's tasks the session
    should take (its tasks may be much longer or shorter than another campaign's); campaigns
    in `skip` are not served to it now."""
    # rewards/ refuses users with too many invalid results here (ccgsc.hooks: lease_gates).
    if n <= 0 or not hooks.may_lease(session):
        return []
    out: list[Lease] = []
    campaigns = running_campaigns()
    tried: set[int] = set(skip)
    while len(out) < n:
        info = _next_campaign(session, campaigns, tried)
        if info is None:
            break
        tried.add(info.id)
        want = n - len(out) if budget is None else min(n - len(out), budget(info.id))
        if want <= 0:
            # The campaign whose turn it is has no room in this session right now. Serving
            # the next one instead would starve it whenever another campaign's tasks are
            # longer (their rounded-up budget always fits): wait for room instead.
            break
        got = _lease_from(session, info, want)
        with _directory.lock:
            _directory.passes[info.id] = _directory.passes.get(info.id, 0.0) + max(
                len(got), 1
            ) / max(info.priority, 1)
            # With replication, or after expiries, "nothing for this session" does not mean
            # "nothing left".
            if len(got) < want and info.target_replicas == 1 and not session.expired:
                _directory.empty_until[info.id] = time.monotonic() + EMPTY_BACKOFF
        out.extend(got)
    return out


def lease_for_session(
    session: SessionInfo,
    n: int,
    known_campaigns: AbstractSet[int],
    budget: Callable[[int], int] | None = None,
    skip: Collection[int] = (),
) -> tuple[list[Lease], dict[int, protocol.CampaignDesc]]:
    """lease(), plus the descriptors of campaigns the session has not been sent yet (looked
    up here, in the database thread, because the directory may need a refresh)."""
    leases = lease(session, n, budget, skip)
    descriptors: dict[int, protocol.CampaignDesc] = {}
    for cid in {x.campaign for x in leases} - known_campaigns:
        info = campaign_info(cid)
        if info is not None:
            descriptors[cid] = info.descriptor()
    return leases, descriptors


@dataclass(frozen=True)
class LeaseRequest:
    """One waiting session in a bulk lease (lease_many): up to n tasks, capped per campaign by
    budget(campaign_id), none of the campaigns in skip; descriptors for campaigns not in known."""

    session: SessionInfo
    n: int
    budget: Callable[[int], int] | None = None
    skip: Collection[int] = ()
    known: Collection[int] = ()


def lease_many(
    requests: Sequence[LeaseRequest],
) -> dict[int, tuple[list[Lease], dict[int, protocol.CampaignDesc]]]:
    """Work for many waiting sessions at once (a server process feeding its idle sessions when
    work appears), in one trip to the database thread, with the rules of lease().

    Each session's campaign is chosen as lease() would choose it (lease gates, eligibility,
    fair-share passes, its budget), in Python. The sessions whose campaign has one replica per
    task then lease in ONE statement per campaign (_lease_bulk: the same rows, order, locks
    and rules as _lease_from, dealt out in request order); campaigns with replication keep
    one statement per session (independence by user, origin and profile is decided per
    candidate and session, including between the sessions of one batch). A session that got
    fewer than it asked because its campaign ran out goes on through lease() with that
    campaign tried, as lease()'s own loop would. Returns {session id: (leases, descriptors of
    its campaigns not in its `known`)} for the sessions that got work."""
    got: dict[int, list[Lease]] = {}
    campaigns = running_campaigns()
    planned, one_by_one = _plan_bulk(requests, campaigns)
    for cid, batch in planned.items():
        info = campaigns[cid]
        leased = _lease_bulk(info, [(r.session, want) for r, want in batch])
        short = 0
        ran_out = False
        for r, want in batch:
            mine = leased.get(r.session.id, [])
            if mine:
                got[r.session.id] = mine
            short += want - len(mine)
            # As in lease(): a session with an expired lease may be refused rows others get.
            ran_out = ran_out or (len(mine) < want and not r.session.expired)
            if len(mine) < r.n:
                # The campaign ran out, or the session's budget for it is used up: lease()
                # would go on with the next campaign.
                one_by_one.append((r, r.n - len(mine), frozenset({cid})))
        with _directory.lock:
            # Passes advance by what was leased (lease() counts at least 1 per try).
            _directory.passes[cid] = _directory.passes.get(cid, 0.0) - short / max(info.priority, 1)
            if ran_out:
                _directory.empty_until[cid] = time.monotonic() + EMPTY_BACKOFF
    for r, n, tried in one_by_one:
        more = lease(r.session, n, r.budget, {*r.skip, *tried})
        if more:
            got.setdefault(r.session.id, []).extend(more)
    out: dict[int, tuple[list[Lease], dict[int, protocol.CampaignDesc]]] = {}
    by_id = {r.session.id: r for r in requests}
    for sid, leases in got.items():
        descriptors: dict[int, protocol.CampaignDesc] = {}
        for cid in {x.campaign for x in leases} - set(by_id[sid].known):
            known = campaign_info(cid)
            if known is not None:
                descriptors[cid] = known.descriptor()
        out[sid] = (leases, descriptors)
    return out


# A session to serve through lease() after the bulk statements: (its request, how many tasks
# it still wants, the campaigns it already tried).
_OneByOne = tuple[LeaseRequest, int, frozenset[int]]


def _plan_bulk(
    requests: Sequence[LeaseRequest], campaigns: dict[int, CampaignInfo]
) -> tuple[dict[int, list[tuple[LeaseRequest, int]]], list[_OneByOne]]:
    """Each request's campaign, chosen as lease() chooses (gates, eligibility, fair-share
    passes, budget): {campaign: [(request, how many)]} for the bulk statements, and the
    requests that lease one by one: replicated campaigns, sessions with an expired lease
    (rows withheld from them must go to the others, which one statement dealing rows in
    order would not do), and SQLite (whose IMMEDIATE transactions serialize leases anyway)."""
    planned: dict[int, list[tuple[LeaseRequest, int]]] = {}
    one_by_one: list[_OneByOne] = []
    for r in requests:
        if r.n <= 0 or not hooks.may_lease(r.session):
            continue
        info = _next_campaign(r.session, campaigns, set(r.skip))
        if info is None:
            continue
        want = r.n if r.budget is None else min(r.n, r.budget(info.id))
        if want <= 0:
            continue  # as in lease(): wait for room in the campaign whose turn it is
        if info.target_replicas != 1 or r.session.expired or connection.vendor != "postgresql":
            one_by_one.append((r, r.n, frozenset()))
            continue
        planned.setdefault(info.id, []).append((r, want))
        # The next session's pick sees this one's share taken, as in consecutive lease()s.
        with _directory.lock:
            _directory.passes[info.id] = _directory.passes.get(info.id, 0.0) + want / max(
                info.priority, 1
            )
    return planned, one_by_one


def _lease_bulk(info: CampaignInfo, wants: list[tuple[SessionInfo, int]]) -> dict[int, list[Lease]]:
    """One statement (PostgreSQL) leasing a campaign of one replica per task to many sessions:
    the first sum(wants) unsent replicas by id, FOR UPDATE SKIP LOCKED (as _lease_from picks
    them, so concurrent leases of other processes each get different rows), numbered and dealt
    out in the order of `wants`, each session getting the next n of them. The rule of
    _candidates holds per session and row: a replica of a task whose lease that session let
    expire is not given to it (it stays unsent). Sessions come in as arrays (unnest), so the
    statement has the same few parameters for ten sessions or ten thousand."""
    if not wants:
        return {}
    now = timezone.now()
    deadline = now + timedelta(seconds=lease_seconds(info))
    ids: list[int] = []
    users: list[int | None] = []
    sites: list[int | None] = []
    origins: list[str | None] = []
    profiles: list[str | None] = []
    after: list[int] = []
    upto: list[int] = []
    total = 0
    for session, n in wants:
        after.append(total)
        total += n
        ids.append(session.id)
        users.append(session.user_id)
        sites.append(session.site_id)
        origins.append(session.origin)
        profiles.append(session.profile)
        upto.append(total)
    with connection.cursor() as cursor:
        cursor.execute(
            # Session i gets the picked rows numbered after_i + 1 .. upto_i: one row per
            # place (generate_series), so the deal is an equi-join (a hash join), not a range
            # join of every row against every session.
            "WITH places AS (SELECT w.session_id, w.user_id, w.site_id, w.origin, w.profile,"
            " generate_series(w.after + 1, w.upto) AS k"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::text[], %s::text[], %s::bigint[], %s::bigint[])"
            " AS w(session_id, user_id, site_id, origin, profile, after, upto)),"
            f" picked AS (SELECT r.id, r.task_id FROM {R} r WHERE r.campaign_id = %s"
            f" AND r.state = {UNSENT} ORDER BY r.id LIMIT %s FOR UPDATE SKIP LOCKED),"
            " numbered AS (SELECT id, task_id, row_number() OVER (ORDER BY id) AS k FROM picked),"
            " assigned AS (SELECT numbered.id, places.session_id, places.user_id,"
            " places.site_id, places.origin, places.profile"
            " FROM numbered JOIN places ON places.k = numbered.k"
            f" WHERE NOT EXISTS (SELECT 1 FROM {R} o WHERE o.task_id = numbered.task_id"
            f" AND o.state = {TIMED_OUT} AND o.session_id = places.session_id)),"
            f" leased AS (UPDATE {R} r SET state = {LEASED}, session_id = a.session_id,"
            " user_id = a.user_id, site_id = a.site_id, origin = a.origin,"
            " profile = a.profile, leased_at = %s, deadline = %s"
            " FROM assigned a WHERE r.id = a.id RETURNING r.id, r.task_id, r.session_id)"
            " SELECT leased.id, leased.session_id, t.id, t.input, t.args, t.env, t.checkpoint"
            f" FROM leased JOIN {T} t ON t.id = leased.task_id ORDER BY leased.id",
            [ids, users, sites, origins, profiles, after, upto, info.id, total, now, deadline],
        )
        rows = cursor.fetchall()
    out: dict[int, list[Lease]] = {}
    for rid, sid, tid, inp, args, env, ckpt in rows:
        out.setdefault(sid, []).append(
            Lease(
                lease=rid,
                task=tid,
                campaign=info.id,
                input=bytes(inp),
                args=_json(args),
                env=_json(env),
                checkpoint=_bytes(ckpt),
            )
        )
    if rows:
        metrics.TASKS_LEASED.inc(len(rows))
    return out


def _next_campaign(
    session: SessionInfo, campaigns: dict[int, CampaignInfo], tried: set[int]
) -> CampaignInfo | None:
    """The eligible campaign whose turn it is: a campaign of synchronous runs first (someone
    is waiting on the answer; there are few such tasks and each is one call's), then the
    batch campaign with the lowest stride pass."""
    now = time.monotonic()
    best: CampaignInfo | None = None
    best_key = (True, 0.0)
    with _directory.lock:
        for info in campaigns.values():
            if info.id in tried or _directory.empty_until.get(info.id, 0.0) > now:
                continue
            if not eligible(session, info):
                continue
            key = (not info.interactive, _directory.passes.get(info.id, 0.0))
            if best is None or key < best_key:
                best, best_key = info, key
    return best


def lease_seconds(info: CampaignInfo) -> int:
    """How long a lease of the campaign lasts: the kernel's own wall-time limit plus as much
    again for time spent queued in the worker's prefetch buffer and on the network; a
    synchronous run's, its limit and a short grace (campaigns/runs.py: a caller waits on it,
    and it is leased before batch work, so it does not queue long)."""
    if info.interactive:
        return info.task_timeout + runs.RUN_LEASE_GRACE
    return 2 * info.task_timeout


def _lease_from(session: SessionInfo, info: CampaignInfo, n: int) -> list[Lease]:
    now = timezone.now()
    deadline = now + timedelta(seconds=lease_seconds(info))
    set_params = [
        session.id,
        session.user_id,
        session.site_id,
        session.origin,
        session.profile,
        now,
        deadline,
    ]
    candidates, candidate_params = _candidates(session, info, n)
    if info.target_replicas > 1:
        pg_pick = (
            f"SELECT id FROM {R} WHERE id IN ({candidates}) AND state = {UNSENT}"
            " FOR UPDATE SKIP LOCKED"
        )
    else:
        # SKIP LOCKED inside the LIMIT: concurrent sessions each get n different rows.
        pg_pick = candidates + " FOR UPDATE SKIP LOCKED"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH picked AS ({pg_pick}),"
                f" leased AS (UPDATE {R} r SET state = {LEASED}, session_id = %s, user_id = %s,"
                " site_id = %s, origin = %s, profile = %s, leased_at = %s, deadline = %s"
                " FROM picked WHERE r.id = picked.id"
                " RETURNING r.id, r.task_id)"
                f" SELECT leased.id, t.id, t.input, t.args, t.env, t.checkpoint FROM leased"
                f" JOIN {T} t ON t.id = leased.task_id ORDER BY leased.id",
                [*candidate_params, *set_params],
            )
            rows = cursor.fetchall()
        else:
            # The IMMEDIATE transaction holds SQLite's write lock from its first statement, so
            # no other session can pick the same rows between the SELECT and the UPDATE.
            with transaction.atomic():
                cursor.execute(
                    f"UPDATE {R} SET state = {LEASED}, session_id = %s, user_id = %s,"
                    " site_id = %s, origin = %s, profile = %s, leased_at = %s, deadline = %s"
                    f" WHERE id IN ({candidates})"
                    " RETURNING id, task_id",
                    [*set_params, *candidate_params],
                )
                leased = dict(cursor.fetchall())
                if not leased:
                    return []
                task_ids = list(set(leased.values()))
                marks = ",".join(["%s"] * len(task_ids))
                cursor.execute(
                    f"SELECT id, input, args, env, checkpoint FROM {T} WHERE id IN ({marks})",
                    task_ids,
                )
                tasks = {row[0]: row for row in cursor.fetchall()}
            rows = [(rid, tid, *tasks[tid][1:]) for rid, tid in sorted(leased.items())]
    return [
        Lease(
            lease=rid,
            task=tid,
            campaign=info.id,
            input=bytes(inp),
            args=_json(args),
            env=_json(env),
            checkpoint=_bytes(ckpt),
        )
        for rid, tid, inp, args, env, ckpt in rows
    ]


def _candidates(session: SessionInfo, info: CampaignInfo, n: int) -> tuple[str, list[Any]]:
    """The unsent replicas this session may take, as a subquery (one statement with the
    lease): never a replica of a task whose lease this session let expire, and on replicated
    campaigns never one of a task that already has a replica leased to, or answered by, the
    same user, session, network origin or browser profile (NULL matches nothing: unknown is
    not "the same"), and no more than the session's origin's fair share (origin_share). At
    most one replica per task per batch."""
    if info.target_replicas == 1:
        # Quorum 1: replicas after the first exist only after a failure. Errors may be
        # retried here (a one-worker deployment must finish), an expired lease may not.
        return (
            f"SELECT r.id FROM {R} r WHERE r.campaign_id = %s AND r.state = {UNSENT}"
            f" AND NOT EXISTS (SELECT 1 FROM {R} o WHERE o.task_id = r.task_id"
            f" AND o.state = {TIMED_OUT} AND o.session_id = %s)"
            " ORDER BY r.id LIMIT %s",
            [info.id, session.id, n],
        )
    sql = (
        f"SELECT MIN(r.id) AS m FROM {R} r WHERE r.campaign_id = %s AND r.state = {UNSENT}"
        f" AND NOT EXISTS (SELECT 1 FROM {R} o WHERE o.task_id = r.task_id AND o.id <> r.id"
        " AND (o.session_id = %s OR o.user_id = %s OR o.origin = %s OR o.profile = %s))"
    )
    params: list[Any] = [info.id, session.id, session.user_id, session.origin, session.profile]
    if info.quorum_needs_account and session.user_id is None:
        # Anonymous sessions fill at most quorum - 1 places: the rest waits for an account.
        sql += (
            f" AND (SELECT COUNT(*) FROM {R} a WHERE a.task_id = r.task_id"
            f" AND a.user_id IS NULL AND a.state IN ({LEASED}, {RETURNED})) < %s"
        )
        params.append(info.min_quorum - 1)
    share = origin_share()
    if share and session.origin is not None:
        # The origin's fair share: all its sessions together hold no more of this campaign's
        # replicas than `share` times what this session would hold after this lease (its
        # allowance's worth: the connection asks for at most its allowance less what it
        # holds). One session of an origin is never held back by this; many sockets of one
        # network do not get many sessions' shares. Counted in the same statement (no extra
        # query); concurrent leases of one origin from several server processes may overshoot
        # by what they ask at once (a soft bound, like the per-origin session cap).
        greatest, least = (
            ("GREATEST", "LEAST") if connection.vendor == "postgresql" else ("MAX", "MIN")
        )
        limit = (
            f"(SELECT {least}(%s, {greatest}(0, %s * (%s + COUNT(CASE WHEN h.session_id = %s"
            f" THEN 1 END)) - COUNT(*))) FROM {R} h WHERE h.campaign_id = %s"
            f" AND h.state = {LEASED} AND h.origin = %s)"
        )
        # The inner LIMIT stays a constant, so the planner keeps its plan for "the first n"
        # (a computed LIMIT there made PostgreSQL plan for all unsent replicas); the share
        # cuts those n rows.
        return (
            f"SELECT c.m FROM ({sql} GROUP BY r.task_id ORDER BY MIN(r.id) LIMIT %s) c"
            f" ORDER BY c.m LIMIT {limit}",
            [*params, n, n, share, n, session.id, info.id, session.origin],
        )
    return sql + " GROUP BY r.task_id ORDER BY MIN(r.id) LIMIT %s", [*params, n]


def origin_share() -> int:
    """ORIGIN_LEASE_SHARE: how many sessions' worth of a replicated campaign's leases one
    network origin may hold together (0: no per-origin share). MAX_SESSIONS_PER_ORIGIN=0 (load
    tests from one machine) turns it off too."""
    cfg = settings.CCGSC
    if not int(cfg["MAX_SESSIONS_PER_ORIGIN"]):
        return 0
    return int(cfg["ORIGIN_LEASE_SHARE"])


# --- results ------------------------------------------------------------------------------------


@dataclass
class SubmitOutcome:
    accepted: list[int] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    done: int = 0
    failed: int = 0
    # Successful results per campaign, for the session's speed estimate and live pages.
    per_campaign: Counter[int] = field(default_factory=Counter)
    # Successful results returned within their task's timeout of being leased, as the server
    # measures it (the client's `ms` is a hint): what earns a session more leases.
    in_time: int = 0


@metrics.timed_results
def submit_results(session: SessionInfo, items: Sequence[protocol.ResultItem]) -> SubmitOutcome:
    """Record a batch of results from one session, durably, exactly once.

    Items are validated protocol.ResultItems (output size already checked against the limit).
    Items whose lease this session does not hold (any more) are acknowledged as ignored.
    """
    outcome = SubmitOutcome()
    if not items:
        return outcome
    campaigns = running_campaigns()
    now = timezone.now()
    ty = _vendor_types()
    values, params = [], []
    for i, item in enumerate(items):
        ok = item.ok
        out = item.output if ok else None
        cast = (
            f"(CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}), CAST(%s AS {ty['bytes']}),"
            f" CAST(%s AS {ty['text']}), CAST(%s AS {ty['int']}), CAST(%s AS {ty['text']}),"
            f" CAST(%s AS {ty['text']}), CAST(%s AS {ty['int']}))"
        )
        values.append(cast if i == 0 else "(%s, %s, %s, %s, %s, %s, %s, %s)")
        params += [
            item.lease,
            SUCCESS if ok else (TIMEOUT if item.err == "timeout" else ERROR),
            out,
            hashlib.sha256(out).hexdigest() if out is not None else "",
            item.exit,
            item.err or "",
            item.stderr_text,
            item.ms,
        ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"WITH v(id, outcome, output, sha, exit_code, error_kind, stderr_tail, ms) AS"
            f" (VALUES {', '.join(values)})"
            # No table alias: SQLite's RETURNING cannot see one.
            f" UPDATE {R} SET state = {RETURNED}, outcome = v.outcome, output = v.output,"
            " output_sha256 = v.sha, exit_code = v.exit_code, error_kind = v.error_kind,"
            " stderr_tail = v.stderr_tail, runtime_ms = v.ms, returned_at = %s"
            f" FROM v WHERE {R}.id = v.id AND {R}.session_id = %s AND {R}.state = {LEASED}"
            f" RETURNING {R}.id, {R}.task_id, {R}.campaign_id, {R}.outcome, {R}.user_id,"
            f" {R}.site_id, {R}.leased_at",
            [*params, now, session.id],
        )
        rows = cursor.fetchall()
        accepted = {row[0] for row in rows}
        outcome.accepted = [it.lease for it in items if it.lease in accepted]
        outcome.ignored = [it.lease for it in items if it.lease not in accepted]

        inline: list[ResultRow] = []
        deferred: list[ResultRow] = []
        failures: list[FailedRow] = []
        for rid, tid, cid, oc, uid, sid, leased_at in rows:
            info = campaigns.get(cid) or campaign_info(cid)
            if oc == SUCCESS and info is not None and _within(leased_at, now, info.task_timeout):
                outcome.in_time += 1
            if oc != SUCCESS:
                failures.append(FailedRow(rid, tid, cid, uid))
            elif info is None or info.validates_inline:
                inline.append(ResultRow(rid, tid, cid, uid, sid))
            else:
                deferred.append(ResultRow(rid, tid, cid, uid, sid))
            if oc == SUCCESS:
                outcome.per_campaign[cid] += 1
        done_by_campaign: Counter[int] = Counter()
        failed_by_campaign: Counter[int] = Counter()
        if deferred or failures:
            # Replicas of one task may come back in concurrent batches: whoever decides a
            # task holds its row first, all of a batch's tasks in id order (no deadlocks).
            _lock_tasks(cursor, [row[1] for row in deferred] + [row[1] for row in failures])
        # The extension points (ccgsc.hooks) run here, in this transaction; rewards/ registers
        # the ledger and validation on them.
        if inline:
            done_by_campaign = _decide_tasks(cursor, inline, now)
            # Accepted as they arrived (no quorum, no verifier): their points are paid now.
            hooks.pay_points(inline)
            hooks.validated(inline)
        if deferred:
            # A quorum or a verifier decides these (and pays the valid ones when it does).
            done, failed = hooks.decide_returned(deferred)
            done_by_campaign.update(done)
            failed_by_campaign.update(failed)
        if failures:
            failed_by_campaign.update(_record_failures(cursor, [row[:3] for row in failures], now))
            hooks.record_failed(failures)  # their users' trust runs reset
        outcome.done = sum(done_by_campaign.values())
        outcome.failed = sum(failed_by_campaign.values())
        _bump_counters(cursor, done_by_campaign, failed_by_campaign)
        _announce_runs(campaigns, rows)
    return outcome


def _announce_runs(campaigns: dict[int, CampaignInfo], rows: Sequence[Sequence[Any]]) -> None:
    """Someone may be waiting on tasks of interactive campaigns (POST /api/v1/run): they are
    told after commit that results of theirs were recorded. Rows are (result, task, campaign,
    ...)."""
    waited = []
    for row in rows:
        info = campaigns.get(row[2]) or campaign_info(row[2])
        if info is not None and info.interactive:
            waited.append(row[1])
    announce_runs(waited)


def _within(leased_at: Any, now: datetime, seconds: int) -> bool:
    if isinstance(leased_at, str):  # SQLite hands raw timestamps back as text (or naive)
        leased_at = parse_datetime(leased_at)
    if not isinstance(leased_at, datetime):
        return False
    if timezone.is_naive(leased_at):
        leased_at = timezone.make_aware(leased_at, UTC)
    return (now - leased_at).total_seconds() <= seconds


def _decide_tasks(cursor: Any, inline: list[ResultRow], now: datetime) -> Counter[int]:
    """Mark tasks done with these results as canonical (and the results valid)."""
    ty = _vendor_types()
    values = ", ".join(
        f"(CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}))" if i == 0 else "(%s, %s)"
        for i in range(len(inline))
    )
    params: list[Any] = []
    for rid, tid, *_ in inline:
        params += [tid, rid]
    cursor.execute(
        f"WITH v(tid, rid) AS (VALUES {values})"
        f" UPDATE {T} SET state = {TASK_DONE}, canonical_result_id = v.rid, finished_at = %s"
        f" FROM v WHERE {T}.id = v.tid AND {T}.state = {TASK_PENDING}"
        f" RETURNING {T}.id, {T}.campaign_id",
        [*params, now],
    )
    decided = cursor.fetchall()
    marks = ",".join(["%s"] * len(inline))
    cursor.execute(
        f"UPDATE {R} SET validation = {VALID}, basis = {SINGLE_BASIS} WHERE id IN ({marks})",
        [row[0] for row in inline],
    )
    return Counter(cid for _, cid in decided)


def _lock_tasks(cursor: Any, task_ids: Sequence[int]) -> None:
    """Row-lock tasks in id order (PostgreSQL; on SQLite the IMMEDIATE transaction already
    holds the database's write lock)."""
    ids = sorted(set(task_ids))
    if ids and connection.vendor == "postgresql":
        marks = ",".join(["%s"] * len(ids))
        cursor.execute(f"SELECT id FROM {T} WHERE id IN ({marks}) ORDER BY id FOR UPDATE", ids)


def _bump_counters(cursor: Any, done: Counter[int], failed: Counter[int]) -> None:
    """Add to the campaigns' counters (last in the transaction: the campaign row is the one
    hot row every result batch of a campaign touches) and complete finished campaigns."""
    for cid in sorted(set(done) | set(failed)):
        cursor.execute(
            f"UPDATE {C} SET tasks_done = tasks_done + %s, tasks_failed = tasks_failed + %s"
            " WHERE id = %s RETURNING tasks_total, tasks_done, tasks_failed",
            [done[cid], failed[cid], cid],
        )
        row = cursor.fetchone()
        if row and row[0] == row[1] + row[2] and not _interactive(cid):
            # (A campaign of synchronous runs never completes: each of its results would
            # otherwise look for completion, an UPDATE that never matches.)
            campaign_check_complete(campaign_id=cid)


def _interactive(campaign_id: int) -> bool:
    info = campaign_info(campaign_id)
    return info is not None and info.interactive


def _record_failures(
    cursor: Any, failures: list[tuple[int, int, int]], now: datetime
) -> Counter[int]:
    """Failed attempts (errors, timeouts): count them on the task; below the campaign's limit
    a fresh replica is queued, at the limit the task fails with its reasons kept on the
    results. Rare compared with successes, so per-task statements are fine here."""
    failed_by_campaign: Counter[int] = Counter()
    requeued: set[int] = set()
    # In task order, like every other writer of task rows (no deadlocks).
    for (task_id, campaign_id), count in sorted(Counter((t, c) for _, t, c in failures).items()):
        info = campaign_info(campaign_id)
        cursor.execute(
            f"UPDATE {T} SET error_count = error_count + %s WHERE id = %s"
            f" AND state = {TASK_PENDING}"
            " RETURNING error_count",
            [count, task_id],
        )
        row = cursor.fetchone()
        if row is None:
            continue  # already decided (or gone): nothing to retry
        limit = info.error_limit if info else 1
        cursor.execute(f"SELECT COUNT(*) FROM {R} WHERE task_id = %s", [task_id])
        total = cursor.fetchone()[0]
        max_total = info.max_total_replicas if info else 1
        if row[0] >= limit or total >= max_total:
            reason = _failure_reason(task_id, row[0])
            cursor.execute(
                f"UPDATE {T} SET state = {TASK_FAILED}, failure = %s, finished_at = %s"
                f" WHERE id = %s AND state = {TASK_PENDING}",
                [reason, now, task_id],
            )
            if cursor.rowcount:
                failed_by_campaign[campaign_id] += 1
                cursor.execute(
                    f"UPDATE {R} SET state = {CANCELLED} WHERE task_id = %s"
                    f" AND state IN ({UNSENT}, {LEASED})",
                    [task_id],
                )
        else:
            insert_replicas(cursor, [(campaign_id, task_id)])
            requeued.add(campaign_id)
    for cid in requeued:
        work_available(cid)
    return failed_by_campaign


def _failure_reason(task_id: int, errors: int) -> str:
    last = (
        Result.objects.filter(task_id=task_id, outcome__in=(ERROR, TIMEOUT))
        .order_by("-id")
        .values("error_kind", "exit_code", "stderr_tail")
        .first()
    )
    # On how many workers, and which kinds: "5 on 1 browser" points at that browser, not at
    # the kernel, when its owner reads why the task failed.
    sessions = {
        sid
        for sid in Result.objects.filter(task_id=task_id, outcome__in=(ERROR, TIMEOUT)).values_list(
            "session_id", flat=True
        )
        if sid is not None
    }
    text = f"{errors} failed attempt(s)"
    if sessions:
        kinds = Counter(
            WorkerSession.objects.filter(pk__in=sessions).values_list("kind", flat=True)
        )
        on = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        text += f" on {len(sessions)} worker session(s) ({on})" if on else ""
    if last:
        text += f"; last: {last['error_kind'] or 'error'}"
        if last["exit_code"] is not None:
            text += f" (exit {last['exit_code']})"
        if last["stderr_tail"]:
            text += f": {last['stderr_tail'][-300:]}"
    return text


# --- checkpoints, releases, expiry --------------------------------------------------------------


def save_checkpoint(session: SessionInfo, lease_id: int, data: bytes) -> bool:
    """Store a checkpoint for the task behind a lease this session holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {T} SET checkpoint = %s, checkpoint_at = %s WHERE id ="
            f" (SELECT task_id FROM {R} WHERE id = %s AND session_id = %s AND state = {LEASED})"
            f" AND state = {TASK_PENDING}",
            [data, timezone.now(), lease_id, session.id],
        )
        return cursor.rowcount == 1


def release(session_id: int, lease_ids: Sequence[int] | None = None) -> int:
    """Give leases back to the queue without counting an attempt: the session disconnected,
    is shutting down, or was paused. With lease_ids=None, every lease of the session."""
    qs = Result.objects.filter(session_id=session_id, state=LEASED)
    if lease_ids is not None:
        qs = qs.filter(id__in=list(lease_ids))
    return _release(qs)


def release_sessions(session_ids: Sequence[int]) -> int:
    """release() of every lease of several sessions, in one statement (the sweeper closing a
    dead server process's sessions)."""
    return _release(Result.objects.filter(session_id__in=list(session_ids), state=LEASED))


def _release(qs: QuerySet[Result]) -> int:
    with transaction.atomic():
        campaign_ids = set(qs.values_list("campaign_id", flat=True).distinct())
        count = qs.update(
            state=UNSENT,
            session_id=None,
            user=None,
            site_id=None,
            origin=None,
            profile=None,
            leased_at=None,
            deadline=None,
        )
    for cid in campaign_ids:
        work_available(cid)
    if count:
        transaction.on_commit(lambda: _notify_work(campaign_ids))
    return count


def _notify_work(campaign_ids: set[int]) -> None:
    from campaigns.signals import work_available as signal

    for cid in campaign_ids:
        signal.send(Campaign, campaign_id=cid)


def reclaim_expired(now: datetime | None = None) -> int:
    """Leases past their deadline are taken back. Safe to run concurrently from several
    processes: each row is claimed once by the conditional UPDATE.

    An expiry is the session's fault, not the task's: a worker whose kernel fails or runs out
    of time says so in a result, and a vanished one is released when its socket closes. So an
    expired lease does not count as a failed attempt of the task (a session that hoards
    leases and stays silent cannot fail anything): the task gets a fresh replica, which the
    lease rule keeps away from that session. The task fails only when sessions of
    `max_attempts` (and at least EXPIRY_MIN_NETWORKS) distinct network origins have each let
    it expire. The sessions pay:
    their lease allowance halves, and LEASE_EXPIRIES_BEFORE_BENCH rounds of expiries without a
    result in between bench them (workers.connection). The holders are told after commit."""
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {R} SET state = {TIMED_OUT}, outcome = {TIMEOUT},"
            f" error_kind = '{LEASE_EXPIRED}' WHERE state = {LEASED} AND deadline < %s"
            " RETURNING id, task_id, campaign_id, user_id, session_id",
            [now],
        )
        rows = [tuple(r) for r in cursor.fetchall()]
        if not rows:
            return 0
        _lock_tasks(cursor, [r[1] for r in rows])
        failed = _record_expiries(cursor, [(r[1], r[2]) for r in rows], now)
        _charge_sessions(cursor, Counter(r[4] for r in rows if r[4] is not None), now)
        hooks.record_failed([FailedRow(*r[:4]) for r in rows])
        _bump_counters(cursor, Counter(), failed)
        # Runs whose worker went silent were queued again or failed: a request waiting on a
        # failed one is answered now (not when its wait runs out); one queued again waits on.
        _announce_runs(running_campaigns(), [(r[0], r[1], r[2]) for r in rows])
        expired = sorted(r[0] for r in rows)

        def tell() -> None:
            from workers import live

            live.on_leases_cancelled(expired, LEASE_EXPIRED_REASON)

        transaction.on_commit(tell)
    return len(rows)


LEASE_EXPIRED_REASON = "lease expired"
# Whatever max_attempts says, expiries on fewer distinct networks than this never fail a task.
EXPIRY_MIN_NETWORKS = 3


def _record_expiries(cursor: Any, expired: list[tuple[int, int]], now: datetime) -> Counter[int]:
    """A fresh replica for each pending task whose lease expired, unless sessions of
    max_attempts distinct origins (or distinct sessions, where the origin is unknown) have
    let it expire: then it fails. Two statements for the batch, one more per failed task."""
    campaign_of = dict(expired)
    ids = sorted(campaign_of)
    marks = ",".join(["%s"] * len(ids))
    cursor.execute(
        f"SELECT r.task_id, COUNT(DISTINCT COALESCE(r.origin, CAST(r.session_id AS"
        f" {_vendor_types()['text']}))) FROM {R} r JOIN {T} t ON t.id = r.task_id"
        f" WHERE r.task_id IN ({marks}) AND t.state = {TASK_PENDING} AND r.state = {TIMED_OUT}"
        " GROUP BY r.task_id ORDER BY r.task_id",
        ids,
    )
    failed_by_campaign: Counter[int] = Counter()
    requeue: list[int] = []
    for task_id, origins in cursor.fetchall():
        info = campaign_info(campaign_of[task_id])
        if origins >= max(info.max_attempts if info else 1, EXPIRY_MIN_NETWORKS):
            cursor.execute(
                f"UPDATE {T} SET state = {TASK_FAILED}, failure = %s, finished_at = %s"
                f" WHERE id = %s AND state = {TASK_PENDING}",
                [
                    f"lease expired on {origins} worker session(s) of distinct networks"
                    " without an answer",
                    now,
                    task_id,
                ],
            )
            if cursor.rowcount:
                failed_by_campaign[campaign_of[task_id]] += 1
                cursor.execute(
                    f"UPDATE {R} SET state = {CANCELLED} WHERE task_id = %s"
                    f" AND state IN ({UNSENT}, {LEASED})",
                    [task_id],
                )
        else:
            requeue.append(task_id)
    if requeue:
        insert_replicas(cursor, [(campaign_of[tid], tid) for tid in requeue])
        for cid in {campaign_of[tid] for tid in requeue}:
            work_available(cid)
    return failed_by_campaign


def _charge_sessions(cursor: Any, per_session: Counter[int], now: datetime) -> None:
    """Sessions whose leases expired: one more round of expiries each, half the allowance,
    and benched for LEASE_BENCH_SECONDS once the rounds reach the limit. The count resets
    only with a result returned in time, so a benched session that lets one more lease
    expire is benched again at once. One statement."""
    if not per_session:
        return
    limit = int(settings.CCGSC["LEASE_EXPIRIES_BEFORE_BENCH"])
    bench = int(settings.CCGSC["LEASE_BENCH_SECONDS"])
    S = WorkerSession._meta.db_table
    ids = sorted(per_session)
    marks = ",".join(["%s"] * len(ids))
    cursor.execute(
        f"UPDATE {S} SET leases_expired = leases_expired + 1,"
        " lease_allowance = CASE WHEN lease_allowance > 2 THEN lease_allowance / 2 ELSE 1 END,"
        f" benched_until = CASE WHEN leases_expired + 1 >= {limit} THEN %s"
        " ELSE benched_until END"
        f" WHERE id IN ({marks})",
        [now + timedelta(seconds=bench), *ids],
    )


def held_before(session_id: int, lease_ids: Sequence[int]) -> list[int]:
    """Which of these leases were once this session's (answered, withdrawn or expired)."""
    return list(
        Result.objects.filter(pk__in=list(lease_ids), session_id=session_id).values_list(
            "pk", flat=True
        )
    )


def leases_of(session_id: int) -> list[tuple[int, int]]:
    """(lease id, campaign id) of every lease a session holds."""
    return list(
        Result.objects.filter(session_id=session_id, state=LEASED).values_list("id", "campaign_id")
    )
