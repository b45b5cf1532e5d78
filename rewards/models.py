"""Validation, the points ledger, teams and leaderboards (see issue: verification and rewards)."""
