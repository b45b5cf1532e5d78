"""Quorum validation on BOINC's model.

A task's replicas are Result rows (campaigns.models). When successful replicas come back, the
task's *candidates* (returned, successful, validation pending) are put into equivalence classes:
by output_sha256 (byte equality, the default), or by the campaign's verifier kernel
(rewards.verifier), which may also reject a result on its own. Then, per task:

- a class backed by at least `min_quorum` *independent* volunteers wins (two results are
  independent when they differ in session, user, network origin and browser profile; see
  workers.identity; with `quorum_needs_account`, one of them must be signed in): its earliest
  result becomes canonical, the class is VALID, every other candidate is INVALID, the task is
  DONE and its outstanding replicas are cancelled (unsent ones quietly, leased ones with a
  `cancel` pushed to the worker holding them). Results that agree only with dependent ones
  count once, so they can neither win nor outvote anyone;
- adaptive replication, where the campaign's owner chose it: when every candidate agrees and
  one of them comes from a user trusted *for this kernel* who is not spot-checked this time
  (rewards.trust), that class wins without a quorum;
- otherwise more replicas are queued, as many as the quorum still lacks after counting the
  replicas in flight, up to the campaign's `max_total_replicas`; when even the cap cannot
  produce a quorum the task FAILS as inconclusive and its candidates are INCONCLUSIVE;
- a result returned for a task already decided (a replica that escaped cancellation) is
  compared with the canonical result: VALID (and paid) if it agrees, INVALID otherwise.

Where it runs: byte equality inline, inside the scheduler's results transaction (on_returned,
a scheduler returned-hook: a fixed number of set-based statements per batch); verifier
campaigns in a background job (rewards.jobs), because running kernels does not belong in a
worker's request. Both paths hold the row locks of their tasks (taken by the scheduler, or by
the job) while deciding, so two deciders of one task serialize, and both apply decisions with
the same set-based writes (apply()).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from campaigns import signals
from campaigns.models import Campaign, Result, Task
from campaigns.replicas import independent, independent_set, insert_replicas
from ccgsc import metrics
from ccgsc.hooks import FailedRow, ResultRow
from rewards import ledger, trust
from workers import scheduler

log = logging.getLogger(__name__)

R = Result._meta.db_table
T = Task._meta.db_table
UNSENT, LEASED, RETURNED = Result.State.UNSENT, Result.State.LEASED, Result.State.RETURNED
SUCCESS = Result.Outcome.SUCCESS
PENDING, VALID, INVALID, INCONCLUSIVE = (v.value for v in Result.Validation)
TASK_PENDING, TASK_DONE, TASK_FAILED = (s.value for s in Task.State)

# A class key: the output's sha256 (byte equality) or the verifier's label; None = rejected.
ClassKey = Hashable | None


@dataclass(frozen=True)
class Policy:
    campaign_id: int
    min_quorum: int
    max_total_replicas: int
    has_verifier: bool
    running: bool = True
    # The campaign's explicit choices (campaigns.models.Campaign).
    adaptive: bool = False
    needs_account: bool = False
    kernel_id: int = 0


@dataclass(frozen=True)
class Replica:
    id: int
    state: int
    outcome: int
    validation: int
    user_id: int | None
    session_id: int | None
    site_id: int | None
    sha: str
    origin: str | None = None
    profile: str | None = None

    @property
    def is_candidate(self) -> bool:
        return self.state == RETURNED and self.outcome == SUCCESS and self.validation == PENDING

    @property
    def outstanding(self) -> bool:
        return self.state in (UNSENT, LEASED)

    def independent_of(self, other: Replica) -> bool:
        """Could these two results come from two different people (campaigns.replicas)?"""
        return independent(self, other)


@dataclass
class TaskView:
    id: int
    campaign_id: int
    state: int
    canonical_id: int | None
    replicas: list[Replica] = field(default_factory=list)

    @property
    def candidates(self) -> list[Replica]:
        return [r for r in self.replicas if r.is_candidate]

    def replica(self, result_id: int | None) -> Replica | None:
        return next((r for r in self.replicas if r.id == result_id), None)


@dataclass
class Decision:
    task_id: int
    campaign_id: int
    canonical: int | None = None  # set: the task is DONE with this result
    failure: str = ""  # set: the task FAILS (inconclusive)
    valid: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    inconclusive: list[int] = field(default_factory=list)
    # Valid results accepted on trust alone: paid, but no evidence for the user's record.
    unchecked: set[int] = field(default_factory=set)
    new_replicas: int = 0
    # Why the valid results were accepted (Result.Basis), and for a quorum how many other
    # independent volunteers agreed; results independent of another agreeing one are the only
    # evidence trust is built on.
    basis: int = 0
    agreed_with: int | None = None
    corroborated: set[int] = field(default_factory=set)

    @property
    def closes_task(self) -> bool:
        return self.canonical is not None or bool(self.failure)


def _independent(group: Sequence[Replica]) -> list[Replica]:
    return independent_set(group)


def _support(group: Sequence[Replica], policy: Policy | None = None) -> int:
    """How many independent volunteers back a class. With `needs_account`, a class without a
    signed-in volunteer stays one short of any quorum."""
    n = len(_independent(group))
    signed_in = any(r.user_id is not None for r in group)
    if policy is not None and policy.needs_account and n >= policy.min_quorum and not signed_in:
        return policy.min_quorum - 1
    return n


def _corroborated(group: Sequence[Replica]) -> set[int]:
    """Results of the class that agree with at least one result independent of them."""
    return {r.id for r in group if any(r.independent_of(o) for o in group if o.id != r.id)}


def decide(
    task: TaskView,
    policy: Policy,
    classes: dict[int, ClassKey],
    *,
    unchecked: Callable[[Replica], bool] = lambda r: False,
) -> Decision:
    """Decide one task from the class of each candidate (`classes`: result id -> class key,
    None for a result rejected on its own; candidates without an entry are left pending).
    For a task already done, `classes` must also hold the canonical result's class.
    `unchecked(replica)` says whether a trusted user's result may stand alone (a random draw:
    called only for results that could). Pure: the caller applies the decision."""
    d = Decision(task.id, task.campaign_id)
    candidates = [r for r in task.candidates if r.id in classes]
    if task.state == TASK_DONE:
        canonical = classes.get(task.canonical_id) if task.canonical_id is not None else None
        first = task.replica(task.canonical_id)
        d.basis = Result.Basis.CANONICAL
        for r in candidates:
            agrees = canonical is not None and classes[r.id] == canonical
            (d.valid if agrees else d.invalid).append(r.id)
            if agrees and first is not None and r.independent_of(first):
                d.corroborated.add(r.id)
        return d
    if task.state == TASK_FAILED:
        d.inconclusive = [r.id for r in candidates]
        return d

    rejected = [r.id for r in candidates if classes[r.id] is None]
    groups: dict[ClassKey, list[Replica]] = defaultdict(list)
    for r in candidates:
        if classes[r.id] is not None:
            groups[classes[r.id]].append(r)
    # The best class: most independent volunteers, then the earliest result.
    ranked = sorted(groups.values(), key=lambda g: (-_support(g, policy), min(r.id for r in g)))
    best = ranked[0] if ranked else []

    def accept(group: list[Replica], canonical: int, *, checked: bool) -> Decision:
        d.canonical = canonical
        d.valid = sorted(r.id for r in group)
        members = {r.id for r in group}
        d.invalid = sorted(r.id for r in candidates if r.id not in members)
        if not checked:
            d.unchecked = set(d.valid)
            d.basis = Result.Basis.TRUSTED
            return d
        support = len(_independent(group))
        d.corroborated = _corroborated(group)
        if support > 1:
            d.basis, d.agreed_with = Result.Basis.QUORUM, support - 1
        else:
            d.basis = Result.Basis.VERIFIER if policy.has_verifier else Result.Basis.SINGLE
        return d

    if best and _support(best, policy) >= policy.min_quorum:
        return accept(best, min(r.id for r in best), checked=True)
    if len(groups) == 1 and policy.adaptive:
        trusted = [r for r in best if r.user_id is not None and unchecked(r)]
        if trusted:
            return accept(best, trusted[0].id, checked=False)

    # No quorum yet. Results the verifier rejected are invalid whatever happens next.
    d.invalid = sorted(rejected)
    top = _support(best, policy) if best else 0
    # Replicas still running, and results not classified yet (a verifier job will), may
    # still join the best class.
    in_flight = sum(1 for r in task.replicas if r.outstanding) + sum(
        1 for r in task.candidates if r.id not in classes
    )
    # Replicas whose lease expired do not use up the cap: a session that hoards leases and
    # never answers must not make a task inconclusive (workers.scheduler.reclaim_expired).
    counted = sum(1 for r in task.replicas if r.state != Result.State.TIMED_OUT)
    room = max(0, policy.max_total_replicas - counted)
    if top + in_flight + room < policy.min_quorum:
        d.inconclusive = sorted(r.id for r in candidates if classes[r.id] is not None)
        d.failure = (
            f"inconclusive: {len(candidates)} successful result(s) in {len(groups)} class(es)"
            f"{f' and {len(rejected)} rejected' if rejected else ''}, no {policy.min_quorum}"
            f" agreeing within the cap of {policy.max_total_replicas} replicas"
        )
        return d
    d.new_replicas = max(0, policy.min_quorum - top - in_flight) if policy.running else 0
    return d


# --- loading ------------------------------------------------------------------------------------


def load_tasks(task_ids: Iterable[int]) -> dict[int, TaskView]:
    """The tasks with every replica's metadata (not outputs), in one query."""
    ids = sorted(set(task_ids))
    if not ids:
        return {}
    rows = (
        Result.objects.filter(task_id__in=ids)
        .order_by("task_id", "id")
        .values_list(
            "task_id",
            "task__campaign_id",
            "task__state",
            "task__canonical_result_id",
            "id",
            "state",
            "outcome",
            "validation",
            "user_id",
            "session_id",
            "site_id",
            "output_sha256",
            "origin",
            "profile",
        )
    )
    tasks: dict[int, TaskView] = {}
    for tid, cid, tstate, canon, rid, state, outcome, valid, uid, sess, site, sha, o, p in rows:
        view = tasks.get(tid)
        if view is None:
            view = tasks[tid] = TaskView(tid, cid, tstate, canon)
        view.replicas.append(Replica(rid, state, outcome, valid, uid, sess, site, sha, o, p))
    return tasks


