"""The points ledger: granting points for validated results, and the totals that sum them.

Exactly once: entries are inserted with ON CONFLICT (result_id, kind) DO NOTHING RETURNING, so
of two transactions granting the same result (a redelivered job, two validators racing) one
inserts and the other gets no row back; the totals are bumped only from the rows this
transaction actually inserted, in the same transaction. The totals therefore always equal the
ledger's sums (check_totals() verifies it, rebuild_totals() restores it after manual edits).

Both statements are set-based: one INSERT for a batch of results (it reads each campaign's
points and each user's team by joins), one upsert of the affected totals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from accounts.models import User
from campaigns.models import Campaign
from rewards.models import LedgerEntry, TeamMembership, Total
from workers import scheduler

L = LedgerEntry._meta.db_table
TOT = Total._meta.db_table
TM = TeamMembership._meta.db_table
C = Campaign._meta.db_table
Scope = Total.Scope

# (result_id, user_id, site_id, campaign_id) of a validated result.
Grant = tuple[int, int | None, int | None, int]


def grant(rows: Sequence[Grant]) -> int:
    """Grant each validated result its campaign's points_per_task, at most once ever.
    Call inside the transaction that validated the results. Returns the entries created."""
    by_result = {row[0]: row for row in rows}
    if not by_result:
        return 0
    ty = scheduler._vendor_types()
    values, params = [], []
    for i, rid in enumerate(sorted(by_result)):
        _, uid, sid, cid = by_result[rid]
        values.append(
            f"(CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}),"
            f" CAST(%s AS {ty['int']}))"
            if i == 0
            else "(%s, %s, %s, %s)"
        )
        params += [rid, uid, sid, cid]
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH v(rid, uid, sid, cid) AS (VALUES {', '.join(values)})"  # noqa: S608 (our tables, bound values)
            f" INSERT INTO {L} (kind, result_id, user_id, team_id, site_id, campaign_id,"
            " points, note, created_at)"
            " SELECT 'result', v.rid, v.uid, m.team_id, v.sid, v.cid, c.points_per_task, '', %s"
            f" FROM v JOIN {C} c ON c.id = v.cid LEFT JOIN {TM} m ON m.user_id = v.uid"
            # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT (parser ambiguity).
            " WHERE 1 = 1"
            " ON CONFLICT (result_id, kind) DO NOTHING"
            " RETURNING user_id, team_id, site_id, campaign_id, points",
            [*params, timezone.now()],
        )
        inserted = cursor.fetchall()
        _bump_totals(cursor, inserted)
    return len(inserted)


def adjust(*, user: User, points: int, note: str, campaign: Campaign | None = None) -> LedgerEntry:
    """A manual correction (platform admins): a new entry, never an edit of an old one."""
    team_id = TeamMembership.objects.filter(user=user).values_list("team_id", flat=True).first()
    with transaction.atomic():
        entry = LedgerEntry.objects.create(
            kind=LedgerEntry.Kind.ADJUSTMENT,
            user=user,
            team_id=team_id,
            campaign=campaign,
            points=points,
            note=note[:200],
        )
        with connection.cursor() as cursor:
            _bump_totals(
                cursor,
                [(user.pk, team_id, None, campaign.pk if campaign else None, points)],
                results_too=False,
            )
    return entry


def _bump_totals(
    cursor: Any, inserted: Sequence[Sequence[Any]], *, results_too: bool = True
) -> None:
    """Add freshly inserted entries (user, team, site, campaign, points) to the totals; result
    entries also count as validated results, adjustments do not."""
    points: Counter[tuple[str, int]] = Counter()
    results: Counter[tuple[str, int]] = Counter()
    for uid, tid, sid, cid, pts in inserted:
        for scope, key in ((Scope.USER, uid), (Scope.TEAM, tid), (Scope.SITE, sid)):
            if key is not None:
                points[(scope.value, key)] += pts
                results[(scope.value, key)] += results_too
        if cid is not None:
            points[(Scope.CAMPAIGN.value, cid)] += pts
            results[(Scope.CAMPAIGN.value, cid)] += results_too
    if not points:
        return
    ty = scheduler._vendor_types()
    values, params = [], []
    # Sorted: concurrent transactions lock the total rows in one order (no deadlocks).
    for i, key in enumerate(sorted(points)):
        values.append(
            f"(CAST(%s AS {ty['text']}), CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}),"
            f" CAST(%s AS {ty['int']}), CAST(%s AS {ty['ts']}))"
            if i == 0
            else "(%s, %s, %s, %s, %s)"
        )
        params += [key[0], key[1], points[key], results[key], timezone.now()]
    cursor.execute(
        f"INSERT INTO {TOT} (scope, key, points, results, updated_at)"  # noqa: S608 (our tables, bound values)
        f" VALUES {', '.join(values)}"
        " ON CONFLICT (scope, key) DO UPDATE SET"
        f" points = {TOT}.points + excluded.points, results = {TOT}.results + excluded.results,"
        " updated_at = excluded.updated_at",
        params,
    )


# --- checking the totals ------------------------------------------------------------------------

_SCOPE_FIELDS = {
    Scope.USER: "user_id",
    Scope.TEAM: "team_id",
    Scope.SITE: "site_id",
    Scope.CAMPAIGN: "campaign_id",
}


def ledger_sums() -> dict[tuple[str, int], tuple[int, int]]:
    """(scope, key) -> (points, results) computed from the ledger itself (a full scan: for
    checks and repairs, not for pages)."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for scope, field in _SCOPE_FIELDS.items():
        rows = (
            LedgerEntry.objects.filter(**{f"{field}__isnull": False})
            .values(field)
            .annotate(
                points=Sum("points"),
                results=Count("pk", filter=Q(kind=LedgerEntry.Kind.RESULT)),
            )
            .order_by()
        )
        for row in rows:
            out[(scope.value, row[field])] = (int(row["points"] or 0), int(row["results"]))
    return out


def check_totals() -> list[str]:
    """Differences between the totals and the ledger; empty when they agree."""
    expected = ledger_sums()
    actual = {(t.scope, t.key): (t.points, t.results) for t in Total.objects.all()}
    problems = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key, (0, 0)), actual.get(key, (0, 0))
        if want != have:
            problems.append(f"{key[0]} {key[1]}: ledger {want}, total {have}")
    return problems


@transaction.atomic
def rebuild_totals() -> int:
    """Recompute every total from the ledger (after a manual repair). Returns rows written."""
    Total.objects.all().delete()
    now = timezone.now()
    rows = [
        Total(scope=scope, key=key, points=pts, results=n, updated_at=now)
        for (scope, key), (pts, n) in ledger_sums().items()
    ]
    Total.objects.bulk_create(rows, batch_size=1000)
    return len(rows)
