"""Reads for the rewards pages: leaderboards, profiles, teams, owners' validation view.

Leaderboards read the totals (rewards.models.Total), never aggregate the ledger. A contributor
who opted out of public listing (User.public_profile = False) appears on no public page: not on
the user leaderboard, not in a team's member list, and their profile answers 404 to others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import BigIntegerField, Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import EmbedSite, User
from accounts.tenancy import Actor
from campaigns.models import Campaign, Result, Task
from rewards.models import LedgerEntry, Reliability, Team, TeamMembership, Total
from workers.models import WorkerSession

Scope = Total.Scope
V = Result.Validation


def public_users() -> QuerySet[User]:
    return User.objects.filter(public_profile=True, is_active=True)


def display_name(user: User) -> str:
    """What the public sees: the display name, or a neutral handle (never the email)."""
    return user.display_name or f"contributor {user.pk}"


# --- leaderboards -------------------------------------------------------------------------------


@dataclass
class Row:
    rank: int
    key: int
    name: str
    points: int
    results: int
    url: str = ""
    extra: str = ""


def _ranked(totals: QuerySet[Total], offset: int, limit: int) -> list[Total]:
    return list(totals.order_by("-points", "key")[offset : offset + limit])


def user_board(offset: int = 0, limit: int = 50) -> tuple[list[Row], int]:
    totals = Total.objects.filter(scope=Scope.USER, key__in=public_users().values("pk"))
    page = _ranked(totals, offset, limit)
    users = User.objects.in_bulk([t.key for t in page])
    teams = dict(
        TeamMembership.objects.filter(user_id__in=[t.key for t in page]).values_list(
            "user_id", "team__name"
        )
    )
    rows = []
    for i, t in enumerate(page):
        user = users.get(t.key)
        if user is None:
            continue
        rows.append(
            Row(
                rank=offset + i + 1,
                key=t.key,
                name=display_name(user),
                points=t.points,
                results=t.results,
                url=f"/users/{t.key}/",
                extra=teams.get(t.key, ""),
            )
        )
    return rows, totals.count()


def team_board(offset: int = 0, limit: int = 50) -> tuple[list[Row], int]:
    totals = Total.objects.filter(
        scope=Scope.TEAM, key__in=Team.objects.filter(listed=True).values("pk")
    )
    page = _ranked(totals, offset, limit)
    teams = Team.objects.in_bulk([t.key for t in page])
    members = dict(
        TeamMembership.objects.filter(team_id__in=[t.key for t in page])
        .values("team_id")
        .annotate(n=Count("pk"))
        .values_list("team_id", "n")
    )
    rows = [
        Row(
            rank=offset + i + 1,
            key=t.key,
            name=teams[t.key].name,
            points=t.points,
            results=t.results,
            url=teams[t.key].get_absolute_url(),
            extra=f"{members.get(t.key, 0)} member{'s' if members.get(t.key, 0) != 1 else ''}",
        )
        for i, t in enumerate(page)
        if t.key in teams
    ]
    return rows, totals.count()


def site_board(offset: int = 0, limit: int = 50) -> tuple[list[Row], int]:
    """Sites whose visitors contributed. The origin is public (the script tag is on it)."""
    totals = Total.objects.filter(scope=Scope.SITE, key__in=EmbedSite.objects.values("pk"))
    page = _ranked(totals, offset, limit)
    sites = EmbedSite.objects.select_related("organization").in_bulk([t.key for t in page])
    rows = [
        Row(
            rank=offset + i + 1,
            key=t.key,
            name=sites[t.key].name,
            points=t.points,
            results=t.results,
            extra=sites[t.key].origin,
        )
        for i, t in enumerate(page)
        if t.key in sites
    ]
    return rows, totals.count()


def user_rank(user: User) -> int | None:
    """1-based rank among public contributors (ties share the better rank); None without
    points."""
    mine = Total.objects.filter(scope=Scope.USER, key=user.pk).first()
    if mine is None:
        return None
    ahead = Total.objects.filter(
        scope=Scope.USER, key__in=public_users().values("pk"), points__gt=mine.points
    ).count()
    return ahead + 1


# --- profiles -----------------------------------------------------------------------------------


@dataclass
class Profile:
    user: User
    name: str
    points: int
    results: int
    rank: int | None
    team: Team | None
    by_campaign: list[dict[str, Any]]
    daily: list[tuple[date, int]]
    recent: Sequence[LedgerEntry]  # each annotated with campaign_visible
    reliability: Reliability | None
    history_page: int = 1  # the page of `recent` (HISTORY_PAGE entries each)
    history_has_next: bool = False


HISTORY_PAGE = 20


def profile(user: User, *, viewer: Actor, days: int = 30, history_page: int = 1) -> Profile:
    """`user`'s public profile as `viewer` may see it: campaigns are named only where the
    viewer may see them (public ones, and the viewer's own organizations'); points earned on
    the others count in the totals but the campaigns stay unnamed."""
    total = Total.objects.filter(scope=Scope.USER, key=user.pk).first()
    membership = TeamMembership.objects.select_related("team").filter(user=user).first()
    visible = Campaign.objects.visible_to(viewer).values("pk")
    by_campaign = [
        dict(row)
        for row in LedgerEntry.objects.filter(user=user, campaign__in=visible)
        .values("campaign_id", "campaign__name", "campaign__organization__name")
        .annotate(points=Sum("points"), results=Count("pk", filter=Q(kind="result")))
        .order_by("-points")[:20]
    ]
    start = (timezone.now() - timedelta(days=days - 1)).date()
    per_day = dict(
        LedgerEntry.objects.filter(
            user=user, created_at__gte=datetime.combine(start, time.min, tzinfo=UTC)
        )
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(points=Sum("points"))
        .values_list("day", "points")
    )
    daily = [
        (start + timedelta(days=i), int(per_day.get(start + timedelta(days=i), 0) or 0))
        for i in range(days)
    ]
    recent = list(
        LedgerEntry.objects.filter(user=user)
        .select_related("campaign")
        # The template names a campaign only where campaign_visible is true.
        .annotate(campaign_visible=Exists(visible.filter(pk=OuterRef("campaign_id"))))
        # One entry past the page tells whether there is a next one.
        .order_by("-created_at", "-pk")[
            (history_page - 1) * HISTORY_PAGE : history_page * HISTORY_PAGE + 1
        ]
    )
    has_next = len(recent) > HISTORY_PAGE
    recent = recent[:HISTORY_PAGE]
    return Profile(
        user=user,
        name=display_name(user),
        points=total.points if total else 0,
        results=total.results if total else 0,
        rank=user_rank(user) if user.public_profile else None,
        team=membership.team if membership else None,
        by_campaign=by_campaign,
        daily=daily,
        recent=recent,
        reliability=Reliability.objects.filter(user=user).first(),
        history_page=history_page,
        history_has_next=has_next,
    )


def team_page(team: Team) -> dict[str, Any]:
    total = Total.objects.filter(scope=Scope.TEAM, key=team.pk).first()
    memberships = list(
        TeamMembership.objects.filter(team=team).select_related("user").order_by("joined_at")
    )
    public = [m for m in memberships if m.user.public_profile and m.user.is_active]
    points = dict(
        Total.objects.filter(scope=Scope.USER, key__in=[m.user_id for m in public]).values_list(
            "key", "points"
        )
    )
    members: list[dict[str, Any]] = sorted(
        (
            {
                "user": m.user,
                "name": display_name(m.user),
                "points": points.get(m.user_id, 0),
                "joined_at": m.joined_at,
            }
            for m in public
        ),
        key=lambda x: (-x["points"], x["joined_at"]),
    )
    return {
        "points": total.points if total else 0,
        "results": total.results if total else 0,
        "members": members,
        "member_count": len(memberships),
        "private_members": len(memberships) - len(public),
    }


def teams(query: str = "") -> QuerySet[Team]:
    qs = Team.objects.filter(listed=True)
    if query:
        qs = qs.filter(name__icontains=query)
    return qs.annotate(member_count=Count("memberships")).order_by("name")


def team_points(team_ids: list[int]) -> dict[int, int]:
    return dict(
        Total.objects.filter(scope=Scope.TEAM, key__in=team_ids).values_list("key", "points")
    )


# --- owners' validation view --------------------------------------------------------------------


def campaign_summary(campaign: Campaign) -> dict[str, int]:
    """Tasks by validation state and results by validation, for one campaign."""
    tasks = dict(
        Task.objects.filter(campaign=campaign)
        .values("state")
        .annotate(n=Count("pk"))
        .values_list("state", "n")
    )
    failed = Task.objects.filter(campaign=campaign, state=Task.State.FAILED)
    inconclusive = failed.filter(failure__startswith="inconclusive").count()
    verifier_failed = failed.filter(failure__startswith="verifier failed").count()
    waiting = (
        Result.objects.filter(
            campaign=campaign,
            state=Result.State.RETURNED,
            outcome=Result.Outcome.SUCCESS,
            validation=V.PENDING,
        )
        .values("task_id")
        .distinct()
        .count()
    )
    results = Result.objects.filter(campaign=campaign).aggregate(
        returned=Count("pk", filter=Q(state=Result.State.RETURNED, outcome=Result.Outcome.SUCCESS)),
        valid=Count("pk", filter=Q(validation=V.VALID)),
        invalid=Count("pk", filter=Q(validation=V.INVALID)),
        pending=Count(
            "pk",
            filter=Q(
                validation=V.PENDING,
                state=Result.State.RETURNED,
                outcome=Result.Outcome.SUCCESS,
            ),
        ),
        inconclusive=Count("pk", filter=Q(validation=V.INCONCLUSIVE)),
        errors=Count("pk", filter=Q(outcome__in=(Result.Outcome.ERROR, Result.Outcome.TIMEOUT))),
        in_flight=Count("pk", filter=Q(state__in=(Result.State.UNSENT, Result.State.LEASED))),
    )
    checked = results["valid"] + results["invalid"]
    granted = Total.objects.filter(scope=Scope.CAMPAIGN, key=campaign.pk).first()
    return {
        "points": granted.points if granted else 0,
        "tasks_total": sum(tasks.values()),
        "tasks_valid": tasks.get(Task.State.DONE, 0),
        "tasks_pending": tasks.get(Task.State.PENDING, 0),
        "tasks_waiting": waiting,
        "tasks_inconclusive": inconclusive,
        "tasks_verifier_failed": verifier_failed,
        "tasks_failed_errors": tasks.get(Task.State.FAILED, 0) - inconclusive - verifier_failed,
        **results,
        "invalid_rate_pct": round(100 * results["invalid"] / checked, 1) if checked else 0,
    }


def organization_summaries(campaigns: QuerySet[Campaign]) -> list[dict[str, Any]]:
    """One line per campaign: policy, tasks decided, results valid and invalid."""
    rows = list(campaigns.order_by("-created_at")[:200])
    stats = {
        row["campaign_id"]: row
        for row in Result.objects.filter(campaign__in=rows)
        .values("campaign_id")
        .annotate(
            valid=Count("pk", filter=Q(validation=V.VALID)),
            invalid=Count("pk", filter=Q(validation=V.INVALID)),
            inconclusive=Count("pk", filter=Q(validation=V.INCONCLUSIVE)),
            pending=Count(
                "pk",
                filter=Q(
                    validation=V.PENDING,
                    state=Result.State.RETURNED,
                    outcome=Result.Outcome.SUCCESS,
                ),
            ),
        )
        .order_by()
    }
    out = []
    for c in rows:
        s = stats.get(c.pk, {"valid": 0, "invalid": 0, "inconclusive": 0, "pending": 0})
        checked = s["valid"] + s["invalid"]
        out.append(
            {
                "campaign": c,
                **s,
                "invalid_rate_pct": round(100 * s["invalid"] / checked, 1) if checked else 0,
            }
        )
    return out


@dataclass
class Contributor:
    label: str
    kind: str  # "user" or "session"
    returned: int
    valid: int
    invalid: int
    pending: int
    errors: int

    @property
    def invalid_rate_pct(self) -> float:
        checked = self.valid + self.invalid
        return round(100 * self.invalid / checked, 1) if checked else 0.0


def _counted(results: QuerySet[Result], field: str) -> list[dict[str, Any]]:
    rows: QuerySet[Any] = results.values(field).annotate(
        returned=Count("pk", filter=Q(outcome=Result.Outcome.SUCCESS)),
        valid=Count("pk", filter=Q(validation=V.VALID)),
        invalid=Count("pk", filter=Q(validation=V.INVALID)),
        pending=Count("pk", filter=Q(validation=V.PENDING, outcome=Result.Outcome.SUCCESS)),
        errors=Count("pk", filter=Q(outcome__in=(Result.Outcome.ERROR, Result.Outcome.TIMEOUT))),
    )
    return list(rows.order_by("-invalid", field))


def contributors(campaign: Campaign, limit: int = 50) -> list[Contributor]:
    """Per signed-in user and per anonymous session: results returned, valid, invalid,
    errors; worst invalid rate first."""
    base = Result.objects.filter(
        campaign=campaign, state__in=(Result.State.RETURNED, Result.State.TIMED_OUT)
    )
    fields = ("returned", "valid", "invalid", "pending", "errors")
    by_user = _counted(base.filter(user__isnull=False), "user_id")[:limit]
    users = User.objects.in_bulk([row["user_id"] for row in by_user])
    out = [
        Contributor(
            label=display_name(users[row["user_id"]])
            if row["user_id"] in users
            else "deleted user",
            kind="user",
            **{k: row[k] for k in fields},
        )
        for row in by_user
    ]
    by_session = _counted(base.filter(user__isnull=True, session_id__isnull=False), "session_id")
    by_session = by_session[:limit]
    kinds = dict(
        WorkerSession.objects.filter(pk__in=[row["session_id"] for row in by_session]).values_list(
            "pk", "kind"
        )
    )
    out += [
        Contributor(
            label=f"anonymous {kinds.get(row['session_id'], 'worker')} session {row['session_id']}",
            kind="session",
            **{k: row[k] for k in fields},
        )
        for row in by_session
    ]
    out.sort(key=lambda c: (-c.invalid_rate_pct, -c.invalid, -c.returned))
    return out[:limit]


TASK_FILTERS = {
    "all": Q(),
    "valid": Q(state=Task.State.DONE),
    "pending": Q(state=Task.State.PENDING),
    "inconclusive": Q(state=Task.State.FAILED, failure__startswith="inconclusive"),
    "failed": Q(state=Task.State.FAILED),
}


def tasks(campaign: Campaign, status: str) -> QuerySet[Task]:
    """Tasks of a campaign with their replicas counted by validation state."""
    return (
        Task.objects.filter(campaign=campaign)
        .filter(TASK_FILTERS.get(status, Q()))
        .annotate(
            replicas=Count("results"),
            n_valid=Count("results", filter=Q(results__validation=V.VALID)),
            n_invalid=Count("results", filter=Q(results__validation=V.INVALID)),
            n_waiting=Count(
                "results",
                filter=Q(
                    results__validation=V.PENDING,
                    results__state=Result.State.RETURNED,
                    results__outcome=Result.Outcome.SUCCESS,
                ),
            ),
            n_errors=Count(
                "results",
                filter=Q(results__outcome__in=(Result.Outcome.ERROR, Result.Outcome.TIMEOUT)),
            ),
        )
        .only("pk", "seq", "state", "failure", "canonical_result_id", "campaign_id")
        .order_by("seq")
    )


def site_contributions(organization_id: int) -> list[dict[str, Any]]:
    """What visitors of an organization's embed sites contributed (validated results)."""
    sites = list(EmbedSite.objects.filter(organization_id=organization_id).order_by("name", "pk"))
    totals = {
        t.key: t for t in Total.objects.filter(scope=Scope.SITE, key__in=[s.pk for s in sites])
    }
    return [
        {
            "site": site,
            "points": totals[site.pk].points if site.pk in totals else 0,
            "results": totals[site.pk].results if site.pk in totals else 0,
        }
        for site in sites
    ]


