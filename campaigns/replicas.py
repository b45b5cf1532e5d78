"""Replicas of a task: the one way to create them in raw SQL (an unsent Result row for a task),
and the one rule for whether two of them come from independent volunteers.

Campaign creation (campaigns.services.tasks), requeueing after a failed attempt (workers.scheduler)
and adaptive replication (rewards.validation) all insert replicas set-based on the hot path;
they share the column list and the values of a fresh replica from here, written with the
model's named states (never bare numbers, which Task and Result reuse with other meanings).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from campaigns.models import Result

R = Result._meta.db_table
COLUMNS = "campaign_id, task_id, state, outcome, validation, output_sha256, error_kind, stderr_tail"
# A fresh replica: waiting to be leased, nothing returned, nothing validated.
FRESH = (
    f"{Result.State.UNSENT.value}, {Result.Outcome.NONE.value}, {Result.Validation.PENDING.value},"
    " '', '', ''"
)


def insert_replicas(cursor: Any, pairs: Sequence[tuple[int, int]]) -> None:
    """Insert one unsent replica per (campaign_id, task_id) pair, in one statement."""
    if not pairs:
        return
    values = ", ".join([f"(%s, %s, {FRESH})"] * len(pairs))
    cursor.execute(
        f"INSERT INTO {R} ({COLUMNS}) VALUES {values}",  # noqa: S608 (our table, bound values)
        [x for pair in pairs for x in pair],
    )


# --- independence -------------------------------------------------------------------------------


class Volunteer(Protocol):
    """Who stands behind a replica, as far as the server can tell (workers.identity)."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int | None: ...
    @property
    def session_id(self) -> int | None: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def profile(self) -> str | None: ...


V = TypeVar("V", bound=Volunteer)


def independent(a: Volunteer, b: Volunteer) -> bool:
    """Could these two replicas' results come from two different people? Not when they are one
    replica or share a session, a user, a network origin or a browser profile (unknown shares
    nothing). The validator (rewards.validation) decides quorums with this; the owner's
    validation page explains them with it; the scheduler's lease statement applies the same
    rule in SQL (workers.scheduler)."""
    if a.id == b.id:
        return False
    if a.user_id is not None and a.user_id == b.user_id:
        return False
    if a.session_id is not None and a.session_id == b.session_id:
        return False
    if a.origin is not None and a.origin == b.origin:
        return False
    return a.profile is None or a.profile != b.profile


def independent_set(group: Iterable[V]) -> list[V]:
    """A largest-found set of pairwise independent replicas of a group (greedy in id order: the
    lease rule keeps replicas of one task independent, so this is exact in practice and never
    overcounts)."""
    chosen: list[V] = []
    for r in sorted(group, key=lambda r: r.id):
        if all(independent(r, c) for c in chosen):
            chosen.append(r)
    return chosen