def policies(campaign_ids: Iterable[int]) -> dict[int, Policy]:
    """Replication policies, from the scheduler's cache of running campaigns where possible."""
    out: dict[int, Policy] = {}
    missing = []
    for cid in set(campaign_ids):
        info = scheduler.running_campaigns().get(cid)
        if info is None:
            missing.append(cid)
        else:
            out[cid] = Policy(
                cid,
                info.min_quorum,
                info.max_total_replicas,
                info.has_verifier,
                adaptive=info.adaptive_replication,
                needs_account=info.quorum_needs_account,
                kernel_id=info.kernel_id,
            )
    if missing:
        for c in Campaign.objects.filter(pk__in=missing).only(
            "min_quorum",
            "max_total_replicas",
            "verifier_id",
            "state",
            "adaptive_replication",
            "quorum_needs_account",
            "kernel_id",
        ):
            out[c.pk] = Policy(
                c.pk,
                c.min_quorum,
                c.max_total_replicas,
                c.verifier_id is not None,
                running=c.state in (Campaign.State.RUNNING, Campaign.State.PAUSED),
                adaptive=c.adaptive_replication,
                needs_account=c.quorum_needs_account,
                kernel_id=c.kernel_id,
            )
    return out


def lock_tasks(task_ids: Iterable[int]) -> None:
    """Row-lock tasks in id order (PostgreSQL; SQLite's IMMEDIATE transactions already hold
    the database's write lock). Everyone who decides tasks locks them this way first."""
    ids = sorted(set(task_ids))
    if ids and connection.vendor == "postgresql":
        list(Task.objects.filter(pk__in=ids).order_by("pk").select_for_update().values_list("pk"))


