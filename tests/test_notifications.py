"""Campaign notifications (email, signed webhooks with retries, stalls) and weekly summaries."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from accounts.models import User
from campaigns import services as campaign_services
from campaigns.models import Campaign
from campaigns.services.base import announce
from operations import notifications, services
from operations.models import CampaignWatch, ContributorPrefs, Delivery
from rewards.models import LedgerEntry
from tests.conftest import ok_item
from workers import scheduler
from workers.models import WorkerSession


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: answers `statuses` in turn (then 200), keeps requests."""

    url: str
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    settings.NOTIFY_ALLOW_PRIVATE_WEBHOOKS = True
    state = Receiver(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def _finish(campaign: Campaign, captured) -> None:
    """Run every task of a campaign through the scheduler, committing (on_commit callbacks run,
    as they do in production: the completion signal, then the delivery jobs)."""
    session = WorkerSession.objects.create(
        kind="native", slots=50, organization=campaign.organization
    )
    info = scheduler.SessionInfo(
        id=session.pk, kind="native", organization_id=campaign.organization_id
    )
    scheduler.work_available()
    with captured(execute=True):
        leases = scheduler.lease(info, 50)
        scheduler.submit_results(info, [ok_item(x, x.input) for x in leases])


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    expected = hmac.new(
        secret.encode(), headers["x-ccgsc-timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["x-ccgsc-signature"], f"sha256={expected}")


def test_completion_emails_the_owners(people, make_campaign, django_capture_on_commit_callbacks):
    campaign = make_campaign([1, 2])
    _finish(campaign, django_capture_on_commit_callbacks)
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["owner@alpha.test"]  # owners only, not the teammate
    assert "completed" in message.subject and campaign.name in message.subject
    assert "2 of 2 tasks done" in message.body
    delivery = Delivery.objects.get(campaign=campaign)
    assert delivery.state == Delivery.State.DELIVERED and delivery.event == "completed"


def test_email_can_be_turned_off(people, make_campaign, django_capture_on_commit_callbacks):
    campaign = make_campaign([1])
    services.notifications_save(campaign=campaign, email=False, webhook_url="", stall_minutes=None)
    _finish(campaign, django_capture_on_commit_callbacks)
    assert mail.outbox == []
    assert not Delivery.objects.filter(campaign=campaign).exists()


def test_completion_posts_a_signed_webhook(
    people, make_campaign, receiver, django_capture_on_commit_callbacks
):
    campaign = make_campaign([1, 2, 3])
    secret = services.notifications_save(
        campaign=campaign, email=False, webhook_url=receiver.url, stall_minutes=None
    )
    assert secret and len(secret) >= 32
    _finish(campaign, django_capture_on_commit_callbacks)
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert _verify(secret, headers, body)
    assert not _verify("wrong" + secret, headers, body)
    event = json.loads(body)
    assert (
        event["event"] == "campaign.completed" and headers["x-ccgsc-event"] == "campaign.completed"
    )
    assert event["campaign"]["tasks_done"] == 3 and event["campaign"]["id"] == campaign.pk
    delivery = Delivery.objects.get(campaign=campaign)
    assert delivery.state == Delivery.State.DELIVERED and delivery.last_status == 200


def test_a_failing_webhook_is_retried_with_backoff_then_given_up(
    people, make_campaign, receiver, django_capture_on_commit_callbacks
):
    campaign = make_campaign([1])
    services.notifications_save(
        campaign=campaign, email=False, webhook_url=receiver.url, stall_minutes=None
    )
    receiver.statuses = [500] * notifications.WEBHOOK_ATTEMPTS
    start = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        [pk] = notifications.notify(campaign.pk, "failed")
    delivery = Delivery.objects.get(pk=pk)
    assert delivery.state == Delivery.State.RETRYING and delivery.attempts == 1
    assert delivery.last_status == 500 and delivery.last_error == "HTTP 500"
    assert delivery.next_attempt_at is not None
    first_wait = delivery.next_attempt_at - start
    assert timedelta(seconds=notifications.RETRY_BASE_SECONDS) <= first_wait
    # Not due yet: nothing is sent.
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.retry_due(now=start) == 0
    waits = [first_wait]
    for attempt in range(2, notifications.WEBHOOK_ATTEMPTS + 1):
        with django_capture_on_commit_callbacks(execute=True):
            assert notifications.retry_due(now=delivery.next_attempt_at) == 1
        delivery.refresh_from_db()
        assert delivery.attempts == attempt
        if delivery.next_attempt_at:
            waits.append(delivery.next_attempt_at - timezone.now())
    assert delivery.state == Delivery.State.FAILED
    assert len(receiver.requests) == notifications.WEBHOOK_ATTEMPTS
    # Exponential: each wait about twice the one before.
    assert all(b > a * 1.8 for a, b in itertools.pairwise(waits))


def test_a_webhook_recovers_on_retry(
    people, make_campaign, receiver, django_capture_on_commit_callbacks
):
    campaign = make_campaign([1])
    services.notifications_save(
        campaign=campaign, email=False, webhook_url=receiver.url, stall_minutes=None
    )
    receiver.statuses = [503]
    with django_capture_on_commit_callbacks(execute=True):
        [pk] = notifications.notify(campaign.pk, "completed")
    due = Delivery.objects.get(pk=pk).next_attempt_at
    with django_capture_on_commit_callbacks(execute=True):
        notifications.retry_due(now=due)
    delivery = Delivery.objects.get(pk=pk)
    assert delivery.state == Delivery.State.DELIVERED and delivery.attempts == 2
    # Each attempt is signed afresh and says which attempt it is.
    assert [json.loads(b)["attempt"] for _, b in receiver.requests] == [1, 2]


def test_webhooks_to_private_addresses_are_refused_by_default(
    people, make_campaign, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFY_ALLOW_PRIVATE_WEBHOOKS = False
    campaign = make_campaign([1])
    services.notifications_save(
        campaign=campaign, email=False, webhook_url="http://127.0.0.1:9/x", stall_minutes=None
    )
    with django_capture_on_commit_callbacks(execute=True):
        [pk] = notifications.notify(campaign.pk, "completed")
    delivery = Delivery.objects.get(pk=pk)
    assert "non-public address" in delivery.last_error and delivery.last_status is None


def test_generator_failure_notifies(people, make_campaign, django_capture_on_commit_callbacks):
    campaign = make_campaign([1])
    with django_capture_on_commit_callbacks(execute=True):
        Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.FAILED, error="boom")
        announce(campaign.pk, Campaign.State.FAILED)
    assert len(mail.outbox) == 1 and "failed" in mail.outbox[0].subject
    assert "Reason: boom" in mail.outbox[0].body


# --- stalls -------------------------------------------------------------------------------------


def test_a_campaign_without_progress_is_reported_once(
    people, make_campaign, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFY_STALL_MINUTES = 30
    campaign = make_campaign([1, 2, 3])
    t0 = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.check_stalled(now=t0) == []
        assert notifications.check_stalled(now=t0 + timedelta(minutes=29)) == []
        assert notifications.check_stalled(now=t0 + timedelta(minutes=30)) == [campaign.pk]
        # Once: not again while it stays stalled.
        assert notifications.check_stalled(now=t0 + timedelta(minutes=90)) == []
    assert len(mail.outbox) == 1 and "no progress for 30 minutes" in mail.outbox[0].subject
    # Progress resets the clock; a new stall is reported again.
    Campaign.objects.filter(pk=campaign.pk).update(tasks_done=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.check_stalled(now=t0 + timedelta(minutes=100)) == []
        assert notifications.check_stalled(now=t0 + timedelta(minutes=131)) == [campaign.pk]
    assert len(mail.outbox) == 2


def test_stall_time_per_campaign_and_pauses_restart_the_clock(people, make_campaign):
    campaign = make_campaign([1])
    services.notifications_save(campaign=campaign, email=True, webhook_url="", stall_minutes=5)
    t0 = timezone.now()
    notifications.check_stalled(now=t0)
    campaign_services.campaign_pause(campaign=campaign)
    notifications.check_stalled(now=t0 + timedelta(minutes=1))
    assert not CampaignWatch.objects.filter(campaign=campaign).exists()
    campaign_services.campaign_resume(campaign=Campaign.objects.get(pk=campaign.pk))
    # Resumed after an hour: its clock starts at the resume, not before the pause.
    assert notifications.check_stalled(now=t0 + timedelta(minutes=60)) == []
    assert notifications.check_stalled(now=t0 + timedelta(minutes=64)) == []
    assert notifications.check_stalled(now=t0 + timedelta(minutes=65)) == [campaign.pk]


# --- pages --------------------------------------------------------------------------------------


def test_campaign_page_shows_the_delivery_log(
    people, make_campaign, django_capture_on_commit_callbacks
):
    campaign = make_campaign([1])
    _finish(campaign, django_capture_on_commit_callbacks)
    client = Client()
    client.force_login(people.teammate)
    url = f"/orgs/alpha/campaigns/{campaign.pk}/"
    html = client.get(url).content.decode()
    assert 'id="notifications-card"' in html and "Delivered" in html
    log = client.get(url + "notifications/").content.decode()
    assert 'id="delivery-log"' in log and "owner@alpha.test" in log


def test_only_owners_change_notification_settings(people, make_campaign, settings):
    settings.NOTIFY_ALLOW_PRIVATE_WEBHOOKS = True  # example.com need not resolve here
    campaign = make_campaign([1])
    url = f"/orgs/alpha/campaigns/{campaign.pk}/notifications/"
    teammate = Client()
    teammate.force_login(people.teammate)
    teammate.post(url, {"webhook_url": "https://example.com/x", "stall_minutes": "5"})
    assert notifications.settings_for(campaign).pk is None
    outsider = Client()
    outsider.force_login(people.outsider)
    assert outsider.get(url).status_code == 404
    assert outsider.post(url, {"webhook_url": "https://e.com/"}).status_code == 404
    owner = Client()
    owner.force_login(people.owner)
    response = owner.post(
        url, {"email": "on", "webhook_url": "https://example.com/x", "stall_minutes": "5"}
    )
    assert response.status_code == 200 and 'id="new-secret"' in response.content.decode()
    prefs = notifications.settings_for(campaign)
    assert prefs.webhook_url == "https://example.com/x" and prefs.stall_minutes == 5
    assert prefs.webhook_secret in response.content.decode()
    # The secret is shown once: the next page load does not show it.
    assert prefs.webhook_secret not in owner.get(url).content.decode()
    bad = owner.post(url, {"webhook_url": "not a url", "stall_minutes": "0"})
    assert bad.status_code == 200 and "errorlist" in bad.content.decode()


# --- weekly summary -----------------------------------------------------------------------------


def test_weekly_summary_goes_to_those_who_opted_in(people):
    now = timezone.now()
    client = Client()
    client.force_login(people.teammate)
    assert client.post("/account/email/", {"weekly_summary": "on"}).status_code == 302
    assert ContributorPrefs.objects.get(user=people.teammate).weekly_summary
    LedgerEntry.objects.create(user=people.teammate, points=30, result_id=1, created_at=now)
    LedgerEntry.objects.create(user=people.teammate, points=10, result_id=2, created_at=now)
    LedgerEntry.objects.create(
        user=people.teammate, points=5, result_id=3, created_at=now - timedelta(days=9)
    )
    LedgerEntry.objects.create(user=people.owner, points=99, result_id=4, created_at=now)
    assert notifications.send_weekly_summaries(now=now) == 1
    [message] = mail.outbox
    assert message.to == ["mate@alpha.test"] and "40 points" in message.subject
    assert "2 results validated" in message.body and "45 points in all" in message.body
    assert "/account/email/" in message.body
    # Not twice in a week; again after one.
    assert notifications.send_weekly_summaries(now=now + timedelta(days=6)) == 0
    assert notifications.send_weekly_summaries(now=now + timedelta(days=7)) == 1


def test_weekly_summary_command(people):
    ContributorPrefs.objects.create(user=people.owner, weekly_summary=True)
    ContributorPrefs.objects.create(user=people.teammate, weekly_summary=False)
    call_command("send_weekly_summaries")
    assert [m.to for m in mail.outbox] == [["owner@alpha.test"]]
    call_command("send_weekly_summaries")
    assert len(mail.outbox) == 1
    call_command("send_weekly_summaries", "--force")
    assert len(mail.outbox) == 2


def test_opting_out_stops_the_summary(people):
    User.objects.filter(pk=people.owner.pk)
    ContributorPrefs.objects.create(user=people.owner, weekly_summary=True)
    client = Client()
    client.force_login(people.owner)
    client.post("/account/email/", {})
    assert notifications.send_weekly_summaries() == 0


def test_account_settings_link_to_the_email_preferences(people):
    client = Client()
    client.force_login(people.teammate)
    html = client.get("/account/").content.decode()
    assert 'href="/account/email/"' in html


def test_a_delivery_is_sent_once_however_often_its_job_runs(
    people, make_campaign, receiver, django_capture_on_commit_callbacks
):
    campaign = make_campaign([1])
    services.notifications_save(
        campaign=campaign, email=False, webhook_url=receiver.url, stall_minutes=None
    )
    with django_capture_on_commit_callbacks(execute=True):
        [pk] = notifications.notify(campaign.pk, "completed")
    # The same job delivered twice by the broker, or enqueued by two retry passes.
    notifications.deliver_one(pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.retry_due(now=timezone.now() + timedelta(hours=1)) == 0
    assert len(receiver.requests) == 1
    assert Delivery.objects.get(pk=pk).attempts == 1


def test_a_lost_job_is_replaced(
    people, make_campaign, receiver, django_capture_on_commit_callbacks
):
    """A delivery whose job never ran (its process died with the in-process queue), or died
    while sending, is handed to a new job once its deadline passes."""
    campaign = make_campaign([1])
    services.notifications_save(
        campaign=campaign, email=False, webhook_url=receiver.url, stall_minutes=None
    )
    # on_commit callbacks not executed: the job is lost with them.
    with django_capture_on_commit_callbacks(execute=False):
        [pk] = notifications.notify(campaign.pk, "completed")
    assert Delivery.objects.get(pk=pk).state == Delivery.State.PENDING
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.retry_due() == 0  # its job may still come
        later = timezone.now() + notifications.PENDING_LEASE
        assert notifications.retry_due(now=later) == 1
    assert Delivery.objects.get(pk=pk).state == Delivery.State.DELIVERED
    assert len(receiver.requests) == 1
    # Died while sending: SENDING past its deadline goes back to a job.
    Delivery.objects.filter(pk=pk).update(
        state=Delivery.State.SENDING, next_attempt_at=timezone.now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert notifications.retry_due(now=timezone.now() + timedelta(seconds=1)) == 1
    assert len(receiver.requests) == 2
    assert Delivery.objects.get(pk=pk).attempts == 2


def test_a_notification_error_never_reaches_the_code_that_finished_the_campaign(
    people, make_campaign, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(campaign_id, event):
        raise RuntimeError("mail server on fire")

    monkeypatch.setattr(notifications, "notify", broken)
    campaign = make_campaign([1])
    _finish(campaign, django_capture_on_commit_callbacks)  # would raise from on_commit
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.COMPLETED


def test_inactive_owners_get_no_email(people, make_campaign, django_capture_on_commit_callbacks):
    User.objects.filter(pk=people.owner.pk).update(is_active=False)
    campaign = make_campaign([1])
    _finish(campaign, django_capture_on_commit_callbacks)
    assert mail.outbox == []


def test_a_private_webhook_address_is_refused_when_saved(people, make_campaign, settings):
    settings.NOTIFY_ALLOW_PRIVATE_WEBHOOKS = False
    campaign = make_campaign([1])
    owner = Client()
    owner.force_login(people.owner)
    url = f"/orgs/alpha/campaigns/{campaign.pk}/notifications/"
    response = owner.post(url, {"email": "on", "webhook_url": "http://10.0.0.5/hook"})
    assert "non-public address" in response.content.decode()
    assert notifications.settings_for(campaign).pk is None
