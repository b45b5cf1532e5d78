"""The points ledger: each result paid exactly once, even under concurrency; totals equal the
ledger's sums; teams get what members earned while members."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connection, transaction

from accounts.models import EmbedSite, User
from campaigns.models import Campaign, Result, Task
from rewards import ledger, services
from rewards.models import LedgerEntry, Total
from tests.conftest import ok_item as ok
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture(autouse=True)
def _fresh():
    scheduler.work_available()


def total(scope, key):
    row = Total.objects.filter(scope=scope, key=key).first()
    return (row.points, row.results) if row else (0, 0)


def run_threads(target, n):
    errors: list[BaseException] = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_granting_twice_pays_once(make_campaign, people):
    c = make_campaign(["a", "b"], points_per_task=9, start=False)
    rows = [(101, people.owner.pk, None, c.pk), (102, people.teammate.pk, None, c.pk)]
    assert ledger.grant(rows) == 2
    assert ledger.grant(rows + rows) == 0
    assert LedgerEntry.objects.count() == 2
    assert total("user", people.owner.pk) == (9, 1)
    assert total("campaign", c.pk) == (18, 2)


def test_the_database_refuses_a_second_entry_for_a_result(make_campaign, people):
    from django.db import IntegrityError

    c = make_campaign(["a"], start=False)
    LedgerEntry.objects.create(result_id=5, user=people.owner, campaign=c, points=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(result_id=5, user=people.owner, campaign=c, points=1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_pay_each_result_exactly_once(make_campaign, people):
    c = make_campaign(["a"], points_per_task=3, start=False)
    users = [people.owner.pk, people.teammate.pk, people.outsider.pk]
    rows = [(1000 + i, users[i % 3], None, c.pk) for i in range(120)]

    def grant_all(seed):
        mine = rows[:]
        random.Random(seed).shuffle(mine)
        for i in range(0, len(mine), 15):  # one transaction per batch, as the scheduler does
            with transaction.atomic():
                ledger.grant(mine[i : i + 15])

    run_threads(grant_all, 8)
    assert LedgerEntry.objects.count() == 120
    paid = LedgerEntry.objects.values_list("result_id", flat=True)
    assert sorted(x or 0 for x in paid) == [r[0] for r in rows]
    assert total("campaign", c.pk) == (360, 120)
    assert all(total("user", u) == (120, 40) for u in users)
    assert ledger.check_totals() == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_validations_decide_and_pay_once(make_campaign, settings):
    """Four contributors hold a replica of every task (quorum 2) and answer all at once: each
    task is decided once, each valid result is paid once, and the counters add up."""
    # Strict quorum: with adaptive replication the contributors would soon be trusted and
    # some tasks decided by one result (tests/test_rewards_trust.py covers that).
    settings.CCGSC = {**settings.CCGSC, "ADAPTIVE_REPLICATION": False}
    tasks = 40
    c = make_campaign(
        [f"t{i}" for i in range(tasks)], min_quorum=2, target_replicas=4, points_per_task=2
    )
    sessions = []
    for i in range(4):
        user = User.objects.create_user(f"c{i}@example.test", "pw")
        s = WorkerSession.objects.create(kind="native", user=user)
        sessions.append(SessionInfo(id=s.pk, user_id=user.pk))
    held = {s.id: scheduler.lease(s, tasks) for s in sessions}
    assert all(len(v) == tasks for v in held.values())

    def answer_all(i):
        s = sessions[i]
        leases = held[s.id][:]
        random.Random(i).shuffle(leases)
        for j in range(0, tasks, 5):
            scheduler.submit_results(s, [ok(x, x.input.upper()) for x in leases[j : j + 5]])

    run_threads(answer_all, 4)
    c.refresh_from_db()
    assert (c.tasks_done, c.tasks_failed, c.state) == (tasks, 0, Campaign.State.COMPLETED)
    assert Task.objects.filter(campaign=c, state=Task.State.DONE).count() == tasks
    valid = set(
        Result.objects.filter(campaign=c, validation=Result.Validation.VALID).values_list(
            "pk", flat=True
        )
    )
    assert len(valid) >= 2 * tasks
    paid = list(LedgerEntry.objects.values_list("result_id", flat=True))
    assert len(paid) == len(set(paid)) and set(paid) == valid
    assert total("campaign", c.pk) == (2 * len(valid), len(valid))
    assert ledger.check_totals() == []


def test_totals_per_user_team_site_and_campaign_equal_the_ledger(make_campaign, people):
    c = make_campaign(["a"], points_per_task=5, start=False)
    site = EmbedSite.objects.create(organization=people.org, name="Blog", origin="https://b.test")
    red = services.team_create(founder=people.owner, name="Red")
    services.team_join(user=people.teammate, team=red)
    ledger.grant([(1, people.owner.pk, site.pk, c.pk), (2, people.teammate.pk, None, c.pk)])
    # The teammate moves to another team: what was earned stays with Red.
    blue = services.team_create(founder=people.outsider, name="Blue")
    services.team_join(user=people.teammate, team=blue)
    ledger.grant([(3, people.teammate.pk, site.pk, c.pk), (4, None, site.pk, c.pk)])
    ledger.adjust(user=people.owner, points=-2, note="duplicate work")
    assert total("team", red.pk) == (10 - 2, 2)
    assert total("team", blue.pk) == (5, 1)
    assert total("user", people.owner.pk) == (3, 1)
    assert total("user", people.teammate.pk) == (10, 2)
    assert total("site", site.pk) == (15, 3)
    assert total("campaign", c.pk) == (20, 4)
    assert ledger.check_totals() == []
    # A repair after someone edits totals by hand restores the ledger's figures.
    Total.objects.filter(scope="team", key=red.pk).update(points=999)
    assert ledger.check_totals() != []
    ledger.rebuild_totals()
    assert ledger.check_totals() == []


def test_team_membership_rules(people):
    from django.core.exceptions import ValidationError

    red = services.team_create(founder=people.owner, name="Red Giants", description="hi")
    assert red.slug == "red-giants" and people.owner.team_membership.team == red
    with pytest.raises(ValidationError):
        services.team_create(founder=people.teammate, name="red giants")
    with pytest.raises(ValidationError):
        services.team_create(founder=people.teammate, name="   ")
    services.team_join(user=people.teammate, team=red)
    assert red.memberships.count() == 2
    assert services.team_leave(user=people.teammate)
    assert not services.team_leave(user=people.teammate)
    assert red.memberships.count() == 1
