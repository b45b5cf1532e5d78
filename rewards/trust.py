"""Adaptive replication on BOINC's model: who is trusted, how often they are spot-checked, who
is refused work.

Trust is kept per user *and kernel* (KernelTrust; BOINC keeps it per host and app version): a
run earned on one kernel says nothing about another. It is earned only by agreement with other,
independent volunteers (rewards.validation marks such results "corroborated"), and never on the
user's own organization's campaigns, where the user could supply both sides of a quorum. A
campaign uses it only where its owner switched adaptive replication on.

A user becomes trusted after TRUST_THRESHOLD consecutive checked valid results (BOINC uses 10).
A trusted user's result is still replicated (spot-checked) with a probability that falls as the
run grows: 1/2 at the threshold, TRUST_THRESHOLD / (2 * run) after, never below
SPOT_CHECK_FLOOR. Any invalid result, error or timeout on a campaign that checks results resets
the run to zero. A user whose invalid results pile up (at least REFUSE_MIN_INVALID, and at least
REFUSE_INVALID_RATE of their checked results) is refused work.

Only campaigns that check results (a quorum above one, or a verifier) take part: on an
unreplicated campaign nothing is checked, so nothing is learned about anyone.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import Membership
from rewards.models import KernelTrust, Reliability
from workers import scheduler

TRUST_THRESHOLD = 10
SPOT_CHECK_FLOOR = 0.05
REFUSE_MIN_INVALID = 20
REFUSE_INVALID_RATE = 0.5
REFUSED_TTL = 5.0

# Replaced in tests with a seeded generator; random, not secrets: a spot check needs to be
# unpredictable to the worker, which never sees the draw, not cryptographically strong.
rng = random.Random()

RL = Reliability._meta.db_table
KT = KernelTrust._meta.db_table


class Event(NamedTuple):
    """A checked outcome: "valid" (corroborated by an independent volunteer), "invalid" or
    "error", of one user's result on one campaign."""

    result_id: int
    user_id: int
    campaign_id: int
    what: str


def adaptive_replication_enabled() -> bool:
    return bool(settings.CCGSC.get("ADAPTIVE_REPLICATION", True))


def is_trusted(consecutive_valid: int) -> bool:
    return consecutive_valid >= TRUST_THRESHOLD


def spot_check_probability(consecutive_valid: int) -> float:
    """Probability that a result of a user with this run is replicated anyway."""
    if not is_trusted(consecutive_valid):
        return 1.0
    return max(SPOT_CHECK_FLOOR, TRUST_THRESHOLD / (2.0 * consecutive_valid))


def draw_unchecked(consecutive_valid: int) -> bool:
    """True when this result of a trusted user is accepted without a second opinion."""
    return is_trusted(consecutive_valid) and rng.random() >= spot_check_probability(
        consecutive_valid
    )