def with_site_activity(sites: QuerySet[EmbedSite]) -> QuerySet[EmbedSite]:
    """Embed sites annotated with what their visitors contributed, for the organization's sites
    page (registered on ccgsc.hooks' site_annotators point):

    - `contributed_results`, `contributed_points`: validated results and the points they
      earned, from the site's total (the site leaderboard's figures);
    - `last_contribution_at`: when the site's total last grew (None before any points);
    - `computing_now`: the site's visitors' worker sessions connected now.

    All are correlated subqueries of the sites query, so a page of sites costs one query: the
    totals are read through their unique (scope, key) index and the sessions through the
    partial index of connected sessions (sessions that ever connected carry no site index, so
    their count is not offered)."""
    total = Total.objects.filter(scope=Scope.SITE, key=OuterRef("pk"))
    connected = (
        WorkerSession.objects.filter(site_id=OuterRef("pk"), disconnected_at__isnull=True)
        .order_by()
        .values("site_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    big = BigIntegerField()
    return sites.annotate(
        contributed_results=Coalesce(Subquery(total.values("results")[:1]), 0, output_field=big),
        contributed_points=Coalesce(Subquery(total.values("points")[:1]), 0, output_field=big),
        last_contribution_at=Subquery(total.values("updated_at")[:1]),
        computing_now=Coalesce(Subquery(connected), 0, output_field=big),
    )
