"""End to end with real processes: a daphne server and native worker processes, against the
test database (PostgreSQL and Redis under CI)."""

from __future__ import annotations

import signal

import pytest

from campaigns.models import Campaign, Result, Task
from tests.waiting import wait_for

pytestmark = pytest.mark.live


def canonical_output(task: Task) -> bytes:
    assert task.canonical_result is not None and task.canonical_result.output is not None
    return bytes(task.canonical_result.output)


def completed(campaign: Campaign) -> bool:
    campaign.refresh_from_db()
    return campaign.state == Campaign.State.COMPLETED


def assert_each_task_done_exactly_once(campaign: Campaign) -> None:
    campaign.refresh_from_db()
    assert campaign.tasks_done == campaign.tasks_total
    assert Task.objects.filter(campaign=campaign).exclude(state=Task.State.DONE).count() == 0
    valid = Result.objects.filter(campaign=campaign, validation=Result.Validation.VALID)
    assert valid.count() == campaign.tasks_total
    assert valid.values("task").distinct().count() == campaign.tasks_total
    # Every canonical result is a returned success.
    canonical = Result.objects.filter(
        pk__in=Task.objects.filter(campaign=campaign).values("canonical_result")
    )
    assert (
        canonical.filter(state=Result.State.RETURNED, outcome=Result.Outcome.SUCCESS).count()
        == campaign.tasks_total
    )


def test_thousands_of_tasks_complete_with_every_result_recorded_once(live_platform, make_campaign):
    campaign = make_campaign([f"task-{i}" for i in range(3000)], kernel="echo")
    live_platform.worker("--exit-when-idle", "5")
    live_platform.worker("--exit-when-idle", "5")
    wait_for(lambda: completed(campaign), timeout=120, what="the campaign to complete")
    assert_each_task_done_exactly_once(campaign)
    outputs = {
        bytes(t.input): canonical_output(t)
        for t in Task.objects.filter(campaign=campaign).select_related("canonical_result")
    }
    assert all(inp == out for inp, out in outputs.items())


def test_a_worker_on_the_http_fallback_completes_a_campaign(live_platform, make_campaign):
    # Results and wants travel merged into requests (workers/native/transport.py), long polls
    # wait for work: every task still done once, with its own output.
    campaign = make_campaign([f"task-{i}" for i in range(300)], kernel="echo")
    live_platform.worker("--http", "--slots", "2", "--exit-when-idle", "5")
    wait_for(lambda: completed(campaign), timeout=120, what="the campaign to complete")
    assert_each_task_done_exactly_once(campaign)
    tasks = Task.objects.filter(campaign=campaign).select_related("canonical_result")
    assert all(bytes(t.input) == canonical_output(t) for t in tasks)


def test_killed_worker_leases_go_to_another_worker(live_platform, make_campaign):
    # ~50 ms per task: the first worker is killed while it holds leases.
    campaign = make_campaign([f"{i + 1} 3000000" for i in range(60)], kernel="montecarlo")
    doomed = live_platform.worker()
    wait_for(
        lambda: Result.objects.filter(campaign=campaign, state=Result.State.LEASED).exists(),
        timeout=30,
        what="the first worker to hold leases",
    )
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    # The socket closed: its leases return to the queue at once, not at their deadline.
    wait_for(
        lambda: not Result.objects.filter(campaign=campaign, state=Result.State.LEASED).exists(),
        timeout=10,
        what="the dead worker's leases to be released",
    )
    live_platform.worker("--exit-when-idle", "5")
    wait_for(lambda: completed(campaign), timeout=120, what="the campaign to complete")
    assert_each_task_done_exactly_once(campaign)
    assert Result.objects.filter(campaign=campaign, state=Result.State.TIMED_OUT).count() == 0


def test_failed_attempt_resumes_from_its_checkpoint(live_platform, make_campaign):
    # The kernel saves a checkpoint each step and, started from scratch, crashes after step 5;
    # the retry must receive that checkpoint and finish from there.
    campaign = make_campaign(["40"], kernel="resumable", max_attempts=3, env={"CCGSC_STOP_AT": "5"})
    live_platform.worker("--exit-when-idle", "5")
    wait_for(lambda: completed(campaign), timeout=60, what="the campaign to complete")
    task = Task.objects.select_related("canonical_result").get(campaign=campaign)
    assert canonical_output(task) == b"resumed_from=5 steps=40\n"
    attempts = Result.objects.filter(task=task).order_by("pk")
    assert [r.outcome for r in attempts] == [Result.Outcome.ERROR, Result.Outcome.SUCCESS]
    assert attempts[0].exit_code == 3


def test_graceful_stop_returns_leases(live_platform, make_campaign):
    campaign = make_campaign([f"{i + 1} 20000000" for i in range(40)], kernel="montecarlo")
    worker = live_platform.worker()
    wait_for(
        lambda: Result.objects.filter(campaign=campaign, state=Result.State.LEASED).count() >= 2,
        timeout=30,
        what="leases",
    )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert not Result.objects.filter(campaign=campaign, state=Result.State.LEASED).exists()
    # Returned leases are not failed attempts.
    assert Task.objects.filter(campaign=campaign, error_count__gt=0).count() == 0
