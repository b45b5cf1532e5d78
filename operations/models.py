"""Operations: process heartbeats, once-per-deployment job claims, campaign notifications."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from accounts.models import User
from campaigns.models import Campaign


def new_process_key() -> str:
    return uuid.uuid4().hex


class ProcessHeartbeat(models.Model):
    """One server process, as it last reported itself (every few seconds, from its heartbeat
    thread): the health panel's per-process figures and the sweeper's lag. Also the liveness
    of the process's WebSocket sessions (workers.liveness): `vouched_at`, bumped by its event
    loop, and `key`, which the sessions name."""

    # Random, made when the process starts (workers.liveness.process_key): host and pid repeat
    # across restarts (a container's daphne is often the same pid under the same host name).
    # Null for a row written by a server of an earlier version (during a rolling update).
    key = models.CharField(max_length=32, unique=True, null=True, default=new_process_key)  # noqa: DJ001 (NULL: no key, unique ignores it)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(default=timezone.now)
    # Resident memory of the process, bytes.
    rss_bytes = models.PositiveBigIntegerField(default=0)
    # CPU time the process used since it started (user + system), and its live threads.
    cpu_seconds = models.FloatField(default=0.0)
    threads = models.PositiveIntegerField(default=0)
    # Last time the process's event loop vouched for its WebSocket sessions (workers.liveness;
    # null: it holds none yet). Sessions of a process silent for liveness.PROCESS_DEAD are
    # closed by the sweeper.
    vouched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "health"
        verbose_name_plural = "health (server processes, queues, workers)"

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class JobRun(models.Model):
    """When a deployment-wide periodic job last ran. Every server process offers to run the
    job; a conditional UPDATE lets exactly one of them win each period (see operations.periodic)."""

    name = models.CharField(max_length=60, primary_key=True)
    last_run_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class CampaignNotifications(models.Model):
    """An owner's notification settings for one campaign. Without a row: email on, no webhook."""

    campaign = models.OneToOneField(
        Campaign, on_delete=models.CASCADE, related_name="notification_settings"
    )
    email = models.BooleanField(default=True)
    webhook_url = models.URLField(blank=True, max_length=500)
    # Minutes without a finished task before a running campaign counts as stalled; empty: the
    # deployment's NOTIFY_STALL_MINUTES.
    stall_minutes = models.PositiveIntegerField(null=True, blank=True)
    # Signs each delivery (X-CCGSC-Signature: sha256=HMAC(secret, body)); generated, shown once.
    webhook_secret = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"notifications of campaign {self.campaign_id}"


class CampaignWatch(models.Model):
    """Progress seen by the stall check: a running campaign whose finished-task count has not
    moved since `progress_at` for longer than NOTIFY_STALL_MINUTES is reported once."""

    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="+")
    finished = models.PositiveBigIntegerField(default=0)
    progress_at = models.DateTimeField(default=timezone.now)
    stall_notified = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"watch of campaign {self.campaign_id}"


class Delivery(models.Model):
    """One notification to one destination, and what became of it (the campaign page's log)."""

    class Event(models.TextChoices):
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        STALLED = "stalled", "Stalled"

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class State(models.TextChoices):
        # Handed to a job (next_attempt_at: when to hand it again if that job was lost).
        PENDING = "pending", "Pending"
        # A job is sending it (next_attempt_at: when to assume that job died).
        SENDING = "sending", "Sending"
        # Waiting for its backoff to pass (next_attempt_at: the next attempt).
        RETRYING = "retrying", "Retrying"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=10, choices=Event.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = models.CharField(max_length=500)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The last attempt: the HTTP status (webhooks) and why it failed, if it did.
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            models.Index(fields=["campaign", "-created_at"], name="delivery_campaign"),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(state__in=["pending", "sending", "retrying"]),
                name="delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.event} of campaign {self.campaign_id}"


class ContributorPrefs(models.Model):
    """A contributor's email preferences: the weekly summary is opt-in."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="contributor_prefs")
    weekly_summary = models.BooleanField(default=False)
    last_summary_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"preferences of {self.user}"
