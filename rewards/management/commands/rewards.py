"""`manage.py rewards check|rebuild-totals|revalidate`: maintenance of validation and points."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rewards import ledger, validation


class Command(BaseCommand):
    help = (
        "check: compare the totals with the ledger; rebuild-totals: recompute every total from "
        "the ledger; revalidate: decide tasks whose results wait for a validation that never ran."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["check", "rebuild-totals", "revalidate"])

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "check":
            problems = ledger.check_totals()
            for line in problems[:100]:
                self.stdout.write(line)
            if problems:
                raise CommandError(f"{len(problems)} total(s) differ from the ledger.")
            self.stdout.write("The totals equal the ledger's sums.")
        elif action == "rebuild-totals":
            self.stdout.write(f"{ledger.rebuild_totals()} totals recomputed from the ledger.")
        else:
            stuck = validation.stuck_tasks()
            done, failed = validation.revalidate(stuck)
            self.stdout.write(
                f"{len(stuck)} stuck task(s): {done} decided, {failed} failed here;"
                " verifier campaigns' tasks were handed to their job."
            )
