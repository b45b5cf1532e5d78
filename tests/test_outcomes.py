"""Honest outcomes: a campaign in which every task failed ends `failed` with the reason, and
`ccgsc campaign watch` exits non-zero on it; one task done is enough to complete."""

from __future__ import annotations

import types
from typing import Any

import pytest

from accounts import services as account_services
from campaigns.cli import __main__ as cli
from campaigns.models import Campaign
from tests.conftest import fail_item, ok_item
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


@pytest.fixture
def session(db):
    s = WorkerSession.objects.create(kind="native")
    return SessionInfo(id=s.pk, user_id=None, organization_id=None)


@pytest.fixture(autouse=True)
def _fresh_directory():
    # As in test_scheduler: the scheduler's campaign directory outlives a test's rollback.
    scheduler.work_available()
    with scheduler._directory.lock:
        scheduler._directory.passes.clear()


def _finish(session, answers):
    leases = scheduler.lease(session, len(answers))
    assert len(leases) == len(answers)
    by_input = {x.input: x for x in leases}
    scheduler.submit_results(
        session,
        [
            ok_item(by_input[key]) if good else fail_item(by_input[key], stderr=f"no {key!r}")
            for key, good in answers.items()
        ],
    )


def test_a_campaign_whose_every_task_failed_ends_failed_with_the_reason(make_campaign, session):
    c = make_campaign(["a", "b"], max_attempts=1)
    _finish(session, {b"a": False, b"b": False})
    c.refresh_from_db()
    assert (c.state, c.tasks_failed, c.tasks_done) == (Campaign.State.FAILED, 2, 0)
    assert c.error.startswith("Every task failed. The first failure (task 0): ")
    assert "no b'a'" in c.error and c.finished_at is not None


def test_one_success_is_enough_to_complete(make_campaign, session):
    c = make_campaign(["a", "b"], max_attempts=1)
    _finish(session, {b"a": True, b"b": False})
    c.refresh_from_db()
    assert (c.state, c.tasks_failed, c.tasks_done, c.error) == (
        Campaign.State.COMPLETED,
        1,
        1,
        "",
    )


def test_a_quorum_above_the_connected_volunteers_is_reported(client, people, make_campaign):
    c = make_campaign(["a"], min_quorum=2, target_replicas=2)
    WorkerSession.objects.create(kind="native", organization=people.org)
    # A disconnected session and another organization's worker do not count.
    WorkerSession.objects.create(kind="native", disconnected_at=c.created_at)
    token = account_services.token_issue(organization=people.org, name="t", created_by=None)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    progress = client.get(f"/api/v1/campaigns/{c.pk}/progress", **auth).json()
    assert "needs 2 agreeing results from distinct volunteers" in progress["stalled"]
    assert "1 connected volunteer can run it" in progress["stalled"]
    status = client.get(f"/api/v1/campaigns/{c.pk}", **auth).json()
    assert status["stalled"] == progress["stalled"]
    assert "cannot progress: each task needs 2" in cli.campaign_text(status)
    client.force_login(people.owner)
    page = client.get(f"/orgs/{people.org.slug}/campaigns/{c.pk}/").content.decode()
    assert "This campaign cannot progress" in page

    WorkerSession.objects.create(kind="native", organization=people.org)
    assert client.get(f"/api/v1/campaigns/{c.pk}/progress", **auth).json()["stalled"] == ""


def test_a_stalled_campaign_has_no_eta(client, people, make_campaign, session, capsys):
    """Issue 12: results returned in the last minute give a rate, but a campaign that cannot
    progress has no ETA; the watch prints why instead of one."""
    c = make_campaign(["a", "b"], min_quorum=2, target_replicas=2)
    (lease,) = scheduler.lease(session, 1)
    scheduler.submit_results(session, [ok_item(lease)])
    token = account_services.token_issue(organization=people.org, name="t", created_by=None)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    progress = client.get(f"/api/v1/campaigns/{c.pk}/progress", **auth).json()
    assert "1 connected volunteer can run it" in progress["stalled"]
    assert progress["rate_per_second"] > 0 and progress["eta_seconds"] is None

    api = types.SimpleNamespace(get=lambda path: progress if path.endswith("/progress") else None)
    ctx: Any = types.SimpleNamespace(api=lambda: api, json=False)  # Context, as watch uses it
    with pytest.raises(cli.CliError, match="still running"):
        cli.watch(ctx, c.pk, interval=0, timeout=-1, json_lines=False)
    text = capsys.readouterr().err
    assert "ETA" not in text and ", stalled" in text
    assert f"campaign {c.pk} cannot progress: each task needs 2" in text


def test_workers_on_one_network_count_once_for_a_quorum(client, people, make_campaign):
    """Replicas of a task never go to one network origin, so two workers behind one address
    cannot make a quorum of 2: the campaign says so rather than look merely idle."""
    c = make_campaign(["a"], min_quorum=2, target_replicas=2)
    for _ in range(2):
        WorkerSession.objects.create(kind="native", organization=people.org, origin="10.0.0.0/24")
    token = account_services.token_issue(organization=people.org, name="t", created_by=None)[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    stalled = client.get(f"/api/v1/campaigns/{c.pk}/progress", **auth).json()["stalled"]
    assert "1 connected volunteer can run it" in stalled
    assert "workers on one network count once" in stalled

    WorkerSession.objects.create(kind="native", organization=people.org, origin="10.0.1.0/24")
    assert client.get(f"/api/v1/campaigns/{c.pk}/progress", **auth).json()["stalled"] == ""


def test_a_trial_on_one_machine_tells_loopback_workers_apart(settings):
    from workers.identity import network_origin

    assert network_origin("127.0.0.1") == "127.0.0.0/24"
    assert network_origin("::1") is not None
    settings.CCGSC = {**settings.CCGSC, "ORIGIN_IGNORES_LOOPBACK": True}
    assert network_origin("127.0.0.1") is None
    assert network_origin("::1") is None
    assert network_origin("192.0.2.7") == "192.0.2.0/24"  # only loopback is exempt


class FakeApi:
    def __init__(self, snapshots):
        self.snapshots = list(snapshots)

    def get(self, path):
        return self.snapshots.pop(0)

    def close(self):
        pass


def test_watch_exits_6_with_the_reason_when_every_task_failed(monkeypatch, capsys):
    base = {"id": 4, "input_state": "ready", "tasks_total": 2, "tasks_remaining": 0}
    failed = {
        **base,
        "state": "failed",
        "tasks_done": 0,
        "tasks_failed": 2,
        "error": "Every task failed. The first failure (task 0): exit code 1",
    }
    monkeypatch.setattr(cli.Context, "api", lambda self: FakeApi([failed]))
    assert cli.main(["campaign", "watch", "4"]) == 6
    assert "campaign 4 failed: Every task failed" in capsys.readouterr().err
