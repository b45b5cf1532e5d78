"""The extension points (ccgsc.hooks): what each app registers, and that the scheduler's
results pass through them (points are paid on pay_points, not somewhere out of sight)."""

from __future__ import annotations

from accounts.models import User
from ccgsc.hooks import PeriodicJob, Registry, ResultRow, register
from operations.hooks import count_inline
from rewards import hooks as rewards_hooks
from rewards import selectors as rewards_selectors
from rewards import validation
from rewards.apps import CATCH_UP_SECONDS
from rewards.models import LedgerEntry
from tests.conftest import ok_item
from workers import scheduler
from workers.models import WorkerSession
from workers.scheduler import SessionInfo


def test_the_apps_register_what_the_registry_documents(hooks: Registry) -> None:
    assert hooks.pay_points == [rewards_hooks.pay_inline]
    assert hooks.validated == [count_inline]
    assert hooks.decide_returned == [validation.on_returned]
    assert hooks.record_failed == [validation.on_failed]
    assert hooks.lease_gates == [rewards_hooks.may_lease]
    assert hooks.periodic == [PeriodicJob(CATCH_UP_SECONDS, validation.catch_up)]
    assert hooks.site_annotators == [rewards_selectors.with_site_activity]


def test_registering_twice_registers_once(hooks: Registry) -> None:
    register(hooks.pay_points, rewards_hooks.pay_inline)
    register(hooks.periodic, PeriodicJob(CATCH_UP_SECONDS, validation.catch_up))
    assert len(hooks.pay_points) == 1 and len(hooks.periodic) == 1


def _volunteer() -> SessionInfo:
    user = User.objects.create_user("hooks@example.test", "pw")
    session = WorkerSession.objects.create(kind="native", user=user)
    return SessionInfo(id=session.pk, user_id=user.pk)


def test_inline_results_are_paid_on_pay_points(make_campaign, hooks: Registry) -> None:
    scheduler.work_available()
    c = make_campaign(["a", "b"], points_per_task=7)
    volunteer = _volunteer()
    seen: list[list[ResultRow]] = []
    hooks.validated.append(lambda rows: seen.append(list(rows)))
    paid = list(hooks.pay_points)
    hooks.pay_points.clear()
    [first, second] = scheduler.lease(volunteer, 2)
    scheduler.submit_results(volunteer, [ok_item(first)])
    assert not LedgerEntry.objects.exists()  # validated (the task is done), never paid
    hooks.pay_points[:] = paid
    scheduler.submit_results(volunteer, [ok_item(second)])
    assert list(LedgerEntry.objects.values_list("points", flat=True)) == [7]
    # The rows are named: (result, task, campaign, user, site).
    assert [(r.task, r.campaign, r.user, r.site) for rows in seen for r in rows] == [
        (first.task, c.pk, volunteer.user_id, None),
        (second.task, c.pk, volunteer.user_id, None),
    ]