def trusted_runs(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """consecutive_valid per (user, kernel) of those of these pairs that are trusted (one
    query)."""
    wanted = set(pairs)
    if not wanted:
        return {}
    rows = (
        KernelTrust.objects.filter(
            user_id__in={u for u, _ in wanted},
            kernel_id__in={k for _, k in wanted},
            consecutive_valid__gte=TRUST_THRESHOLD,
        )
        .values_list("user_id", "kernel_id", "consecutive_valid")
        .order_by()
    )
    return {(u, k): run for u, k, run in rows if (u, k) in wanted}


# --- recording outcomes -------------------------------------------------------------------------


@dataclass
class _Delta:
    run: int = 0  # valid results after the last reset in this batch
    reset: bool = False
    valid: int = 0
    invalid: int = 0
    errors: int = 0

    def apply(self, what: str) -> None:
        if what == "valid":
            self.valid += 1
            self.run += 1
        else:
            self.reset, self.run = True, 0
            if what == "invalid":
                self.invalid += 1
            else:
                self.errors += 1

    def row(self) -> list[int]:
        return [self.run, self.valid, self.invalid, self.errors]


def _campaign_scopes(campaign_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(kernel id, organization id) per campaign, from the scheduler's cache when it can."""
    from campaigns.models import Campaign

    out: dict[int, tuple[int, int]] = {}
    missing = []
    for cid in set(campaign_ids):
        info = scheduler.running_campaigns().get(cid)
        if info is None or not info.kernel_id:
            missing.append(cid)
        else:
            out[cid] = (info.kernel_id, info.organization_id)
    if missing:
        for cid, kid, oid in Campaign.objects.filter(pk__in=missing).values_list(
            "pk", "kernel_id", "organization_id"
        ):
            out[cid] = (kid, oid)
    return out


def record(events: Sequence[Event]) -> None:
    """Apply checked outcomes, set-based: one query for the users' memberships (results on
    one's own organization's campaigns never count), one upsert of the users' records and one
    of their per-kernel trust.

    Events are applied in result order, so a batch holding a user's valid, invalid, valid
    results leaves a run of one. Call inside the transaction that decided the results."""
    if not events:
        return
    scopes = _campaign_scopes(e.campaign_id for e in events)
    own = set(
        Membership.objects.filter(
            user_id__in={e.user_id for e in events},
            organization_id__in={oid for _, oid in scopes.values()},
        ).values_list("user_id", "organization_id")
    )
    counted = [
        e
        for e in events
        if e.campaign_id in scopes and (e.user_id, scopes[e.campaign_id][1]) not in own
    ]
    per_user: dict[int, _Delta] = {}
    per_kernel: dict[tuple[int, int], _Delta] = {}
    for e in sorted(counted):
        per_user.setdefault(e.user_id, _Delta()).apply(e.what)
        per_kernel.setdefault((e.user_id, scopes[e.campaign_id][0]), _Delta()).apply(e.what)
    if per_user:
        _upsert_users(per_user)
    if per_kernel:
        _upsert_kernels(per_kernel)
    if any(d.invalid for d in per_user.values()):
        _refused.loaded_at = 0.0  # someone may have just crossed the line


def _values(rows: list[list[int]]) -> tuple[str, list[int]]:
    ty = scheduler._vendor_types()
    width = len(rows[0])
    first = "(" + ", ".join([f"CAST(%s AS {ty['int']})"] * width) + ")"
    other = "(" + ", ".join(["%s"] * width) + ")"
    return ", ".join(first if i == 0 else other for i in range(len(rows))), [
        x for row in rows for x in row
    ]


# A reset happened in a batch exactly when it holds an invalid result or an error, so the
# excluded row's invalid/error deltas tell the upsert whether to replace or extend the run.
def _run_update(table: str) -> str:
    return (
        " consecutive_valid = CASE WHEN excluded.invalid_total + excluded.error_total > 0"
        f" THEN excluded.consecutive_valid ELSE {table}.consecutive_valid"
        " + excluded.consecutive_valid END,"
        f" valid_total = {table}.valid_total + excluded.valid_total,"
        f" invalid_total = {table}.invalid_total + excluded.invalid_total,"
        f" error_total = {table}.error_total + excluded.error_total,"
        " updated_at = excluded.updated_at"
    )


def _upsert_users(deltas: dict[int, _Delta]) -> None:
    rows = [[uid, *deltas[uid].row()] for uid in sorted(deltas)]  # sorted: one lock order
    values, params = _values(rows)
    # `refused` latches: once set it stays until an admin clears it.
    new_invalid = f"{RL}.invalid_total + excluded.invalid_total"
    new_valid = f"{RL}.valid_total + excluded.valid_total"
    refuse_new = (
        f"invalid >= {REFUSE_MIN_INVALID} AND invalid >= {REFUSE_INVALID_RATE} * (valid + invalid)"
    )
    sql = (
        f"WITH v(uid, run, valid, invalid, errors) AS (VALUES {values})"  # noqa: S608 (our table, bound values)
        f" INSERT INTO {RL} (user_id, consecutive_valid, valid_total, invalid_total,"
        " error_total, refused, updated_at)"
        f" SELECT uid, run, valid, invalid, errors, ({refuse_new}), %s FROM v WHERE 1 = 1"
        f" ON CONFLICT (user_id) DO UPDATE SET {_run_update(RL)},"
        f" refused = ({RL}.refused OR ({new_invalid} >= {REFUSE_MIN_INVALID}"
        f" AND {new_invalid} >= {REFUSE_INVALID_RATE} * ({new_valid} + ({new_invalid}))))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, timezone.now()])


def _upsert_kernels(deltas: dict[tuple[int, int], _Delta]) -> None:
    rows = [[uid, kid, *deltas[(uid, kid)].row()] for uid, kid in sorted(deltas)]
    values, params = _values(rows)
    sql = (
        f"WITH v(uid, kid, run, valid, invalid, errors) AS (VALUES {values})"  # noqa: S608 (our table, bound values)
        f" INSERT INTO {KT} (user_id, kernel_id, consecutive_valid, valid_total, invalid_total,"
        " error_total, updated_at)"
        " SELECT uid, kid, run, valid, invalid, errors, %s FROM v WHERE 1 = 1"
        f" ON CONFLICT (user_id, kernel_id) DO UPDATE SET {_run_update(KT)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, timezone.now()])


# --- refusing work ------------------------------------------------------------------------------


class _RefusedCache:
    def __init__(self) -> None:
        self.ids: frozenset[int] = frozenset()
        self.loaded_at = 0.0
        self.lock = threading.Lock()


_refused = _RefusedCache()


def refused_user_ids() -> frozenset[int]:
    """Users refused work, cached per process for a few seconds (one small query through a
    partial index, not one per lease)."""
    now = time.monotonic()
    if now - _refused.loaded_at > REFUSED_TTL:
        ids = frozenset(Reliability.objects.filter(refused=True).values_list("user_id", flat=True))
        with _refused.lock:
            _refused.ids, _refused.loaded_at = ids, now
    return _refused.ids


def forget_refused() -> None:
    _refused.loaded_at = 0.0


def may_lease(session: Any) -> bool:
    """Lease gate registered with the scheduler: refused users get no work."""
    return session.user_id is None or session.user_id not in refused_user_ids()
