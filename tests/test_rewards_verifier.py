"""Verifier kernels: the tolerance verifier accepts results that differ in the last bits; what a
verifier rejects is invalid; a broken verifier fails the task with its reason."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from campaigns import services
from campaigns.inputs import TaskSpec
from campaigns.models import Campaign, Result, Task
from rewards import ledger, verifier
from rewards.models import LedgerEntry
from tests.conftest import kernel_bytes
from tests.conftest import ok_item as ok
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo

V = Result.Validation
PI = b"3.141592653589793 2.718281828459045\n"
PI_LAST_BITS = b"3.1415926535897927 2.7182818284590455\n"  # one ulp away from each


@pytest.fixture(autouse=True)
def _fresh():
    scheduler.work_available()


@pytest.fixture
def verified_campaign(people):
    def make(inputs, *, verifier_kernel="float_verify", env=None, **policies):
        org = people.org
        kernel = services.kernel_upload(organization=org, name="echo", data=kernel_bytes("echo"))
        judge = services.kernel_upload(
            organization=org, name=verifier_kernel, data=kernel_bytes(verifier_kernel)
        )
        c = services.campaign_create(
            organization=org,
            name="floats",
            kernel=kernel,
            verifier=judge,
            approved=True,
            env=env or {},
            **policies,
        )
        services.tasks_add(campaign=c, specs=[TaskSpec(input=i.encode()) for i in inputs])
        services.campaign_start(campaign=c)
        c.refresh_from_db()
        return c

    return make


@pytest.fixture
def contributors(db):
    from accounts.models import User

    def make(n):
        out = []
        for i in range(n):
            user = User.objects.create_user(f"v{i}@example.test", "pw")
            s = WorkerSession.objects.create(kind="native", user=user)
            out.append(SessionInfo(id=s.pk, user_id=user.pk))
        return out

    return make


def submit(session, outputs, capture):
    leases = scheduler.lease(session, len(outputs))
    assert len(leases) == len(outputs)
    with capture(execute=True):
        scheduler.submit_results(
            session, [ok(x, out) for x, out in zip(leases, outputs, strict=True)]
        )
    return leases


def test_frames_and_verdicts_follow_the_contract():
    assert verifier.frames([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert verifier.parse_verdicts(b"1\n0\n1\n", 3) == [1, 0, 1]
    for bad, n in ((b"1\n", 2), (b"x\n", 1), (b"-1\n", 1), (b"\xff", 1)):
        with pytest.raises(verifier.VerifierError):
            verifier.parse_verdicts(bad, n)


def test_tolerance_verifier_validates_results_that_differ_in_the_last_bits(
    verified_campaign, contributors, django_capture_on_commit_callbacks
):
    c = verified_campaign(["pi"], min_quorum=2, target_replicas=2, points_per_task=4)
    alice, bob = contributors(2)
    (la,) = submit(alice, [PI], django_capture_on_commit_callbacks)
    assert Task.objects.get(campaign=c).state == Task.State.PENDING
    (lb,) = submit(bob, [PI_LAST_BITS], django_capture_on_commit_callbacks)
    assert PI != PI_LAST_BITS
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.DONE and task.canonical_result_id == la.lease
    assert set(Result.objects.filter(campaign=c).values_list("validation", flat=True)) == {V.VALID}
    paid = LedgerEntry.objects.values_list("result_id", flat=True)
    assert sorted(x or 0 for x in paid) == [la.lease, lb.lease]
    c.refresh_from_db()
    assert c.state == Campaign.State.COMPLETED and c.tasks_done == 1
    assert ledger.check_totals() == []


def test_tolerance_comes_from_the_campaign_environment(
    verified_campaign, contributors, django_capture_on_commit_callbacks
):
    # With a zero tolerance the last bits matter again: no quorum, a third replica.
    c = verified_campaign(
        ["pi"], min_quorum=2, target_replicas=2, env={"VERIFY_RTOL": "0", "VERIFY_ATOL": "0"}
    )
    alice, bob, _ = contributors(3)
    submit(alice, [PI], django_capture_on_commit_callbacks)
    submit(bob, [PI_LAST_BITS], django_capture_on_commit_callbacks)
    assert Task.objects.get(campaign=c).state == Task.State.PENDING
    assert Result.objects.filter(campaign=c, state=Result.State.UNSENT).count() == 1


def test_what_the_verifier_rejects_is_invalid(
    verified_campaign, contributors, django_capture_on_commit_callbacks
):
    c = verified_campaign(["pi"], min_quorum=2, target_replicas=2, max_total_replicas=4)
    alice, bob, carol = contributors(3)
    (lb,) = submit(bob, [b"not a number"], django_capture_on_commit_callbacks)
    assert Result.objects.get(pk=lb.lease).validation == V.INVALID
    (la,) = submit(alice, [PI], django_capture_on_commit_callbacks)
    (lc,) = submit(carol, [PI_LAST_BITS], django_capture_on_commit_callbacks)
    assert Task.objects.get(campaign=c).state == Task.State.DONE
    assert not LedgerEntry.objects.filter(result_id=lb.lease).exists()
    assert LedgerEntry.objects.filter(result_id__in=[la.lease, lc.lease]).count() == 2


def test_a_single_replica_campaign_is_checked_by_its_verifier(
    verified_campaign, contributors, django_capture_on_commit_callbacks
):
    c = verified_campaign(["a", "b"])
    (alice,) = contributors(1)
    good, bad = submit(alice, [PI, b"garbage"], django_capture_on_commit_callbacks)
    assert Result.objects.get(pk=good.lease).validation == V.VALID
    assert Result.objects.get(pk=bad.lease).validation == V.INVALID
    # The rejected task gets a new replica.
    assert Task.objects.get(pk=bad.task).state == Task.State.PENDING
    assert Result.objects.filter(task_id=bad.task, state=Result.State.UNSENT).count() == 1
    c.refresh_from_db()
    assert c.tasks_done == 1


def test_a_broken_verifier_fails_the_task_with_its_reason(
    verified_campaign, contributors, django_capture_on_commit_callbacks
):
    c = verified_campaign(["x"], verifier_kernel="trap", min_quorum=2, target_replicas=2)
    (alice,) = contributors(1)
    submit(alice, [PI], django_capture_on_commit_callbacks)
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.FAILED and task.failure.startswith("verifier failed")
    c.refresh_from_db()
    assert "verifier failed on task" in c.error and c.tasks_failed == 1
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_verifier_jobs_decide_and_pay_once(verified_campaign, contributors, hooks):
    c = verified_campaign([f"t{i}" for i in range(12)], min_quorum=2, target_replicas=2)
    alice, bob = contributors(2)
    # Results recorded without running the jobs (as if the broker were slow)...
    decide = list(hooks.decide_returned)
    hooks.decide_returned.clear()
    for s in (alice, bob):
        scheduler.submit_results(s, [ok(x, PI) for x in scheduler.lease(s, 12)])
    hooks.decide_returned[:] = decide
    task_ids = list(Task.objects.filter(campaign=c).values_list("pk", flat=True))
    errors: list[BaseException] = []

    # ...then four deliveries of the same job at once.
    def job() -> None:
        try:
            verifier.verify_tasks(task_ids)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    c.refresh_from_db()
    assert (c.tasks_done, c.state) == (12, Campaign.State.COMPLETED)
    assert LedgerEntry.objects.count() == 24
    assert ledger.check_totals() == []
