"""The extension points: the one registry through which an app extends another app's code.

Dependencies point one way (accounts <- campaigns <- workers <- rewards, operations), so where
code below needs what an app above does — the scheduler paying points, the sweeper running
rewards' safety net, the sites page showing what visitors contributed — the app above
registers a function here in its AppConfig.ready, and the code below calls the point by name.
Search for a point's name to find both its call site and what is registered on it:

- `pay_points`: called by workers.scheduler.submit_results in the results transaction with
  the results validated as they arrived (campaigns without a quorum or a verifier);
  rewards.hooks.pay_inline grants their points (the ledger).
- `validated`: the same place, after pay_points; operations.hooks.count_inline (/metrics).
- `decide_returned`: submit_results, the tasks' rows locked, with successful results of
  campaigns that need a quorum or a verifier; returns the tasks decided, as (done, failed)
  counts per campaign. rewards.validation.on_returned decides by quorum (and pays the valid
  results) or hands the tasks to a verifier job.
- `record_failed`: submit_results and scheduler.reclaim_expired, after failed attempts
  (errors, timeouts, expired leases); rewards.validation.on_failed resets trust runs.
- `lease_gates`: scheduler.lease, before anything is leased, all must answer True;
  rewards.trust.may_lease gives refused users no work.
- `periodic`: workers.sweeper, after each sweep of the deployment's one sweeper, on its
  database thread; rewards.validation.catch_up every 180 s (rewards/apps.py).
- `site_annotators`: accounts.selectors.organization_sites_with_activity;
  rewards.selectors.with_site_activity.

Every hook runs inside its caller's transaction (the results batch, the sweep) and must stay
set-based: a fixed number of statements per batch, whatever its size. Registering is
idempotent (AppConfig.ready may run twice). Tests: the autouse `hooks` fixture in
tests/conftest.py restores the registry after each test, so a test may clear a point freely.

Plain Python, no Django import: the types named under TYPE_CHECKING are only annotations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, NamedTuple, TypeVar

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from accounts.models import EmbedSite
    from workers.scheduler import SessionInfo


class ResultRow(NamedTuple):
    """A successful result the scheduler just recorded, as pay_points, validated and
    decide_returned receive it."""

    result: int
    task: int
    campaign: int
    user: int | None
    site: int | None


class FailedRow(NamedTuple):
    """A failed attempt (error, timeout, expired lease) the scheduler just recorded."""

    result: int
    task: int
    campaign: int
    user: int | None


class PeriodicJob(NamedTuple):
    """Slower maintenance the sweeper runs every `period` seconds (at the first sweep after)."""

    period: float
    job: Callable[[], object]


ResultsHook = Callable[[list[ResultRow]], None]
# Returns the tasks it decided as (done, failed) counts per campaign, or None for none.
DecideHook = Callable[[list[ResultRow]], "tuple[Counter[int], Counter[int]] | None"]
FailedHook = Callable[[list[FailedRow]], None]
LeaseGate = Callable[["SessionInfo"], bool]
SiteAnnotator = Callable[["QuerySet[EmbedSite]"], "QuerySet[EmbedSite]"]

T = TypeVar("T")


@dataclass
class Registry:
    """What is registered on each point (the table above). Read by the callers below."""

    pay_points: list[ResultsHook] = field(default_factory=list)
    validated: list[ResultsHook] = field(default_factory=list)
    decide_returned: list[DecideHook] = field(default_factory=list)
    record_failed: list[FailedHook] = field(default_factory=list)
    lease_gates: list[LeaseGate] = field(default_factory=list)
    periodic: list[PeriodicJob] = field(default_factory=list)
    site_annotators: list[SiteAnnotator] = field(default_factory=list)

    def copy(self) -> Registry:
        return Registry(**{f.name: list(getattr(self, f.name)) for f in fields(self)})

    def restore(self, saved: Registry) -> None:
        """Put back what `saved` (a copy()) held, in place: callers keep their references."""
        for f in fields(self):
            getattr(self, f.name)[:] = getattr(saved, f.name)


registry = Registry()


def register(point: list[T], entry: T) -> None:
    """Add `entry` to a point of the registry (`register(registry.pay_points, fn)`), once."""
    if entry not in point:
        point.append(entry)


# --- the calls, named after what they do ----------------------------------------------------


def pay_points(rows: list[ResultRow]) -> None:
    """Results validated as they arrived earn their points (rewards' ledger), in the caller's
    transaction."""
    for hook in registry.pay_points:
        hook(rows)


def validated(rows: list[ResultRow]) -> None:
    """Observers of results validated as they arrived (metrics)."""
    for hook in registry.validated:
        hook(rows)


def decide_returned(rows: list[ResultRow]) -> tuple[Counter[int], Counter[int]]:
    """Results that need a quorum or a verifier are decided (and the valid ones paid) or handed
    to a job; returns the tasks decided now as (done, failed) counts per campaign."""
    done: Counter[int] = Counter()
    failed: Counter[int] = Counter()
    for hook in registry.decide_returned:
        decided = hook(rows)
        if decided:
            done.update(decided[0])
            failed.update(decided[1])
    return done, failed


def record_failed(rows: list[FailedRow]) -> None:
    """Failed attempts were recorded: their users' trust runs reset."""
    for hook in registry.record_failed:
        hook(rows)


def may_lease(session: SessionInfo) -> bool:
    """Whether every lease gate lets this session have work."""
    return all(gate(session) for gate in registry.lease_gates)


def annotate_sites(sites: QuerySet[EmbedSite]) -> QuerySet[EmbedSite]:
    """The sites query with what every registered annotator adds (as subqueries)."""
    for annotate in registry.site_annotators:
        sites = annotate(sites)
    return sites
