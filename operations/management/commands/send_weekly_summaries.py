from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from operations.notifications import send_weekly_summaries


class Command(BaseCommand):
    help = (
        "Email the weekly summary to contributors who opted in and had none for a week. "
        "Server processes do this on their own, hourly; this runs it now (e.g. from cron)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="send to every opted-in contributor now"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sent = send_weekly_summaries(force=options["force"])
        self.stdout.write(f"{sent} summar{'y' if sent == 1 else 'ies'} sent")
