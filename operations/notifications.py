"""Telling campaign owners what became of their campaigns, and contributors what they did.

Events: a campaign completed, failed, or stalled (running, yet no task finished for
NOTIFY_STALL_MINUTES or the campaign's own setting). Each event becomes one Delivery row per
destination: an email to the organization's owners (unless turned off for the campaign) and a
POST to the campaign's webhook, if it has one. Rows are written first and sent by a job after
commit, so the campaign page's delivery log shows what was tried, when, and what came back.

Webhooks are signed: `X-CCGSC-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
with the timestamp in `X-CCGSC-Timestamp`, so a receiver can check both origin and freshness
(docs/deployment.md shows a receiver's check). A failed attempt is retried with exponential
backoff (RETRY_BASE_SECONDS * 2^n, WEBHOOK_ATTEMPTS attempts in all) by the deployment-wide
periodic job; the URL must resolve to public addresses unless NOTIFY_ALLOW_PRIVATE_WEBHOOKS.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, F, Q, Sum
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import Membership, User
from campaigns.models import Campaign
from ccgsc.jobs import enqueue
from operations.models import CampaignNotifications, CampaignWatch, ContributorPrefs, Delivery

log = logging.getLogger(__name__)
Event = Delivery.Event

WEBHOOK_ATTEMPTS = 6
RETRY_BASE_SECONDS = 30
WEBHOOK_TIMEOUT = 10.0
SUMMARY_EVERY = timedelta(days=7)
# A job that has not started a PENDING delivery by then, or not finished SENDING it, is taken
# for lost (its process died) and the delivery handed to a new job. Receivers should ignore
# a repeated X-CCGSC-Delivery id: a process dying mid-request means one may come twice.
PENDING_LEASE = timedelta(minutes=5)
SENDING_LEASE = timedelta(seconds=3 * WEBHOOK_TIMEOUT)
SIGNATURE_HEADER = "X-CCGSC-Signature"
TIMESTAMP_HEADER = "X-CCGSC-Timestamp"

_SUBJECTS = {
    Event.COMPLETED: "Campaign “{name}” completed",
    Event.FAILED: "Campaign “{name}” failed",
    Event.STALLED: "Campaign “{name}” has made no progress for {minutes} minutes",
}


class WebhookError(Exception):
    """An attempt that did not deliver: the reason goes into the delivery log."""


def new_secret() -> str:
    return secrets.token_hex(24)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def settings_for(campaign: Campaign) -> CampaignNotifications:
    """The campaign's settings; an unsaved default row (email on, no webhook) if it has none."""
    found = CampaignNotifications.objects.filter(campaign=campaign).first()
    return found or CampaignNotifications(campaign=campaign)


def stall_minutes(prefs: CampaignNotifications) -> int:
    return int(prefs.stall_minutes or settings.NOTIFY_STALL_MINUTES)


def _site_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}" if settings.SITE_URL else path


def _payload(campaign: Campaign, event: str, minutes: int) -> dict[str, Any]:
    path = reverse("campaigns:campaign_detail", args=[campaign.organization.slug, campaign.pk])
    return {
        "event": f"campaign.{event}",
        "time": timezone.now().isoformat(),
        "campaign": {
            "id": campaign.pk,
            "name": campaign.name,
            "organization": campaign.organization.slug,
            "state": campaign.state,
            "tasks_total": campaign.tasks_total,
            "tasks_done": campaign.tasks_done,
            "tasks_failed": campaign.tasks_failed,
            "error": campaign.error,
            "url": _site_url(path),
        },
        **({"stalled_minutes": minutes} if event == Event.STALLED else {}),
    }


