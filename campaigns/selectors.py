"""Reads for the owners' pages, the live publisher and the demo pages.

Every owner-side read starts from a campaign or organization the caller already fetched through
accounts.tenancy; the functions here never widen that scope. Query cost is stated where it
matters: the live publisher calls `snapshots` every half second, so it is two set-based
queries whatever the number of watched campaigns.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db.models import BinaryField, Count, Q, QuerySet
from django.db.models.functions import Length, Substr, TruncSecond
from django.utils import timezone

from accounts.models import Organization
from accounts.tenancy import Actor, get_for_actor, get_organization
from campaigns import signals
from campaigns.models import Campaign, Kernel, Result, Task

State = Campaign.State
PUBLIC_STATES = (State.RUNNING, State.PAUSED, State.COMPLETED)


# --- scoping --------------------------------------------------------------------------------


def campaign_for_actor(actor: Actor, slug: str, campaign_id: int) -> tuple[Organization, Campaign]:
    """The organization and one of its campaigns, or Http404 (missing and forbidden alike)."""
    org = get_organization(actor, slug)
    campaign = get_for_actor(
        Campaign.objects.filter(organization=org).select_related(
            "kernel", "generator", "verifier", "reducer", "static_data"
        ),
        actor,
        pk=campaign_id,
    )
    return org, campaign


def organization_campaigns(org: Organization) -> QuerySet[Campaign]:
    return (
        Campaign.objects.filter(organization=org).select_related("kernel").order_by("-created_at")
    )


def organization_kernels(org: Organization) -> QuerySet[Kernel]:
    return (
        Kernel.objects.filter(organization=org)
        .defer("imports")
        .annotate(campaign_count=Count("campaigns"))
        .order_by("-created_at")
    )


def can_view_demo(actor: Actor, campaign: Campaign) -> bool:
    """Demo pages are public for approved campaigns that have run; members always see theirs."""
    if campaign.approved and campaign.state in PUBLIC_STATES:
        return True
    return Campaign.objects.for_actor(actor).filter(pk=campaign.pk).exists()


# --- the live snapshot --------------------------------------------------------------------


SNAPSHOT_FIELDS = (
    "id",
    "state",
    "input_state",
    "error",
    "approved",
    "tasks_total",
    "tasks_done",
    "tasks_failed",
    "reduced_at",
    "reducer_id",
)
REDUCED_PREVIEW_BYTES = 2000


def snapshots(campaign_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The live state of these campaigns: counters from the campaign rows (maintained by the
    scheduler, so nothing is counted here) and, from the leased replicas, how many tasks are in
    flight and on how many worker sessions. Two queries; the second reads only leased rows,
    which are bounded by the pool's slots, not by the campaigns' sizes."""
    ids = list(campaign_ids)
    if not ids:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for row in Campaign.objects.filter(pk__in=ids).values(*SNAPSHOT_FIELDS):
        total, done, failed = row["tasks_total"], row["tasks_done"], row["tasks_failed"]
        row["progress"] = round((done + failed) / total, 5) if total else 0.0
        row["reduced_at"] = row["reduced_at"].isoformat() if row["reduced_at"] else None
        row["leased"] = 0
        row["workers"] = 0
        out[row["id"]] = row
    leased = (
        Result.objects.filter(campaign_id__in=ids, state=Result.State.LEASED)
        .values("campaign_id")
        .annotate(n=Count("id"), sessions=Count("session_id", distinct=True))
    )
    for row in leased:
        if row["campaign_id"] in out:
            out[row["campaign_id"]].update(leased=row["n"], workers=row["sessions"])
    return out


def reduced_preview(campaign_id: int) -> str | None:
    """The reducer's output as text for a page (cut, undecodable bytes replaced)."""
    data = Campaign.objects.filter(pk=campaign_id).values_list("reduced_output", flat=True).first()
    if data is None:
        return None
    return bytes(data)[:REDUCED_PREVIEW_BYTES].decode("utf-8", "replace")


