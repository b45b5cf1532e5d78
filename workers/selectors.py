"""Reads about worker sessions for the owners' campaign page (campaigns/ cannot import
workers/, so the page's session data is served from here: workers.owner_views).

Which sessions work on a campaign is known from its Result rows: the replicas they hold now
(state LEASED, bounded by the pool's slots) and the results they returned recently (a range of
the returned_at index). Neither query grows with the campaign's size.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import EmbedSite
from campaigns.models import Campaign, Result
from workers.models import WorkerSession

RECENT_SECONDS = 60
POOL_WINDOW = timedelta(hours=1)


def _who(session: WorkerSession, campaign: Campaign, own_sites: dict[int, str]) -> str:
    """Who runs the session, as far as the campaign's owners may know: never a volunteer's
    identity, only their organization's own workers and sites by name."""
    if session.organization_id == campaign.organization_id:
        return "your organization"
    if not campaign.approved and session.user_id is not None and session.site_id is None:
        return "a member's browser"  # only members' browsers get unapproved campaigns
    if session.site_id is not None:
        return own_sites.get(session.site_id, "embedded site")
    if session.user_id is not None:
        return "signed-in volunteer"
    return "anonymous volunteer"


def campaign_sessions(
    campaign: Campaign, *, recent_seconds: int = RECENT_SECONDS
) -> dict[str, Any]:
    """The sessions holding this campaign's tasks now or that returned results for it in the
    last `recent_seconds`, with their metrics, and the campaign's value / non-value split over
    them (a value session returned at least one successful result)."""
    since = timezone.now() - timedelta(seconds=recent_seconds)
    holding = dict(
        Result.objects.filter(campaign=campaign, state=Result.State.LEASED)
        .values_list("session_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    recent: dict[int | None, dict[str, Any]] = {
        row["session_id"]: dict(row)
        for row in Result.objects.filter(
            campaign=campaign, returned_at__gte=since, session_id__isnull=False
        )
        .values("session_id")
        .annotate(
            ok=Count("id", filter=Q(outcome=Result.Outcome.SUCCESS)),
            failed=Count("id", filter=~Q(outcome=Result.Outcome.SUCCESS)),
            ms=Avg("runtime_ms"),
        )
        .order_by()
    }
    ids: set[int] = {int(sid) for sid in (*holding, *recent) if sid is not None}
    sessions = list(WorkerSession.objects.filter(pk__in=ids).order_by("connected_at"))
    own_sites = dict(
        EmbedSite.objects.filter(organization_id=campaign.organization_id).values_list("pk", "name")
    )
    now = timezone.now()
    rows = []
    for s in sessions:
        r = recent.get(s.pk, {})
        worked = s.busy_ms + s.idle_ms
        rows.append(
            {
                "id": s.pk,
                "kind": s.kind,
                "transport": s.transport,
                "who": _who(s, campaign, own_sites),
                "slots": s.slots,
                "in_flight": holding.get(s.pk, 0),
                "recent_ok": r.get("ok", 0),
                "recent_failed": r.get("failed", 0),
                "recent_avg_ms": round(r["ms"]) if r.get("ms") is not None else None,
                "tasks_done": s.tasks_done,
                "tasks_failed": s.tasks_failed,
                "avg_task_ms": round(s.avg_task_ms) if s.avg_task_ms is not None else None,
                "idle_share": round(s.idle_ms / worked, 3) if worked else None,
                "connected_s": int((now - s.connected_at).total_seconds()),
                "connected": s.disconnected_at is None,
            }
        )
    value = sum(1 for row in rows if row["recent_ok"] > 0)
    return {
        "window_s": recent_seconds,
        "sessions": rows,
        "value": value,
        "non_value": len(rows) - value,
    }


def pool_metrics(*, window: timedelta = POOL_WINDOW) -> dict[str, Any]:
    """Panther's session metrics over the whole pool for sessions seen in `window`: value
    sessions (completed at least one task) and non-value sessions, and the downtime: time
    sessions had free slots and nothing to run (idle_ms), also as a share of busy + idle time.
    One aggregate query over the sessions table."""
    since = timezone.now() - window
    agg = WorkerSession.objects.filter(last_seen_at__gte=since).aggregate(
        total=Count("id"),
        value=Count("id", filter=Q(tasks_done__gt=0)),
        connected=Count("id", filter=Q(disconnected_at__isnull=True)),
        browser=Count("id", filter=Q(kind=WorkerSession.Kind.BROWSER)),
        native=Count("id", filter=Q(kind=WorkerSession.Kind.NATIVE)),
        busy_ms=Sum("busy_ms"),
        idle_ms=Sum("idle_ms"),
    )
    busy, idle = agg["busy_ms"] or 0, agg["idle_ms"] or 0
    return {
        "window_s": int(window.total_seconds()),
        "sessions": agg["total"],
        "connected": agg["connected"],
        "browser": agg["browser"],
        "native": agg["native"],
        "value": agg["value"],
        "non_value": agg["total"] - agg["value"],
        "busy_s": round(busy / 1000, 1),
        "downtime_s": round(idle / 1000, 1),
        "downtime_share": round(idle / (busy + idle), 3) if busy + idle else None,
    }


def count_volunteers(sender: Any, campaign: Campaign, **kwargs: Any) -> int:
    """campaigns.signals.count_volunteers: independent volunteers connected now who may run the
    campaign, as the scheduler keeps replicas apart (workers.identity): a signed-in user once
    however many tabs, an anonymous session by itself, and sessions sharing a network origin
    once (an unknown origin, NULL, shares nothing). The smaller of the two counts bounds the
    distinct replicas a task can get now (sessions sharing a browser profile are rarer and not
    counted apart). An unapproved campaign only counts its organization's workers and members.
    One query on the connected-sessions index."""
    sessions = _connected_for(campaign.pk, campaign.approved, campaign.organization_id)
    counted = sessions.aggregate(
        users=Count("user_id", distinct=True),
        anonymous=Count("id", filter=Q(user_id__isnull=True), distinct=True),
        origins=Count("origin", distinct=True),
        unknown_origin=Count("id", filter=Q(origin__isnull=True), distinct=True),
    )
    by_account = int(counted["users"]) + int(counted["anonymous"])
    by_network = int(counted["origins"]) + int(counted["unknown_origin"])
    return min(by_account, by_network)


def _connected_for(
    campaign_id: int, approved: bool, organization_id: int
) -> QuerySet[WorkerSession]:
    """Connected sessions allowed to run a campaign: not pinned to another campaign, and for an
    unapproved campaign its organization's workers and members' browsers (scheduler.eligible;
    capabilities such as JavaScript or a GPU adapter are not stored, so not checked here)."""
    sessions = WorkerSession.objects.filter(disconnected_at__isnull=True).filter(
        Q(only_campaign_id__isnull=True) | Q(only_campaign_id=campaign_id)
    )
    if not approved:
        sessions = sessions.filter(
            Q(organization_id=organization_id)
            | Q(user__memberships__organization_id=organization_id)
        )
    return sessions


def others_may_run(session_id: int, campaign_id: int) -> bool:
    """Whether a session other than this one is connected now and allowed to run the campaign:
    where its failed tasks' retries could go if this session were benched from it
    (workers/connection.py). One query, at most once per streak of failures."""
    from workers.scheduler import campaign_info

    info = campaign_info(campaign_id)
    if info is None:
        return False
    return (
        _connected_for(campaign_id, info.approved, info.organization_id)
        .exclude(pk=session_id)
        .exists()
    )