def owner_emails(campaign: Campaign) -> list[str]:
    emails = set(
        Membership.objects.filter(
            organization_id=campaign.organization_id,
            role=Membership.Role.OWNER,
            user__is_active=True,
        )
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted(emails)


def notify(campaign_id: int, event: str) -> list[int]:
    """Record and send the deliveries of one campaign event. Returns the delivery ids."""
    campaign = Campaign.objects.select_related("organization").filter(pk=campaign_id).first()
    if campaign is None:
        return []
    prefs = settings_for(campaign)
    payload = _payload(campaign, event, stall_minutes(prefs))
    rows: list[Delivery] = []
    if prefs.email:
        recipients = owner_emails(campaign)
        if recipients:
            rows.append(
                Delivery(
                    campaign=campaign,
                    event=event,
                    channel=Delivery.Channel.EMAIL,
                    target=", ".join(recipients)[:500],
                    payload={**payload, "to": recipients},
                )
            )
    if prefs.webhook_url:
        rows.append(
            Delivery(
                campaign=campaign,
                event=event,
                channel=Delivery.Channel.WEBHOOK,
                target=prefs.webhook_url,
                payload=payload,
            )
        )
    if not rows:
        return []
    with transaction.atomic():
        created = Delivery.objects.bulk_create(rows)
        _hand_to_job([row.pk for row in created])
    return [row.pk for row in created]


# --- sending ------------------------------------------------------------------------------------


def deliver_one(delivery_id: int) -> None:
    """One attempt at a delivery (the job's body). Claims the row (PENDING → SENDING) first, so
    one job sends each attempt however often it was enqueued; a failure schedules the next
    attempt or gives up."""
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery_id, state=Delivery.State.PENDING).update(
        state=Delivery.State.SENDING,
        next_attempt_at=now + SENDING_LEASE,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return
    delivery = Delivery.objects.select_related("campaign").get(pk=delivery_id)
    try:
        if delivery.channel == Delivery.Channel.EMAIL:
            _send_email(delivery)
        else:
            delivery.last_status = _post_webhook(delivery)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, WebhookError) else f"{type(exc).__name__}: {exc}"
        _failed(delivery, reason[:300], now)
        return
    delivery.state = Delivery.State.DELIVERED
    delivery.delivered_at = timezone.now()
    delivery.next_attempt_at = None
    delivery.last_error = ""
    delivery.save(
        update_fields=["state", "delivered_at", "next_attempt_at", "last_error", "last_status"]
    )


def _failed(delivery: Delivery, reason: str, now: datetime) -> None:
    delivery.last_error = reason
    attempts = delivery.attempts
    if delivery.channel == Delivery.Channel.WEBHOOK and attempts < WEBHOOK_ATTEMPTS:
        delivery.state = Delivery.State.RETRYING
        delivery.next_attempt_at = now + timedelta(seconds=RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    else:
        delivery.state = Delivery.State.FAILED
        delivery.next_attempt_at = None
    log.warning("notification %s attempt %s failed: %s", delivery.pk, attempts, reason)
    delivery.save(update_fields=["state", "next_attempt_at", "last_error", "last_status"])


def _send_email(delivery: Delivery) -> None:
    payload = delivery.payload
    campaign = payload["campaign"]
    minutes = payload.get("stalled_minutes", 0)
    subject = _SUBJECTS[Event(delivery.event)].format(name=campaign["name"], minutes=minutes)
    body = render_to_string(
        "operations/email/campaign_event.txt", {**payload, "event": delivery.event}
    )
    send_mail(
        f"[CCGSC] {subject}",
        body,
        settings.DEFAULT_FROM_EMAIL,
        payload["to"],
    )


def check_webhook_url(url: str) -> None:
    """Refuses URLs that reach the platform's own network (SSRF): every address the host
    resolves to must be public, unless NOTIFY_ALLOW_PRIVATE_WEBHOOKS (tests, private servers)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("the webhook URL must be http(s)://host/...")
    if settings.NOTIFY_ALLOW_PRIVATE_WEBHOOKS:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookError(f"cannot resolve {parts.hostname}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise WebhookError(f"{parts.hostname} resolves to a non-public address ({address})")


def _post_webhook(delivery: Delivery) -> int:
    secret = (
        CampaignNotifications.objects.filter(campaign_id=delivery.campaign_id)
        .values_list("webhook_secret", flat=True)
        .first()
    ) or ""
    check_webhook_url(delivery.target)
    body = json.dumps(
        {**delivery.payload, "delivery": delivery.pk, "attempt": delivery.attempts},
        separators=(",", ":"),
    ).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "CCGSC-Webhook/1",
        "X-CCGSC-Event": delivery.payload["event"],
        "X-CCGSC-Delivery": str(delivery.pk),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    try:
        # No redirects: a redirect could lead to an address check_webhook_url refused.
        response = httpx.post(
            delivery.target,
            content=body,
            headers=headers,
            timeout=WEBHOOK_TIMEOUT,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise WebhookError(f"{type(exc).__name__}: {exc}") from exc
    delivery.last_status = response.status_code
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"HTTP {response.status_code}")
    return response.status_code


def _hand_to_job(delivery_ids: list[int]) -> None:
    """Mark deliveries PENDING (until PENDING_LEASE: a lost job is replaced then) and enqueue
    one job each after commit."""
    from operations.jobs import deliver

    if not delivery_ids:
        return
    Delivery.objects.filter(pk__in=delivery_ids).update(
        state=Delivery.State.PENDING, next_attempt_at=timezone.now() + PENDING_LEASE
    )
    for pk in delivery_ids:
        enqueue(deliver, pk)


def retry_due(now: datetime | None = None) -> int:
    """Periodic: hand to a job again the deliveries whose backoff has passed, and those whose
    job was lost (PENDING or SENDING past its deadline: a process died). Each row is taken by
    a conditional UPDATE, so two passes never enqueue one twice. Returns how many."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(
            state__in=[Delivery.State.RETRYING, Delivery.State.PENDING, Delivery.State.SENDING],
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at")
        .values_list("pk", "state", "next_attempt_at")[:200]
    )
    taken = [
        pk
        for pk, state, at in due
        if Delivery.objects.filter(pk=pk, state=state, next_attempt_at=at).update(
            state=Delivery.State.PENDING, next_attempt_at=now + PENDING_LEASE
        )
    ]
    from operations.jobs import deliver

    for pk in taken:
        enqueue(deliver, pk)
    return len(taken)