def throughput_history(
    campaign: Campaign, *, minutes: int = 15, bucket_s: int = 5
) -> list[tuple[float, float]]:
    """Successful results returned per second over the last `minutes`, in `bucket_s` buckets,
    as (epoch seconds, rate) points for the chart. One grouped query over the returned_at
    index: its cost is the number of results returned in the window. (With replication this
    counts replicas, the live rate counts decided tasks; with the default quorum of 1 they are
    the same.)"""
    now = timezone.now()
    since = now - timedelta(minutes=minutes)
    if campaign.started_at and campaign.started_at > since:
        since = campaign.started_at
    end = campaign.finished_at if campaign.is_finished and campaign.finished_at else now
    if end <= since:
        return []
    per_second = (
        Result.objects.filter(
            campaign=campaign, returned_at__gte=since, outcome=Result.Outcome.SUCCESS
        )
        .annotate(second=TruncSecond("returned_at"))
        .values("second")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: dict[int, int] = {}
    start = int(since.timestamp()) // bucket_s * bucket_s
    for row in per_second:
        second: datetime = row["second"]
        key = int(second.timestamp()) // bucket_s * bucket_s
        counts[key] = counts.get(key, 0) + row["n"]
    last = int(end.timestamp()) // bucket_s * bucket_s
    return [
        (float(t + bucket_s), round(counts.get(t, 0) / bucket_s, 3))
        for t in range(start, last + 1, bucket_s)
    ]


# --- failures and results -----------------------------------------------------------------


def recent_failures(campaign: Campaign, limit: int = 10) -> list[Result]:
    """The last failed attempts with their stderr tail (errors are rare next to successes; the
    FK index on campaign narrows the scan)."""
    return list(
        Result.objects.filter(
            campaign=campaign, outcome__in=(Result.Outcome.ERROR, Result.Outcome.TIMEOUT)
        )
        .select_related("task")
        .defer("output", "task__input", "task__checkpoint")
        .order_by("-id")[:limit]
    )


def failed_tasks(campaign: Campaign, limit: int = 10) -> list[Task]:
    return list(
        Task.objects.filter(campaign=campaign, state=Task.State.FAILED)
        .defer("input", "checkpoint")
        .order_by("-finished_at")[:limit]
    )


def results_for_browser(campaign: Campaign, show: str, seq: int | None) -> QuerySet[Result]:
    """Returned replicas, newest first. Outputs are not loaded here (a page shows a preview,
    read by `output_previews` for the rows on that page only)."""
    qs = Result.objects.filter(
        campaign=campaign, state__in=(Result.State.RETURNED, Result.State.TIMED_OUT)
    )
    if show == "valid":
        qs = qs.filter(validation=Result.Validation.VALID)
    elif show == "errors":
        qs = qs.filter(outcome__in=(Result.Outcome.ERROR, Result.Outcome.TIMEOUT))
    elif show == "pending":
        qs = qs.filter(validation=Result.Validation.PENDING, outcome=Result.Outcome.SUCCESS)
    elif show == "invalid":
        qs = qs.filter(validation__in=(Result.Validation.INVALID, Result.Validation.INCONCLUSIVE))
    if seq is not None:
        qs = qs.filter(task__seq=seq)
    return (
        qs.select_related("task").defer("output", "task__input", "task__checkpoint").order_by("-id")
    )


@dataclass(frozen=True)
class ResultsPage:
    """One page of the results browser, newest first, and the cursors around it: `newer` is
    the id to pass as `after` for the page before, `older` the id to pass as `before` for the
    page after (None where there is none)."""

    rows: list[Result]
    newer: int | None
    older: int | None


def results_page(
    campaign: Campaign,
    show: str,
    seq: int | None,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = 50,
) -> ResultsPage:
    """A page of results_for_browser by keyset (ids below `before`, or above `after`): one
    query of size + 1 rows through the primary key, the same at any campaign size (no COUNT,
    no OFFSET). Whether there are newer rows than the page is known from the cursor it came
    with: a page reached through `before` has some; the first page has none."""
    qs = results_for_browser(campaign, show, seq)
    if after is not None:
        rows = list(qs.filter(pk__gt=after).order_by("id")[: size + 1])
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        more_older = True
    else:
        if before is not None:
            qs = qs.filter(pk__lt=before)
        rows = list(qs[: size + 1])
        more_older = len(rows) > size
        rows = rows[:size]
        more_newer = before is not None
    if not rows:
        return ResultsPage(rows=[], newer=None, older=None)
    return ResultsPage(
        rows=rows,
        newer=rows[0].pk if more_newer else None,
        older=rows[-1].pk if more_older else None,
    )


@dataclass(frozen=True)
class _Returned:
    """A returned successful replica, as the validation page compares it with its task's
    others (a campaigns.replicas.Volunteer)."""

    id: int
    task_id: int
    validation: int
    user_id: int | None
    session_id: int | None
    origin: str | None
    profile: str | None
    sha: str
    basis: int
    agreed_with: int | None


@dataclass(frozen=True)
class Reason:
    """Why a result has its validation (the owner's validation page): `text` the decision,
    `note` an outvote that did not count because the results behind it were not independent."""

    text: str
    note: str = ""


def _accepted_because(me: _Returned, min_quorum: int) -> str:
    Basis = Result.Basis
    if me.basis == Basis.QUORUM:
        n = (me.agreed_with or 0) + 1
        return (
            f"Accepted: a quorum of {n} independent volunteers agreed (distinct users,"
            f" networks and browser profiles; the campaign needs {min_quorum})."
        )
    if me.basis == Basis.TRUSTED:
        return (
            "Accepted alone: a volunteer trusted on this kernel, not drawn for a spot check"
            " this time (adaptive replication)."
        )
    if me.basis == Basis.SINGLE:
        return "Accepted as returned: a quorum of 1 compares it with nothing."
    if me.basis == Basis.VERIFIER:
        return "Accepted by the campaign's verifier."
    if me.basis == Basis.CANONICAL:
        return "Returned after the task was decided; it agrees with the canonical result."
    return "Accepted."


def _verdict(me: _Returned, campaign: Campaign, task: Task, canonical: _Returned | None) -> str:
    V = Result.Validation
    if me.validation == V.VALID:
        return _accepted_because(me, campaign.min_quorum)
    if me.validation == V.INVALID:
        if canonical is None:
            return "Rejected by the campaign's verifier."
        if canonical.basis == Result.Basis.QUORUM:
            n = (canonical.agreed_with or 0) + 1
            return (
                "Invalid: it disagrees with the canonical result, on which"
                f" {n} independent volunteers agreed."
            )
        if canonical.basis == Result.Basis.TRUSTED:
            return "Invalid: it disagrees with the canonical result, a trusted volunteer's."
        return "Invalid: it disagrees with the canonical result."
    if me.validation == V.INCONCLUSIVE:
        return (
            "Inconclusive: the task failed without a quorum of independent agreeing results"
            " (or after too many errors)."
        )
    if task.state == Task.State.DONE:
        return "Awaiting comparison with the canonical result."
    if campaign.state not in (State.RUNNING, State.PAUSED, State.DRAFT):
        return "Undecided: the campaign ended before a quorum decided it."
    return ""


def validation_reasons(campaign: Campaign, results: Iterable[Result]) -> dict[int, Reason]:
    """Why each of these results (of one campaign, a page of them) is valid, invalid or still
    pending: the basis stored when it was decided, and, where results that disagree with it
    outnumber it without being independent of each other (one person's many sockets, say),
    that they did not outvote it. One query: the returned successful replicas of the page's
    tasks (never the whole campaign)."""
    from campaigns.replicas import independent_set

    page = [r for r in results if r.outcome == Result.Outcome.SUCCESS]
    if not page:
        return {}
    rows = Result.objects.filter(
        task_id__in={r.task_id for r in page},
        state=Result.State.RETURNED,
        outcome=Result.Outcome.SUCCESS,
    ).values_list(
        "id",
        "task_id",
        "validation",
        "user_id",
        "session_id",
        "origin",
        "profile",
        "output_sha256",
        "basis",
        "agreed_with",
    )
    by_task: dict[int, list[_Returned]] = {}
    for row in rows:
        returned = _Returned(*row)
        by_task.setdefault(returned.task_id, []).append(returned)
    quorum = campaign.min_quorum
    out: dict[int, Reason] = {}
    for r in page:
        peers = by_task.get(r.task_id, [])
        me = next((p for p in peers if p.id == r.pk), None)
        if me is None:
            continue
        canonical = next((p for p in peers if p.id == r.task.canonical_result_id), None)
        text = _verdict(me, campaign, r.task, canonical)
        mine = [p for p in peers if p.sha == me.sha]
        support = len(independent_set(mine))
        if not text:
            text = (
                f"Awaiting a quorum: {support} of {quorum} independent volunteer(s) so far."
                if quorum > 1
                else "Awaiting validation."
            )
        note = ""
        # Classes by bytes: what the validator compares unless a verifier decides.
        if me.validation != Result.Validation.INVALID and campaign.verifier_id is None:
            classes: dict[str, list[_Returned]] = {}
            for p in peers:
                if p.sha != me.sha:
                    classes.setdefault(p.sha, []).append(p)
            for other in classes.values():
                behind = len(independent_set(other))
                if len(other) >= max(quorum, len(mine)) > 1 and behind < quorum:
                    note = (
                        f"Not outvoted: the {len(other)} results that disagree come from"
                        f" {behind} independent volunteer{'s' if behind != 1 else ''} (they"
                        " share a user, network, browser profile or session), which is no"
                        f" quorum of {quorum}."
                    )
                    break
        out[r.pk] = Reason(text, note)
    return out


PREVIEW_BYTES = 64


@dataclass(frozen=True)
class Preview:
    size: int
    text: str
    is_hex: bool
    truncated: bool


def preview_bytes(data: bytes | None, limit: int = PREVIEW_BYTES) -> Preview | None:
    """Printable UTF-8 as text, anything else as hex; cut to `limit` bytes."""
    if data is None:
        return None
    head = data[:limit]
    try:
        text = head.decode("utf-8")
        printable = all(ch.isprintable() or ch in "\n\r\t" for ch in text)
    except UnicodeDecodeError:
        # A multi-byte character cut at the limit is still text.
        try:
            text = head[:-3].decode("utf-8") if len(data) > limit else ""
            printable = bool(text) and all(ch.isprintable() or ch in "\n\r\t" for ch in text)
        except UnicodeDecodeError:
            printable = False
    if printable:
        return Preview(len(data), text, False, len(data) > limit)
    return Preview(len(data), head.hex(" "), True, len(data) > limit)


def output_previews(result_ids: list[int]) -> dict[int, Preview | None]:
    """Previews of these results' outputs; reads only the first PREVIEW_BYTES of each on
    PostgreSQL/SQLite via substr, so a page of 4 MiB outputs stays small."""
    rows = Result.objects.filter(pk__in=result_ids).annotate(
        head=Substr("output", 1, PREVIEW_BYTES + 1, output_field=BinaryField()),
        size=Length("output"),
    )
    out: dict[int, Preview | None] = {}
    for rid, head, size in rows.values_list("id", "head", "size"):
        if head is None:
            out[rid] = None
            continue
        preview = preview_bytes(bytes(cast(bytes, head)), PREVIEW_BYTES)
        assert preview is not None
        out[rid] = Preview(size or 0, preview.text, preview.is_hex, (size or 0) > PREVIEW_BYTES)
    return out


# --- demo pages -----------------------------------------------------------------------------


DEMO_KERNELS = ("primes", "montecarlo", "mandelbrot", "mandelbrot_deep")
#: Demos whose reference kernel also ships as a gpu kernel (kernels/gpu/<name>.wgsl): the GPU
#: and the CPU version of one campaign share a demo page.
GPU_DEMO_KERNELS = ("mandelbrot_deep",)


@cache
def _reference_hashes() -> dict[str, str]:
    """sha256 of the reference kernels shipped in kernels/build (and kernels/gpu), by demo name."""
    out = {}
    kernels = Path(settings.BASE_DIR) / "kernels"
    paths = [(name, kernels / "build" / f"{name}.wasm") for name in DEMO_KERNELS]
    paths += [(name, kernels / "gpu" / f"{name}.wgsl") for name in GPU_DEMO_KERNELS]
    for name, path in paths:
        if path.exists():
            out[hashlib.sha256(path.read_bytes()).hexdigest()] = name
    return out


def demo_kind(campaign: Campaign) -> str | None:
    """Which demo page fits a campaign: the reference kernel it runs (by hash, or failing that
    by the kernel's name), None for any other kernel."""
    kernel = campaign.kernel
    found = _reference_hashes().get(kernel.sha256)
    if found is None and kernel.name in DEMO_KERNELS:
        found = kernel.name
    return found


def demo_twin(actor: Actor, campaign: Campaign) -> Campaign | None:
    """The other version of a GPU demo campaign, for its page to show side by side: the newest
    campaign of the same organization running the same demo with the other kind of kernel (a
    gpu campaign's twin runs on CPUs, and the other way round) from the same generator
    arguments, that this actor may see. None for other demos, or when there is none."""
    kind = demo_kind(campaign)
    if kind not in GPU_DEMO_KERNELS:
        return None
    is_gpu = campaign.kernel.kind == Kernel.Kind.GPU
    candidates = (
        Campaign.objects.filter(
            organization_id=campaign.organization_id, generator_args=campaign.generator_args
        )
        .exclude(pk=campaign.pk)
        .filter(kernel__kind=Kernel.Kind.WASM if is_gpu else Kernel.Kind.GPU)
        .select_related("kernel", "organization")
        .order_by("-pk")
    )
    for twin in candidates[:5]:
        if demo_kind(twin) == kind and can_view_demo(actor, twin):
            return twin
    return None


FEED_PAGE = 500


#: The demo feed is public: it leaves out outputs above DEMO_OUTPUT_MAX_BYTES (no demo kernel
#: writes that much: a Mandelbrot tile is about 600 bytes, 10,000 numbers' primes about 10 KB)
#: and stops a page at FEED_PAGE_BYTES of outputs, so no request reads megabytes of results.
DEMO_OUTPUT_MAX_BYTES = 256 * 1024
FEED_PAGE_BYTES = 4 * 1024 * 1024
SIZE = Length("output")


#: A result is stamped (returned_at) just before the transaction that stores it commits, so
#: while a campaign takes results, one stamped earlier can become visible after one stamped
#: later (two sessions answering at once), and a feed cursor already past it would skip it for
#: good: demo pages missed results, and the primes count with them. Feeds of such a campaign
#: read only results stamped at least FEED_SETTLE ago, when their transactions have long
#: committed; once the campaign has finished, everything is settled and they read all.
FEED_SETTLE = timedelta(seconds=2)
SETTLED_STATES = (State.COMPLETED, State.CANCELLED, State.FAILED)


def feed_horizon(campaign: Campaign, now: datetime | None = None) -> datetime | None:
    """The newest returned_at a feed of `campaign` may read now (None: all of them). One
    request computes it once, so the results and counts it answers with agree."""
    if campaign.state in SETTLED_STATES:
        return None
    return (now or timezone.now()) - FEED_SETTLE


def _feed_results(campaign: Campaign, horizon: datetime | None = None) -> QuerySet[Result]:
    qs = (
        Result.objects.filter(
            campaign=campaign,
            state=Result.State.RETURNED,
            outcome=Result.Outcome.SUCCESS,
            returned_at__isnull=False,
        )
        .exclude(validation__in=(Result.Validation.INVALID, Result.Validation.INCONCLUSIVE))
        .alias(output_size=SIZE)
        .filter(output_size__lte=DEMO_OUTPUT_MAX_BYTES)
    )
    return qs if horizon is None else qs.filter(returned_at__lt=horizon)


FEED_COLUMNS = ("id", "returned_at", "task__seq", "task__input", "output")


def demo_feed(
    campaign: Campaign,
    cursor: str | None,
    limit: int = FEED_PAGE,
    tail: int | None = None,
    horizon: datetime | None = None,
) -> dict[str, Any]:
    """Successful results in the order they were returned, after `cursor` (keyset pagination on
    (returned_at, id), through the returned_at index). Invalid results are left out; with
    replication a task may appear more than once until it is validated (pages dedupe by
    task). Without a cursor, `tail` asks for only the latest `tail` results (pages that show
    the newest results and need not catch up with all of them). Returns the results, the next
    cursor and the campaign's counters. Only results stamped before `horizon` (feed_horizon)
    when given. Two queries: the ids and sizes of the next rows, then the contents of as many
    as fit in FEED_PAGE_BYTES."""
    qs = _feed_results(campaign, horizon)
    newest_first = not cursor and tail is not None
    if newest_first:
        assert tail is not None
        heads = list(qs.order_by("-returned_at", "-id").values_list("id", SIZE)[:tail])
    else:
        heads = list(
            _after(qs, cursor).order_by("returned_at", "id").values_list("id", SIZE)[:limit]
        )
    taken: list[int] = []
    budget = FEED_PAGE_BYTES
    for rid, size in heads:
        if taken and (size or 0) > budget:
            break
        taken.append(rid)
        budget -= size or 0
    by_id = {row[0]: row for row in Result.objects.filter(pk__in=taken).values_list(*FEED_COLUMNS)}
    rows = [by_id[rid] for rid in taken if rid in by_id]
    if newest_first:
        # Oldest of the newest first, so the cursor is the newest row.
        return _feed_response(campaign, cursor, rows[::-1], more=False)
    return _feed_response(
        campaign, cursor, rows, more=len(taken) < len(heads) or len(heads) == limit
    )


def _feed_response(
    campaign: Campaign, cursor: str | None, rows: list[Any], *, more: bool
) -> dict[str, Any]:
    results = [
        {
            "seq": seq,
            "input": base64.b64encode(bytes(task_input)).decode(),
            "output": base64.b64encode(bytes(output or b"")).decode(),
        }
        for _, _, seq, task_input, output in rows
    ]
    next_cursor = cursor
    if rows:
        next_cursor = _cursor_of(rows[-1][1], rows[-1][0])
    return {
        "results": results,
        "cursor": next_cursor,
        "more": more,
        "campaign": {
            "id": campaign.pk,
            "state": campaign.state,
            "tasks_total": campaign.tasks_total,
            "tasks_done": campaign.tasks_done,
            "tasks_failed": campaign.tasks_failed,
            "reduced": reduced_preview(campaign.pk) if campaign.reducer_id else None,
            "reduced_at": campaign.reduced_at.isoformat() if campaign.reduced_at else None,
            "reducing": final_reduction_pending(campaign),
            "t": time.time(),
        },
    }


def final_reduction_pending(campaign: Campaign) -> bool:
    """A completed campaign whose reducer has not yet written the final output (nor failed)."""
    if not campaign.reducer_id or campaign.state != State.COMPLETED:
        return False
    if campaign.error.startswith("The reducer failed"):
        return False
    return campaign.reduced_at is None or (
        campaign.finished_at is not None and campaign.reduced_at < campaign.finished_at
    )


CURSOR_TIME = "%Y%m%dT%H%M%S.%f"


def _cursor_of(returned_at: datetime | None, result_id: int) -> str:
    assert returned_at is not None  # feeds filter on returned_at__isnull=False
    return f"{returned_at.astimezone(UTC).strftime(CURSOR_TIME)}_{result_id}"


def _after(qs: QuerySet[Result], cursor: str | None) -> QuerySet[Result]:
    """The rows after `cursor` in (returned_at, id) order. Written with ranges only: on SQLite
    the scheduler's raw SQL stores timestamps with a "+00:00" suffix and the ORM without, so an
    equality between the two spellings of one instant fails while ranges still order right."""
    after = _parse_cursor(cursor)
    if after is None:
        return qs
    at, rid = after
    at_next = at + timedelta(microseconds=1)
    return qs.filter(
        Q(returned_at__gte=at_next) | Q(returned_at__gte=at, returned_at__lt=at_next, id__gt=rid)
    )


def _parse_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    """(returned_at, id) from "20261122T160000.123456_42" (exact: no float round trip)."""
    if not cursor:
        return None
    try:
        stamp, rid = cursor.split("_", 1)
        return datetime.strptime(stamp, CURSOR_TIME).replace(tzinfo=UTC), int(rid)
    except ValueError:
        return None


def primes_found(campaign: Campaign, horizon: datetime | None = None) -> int:
    """How many primes a primes campaign has found (in its results stamped before `horizon`,
    see feed_horizon): the lines of its results, counted incrementally (a per-process cache
    keeps the count and the feed cursor it reached), so a demo page's poll reads only the
    results returned since the previous one."""
    from django.core.cache import cache

    started = campaign.started_at.timestamp() if campaign.started_at else 0
    key = f"ccgsc:primes-found:{campaign.pk}:{started}"
    count, cursor = cache.get(key, (0, None))
    while True:
        # Small chunks: at most 200 outputs of DEMO_OUTPUT_MAX_BYTES in memory at once.
        rows = list(
            _after(_feed_results(campaign, horizon), cursor)
            .order_by("returned_at", "id")
            .values_list("id", "returned_at", "output")[:200]
        )
        for _, _, output in rows:
            count += bytes(output or b"").count(b"\n")
        if rows:
            cursor = _cursor_of(rows[-1][1], rows[-1][0])
        if len(rows) < 200:
            break
    cache.set(key, (count, cursor), timeout=3600)
    return count


def campaign_stalled(campaign: Campaign) -> str:
    """Why a running campaign cannot progress, or "": its quorum needs more distinct volunteers
    than are connected and allowed to run it (replicas of one task never go to one volunteer).
    Costs a query only for running campaigns with a quorum above one."""
    if (
        campaign.state != Campaign.State.RUNNING
        or campaign.min_quorum <= 1
        or campaign.tasks_remaining == 0
    ):
        return ""
    answers = signals.count_volunteers.send(Campaign, campaign=campaign)
    counts: list[int] = []
    for _, answer in answers:
        if isinstance(answer, int):
            counts.append(answer)
    if not counts or max(counts) >= campaign.min_quorum:
        return ""
    n = max(counts)
    trial = (
        ""
        if settings.CCGSC["ORIGIN_IGNORES_LOOPBACK"]
        else "; for a trial on one machine, ORIGIN_IGNORES_LOOPBACK=true (make run sets it) "
        "counts this machine's workers apart"
    )
    return (
        f"each task needs {campaign.min_quorum} agreeing results from distinct volunteers, "
        f"and {n} connected volunteer{'' if n == 1 else 's'} can run it (volunteers are "
        "independent when they differ in account and network: workers on one network count "
        f"once). Start more workers on other networks, or lower the quorum{trial}."
    )
