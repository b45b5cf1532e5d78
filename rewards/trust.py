"""Adaptive replication on BOINC's model: who is trusted, how often they are spot-checked, who
is refused work.

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
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from rewards.models import Reliability
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


def trusted_runs(user_ids: Iterable[int]) -> dict[int, int]:
    """consecutive_valid of those of these users who are trusted (one query)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    return dict(
        Reliability.objects.filter(user_id__in=ids, consecutive_valid__gte=TRUST_THRESHOLD)
        .values_list("user_id", "consecutive_valid")
        .order_by()
    )


# --- recording outcomes -------------------------------------------------------------------------


@dataclass
class _Delta:
    run: int = 0  # valid results after the last reset in this batch
    reset: bool = False
    valid: int = 0
    invalid: int = 0
    errors: int = 0


def record(events: Sequence[tuple[int, int, str]]) -> None:
    """Apply checked outcomes to the users' records, set-based (one upsert for the batch).

    `events` are (result_id, user_id, outcome) with outcome "valid", "invalid" or "error";
    they are applied in result order, so a batch holding a user's valid, invalid, valid
    results leaves a run of one. Call inside the transaction that decided the results."""
    deltas: dict[int, _Delta] = {}
    for _, uid, what in sorted(events):
        d = deltas.setdefault(uid, _Delta())
        if what == "valid":
            d.valid += 1
            d.run += 1
        else:
            d.reset, d.run = True, 0
            if what == "invalid":
                d.invalid += 1
            else:
                d.errors += 1
    if not deltas:
        return
    ty = scheduler._vendor_types()
    rows, params = [], []
    for i, uid in enumerate(sorted(deltas)):  # sorted: concurrent upserts lock rows in one order
        d = deltas[uid]
        rows.append(
            f"(CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}),"
            f" CAST(%s AS {ty['int']}), CAST(%s AS {ty['int']}))"
            if i == 0
            else "(%s, %s, %s, %s, %s)"
        )
        params += [uid, d.run, d.valid, d.invalid, d.errors]
    # A reset happened in this batch exactly when it holds an invalid result or an error, so
    # the excluded row's invalid/error deltas tell the upsert whether to replace or extend the
    # run. `refused` latches: once set it stays until an admin clears it.
    new_invalid = f"{RL}.invalid_total + excluded.invalid_total"
    new_valid = f"{RL}.valid_total + excluded.valid_total"
    refuse_new = (
        f"invalid >= {REFUSE_MIN_INVALID} AND invalid >= {REFUSE_INVALID_RATE} * (valid + invalid)"
    )
    sql = (
        f"WITH v(uid, run, valid, invalid, errors) AS (VALUES {', '.join(rows)})"  # noqa: S608 (our table, bound values)
        f" INSERT INTO {RL} (user_id, consecutive_valid, valid_total, invalid_total,"
        " error_total, refused, updated_at)"
        " SELECT uid, run, valid, invalid, errors,"
        f" ({refuse_new}),"
        " %s FROM v WHERE 1 = 1"
        " ON CONFLICT (user_id) DO UPDATE SET"
        " consecutive_valid = CASE WHEN excluded.invalid_total + excluded.error_total > 0"
        f" THEN excluded.consecutive_valid ELSE {RL}.consecutive_valid"
        " + excluded.consecutive_valid END,"
        f" valid_total = {new_valid}, invalid_total = {new_invalid},"
        f" error_total = {RL}.error_total + excluded.error_total,"
        f" refused = ({RL}.refused OR ({new_invalid} >= {REFUSE_MIN_INVALID}"
        f" AND {new_invalid} >= {REFUSE_INVALID_RATE} * ({new_valid} + ({new_invalid})))),"
        " updated_at = excluded.updated_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, timezone.now()])
    if any(d.invalid for d in deltas.values()):
        _refused.loaded_at = 0.0  # someone may have just crossed the line


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
