"""Deployment-wide periodic jobs: every server process's sweeper offers to run them, and a
conditional UPDATE of one JobRun row lets exactly one process win each period, however many
processes there are (no separate scheduler process to deploy, none to forget)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from operations import notifications
from operations.models import JobRun

log = logging.getLogger(__name__)

# (name, period, job). The stall check and retries are frequent and cheap (a few rows); the
# weekly summary checks hourly who is due (each user at most once a week).
JOBS: list[tuple[str, timedelta, Callable[[], object]]] = [
    ("retry_deliveries", timedelta(seconds=10), notifications.retry_due),
    ("stall_check", timedelta(seconds=60), notifications.check_stalled),
    ("weekly_summary", timedelta(hours=1), notifications.send_weekly_summaries),
]


def claim(name: str, period: timedelta) -> bool:
    """True for exactly one caller per `period` across all processes sharing the database."""
    now = timezone.now()
    if not JobRun.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                JobRun.objects.create(name=name, last_run_at=now - period)
        except IntegrityError:
            pass  # another process created it first; the UPDATE below decides
    won = JobRun.objects.filter(name=name, last_run_at__lte=now - period).update(last_run_at=now)
    return won == 1


def deployment_jobs() -> None:
    for name, period, job in JOBS:
        if claim(name, period):
            try:
                job()
            except Exception:
                log.exception("periodic job %s failed", name)