# --- the inline path (byte equality) ------------------------------------------------------------


def on_returned(rows: list[ResultRow]) -> tuple[Counter[int], Counter[int]]:
    """On decide_returned (ccgsc.hooks): successful replicas of replicated or verified
    campaigns were just recorded, inside the results transaction,
    with the tasks' rows locked. Byte-equality campaigns are decided here; verifier campaigns
    are handed to a job after commit. Returns (done, failed) task counts per campaign."""
    pols = policies({r.campaign for r in rows})
    verified = sorted({r.task for r in rows if pols[r.campaign].has_verifier})
    if verified:
        from ccgsc.jobs import enqueue
        from rewards.jobs import verify_tasks

        enqueue(verify_tasks, verified)
    plain = {r.task for r in rows if not pols[r.campaign].has_verifier}
    if not plain:
        return Counter(), Counter()
    tasks = load_tasks(plain)
    decisions = decide_by_bytes(list(tasks.values()), pols)
    return apply(decisions, tasks)


def decide_by_bytes(tasks: list[TaskView], pols: dict[int, Policy]) -> list[Decision]:
    classes: dict[int, ClassKey] = {}
    for t in tasks:
        for r in t.replicas:
            if r.is_candidate or r.id == t.canonical_id:
                classes[r.id] = r.sha
    draw = _trust_draw(tasks, pols, classes)
    return [decide(t, pols[t.campaign_id], classes, unchecked=draw) for t in tasks]


