"""What rewards/ plugs into the scheduler's hot path (registered in RewardsConfig.ready)."""

from __future__ import annotations

from rewards import ledger
from rewards.trust import may_lease
from rewards.validation import on_failed, on_returned

__all__ = ["may_lease", "on_failed", "on_returned", "pay_inline"]


def pay_inline(rows: list[tuple[int, int, int, int | None, int | None]]) -> None:
    """Validated-hook: results of unreplicated campaigns were accepted as they arrived (rows:
    result, task, campaign, user, site); grant their points in the same transaction."""
    ledger.grant([(rid, uid, sid, cid) for rid, _, cid, uid, sid in rows])