# --- stalls -------------------------------------------------------------------------------------


def check_stalled(now: datetime | None = None) -> list[int]:
    """Periodic (once per deployment): note each running campaign's progress, and report the
    ones that made none for their stall time, once until they progress again. Returns the ids
    of campaigns reported."""
    now = now or timezone.now()
    running = {
        pk: done + failed
        for pk, done, failed in Campaign.objects.filter(state=Campaign.State.RUNNING).values_list(
            "pk", "tasks_done", "tasks_failed"
        )
    }
    # A campaign that stopped running forgets its watch: resumed, it starts a fresh clock.
    CampaignWatch.objects.exclude(campaign_id__in=running).delete()
    watches = {w.campaign_id: w for w in CampaignWatch.objects.filter(campaign_id__in=running)}
    CampaignWatch.objects.bulk_create(
        [
            CampaignWatch(campaign_id=pk, finished=n, progress_at=now)
            for pk, n in running.items()
            if pk not in watches
        ],
        ignore_conflicts=True,
    )
    limits = dict(
        CampaignNotifications.objects.filter(
            campaign_id__in=watches, stall_minutes__isnull=False
        ).values_list("campaign_id", "stall_minutes")
    )
    stalled: list[int] = []
    for pk, watch in watches.items():
        if running[pk] != watch.finished:
            CampaignWatch.objects.filter(pk=watch.pk).update(
                finished=running[pk], progress_at=now, stall_notified=False
            )
            continue
        limit = timedelta(minutes=limits.get(pk) or settings.NOTIFY_STALL_MINUTES)
        # Marked before sending: another process's check cannot report it twice.
        if (
            not watch.stall_notified
            and now - watch.progress_at >= limit
            and CampaignWatch.objects.filter(pk=watch.pk, stall_notified=False).update(
                stall_notified=True
            )
        ):
            stalled.append(pk)
    for pk in stalled:
        notify(pk, Event.STALLED)
    return stalled


# --- contributors' weekly summary ---------------------------------------------------------------


def summary_for(user: User, since: datetime) -> dict[str, Any]:
    from rewards.models import LedgerEntry

    week = LedgerEntry.objects.filter(user=user, created_at__gte=since).aggregate(
        points=Sum("points"),
        results=Count("pk", filter=Q(result_id__isnull=False)),
        campaigns=Count("campaign", distinct=True),
    )
    total = LedgerEntry.objects.filter(user=user).aggregate(points=Sum("points"))
    return {
        "points": int(week["points"] or 0),
        "results": int(week["results"] or 0),
        "campaigns": int(week["campaigns"] or 0),
        "total_points": int(total["points"] or 0),
    }


def send_weekly_summaries(now: datetime | None = None, *, force: bool = False) -> int:
    """Email each opted-in contributor who had no summary for a week (or all of them with
    `force`). Returns how many were sent."""
    now = now or timezone.now()
    due = ContributorPrefs.objects.filter(weekly_summary=True).select_related("user")
    if not force:
        due = due.filter(
            Q(last_summary_at__isnull=True) | Q(last_summary_at__lte=now - SUMMARY_EVERY)
        )
    sent = 0
    for prefs in due[:1000]:
        user = prefs.user
        if not user.email or not user.is_active:
            continue
        # Claimed before sending, so two processes never mail one person twice in a week.
        claimed = ContributorPrefs.objects.filter(
            pk=prefs.pk, last_summary_at=prefs.last_summary_at
        ).update(last_summary_at=now)
        if not claimed:
            continue
        figures = summary_for(user, now - SUMMARY_EVERY)
        body = render_to_string(
            "operations/email/weekly_summary.txt",
            {
                **figures,
                "profile_url": _site_url(reverse("rewards:my_profile")),
                "settings_url": _site_url(reverse("operations:email_prefs")),
            },
        )
        send_mail(
            f"[CCGSC] Your week: {figures['points']} points",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [user.email],
        )
        sent += 1
    return sent