def _trust_draw(
    tasks: list[TaskView], pols: dict[int, Policy], classes: dict[int, ClassKey]
) -> Callable[[Replica], bool]:
    """The adaptive-replication draw for these tasks: looks up (in one query) only the users
    who could matter, the authors of undecided tasks' candidates."""
    if not trust.adaptive_replication_enabled():
        return lambda r: False
    pairs: set[tuple[int, int]] = set()
    kernel_of: dict[int, int] = {}
    for t in tasks:
        pol = pols[t.campaign_id]
        if t.state != TASK_PENDING or not pol.adaptive:
            continue  # the owner did not choose adaptive replication: never alone
        scored = [r for r in t.candidates if r.id in classes and classes[r.id] is not None]
        if len({classes[r.id] for r in scored}) != 1:
            continue  # no candidate, or disagreement: trust plays no part
        if _support(scored, pol) >= pol.min_quorum:
            continue  # a quorum decides it anyway
        for r in scored:
            if r.user_id is not None:
                pairs.add((r.user_id, pol.kernel_id))
                kernel_of[r.id] = pol.kernel_id
    runs = trust.trusted_runs(pairs)
    if not runs:
        return lambda r: False

    def draw(r: Replica) -> bool:
        run = runs.get((r.user_id or 0, kernel_of.get(r.id, 0)))
        return run is not None and trust.draw_unchecked(run)

    return draw


# --- applying decisions -------------------------------------------------------------------------


@metrics.counted_decisions
def apply(
    decisions: Sequence[Decision], tasks: dict[int, TaskView], *, now: datetime | None = None
) -> tuple[Counter[int], Counter[int]]:
    """Write decisions, set-based: tasks done, tasks failed, validations, cancelled and new
    replicas, the users' records, the points. Call inside a transaction holding the tasks'
    locks. Returns (done, failed) task counts per campaign for the campaign counters."""
    now = now or timezone.now()
    done: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    ty = scheduler._vendor_types()
    with connection.cursor() as cursor:
        accepted = [d for d in decisions if d.canonical is not None]
        if accepted:
            values = ", ".join(
                f"(CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}))" if i == 0 else "(%s, %s)"
                for i in range(len(accepted))
            )
            params: list[Any] = [x for d in accepted for x in (d.task_id, d.canonical)]
            cursor.execute(
                f"WITH v(tid, rid) AS (VALUES {values})"  # noqa: S608 (our tables, bound values)
                f" UPDATE {T} SET state = {TASK_DONE}, canonical_result_id = v.rid,"
                f" finished_at = %s FROM v WHERE {T}.id = v.tid AND {T}.state = {TASK_PENDING}"
                f" RETURNING {T}.id, {T}.campaign_id",
                [*params, now],
            )
            decided = dict(cursor.fetchall())
            done.update(decided.values())
            # A task someone else decided meanwhile (impossible while we hold its lock, but
            # cheap to respect): its results are left for the next pass to compare.
            decisions = [d for d in decisions if d.canonical is None or d.task_id in decided]
        for d in decisions:
            if d.failure:  # rare: one statement per inconclusive task
                cursor.execute(
                    f"UPDATE {T} SET state = {TASK_FAILED}, failure = %s, finished_at = %s"  # noqa: S608
                    f" WHERE id = %s AND state = {TASK_PENDING}",
                    [d.failure, now, d.task_id],
                )
                if cursor.rowcount:
                    failed[d.campaign_id] += 1
        _set_validations(cursor, decisions)
        closed = sorted(d.task_id for d in decisions if d.closes_task)
        if closed:
            _cancel_outstanding(cursor, closed)
        more = [d for d in decisions if d.new_replicas > 0]
        if more:
            _add_replicas(cursor, more)
    events: list[trust.Event] = []
    grants: list[ledger.Grant] = []
    for d in decisions:
        task = tasks[d.task_id]
        for rid in d.valid:
            r = task.replica(rid)
            if r is None:
                continue
            grants.append((rid, r.user_id, r.site_id, d.campaign_id))
            # Trust grows only from agreement with someone else, independent of this user.
            if r.user_id is not None and rid in d.corroborated:
                events.append(trust.Event(rid, r.user_id, d.campaign_id, "valid"))
        for rid in d.invalid:
            r = task.replica(rid)
            if r is not None and r.user_id is not None:
                events.append(trust.Event(rid, r.user_id, d.campaign_id, "invalid"))
    trust.record(events)
    ledger.grant(grants)
    return done, failed


