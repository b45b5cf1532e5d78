"""Quorum validation: agreement, disagreement, the cap, cancellation, adaptive replication, and
the invariants under workers that lie."""

from __future__ import annotations

import hashlib
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from campaigns.models import Campaign, Result, Task
from rewards import ledger, trust
from rewards.models import KernelTrust, LedgerEntry, Reliability, Total
from tests.conftest import fail_item as fail
from tests.conftest import ok_item as ok
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

V = Result.Validation


@pytest.fixture(autouse=True)
def _fresh(settings):
    scheduler.work_available()
    trust.forget_refused()
    trust.rng.seed(1234)
    yield
    # User ids are reused after rollback: a refusal cached here must not follow another test.
    trust.forget_refused()


@pytest.fixture
def contributors(db):
    """Sessions of distinct signed-in users: contributors(n) -> [SessionInfo]."""

    def make(n, prefix="vol"):
        out = []
        for i in range(n):
            user = User.objects.create_user(f"{prefix}{i}@example.test", "pw")
            s = WorkerSession.objects.create(kind="native", user=user)
            out.append(SessionInfo(id=s.pk, user_id=user.pk))
        return out

    return make


def output(result: Result | None) -> bytes:
    assert result is not None and result.output is not None
    return bytes(result.output)


def answer(inp: bytes) -> bytes:
    return hashlib.sha256(inp).hexdigest().encode()


def test_agreeing_replicas_validate_and_pay_once_each(make_campaign, contributors):
    c = make_campaign(["a", "b"], min_quorum=2, target_replicas=2, points_per_task=7)
    alice, bob = contributors(2)
    for s in (alice, bob):
        leases = scheduler.lease(s, 5)
        assert len(leases) == 2
        scheduler.submit_results(s, [ok(x, answer(x.input)) for x in leases])
    c.refresh_from_db()
    assert (c.tasks_done, c.state) == (2, Campaign.State.COMPLETED)
    for task in Task.objects.filter(campaign=c):
        assert task.state == Task.State.DONE
        assert output(task.canonical_result) == answer(bytes(task.input))
    assert set(Result.objects.filter(campaign=c).values_list("validation", flat=True)) == {V.VALID}
    assert LedgerEntry.objects.count() == 4
    assert Total.objects.get(scope="user", key=alice.user_id).points == 14
    assert Total.objects.get(scope="campaign", key=c.pk).points == 28
    assert ledger.check_totals() == []


def outputs_by_user(c):
    return {r.user_id: r for r in Result.objects.filter(campaign=c, state=Result.State.RETURNED)}


def test_disagreement_issues_another_replica_and_the_majority_wins(make_campaign, contributors):
    c = make_campaign(["a"], min_quorum=2, target_replicas=2, max_total_replicas=4)
    alice, bob, carol = contributors(3)
    (la,) = scheduler.lease(alice, 1)
    (lb,) = scheduler.lease(bob, 1)
    assert scheduler.lease(carol, 1) == []  # both replicas are out
    scheduler.submit_results(alice, [ok(la, b"42")])
    scheduler.submit_results(bob, [ok(lb, b"41")])
    # No quorum: one more replica, which neither alice nor bob may take.
    assert Result.objects.filter(campaign=c).count() == 3
    assert scheduler.lease(alice, 1) == [] and scheduler.lease(bob, 1) == []
    (lc,) = scheduler.lease(carol, 1)
    scheduler.submit_results(carol, [ok(lc, b"42")])
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.DONE and task.canonical_result_id == la.lease
    assert Result.objects.get(pk=la.lease).validation == V.VALID
    assert Result.objects.get(pk=lc.lease).validation == V.VALID
    assert Result.objects.get(pk=lb.lease).validation == V.INVALID
    paid = set(LedgerEntry.objects.values_list("result_id", flat=True))
    assert paid == {la.lease, lc.lease}
    bob_record = Reliability.objects.get(user_id=bob.user_id)
    assert (bob_record.invalid_total, bob_record.consecutive_valid) == (1, 0)
    assert Reliability.objects.get(user_id=carol.user_id).consecutive_valid == 1
    c.refresh_from_db()
    assert c.state == Campaign.State.COMPLETED


def test_no_agreement_within_the_cap_fails_the_task_as_inconclusive(make_campaign, contributors):
    c = make_campaign(["a"], min_quorum=2, target_replicas=2, max_total_replicas=3)
    sessions = contributors(3)
    for i, s in enumerate(sessions):
        (lease,) = scheduler.lease(s, 1)
        scheduler.submit_results(s, [ok(lease, f"answer {i}".encode())])
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.FAILED and task.failure.startswith("inconclusive")
    assert set(Result.objects.filter(campaign=c).values_list("validation", flat=True)) == {
        V.INCONCLUSIVE
    }
    assert not LedgerEntry.objects.exists()
    c.refresh_from_db()
    assert (c.tasks_failed, c.state) == (1, Campaign.State.FAILED)  # its only task failed


