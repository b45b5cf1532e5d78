"""The one way to create replicas in raw SQL: an unsent Result row for a task.

Campaign creation (campaigns.services.tasks), requeueing after a failed attempt (workers.scheduler)
and adaptive replication (rewards.validation) all insert replicas set-based on the hot path;
they share the column list and the values of a fresh replica from here, written with the
model's named states (never bare numbers, which Task and Result reuse with other meanings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