def _case(column: str, values: dict[int, int]) -> tuple[str, list[Any]]:
    """`CASE WHEN id IN (...) THEN value ... ELSE column END` for result ids -> values."""
    by_value: dict[int, list[int]] = defaultdict(list)
    for rid, value in values.items():
        by_value[value].append(rid)
    whens, params = [], []
    for value, ids in sorted(by_value.items()):
        # Our own small integers (validation states, bases, counts): inlined, so the CASE
        # has one type on every database.
        whens.append(f"WHEN id IN ({', '.join(['%s'] * len(ids))}) THEN {int(value)}")
        params += ids
    return f"CASE {' '.join(whens)} ELSE {column} END", params


def _set_validations(cursor: Any, decisions: Sequence[Decision]) -> None:
    """One UPDATE: each decided result's validation, and for valid ones why (basis) and
    with how many independent volunteers they agreed."""
    marks = {
        **{rid: VALID for d in decisions for rid in d.valid},
        **{rid: INVALID for d in decisions for rid in d.invalid},
        **{rid: INCONCLUSIVE for d in decisions for rid in d.inconclusive},
    }
    if not marks:
        return
    basis = {rid: d.basis for d in decisions for rid in d.valid if d.basis}
    agreed = {rid: d.agreed_with for d in decisions for rid in d.valid if d.agreed_with}
    sets, params = [], []
    for column, values in (("validation", marks), ("basis", basis), ("agreed_with", agreed)):
        if values:
            case, case_params = _case(column, values)
            sets.append(f"{column} = {case}")
            params += case_params
    ids = sorted(marks)
    cursor.execute(
        f"UPDATE {R} SET {', '.join(sets)}"  # noqa: S608 (our columns, bound values)
        f" WHERE id IN ({', '.join(['%s'] * len(ids))}) AND validation = {PENDING}",
        [*params, *ids],
    )


def _cancel_outstanding(cursor: Any, task_ids: list[int]) -> None:
    """Cancel the unsent and leased replicas of decided tasks; tell the workers holding the
    leased ones, after commit. On PostgreSQL a replica locked by someone else (a worker
    returning it right now, a lease picking it) is skipped rather than waited for: waiting
    could deadlock with that transaction, which will find the task decided and compare its
    result with the canonical one."""
    marks = ", ".join(["%s"] * len(task_ids))
    if connection.vendor == "postgresql":
        cursor.execute(
            f"UPDATE {R} SET state = {Result.State.CANCELLED} WHERE id IN"  # noqa: S608
            f" (SELECT id FROM {R} WHERE task_id IN ({marks}) AND state IN ({UNSENT}, {LEASED})"
            " ORDER BY id FOR UPDATE SKIP LOCKED) RETURNING id, session_id",
            task_ids,
        )
    else:
        cursor.execute(
            f"UPDATE {R} SET state = {Result.State.CANCELLED}"  # noqa: S608
            f" WHERE task_id IN ({marks}) AND state IN ({UNSENT}, {LEASED})"
            " RETURNING id, session_id",
            task_ids,
        )
    leased = sorted(rid for rid, session_id in cursor.fetchall() if session_id is not None)
    if leased:
        from workers import live

        transaction.on_commit(lambda: live.on_leases_cancelled(leased, "task decided"))