def test_quorum_cancels_outstanding_replicas_and_tells_their_workers(
    make_campaign, contributors, monkeypatch, django_capture_on_commit_callbacks
):
    from workers import live

    pushed = []
    monkeypatch.setattr(live, "on_leases_cancelled", lambda ids, reason: pushed.append(ids))
    c = make_campaign(["a"], min_quorum=2, target_replicas=3)
    alice, bob, carol = contributors(3)
    (la,), (lb,), (lc,) = (scheduler.lease(s, 1) for s in (alice, bob, carol))
    scheduler.submit_results(alice, [ok(la, b"x")])
    with django_capture_on_commit_callbacks(execute=True):
        scheduler.submit_results(bob, [ok(lb, b"x")])
    assert pushed == [[lc.lease]]
    assert Result.objects.get(pk=lc.lease).state == Result.State.CANCELLED
    # Carol's answer arrives anyway: acknowledged, ignored, unpaid.
    assert scheduler.submit_results(carol, [ok(lc, b"x")]).ignored == [lc.lease]
    assert LedgerEntry.objects.filter(result_id=lc.lease).count() == 0
    c.refresh_from_db()
    assert c.state == Campaign.State.COMPLETED


def test_a_replica_returned_after_the_decision_is_compared_with_the_canonical(
    make_campaign, contributors
):
    c = make_campaign(["a", "b"], min_quorum=2, target_replicas=3)
    alice, bob, carol = contributors(3)
    a = scheduler.lease(alice, 2)
    b = scheduler.lease(bob, 2)
    scheduler.submit_results(alice, [ok(x, b"right") for x in a])
    scheduler.submit_results(bob, [ok(x, b"right") for x in b])
    assert Task.objects.filter(campaign=c, state=Task.State.DONE).count() == 2
    # On PostgreSQL a replica being leased while the task is decided escapes cancellation
    # (SKIP LOCKED): simulate it, then let it come back, once right and once wrong.
    escaped = list(Result.objects.filter(campaign=c, state=Result.State.CANCELLED))
    assert len(escaped) == 2
    Result.objects.filter(pk__in=[r.pk for r in escaped]).update(
        state=Result.State.LEASED, session_id=carol.id, user_id=carol.user_id
    )
    right, wrong = escaped
    scheduler.submit_results(
        carol,
        [
            ok(scheduler.Lease(right.pk, right.task_id, c.pk, b"", None, None, None), b"right"),
            ok(scheduler.Lease(wrong.pk, wrong.task_id, c.pk, b"", None, None, None), b"wrong"),
        ],
    )
    assert Result.objects.get(pk=right.pk).validation == V.VALID
    assert Result.objects.get(pk=wrong.pk).validation == V.INVALID
    assert LedgerEntry.objects.filter(result_id=right.pk).exists()
    assert not LedgerEntry.objects.filter(result_id=wrong.pk).exists()
    c.refresh_from_db()
    assert c.tasks_done == 2  # counted once


def test_errors_and_expired_leases_reset_the_run(make_campaign, contributors):
    from datetime import timedelta

    from django.utils import timezone

    make_campaign(["a", "b"], min_quorum=2, target_replicas=2, task_timeout=10)
    (alice,) = contributors(1)
    Reliability.objects.create(user_id=alice.user_id, consecutive_valid=25, valid_total=25)
    first, _ = scheduler.lease(alice, 2)
    scheduler.submit_results(alice, [fail(first)])
    record = Reliability.objects.get(user_id=alice.user_id)
    assert (record.consecutive_valid, record.error_total) == (0, 1)
    Reliability.objects.filter(user_id=alice.user_id).update(consecutive_valid=25)
    assert scheduler.reclaim_expired(now=timezone.now() + timedelta(seconds=30)) == 1
    record.refresh_from_db()
    assert (record.consecutive_valid, record.error_total) == (0, 2)


def test_errors_on_unreplicated_campaigns_teach_nothing(make_campaign, contributors):
    make_campaign(["a"])
    (alice,) = contributors(1)
    Reliability.objects.create(user_id=alice.user_id, consecutive_valid=12)
    (lease,) = scheduler.lease(alice, 1)
    scheduler.submit_results(alice, [fail(lease)])
    assert Reliability.objects.get(user_id=alice.user_id).consecutive_valid == 12


