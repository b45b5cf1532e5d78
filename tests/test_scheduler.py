"""The scheduler's hot path: leases, results, failures, checkpoints, releases, expiry."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from campaigns.models import Campaign, Result, Task
from tests.conftest import fail_item as fail
from tests.conftest import ok_item as ok
from tests.skips import needs
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture
def session(db):
    def make(**kw):
        s = WorkerSession.objects.create(kind=kw.pop("kind", "native"), **kw)
        return SessionInfo(id=s.pk, user_id=s.user_id, organization_id=s.organization_id)

    return make


@pytest.fixture(autouse=True)
def _fresh_directory():
    scheduler.work_available()
    # Campaign ids are reused after a test's rollback: a pass left by an earlier test's
    # campaign 1 would otherwise be inherited by this test's campaign 1 and skew fair share.
    with scheduler._directory.lock:
        scheduler._directory.passes.clear()


def test_lease_hands_out_each_replica_once(make_campaign, session):
    c = make_campaign([f"in{i}" for i in range(10)])
    a, b = session(), session()
    first = scheduler.lease(a, 4)
    second = scheduler.lease(b, 10)
    assert len(first) == 4 and len(second) == 6
    assert {x.lease for x in first}.isdisjoint({x.lease for x in second})
    assert sorted(x.input for x in first + second) == sorted(f"in{i}".encode() for i in range(10))
    assert scheduler.lease(a, 5) == []
    assert (
        Result.objects.filter(campaign=c, state=Result.State.LEASED, session_id=a.id).count() == 4
    )


def test_results_are_recorded_exactly_once(make_campaign, session):
    c = make_campaign(["a", "b", "c"])
    s = session()
    leases = scheduler.lease(s, 3)
    out = scheduler.submit_results(s, [ok(x, out=x.input.upper()) for x in leases])
    assert sorted(out.accepted) == sorted(x.lease for x in leases) and out.ignored == []
    assert out.done == 3
    # The same answers again (a retransmission) are acknowledged and ignored.
    again = scheduler.submit_results(s, [ok(x, out=b"other") for x in leases])
    assert again.accepted == [] and sorted(again.ignored) == sorted(x.lease for x in leases)
    c.refresh_from_db()
    assert (c.tasks_done, c.state) == (3, Campaign.State.COMPLETED)
    outputs = {
        bytes(t.canonical_result.output or b"")
        for t in Task.objects.filter(campaign=c).select_related("canonical_result")
        if t.canonical_result is not None
    }
    assert outputs == {b"A", b"B", b"C"}
    assert set(Result.objects.filter(campaign=c).values_list("validation", flat=True)) == {1}


def test_result_from_another_session_is_ignored(make_campaign, session):
    make_campaign(["a"])
    holder, thief = session(), session()
    (lease,) = scheduler.lease(holder, 1)
    out = scheduler.submit_results(thief, [ok(lease)])
    assert out.accepted == [] and out.ignored == [lease.lease]
    assert Result.objects.get(pk=lease.lease).state == Result.State.LEASED


def test_failures_retry_until_max_attempts_then_fail_with_reason(make_campaign, session):
    c = make_campaign(["x"], max_attempts=3)
    s = session()
    for attempt in range(3):
        (lease,) = scheduler.lease(s, 1)
        scheduler.submit_results(s, [fail(lease, stderr=f"attempt {attempt}")])
    assert scheduler.lease(s, 1) == []
    task = Task.objects.get(campaign=c)
    assert task.state == Task.State.FAILED and task.error_count == 3
    assert "3 failed attempt(s) on 1 worker session(s) (1 native)" in task.failure
    assert "attempt 2" in task.failure
    c.refresh_from_db()
    # Not one task succeeded: the campaign failed, saying why (tests/test_outcomes.py).
    assert (c.tasks_failed, c.state) == (1, Campaign.State.FAILED)
    assert Result.objects.filter(task=task).count() == 3


def test_expired_lease_is_reclaimed_and_retried(make_campaign, session):
    make_campaign(["x"], task_timeout=10)
    s = session()
    (lease,) = scheduler.lease(s, 1)
    assert scheduler.reclaim_expired(now=timezone.now()) == 0
    assert scheduler.reclaim_expired(now=timezone.now() + timedelta(seconds=21)) == 1
    assert Result.objects.get(pk=lease.lease).state == Result.State.TIMED_OUT
    # The late answer is ignored; a new replica is leased and completes the task.
    assert scheduler.submit_results(s, [ok(lease)]).ignored == [lease.lease]
    (retry,) = scheduler.lease(session(), 1)
    assert retry.task == lease.task and retry.lease != lease.lease


def test_release_returns_leases_without_counting_an_attempt(make_campaign, session):
    make_campaign(["a", "b"])
    s = session()
    leases = scheduler.lease(s, 2)
    assert scheduler.release(s.id) == 2
    assert Task.objects.filter(error_count=0).count() == 2
    again = scheduler.lease(session(), 2)
    assert sorted(x.lease for x in again) == sorted(x.lease for x in leases)


def test_checkpoint_is_handed_to_the_next_attempt(make_campaign, session):
    make_campaign(["job"])
    s = session()
    (lease,) = scheduler.lease(s, 1)
    assert lease.checkpoint is None
    assert scheduler.save_checkpoint(s, lease.lease, b"step=7")
    assert not scheduler.save_checkpoint(session(), lease.lease, b"intruder")
    scheduler.release(s.id)
    (resumed,) = scheduler.lease(session(), 1)
    assert resumed.checkpoint == b"step=7"


def test_unapproved_campaign_only_reaches_its_own_organization(make_campaign, session, people):
    make_campaign(["a"], approved=False)
    assert scheduler.lease(session(), 1) == []
    assert scheduler.lease(session(organization=people.other_org), 1) == []
    assert len(scheduler.lease(session(organization=people.org), 1)) == 1


def test_members_own_browsers_also_get_their_organizations_unapproved_campaigns(
    make_campaign, people
):
    from accounts.models import EmbedSite
    from workers.sessions import session_info

    make_campaign(["a", "b", "c"], approved=False)

    def browser(user, **kw):
        return session_info(WorkerSession.objects.create(kind="browser", user=user, **kw))

    site = EmbedSite.objects.create(
        organization=people.org, name="blog", origin="https://blog.example"
    )
    assert scheduler.lease(browser(people.outsider), 1) == []  # another organization's member
    assert scheduler.lease(browser(None), 1) == []  # anonymous
    # A member visiting an embedding site is a visitor there, not the organization's worker.
    assert scheduler.lease(browser(people.teammate, site_id=site.pk), 1) == []
    assert len(scheduler.lease(browser(people.teammate), 1)) == 1
    # A native worker's user (a token's creator) does not make it the organization's.
    native = session_info(WorkerSession.objects.create(kind="native", user=people.owner))
    assert scheduler.lease(native, 1) == []


def test_campaigns_are_approved_at_creation_where_the_server_says_so(make_campaign, settings):
    settings.CCGSC = {**settings.CCGSC, "CAMPAIGN_AUTO_APPROVE": True}
    assert make_campaign(["a"], approved=False).approved
    settings.CCGSC = {**settings.CCGSC, "CAMPAIGN_AUTO_APPROVE": False}
    assert not make_campaign(["a"], approved=False).approved


def test_paused_campaign_is_not_leased(make_campaign, session):
    from campaigns import services

    c = make_campaign(["a", "b"])
    s = session()
    scheduler.lease(s, 1)
    services.campaign_pause(campaign=c)
    scheduler.work_available()
    assert scheduler.lease(session(), 2) == []
    # Pausing gave the outstanding lease back to the queue.
    assert Result.objects.filter(campaign=c, state=Result.State.UNSENT).count() == 2


def test_fair_share_follows_priority(people, make_campaign, session):
    heavy = make_campaign([str(i) for i in range(300)], priority=30)
    light = make_campaign([str(i) for i in range(300)], kernel="noop", priority=10)
    s = session()
    got = [x.campaign for _ in range(40) for x in scheduler.lease(s, 5)]
    share = got.count(heavy.pk) / len(got)
    assert got.count(light.pk) > 0
    assert 0.65 <= share <= 0.85, share


def test_replicas_of_one_task_go_to_distinct_users(make_campaign, session, people):
    make_campaign(["a"], min_quorum=2, target_replicas=2)
    owner = session(user=people.owner)
    assert len(scheduler.lease(owner, 5)) == 1
    assert scheduler.lease(session(user=people.owner), 5) == []
    assert len(scheduler.lease(session(user=people.teammate), 5)) == 1


def test_queries_per_batch_are_pinned(make_campaign, session, cached_directory):
    make_campaign([str(i) for i in range(200)])
    s = session()
    scheduler.running_campaigns(refresh=True)
    with CaptureQueriesContext(connection) as leasing:
        leases = scheduler.lease(s, 100)
    assert len(leases) == 100
    with CaptureQueriesContext(connection) as submitting:
        out = scheduler.submit_results(s, [ok(x) for x in leases])
    assert out.done == 100
    lease_sql = [q["sql"] for q in leasing.captured_queries if "SAVEPOINT" not in q["sql"]]
    submit_sql = [q["sql"] for q in submitting.captured_queries if "SAVEPOINT" not in q["sql"]]
    # PostgreSQL: one statement. SQLite: UPDATE ... RETURNING, then the inputs.
    assert len(lease_sql) == (1 if connection.vendor == "postgresql" else 2), lease_sql
    # Replicas, tasks, their validation, the points ledger (one INSERT for the batch, one
    # upsert of the totals it changes), the campaign counters.
    assert len(submit_sql) == 6, submit_sql


@pytest.mark.django_db(transaction=True)
def test_concurrent_sessions_never_share_a_replica(people, make_campaign):
    c = make_campaign([str(i) for i in range(600)])
    sessions = [WorkerSession.objects.create(kind="native").pk for _ in range(6)]
    got: dict[int, list[int]] = {sid: [] for sid in sessions}
    errors: list[BaseException] = []

    def worker(sid: int) -> None:
        info = SessionInfo(id=sid)
        try:
            while True:
                batch = scheduler.lease(info, 7)
                if not batch:
                    # Another session's short batch marks the campaign empty for a while in
                    # this process: look once more for real before stopping (and count what
                    # that finds: dropping it made the total fall short of 600 now and then).
                    scheduler.work_available()
                    batch = scheduler.lease(info, 7)
                    if not batch:
                        break
                got[sid].extend(x.lease for x in batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(sid,)) for sid in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)  # a bound for a hung thread, far above a loaded machine's few seconds
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    every = [lid for ids in got.values() for lid in ids]
    assert len(every) == len(set(every)) == 600
    assert Result.objects.filter(campaign=c, state=Result.State.LEASED).count() == 600
    assert sum(1 for ids in got.values() if ids) >= 2


def test_a_campaign_without_room_is_not_skipped_for_another(make_campaign, session):
    # Fair share: when the campaign whose turn it is has no room in the session (its tasks
    # are short and the session's hands are full of another campaign's long ones), nothing is
    # leased, rather than more of the long ones — which would starve the short campaign.
    short = make_campaign([str(i) for i in range(10)])
    long = make_campaign([str(i) for i in range(10)], kernel="noop")
    s = session()
    first = scheduler.lease(s, 1)
    turn = long if first[0].campaign == short.pk else short
    assert scheduler.lease(s, 5, budget=lambda cid: 0 if cid == turn.pk else 5) == []
    got = scheduler.lease(s, 5, budget=lambda cid: 5)
    assert got and got[0].campaign == turn.pk


@needs(connection.vendor != "postgresql", "a PostgreSQL query plan")
def test_the_expired_replica_check_is_an_index_lookup(make_campaign, session):
    """Every lease excludes the tasks whose replica this session let expire. That check must
    look up the session's expired replicas, not read the (task, state) index of every result
    (10,000 working sessions slowed to 45 tasks/s as results grew: docs/benchmarks.md)."""
    c = make_campaign([str(i) for i in range(20)])
    s = session()
    sql, params = scheduler._candidates(s, scheduler.running_campaigns(refresh=True)[c.pk], 5)
    assert c.pk in params
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "result_timed_out_by" in plan, plan