def _add_replicas(cursor: Any, decisions: Sequence[Decision]) -> None:
    rows = [(d.campaign_id, d.task_id) for d in decisions for _ in range(d.new_replicas)]
    insert_replicas(cursor, rows)
    campaign_ids = sorted({cid for cid, _ in rows})
    for cid in campaign_ids:
        scheduler.work_available(cid)

    def nudge() -> None:
        for cid in campaign_ids:
            signals.work_available.send(Campaign, campaign_id=cid)

    transaction.on_commit(nudge)


# --- failures -----------------------------------------------------------------------------------


def on_failed(rows: list[FailedRow]) -> None:
    """On record_failed (ccgsc.hooks): errors and timeouts were recorded. On campaigns that
    check results they reset the users' runs; the successful results of tasks that just failed
    for too many errors become inconclusive."""
    pols = policies({r.campaign for r in rows})
    checked = [r for r in rows if pols[r.campaign].min_quorum > 1 or pols[r.campaign].has_verifier]
    trust.record(
        [trust.Event(r.result, r.user, r.campaign, "error") for r in checked if r.user is not None]
    )
    task_ids = sorted({r.task for r in checked})
    if task_ids:
        marks = ", ".join(["%s"] * len(task_ids))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {R} SET validation = {INCONCLUSIVE} WHERE task_id IN ({marks})"  # noqa: S608
                f" AND state = {RETURNED} AND outcome = {SUCCESS} AND validation = {PENDING}"
                f" AND task_id IN (SELECT id FROM {T} WHERE id IN ({marks})"
                f" AND state = {TASK_FAILED})",
                [*task_ids, *task_ids],
            )


# --- the safety net -----------------------------------------------------------------------------


def stuck_tasks(limit: int = 1000, *, older_than: timedelta | None = None) -> list[int]:
    """Pending tasks of running campaigns with results waiting for validation and no replica
    queued or running: nothing will ever trigger their validation again (a verifier job lost
    with its process, say). Reads the partial index of results awaiting validation: cheap
    enough for a periodic job, not meant for the hot path. `older_than`: only results
    returned at least that long ago (a verifier job still in its queue is not stuck)."""
    waiting = Result.objects.filter(
        campaign__state=Campaign.State.RUNNING,
        state=RETURNED,
        outcome=SUCCESS,
        validation=PENDING,
        task__state=TASK_PENDING,
    )
    if older_than is not None:
        waiting = waiting.filter(returned_at__lt=timezone.now() - older_than)
    # Per waiting result, one probe of the (task, state) index: never the whole backlog.
    busy = Result.objects.filter(task_id=OuterRef("task_id"), state__in=(UNSENT, LEASED))
    return list(
        waiting.filter(~Exists(busy))
        .order_by("task_id")
        .values_list("task_id", flat=True)
        .distinct()[:limit]
    )


#: How long a result may wait for its validation before catch_up() takes it as lost.
STUCK_AFTER = timedelta(minutes=5)


def catch_up() -> None:
    """Periodic (each server's sweeper, every few minutes): decide the tasks whose validation
    was lost. `manage.py rewards revalidate` does the same at once, without the grace."""
    stuck = stuck_tasks(older_than=STUCK_AFTER)
    if stuck:
        log.warning("validating %d task(s) whose validation never ran", len(stuck))
        revalidate(stuck)


def revalidate(task_ids: Sequence[int]) -> tuple[int, int]:
    """Decide these tasks again: byte-equality ones here, under their locks; verifier ones by
    a job. Returns the (done, failed) task counts decided here."""
    from workers.scheduler import _bump_counters

    tasks = load_tasks(task_ids)
    pols = policies({t.campaign_id for t in tasks.values()})
    verified = sorted(tid for tid, t in tasks.items() if pols[t.campaign_id].has_verifier)
    if verified:
        from ccgsc.jobs import enqueue
        from rewards.jobs import verify_tasks

        enqueue(verify_tasks, verified)
    plain = [tid for tid, t in tasks.items() if not pols[t.campaign_id].has_verifier]
    if not plain:
        return 0, 0
    with transaction.atomic():
        lock_tasks(plain)
        fresh = load_tasks(plain)
        done, failed = apply(decide_by_bytes(list(fresh.values()), pols), fresh)
        with connection.cursor() as cursor:
            _bump_counters(cursor, done, failed)
    return sum(done.values()), sum(failed.values())