def test_a_trusted_users_result_may_stand_alone(make_campaign, contributors, monkeypatch):
    c = make_campaign(
        ["a", "b"], min_quorum=2, target_replicas=2, points_per_task=5, adaptive_replication=True
    )
    alice, bob = contributors(2)
    KernelTrust.objects.create(
        user_id=alice.user_id, kernel_id=c.kernel_id, consecutive_valid=40, valid_total=40
    )
    draws = iter([0.99, 0.0])  # first result not spot-checked, second one spot-checked
    monkeypatch.setattr(trust.rng, "random", lambda: next(draws))
    a1, a2 = scheduler.lease(alice, 2)
    scheduler.submit_results(alice, [ok(a1, b"one")])
    t1 = Task.objects.get(pk=a1.task)
    assert t1.state == Task.State.DONE and t1.canonical_result_id == a1.lease
    # Its sibling replica was never sent: cancelled, nobody computes it.
    assert set(Result.objects.filter(task=t1).values_list("state", flat=True)) == {
        Result.State.RETURNED,
        Result.State.CANCELLED,
    }
    assert LedgerEntry.objects.get(result_id=a1.lease).points == 5
    assert Result.objects.get(pk=a1.lease).basis == Result.Basis.TRUSTED
    # Accepted on trust alone: no evidence, the run does not grow.
    assert KernelTrust.objects.get(user_id=alice.user_id).consecutive_valid == 40
    scheduler.submit_results(alice, [ok(a2, b"two")])
    assert Task.objects.get(pk=a2.task).state == Task.State.PENDING  # spot-checked
    (b2,) = scheduler.lease(bob, 2)
    assert b2.task == a2.task
    scheduler.submit_results(bob, [ok(b2, b"two")])
    assert Task.objects.get(pk=a2.task).state == Task.State.DONE
    assert KernelTrust.objects.get(user_id=alice.user_id).consecutive_valid == 41
    assert Result.objects.get(pk=b2.lease).basis == Result.Basis.QUORUM


def test_an_untrusted_user_is_always_replicated(make_campaign, contributors, monkeypatch):
    make_campaign(["a"], min_quorum=2, target_replicas=2)
    (alice,) = contributors(1)
    KernelTrust.objects.create(
        user_id=alice.user_id,
        kernel_id=Campaign.objects.get().kernel_id,
        consecutive_valid=trust.TRUST_THRESHOLD - 1,
    )
    monkeypatch.setattr(trust.rng, "random", lambda: 0.999999)
    (lease,) = scheduler.lease(alice, 1)
    scheduler.submit_results(alice, [ok(lease, b"x")])
    assert Task.objects.get(pk=lease.task).state == Task.State.PENDING


def test_users_with_many_invalid_results_are_refused_work(make_campaign, contributors):
    n = trust.REFUSE_MIN_INVALID
    make_campaign([str(i) for i in range(n + 5)], min_quorum=2, target_replicas=2)
    liar, honest, other = contributors(3)
    lies = scheduler.lease(liar, n)
    scheduler.submit_results(liar, [ok(x, b"lie") for x in lies])
    for s in (honest, other):  # the second replicas, then the ones the disagreement added
        leases = [x for x in scheduler.lease(s, n + 5) if x.task in {y.task for y in lies}]
        scheduler.submit_results(s, [ok(x, b"truth") for x in leases])
    record = Reliability.objects.get(user_id=liar.user_id)
    assert record.invalid_total == n and record.refused
    make_campaign(["more"], kernel="noop")
    scheduler.work_available()
    assert scheduler.lease(liar, 5) == []
    # An admin lifting the refusal gives the work back.
    Reliability.objects.filter(user_id=liar.user_id).update(refused=False)
    trust.forget_refused()
    assert len(scheduler.lease(liar, 5)) == 1


def test_queries_per_quorum_batch_are_pinned(make_campaign, contributors, cached_directory):
    from campaigns.inputs import TaskSpec
    from campaigns.services import tasks_add

    c = make_campaign([str(i) for i in range(100)], min_quorum=2, target_replicas=2)
    alice, bob = contributors(2)
    scheduler.running_campaigns(refresh=True)
    a, b = scheduler.lease(alice, 100), scheduler.lease(bob, 100)
    tasks_add(campaign=c, specs=[TaskSpec(input=b"later")])  # keeps the campaign running
    with CaptureQueriesContext(connection) as first:
        scheduler.submit_results(alice, [ok(x, b"same") for x in a])
    with CaptureQueriesContext(connection) as second:
        out = scheduler.submit_results(bob, [ok(x, b"same") for x in b])
    assert out.done == 100
    pg = connection.vendor == "postgresql"

    def sql(ctx):
        return [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]

    # Replicas, (task locks on PostgreSQL), the tasks' replicas (no trust lookup: the campaign
    # did not choose adaptive replication).
    assert len(sql(first)) == 2 + pg, sql(first)
    # Replicas, (locks), tasks' replicas, tasks done, validations, cancellations, trust (the
    # users' memberships, their records, their per-kernel runs), ledger, totals, campaign
    # counters: the same for 1 or 100 results.
    assert len(sql(second)) == 11 + pg, "\n".join(q[:90] for q in sql(second))


