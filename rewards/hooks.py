"""What rewards/ plugs into the scheduler's hot path (registered on ccgsc.hooks' points in
RewardsConfig.ready)."""

from __future__ import annotations

from ccgsc.hooks import ResultRow
from rewards import ledger
from rewards.trust import may_lease
from rewards.validation import on_failed, on_returned

__all__ = ["may_lease", "on_failed", "on_returned", "pay_inline"]


def pay_inline(rows: list[ResultRow]) -> None:
    """On pay_points: results of unreplicated campaigns were accepted as they arrived; grant
    their points in the same transaction."""
    ledger.grant([(r.result, r.user, r.site, r.campaign) for r in rows])
