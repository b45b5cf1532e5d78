"""Adaptive replication: the run of valid results, its reset, the falling spot-check rate."""

from __future__ import annotations

import pytest

from accounts.models import User
from campaigns.models import Result, Task
from rewards import trust
from rewards.models import KernelTrust, Reliability
from tests.conftest import ok_item as ok
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture(autouse=True)
def _fresh():
    scheduler.work_available()
    trust.forget_refused()
    trust.rng.seed(99)
    yield
    # User ids are reused after rollback: a refusal cached here must not follow another test.
    trust.forget_refused()


@pytest.fixture
def contributors(db):
    def make(n):
        out = []
        for i in range(n):
            user = User.objects.create_user(f"t{i}@example.test", "pw")
            s = WorkerSession.objects.create(kind="native", user=user)
            out.append(SessionInfo(id=s.pk, user_id=user.pk))
        return out

    return make


def test_spot_check_probability_falls_as_the_run_grows():
    assert all(trust.spot_check_probability(n) == 1.0 for n in range(trust.TRUST_THRESHOLD))
    assert trust.spot_check_probability(10) == 0.5
    assert trust.spot_check_probability(20) == 0.25
    assert trust.spot_check_probability(50) == pytest.approx(0.1)
    assert trust.spot_check_probability(10_000) == trust.SPOT_CHECK_FLOOR
    values = [trust.spot_check_probability(n) for n in range(200)]
    assert values == sorted(values, reverse=True)


def test_drawn_spot_checks_follow_the_probability():
    trust.rng.seed(5)
    for run, p in ((10, 0.5), (40, 0.125), (1000, 0.05)):
        checked = sum(not trust.draw_unchecked(run) for _ in range(20_000)) / 20_000
        assert checked == pytest.approx(p, abs=0.015), (run, checked)
    assert not any(trust.draw_unchecked(9) for _ in range(1000))


def test_record_builds_the_run_and_resets_it(contributors, make_campaign):
    (a,) = contributors(1)
    uid = a.user_id
    cid = make_campaign(["x"], min_quorum=2, target_replicas=2).pk

    def ev(rid, what):
        return trust.Event(rid, uid, cid, what)

    trust.record([ev(i, "valid") for i in range(1, 8)])
    r = Reliability.objects.get(user_id=uid)
    assert (r.consecutive_valid, r.valid_total, r.trusted) == (7, 7, False)
    trust.record([ev(10, "valid"), ev(11, "valid"), ev(12, "valid")])
    r.refresh_from_db()
    assert (r.consecutive_valid, r.trusted, r.spot_check_probability) == (10, True, 0.5)
    # In one batch the order of results counts: valid, invalid, valid leaves a run of one.
    trust.record([ev(22, "valid"), ev(20, "valid"), ev(21, "invalid")])
    r.refresh_from_db()
    assert (r.consecutive_valid, r.invalid_total, r.valid_total) == (1, 1, 12)
    trust.record([ev(30, "valid")] * 1 + [ev(31, "error")])
    r.refresh_from_db()
    assert (r.consecutive_valid, r.error_total) == (0, 1)
    assert not r.refused
    # The same runs per kernel.
    kt = KernelTrust.objects.get(user_id=uid)
    assert (kt.consecutive_valid, kt.valid_total, kt.invalid_total) == (0, 13, 1)


def test_a_run_of_quorum_validated_results_makes_a_user_trusted(make_campaign, contributors):
    n = trust.TRUST_THRESHOLD
    make_campaign([f"t{i}" for i in range(n + 1)], min_quorum=2, target_replicas=2)
    alice, bob, carol = contributors(3)
    mine, theirs = scheduler.lease(alice, n + 1), scheduler.lease(bob, n + 1)
    assert [x.task for x in mine] == [x.task for x in theirs]
    for a, b in zip(mine[:n], theirs[:n], strict=True):
        scheduler.submit_results(alice, [ok(a, a.input.upper())])
        scheduler.submit_results(bob, [ok(b, b.input.upper())])
    record = Reliability.objects.get(user_id=alice.user_id)
    assert (record.consecutive_valid, record.trusted) == (n, True)
    # One invalid result and the trust is gone.
    last_a, last_b = mine[n], theirs[n]
    scheduler.submit_results(alice, [ok(last_a, b"wrong")])
    scheduler.submit_results(bob, [ok(last_b, last_b.input.upper())])
    record.refresh_from_db()
    assert record.consecutive_valid == n  # one against one: not decided yet
    (third,) = scheduler.lease(carol, 1)
    assert third.task == last_a.task
    scheduler.submit_results(carol, [ok(third, third.input.upper())])
    record.refresh_from_db()
    assert (record.consecutive_valid, record.trusted, record.invalid_total) == (0, False, 1)


def test_trusted_users_are_spot_checked_less_as_their_run_grows(make_campaign, contributors):
    """A trusted honest user works through many tasks; an honest partner answers whenever a
    result is spot-checked. The share of results checked falls as the run grows."""
    from campaigns.inputs import TaskSpec
    from campaigns.services import tasks_add

    c = make_campaign([], min_quorum=2, target_replicas=2, adaptive_replication=True)
    alice, bob = contributors(2)
    KernelTrust.objects.create(
        user_id=alice.user_id, kernel_id=c.kernel_id, consecutive_valid=trust.TRUST_THRESHOLD
    )
    trust.rng.seed(2024)
    history: list[tuple[int, bool]] = []  # (alice's run when she answered, spot-checked?)
    for i in range(400):
        # One task at a time, so the partner's replica is always of alice's task.
        tasks_add(campaign=c, specs=[TaskSpec(input=f"t{i}".encode())])
        scheduler.work_available()
        run = KernelTrust.objects.get(user_id=alice.user_id).consecutive_valid
        (lease,) = scheduler.lease(alice, 1)
        scheduler.submit_results(alice, [ok(lease, b"right")])
        checked = Task.objects.get(pk=lease.task).state == Task.State.PENDING
        history.append((run, checked))
        if checked:
            (partner,) = scheduler.lease(bob, 1)
            assert partner.task == lease.task
            scheduler.submit_results(bob, [ok(partner, b"right")])
            assert Result.objects.get(pk=lease.lease).validation == Result.Validation.VALID
    early = [c for run, c in history if run < 20]
    late = [c for run, c in history if run >= 40]
    assert len(early) >= 10 and len(late) >= 30
    early_rate, late_rate = sum(early) / len(early), sum(late) / len(late)
    assert early_rate > 0.3 and late_rate < 0.2 and late_rate < early_rate / 2, (
        early_rate,
        late_rate,
    )
    # Every result was valid, checked or not; only the checked ones built the run.
    record = KernelTrust.objects.get(user_id=alice.user_id)
    assert record.consecutive_valid == trust.TRUST_THRESHOLD + sum(c for _, c in history)