def test_workers_that_lie_never_win_and_are_never_paid(make_campaign, contributors):
    """Ten contributors, two of whom (20%) return wrong results; quorum 2."""
    inputs = [f"task {i}" for i in range(120)]
    c = make_campaign(inputs, min_quorum=2, target_replicas=2, points_per_task=3)
    sessions = contributors(10)
    liars = {s.user_id for s in sessions[:2]}
    rnd = random.Random(7)
    for _ in range(400):
        c.refresh_from_db()
        if c.state == Campaign.State.COMPLETED:
            break
        order = sessions[:]
        rnd.shuffle(order)
        for s in order:
            leases = scheduler.lease(s, rnd.randint(1, 4))
            if not leases:
                continue
            scheduler.submit_results(
                s,
                [
                    ok(
                        x,
                        rnd.randbytes(8).hex().encode() if s.user_id in liars else answer(x.input),
                    )
                    for x in leases
                ],
            )
    c.refresh_from_db()
    assert c.state == Campaign.State.COMPLETED
    assert (c.tasks_done, c.tasks_failed) == (120, 0)
    for task in Task.objects.filter(campaign=c).select_related("canonical_result"):
        assert output(task.canonical_result) == answer(bytes(task.input))
        assert task.canonical_result and task.canonical_result.user_id not in liars
    paid = Result.objects.filter(pk__in=LedgerEntry.objects.values("result_id"))
    assert paid.count() == LedgerEntry.objects.count()
    for r in paid.select_related("task"):
        assert output(r) == answer(bytes(r.task.input)) and r.user_id not in liars
    assert not Total.objects.filter(scope="user", key__in=liars).exists()
    assert Result.objects.filter(user_id__in=liars, validation=V.VALID).count() == 0
    lied = Result.objects.filter(user_id__in=liars, state=Result.State.RETURNED).count()
    assert lied > 0
    assert Result.objects.filter(user_id__in=liars, validation=V.INVALID).count() == lied
    for record in Reliability.objects.filter(user_id__in=liars):
        assert record.consecutive_valid == 0 and record.valid_total == 0
    assert ledger.check_totals() == []
    valid = Result.objects.filter(campaign=c, validation=V.VALID).count()
    assert Total.objects.get(scope="campaign", key=c.pk).points == 3 * valid


def test_the_periodic_catch_up_waits_for_its_grace(make_campaign, contributors, hooks):
    from datetime import timedelta

    from django.utils import timezone

    from rewards import validation

    c = make_campaign(["a"], min_quorum=2, target_replicas=2)
    alice, bob = contributors(2)
    decide = list(hooks.decide_returned)
    hooks.decide_returned.clear()  # as if the decision were lost
    for s in (alice, bob):
        scheduler.submit_results(s, [ok(x, b"same") for x in scheduler.lease(s, 1)])
    hooks.decide_returned[:] = decide
    validation.catch_up()  # just returned: its verifier job could still be queued
    assert Task.objects.get(campaign=c).state == Task.State.PENDING
    Result.objects.filter(campaign=c).update(
        returned_at=timezone.now() - validation.STUCK_AFTER - timedelta(seconds=1)
    )
    validation.catch_up()
    c.refresh_from_db()
    assert (c.tasks_done, c.state) == (1, Campaign.State.COMPLETED)


def test_validation_that_never_ran_is_caught_up(make_campaign, contributors, hooks):
    from django.core.management import call_command

    from rewards import validation

    c = make_campaign(["a", "b"], min_quorum=2, target_replicas=2)
    alice, bob = contributors(2)
    decide = list(hooks.decide_returned)
    hooks.decide_returned.clear()  # as if the decision were lost
    for s in (alice, bob):
        scheduler.submit_results(s, [ok(x, b"same") for x in scheduler.lease(s, 2)])
    hooks.decide_returned[:] = decide
    assert Task.objects.filter(campaign=c, state=Task.State.PENDING).count() == 2
    assert len(validation.stuck_tasks()) == 2
    call_command("rewards", "revalidate")
    c.refresh_from_db()
    assert (c.tasks_done, c.state) == (2, Campaign.State.COMPLETED)
    assert validation.stuck_tasks() == []
    assert LedgerEntry.objects.count() == 4
    call_command("rewards", "check")
