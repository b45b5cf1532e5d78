"""The sweeper's periodic maintenance hooks (workers.sweeper.periodic)."""

from __future__ import annotations

import asyncio

import pytest

from rewards import validation
from workers import sweeper


def test_rewards_registers_its_catch_up() -> None:
    assert any(job is validation.catch_up for _, job in sweeper.periodic)


async def test_periodic_jobs_run_at_their_period_and_a_failing_one_stops_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    often: list[int] = []
    rarely: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sweeper, "SWEEP_SECONDS", 0.01)
    monkeypatch.setattr(sweeper, "sweep_once", lambda: (0, 0))
    monkeypatch.setattr(
        sweeper,
        "periodic",
        [(0.0, broken), (0.05, lambda: often.append(1)), (3600.0, lambda: rarely.append(1))],
    )
    task = asyncio.get_running_loop().create_task(sweeper._loop())
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # A job first runs one period after the loop starts, then once per period.
    assert 2 <= len(often) <= 12
    assert rarely == []
